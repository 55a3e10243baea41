"""Content negotiation: `?format=` held to the rules of every parameter, and memoized.

DRF would take the last of repeated `format` values and treat an empty one as
absent; here a format is given at most once (fibonacci.params.single) and must
name one of the renderers, else the answer is a 400 that lists them.

DRF parses the Accept header and every renderer's media type on each request;
for a public API most requests send one of a handful of Accept headers, so the
choice is memoized per (renderer classes, format, Accept) in a bounded table.
It is kept because it earns its keep: 8.6% of an n=10 request's instructions
(callgrind, against DRF's own select_renderer in the same run).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

from fibonacci import params

# Accept headers are client-controlled: past this many distinct keys we stop
# remembering new ones rather than grow without bound.
MAX_REMEMBERED = 512

_Key = tuple[tuple[type[BaseRenderer], ...], str | None, str]


class MemoizedContentNegotiation(DefaultContentNegotiation):
    """DRF's default negotiation, memoized; failures (406, 400) are never cached."""

    _choices: dict[_Key, tuple[int, str]] = {}

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderers = list(renderers)
        requested_format = format_suffix
        if requested_format is None:
            requested = params.single(
                request.query_params.getlist(self.settings.URL_FORMAT_OVERRIDE)
            )
            if requested is params.REPEATED:
                raise _format_error(renderers, "format must be given once, as one of: {}.")
            if requested == "":
                raise _format_error(renderers, "format must be one of: {}.")
            requested_format = requested if isinstance(requested, str) else None
        key = (
            tuple(type(renderer) for renderer in renderers),
            requested_format,
            request.META.get("HTTP_ACCEPT", "*/*"),
        )
        choice = self._choices.get(key)
        if choice is None:
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            choice = (renderers.index(renderer), media_type)
            if len(self._choices) < MAX_REMEMBERED:
                self._choices[key] = choice
        index, media_type = choice
        return renderers[index], media_type

    def filter_renderers(
        self, renderers: Iterable[BaseRenderer], format: str
    ) -> list[BaseRenderer]:
        """The renderers for `?format=`; an unknown one is the client's mistake: a 400."""
        renderers = list(renderers)
        matching = [renderer for renderer in renderers if renderer.format == format]
        if not matching:
            raise _format_error(renderers, "format must be one of: {}.")
        return matching


def _format_error(renderers: Sequence[BaseRenderer], message: str) -> ValidationError:
    """A 400 whose message lists the renderers' formats in place of `{}`."""
    allowed = ", ".join(sorted(str(renderer.format) for renderer in renderers))
    return ValidationError({"format": [message.format(allowed)]})
