"""The response builder: a 200 with a strong ETag and caching headers, or its 304 or 412.

Answers never change for a URL, so they are tagged by what determines their bytes.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, HttpResponseBase
from django.utils.cache import get_conditional_response
from rest_framework.request import Request
from rest_framework.response import Response

from fibonacci.sequence import SequenceSlice, Term

from .errors import problem_response
from .renderers import PreparedBytesRenderer

# Bump when the bytes of any representation change, so old ETags stop matching.
REPRESENTATION_VERSION = "1"

PRECONDITION_FAILED_DETAIL = "A precondition (If-Match or If-Unmodified-Since) does not hold."

# The request headers that can make an answer a 304 or a 412.
_PRECONDITIONS = frozenset(
    {"HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE"}
)


def immutable_response(request: Request, payload: SequenceSlice | Term) -> HttpResponseBase:
    """200 with ETag and Cache-Control, or 304 when the client already holds it."""
    renderer = request.accepted_renderer
    if not isinstance(renderer, PreparedBytesRenderer):
        # The browsable API page embeds per-user details: neither tagged nor shared.
        return Response(payload)
    # The ETag is derived from what determines the bytes; hashing a 10 MB body
    # per request would cost more than producing it.
    etag = f'"v{REPRESENTATION_VERSION}.{renderer.format}.{payload.cache_key}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={settings.FIB_CACHE_MAX_AGE}",
    }
    # Most requests carry no precondition: skip parsing four absent headers.
    not_modified = (
        None
        if request.META.keys().isdisjoint(_PRECONDITIONS)
        else get_conditional_response(request, etag=etag)
    )
    if not_modified is not None and not_modified.status_code == 412:
        return problem_response(status=412, detail=PRECONDITION_FAILED_DETAIL)
    if not_modified is not None:
        for name, value in headers.items():
            not_modified[name] = value
        return not_modified
    # Rendered here rather than through DRF's template response: the renderer
    # only wraps prepared bytes, and the response object is the costly part.
    content_type = renderer.media_type
    if renderer.charset:
        content_type = f"{content_type}; charset={renderer.charset}"
    first, *rest = renderer.render_pieces(payload)
    headers["Content-Length"] = str(len(first) + sum(map(len, rest)))
    response = HttpResponse(first, content_type=content_type, headers=headers)
    # The pieces of a large window go to the server as they are: HttpResponse
    # yields what was written to it one by one (joining happens only if
    # someone reads .content, which is why Content-Length is set above).
    response.writelines(rest)
    return response
