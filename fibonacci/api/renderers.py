"""JSON and text renderers that wrap the prepared bytes of the service layer.

A sequence window or a term arrives already serialized; rendering puts an
envelope around it, never walks over Python integers. A large window stays in
the pieces the service handed over (whole blocks of the prepared table), so
the server writes them out without the window ever being copied into one
buffer.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer

from fibonacci.sequence import BLOCK_BYTES, SequenceSlice, Term


def _enveloped(head: bytes, items: list[bytes], tail: bytes) -> list[bytes]:
    # A window up to a block's size is small: one copy into one buffer, one
    # write. A larger one keeps its pieces, shared with the table, and gets its
    # envelope as two more.
    if sum(map(len, items)) <= BLOCK_BYTES:
        return [b"".join((head, *items, tail))]
    return [head, *items, tail]


class PreparedBytesRenderer(BaseRenderer):
    """A renderer whose answers for windows and terms are pieces of prepared bytes.

    `render` joins the pieces (for DRF's own callers, such as the browsable
    API); anything else goes to the next renderer in the class's bases.
    """

    def render_pieces(self, data: SequenceSlice | Term) -> list[bytes]:
        """The body for a window or a term, as consecutive pieces."""
        raise NotImplementedError

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, SequenceSlice | Term):
            return b"".join(self.render_pieces(data))
        rendered = super().render(data, accepted_media_type, renderer_context)
        return rendered.encode() if isinstance(rendered, str) else rendered


class _PlainTextRenderer(BaseRenderer):
    """Anything else as text: nothing for no data, else its str() and a newline."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return b"" if data is None else f"{data}\n".encode()


class FibonacciJSONRenderer(PreparedBytesRenderer, JSONRenderer):
    """`application/json`: exact integers (or strings) written from prepared bytes."""

    def render_pieces(self, data: SequenceSlice | Term) -> list[bytes]:
        if isinstance(data, SequenceSlice):
            head = b'{"n":%d,"offset":%d,"sequence":[' % (data.count, data.offset)
            return _enveloped(head, data.json_items(), b"]}")
        return [b'{"index":%d,"value":%b}' % (data.index, data.json_value())]


class FibonacciTextRenderer(PreparedBytesRenderer, _PlainTextRenderer):
    """`text/plain`: the numbers separated by spaces, then a newline."""

    media_type = "text/plain"
    format = "text"
    charset = "utf-8"

    def render_pieces(self, data: SequenceSlice | Term) -> list[bytes]:
        if isinstance(data, SequenceSlice):
            return _enveloped(b"", data.text_items(), b"\n")
        return [data.digits + b"\n"]


# The browsable page shows at most this much of a window: DRF's page template
# escapes and embeds the whole body, which at n=10000 (10 MB) took 0.3-0.6 s
# and lifted a worker to 225-330 MiB. The JSON and text answers are complete.
BROWSABLE_PREVIEW_BYTES = 64 * 1024


def _preview(window: SequenceSlice) -> SequenceSlice:
    """The longest head of `window` whose JSON items fit BROWSABLE_PREVIEW_BYTES."""
    numbers = window.table.numbers
    count = (
        bisect.bisect_right(
            range(window.count + 1),
            BROWSABLE_PREVIEW_BYTES,
            key=lambda terms: numbers.window_bytes(offset=window.offset, count=terms),
        )
        - 1
    )
    return dataclasses.replace(window, count=max(1, count))


class FibonacciBrowsableAPIRenderer(BrowsableAPIRenderer):
    """DRF's browsable page, showing a large window's first terms and how to get all of them."""

    def get_content(
        self,
        renderer: BaseRenderer,
        data: Any,
        accepted_media_type: str | None,
        renderer_context: Mapping[str, Any],
    ) -> str:
        if isinstance(data, SequenceSlice):
            preview = _preview(data)
            if preview.count < data.count:
                content = super().get_content(
                    renderer, preview, accepted_media_type, renderer_context
                )
                return (
                    f"{content}\n\n(The first {preview.count} of {data.count} terms."
                    " Add format=json or format=text to the query for the whole answer.)"
                )
        return super().get_content(renderer, data, accepted_media_type, renderer_context)
