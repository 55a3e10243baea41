"""JSON and text renderers that wrap the prepared bytes of the service layer.

A sequence window or a term arrives already serialized; rendering is one
`bytes` formatting operation, never a walk over Python integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer, JSONRenderer

from .services import SequenceSlice, Term


class FibonacciJSONRenderer(JSONRenderer):
    """`application/json`: exact integers (or strings) written from prepared bytes."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, SequenceSlice):
            # One join: the window (up to ~10 MB) is copied once, not twice.
            head = b'{"n":%d,"offset":%d,"sequence":[' % (data.count, data.offset)
            return b"".join((head, data.json_items(), b"]}"))
        if isinstance(data, Term):
            return b'{"index":%d,"value":%b}' % (data.index, data.json_value())
        return super().render(data, accepted_media_type, renderer_context)


class FibonacciTextRenderer(BaseRenderer):
    """`text/plain`: the numbers separated by spaces, then a newline."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, SequenceSlice):
            return b"".join((data.text_items(), b"\n"))
        if isinstance(data, Term):
            return data.digits + b"\n"
        if data is None:
            return b""
        return f"{data}\n".encode()
