"""gzip for the API's successful answers, done by the app so that a cache compresses once.

Django's GZipMiddleware (its 200-byte floor, `Vary: Accept-Encoding`, the
weakened ETag, BREACH's random bytes), applied only to API requests' 200s:
errors are a few hundred bytes and are never cached, so compressing them
would be work per request for little gain. Behind the edge (a request that
nginx marked as forwarded by it) any size is compressed, because nginx caches
the compressed answer and serves it again; anywhere else (edge off, runserver,
an app node reached directly) only bodies up to FIB_COMPRESS_MAX_BYTES are,
since each request would pay for it anew. Bodies past that size are compressed
at zlib's level 1, not Django's 6: the 10 MB answer of n=10000 then takes about
0.13 s of CPU instead of 0.9 s and shrinks to 50% instead of 47%, which bounds
what a client can make the app do by asking for many distinct large windows
(or one window under many URLs) within its large budget.
"""

from __future__ import annotations

import gzip

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.gzip import GZipMiddleware, re_accepts_gzip
from django.utils.cache import patch_vary_headers
from django.utils.http import parse_etags

from fibonacci.edge import forwarded_by_edge

from .scope import is_api_request


def accepts_gzip(request: HttpRequest) -> bool:
    """Whether the client's Accept-Encoding names gzip (Django's GZipMiddleware's test)."""
    return re_accepts_gzip.search(request.META.get("HTTP_ACCEPT_ENCODING", "")) is not None


def _body_bytes(response: HttpResponse) -> int:
    # Content-Length is set by the API's responses; .content would join a large answer.
    length = response.get("Content-Length")
    return int(length) if length is not None else len(response.content)


class ApiGZipMiddleware(GZipMiddleware):
    """Django's GZipMiddleware for the API's 200s, bounded in size unless the edge caches them."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Compress a 200 when the client accepts gzip and the size rule allows; mark a 304."""
        if not is_api_request(request):
            return response
        if response.status_code == 304:
            return self._not_modified(request, response)
        if response.status_code != 200 or not isinstance(response, HttpResponse):
            return response
        if _body_bytes(response) <= settings.FIB_COMPRESS_MAX_BYTES:
            return super().process_response(request, response)
        if not forwarded_by_edge(request):
            # Sent as it is to every client: the answer does not vary by Accept-Encoding.
            return response
        return self._compress_fast(request, response)

    @staticmethod
    def _compress_fast(request: HttpRequest, response: HttpResponse) -> HttpResponseBase:
        """GZipMiddleware's steps for a large body, at zlib's fastest level."""
        if response.has_header("Content-Encoding"):
            return response
        patch_vary_headers(response, ("Accept-Encoding",))
        if not accepts_gzip(request):
            return response
        content = response.content
        compressed = gzip.compress(content, compresslevel=1, mtime=0)
        if len(compressed) >= len(content):
            return response
        response.content = compressed
        response.headers["Content-Length"] = str(len(compressed))
        etag = response.get("ETag")
        if etag and etag.startswith('"'):
            response.headers["ETag"] = "W/" + etag
        response.headers["Content-Encoding"] = "gzip"
        return response

    @staticmethod
    def _not_modified(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        """A 304 carries the validator of the 200 it stands for: weak if that one was gzipped.

        The 304 has no body to measure, so the client's own validator tells: it sent
        the weak form of our ETag (If-None-Match compares weakly) because the 200 it
        holds was compressed, and it still accepts gzip.
        """
        etag = response.get("ETag")
        if not etag or not etag.startswith('"') or not accepts_gzip(request):
            return response
        if "W/" + etag in parse_etags(request.META.get("HTTP_IF_NONE_MATCH", "")):
            patch_vary_headers(response, ("Accept-Encoding",))
            response.headers["ETag"] = "W/" + etag
        return response
