"""HTTP compression for the mobile apps: gzip responses of the JSON API, gzip request bodies.

Responses: Django's GZipMiddleware, limited to the JSON API (`/api/…` and `/realtime/v1/api/…`)
and to bodies of at least HTTP_GZIP_MIN_BYTES (1 KB, the spec's `enableForBatchesOver`), when
the request says `Accept-Encoding: gzip`. BREACH needs a secret and attacker-chosen text in one
compressed response that a victim's browser fetches with ambient credentials: the API is
authenticated by an `Authorization: Bearer` header that a cross-site page cannot make a browser
send, and its responses hold no CSRF token. The admin (session cookie + CSRF token in its pages)
is never compressed. Django also pads every gzip body with random bytes (its BREACH mitigation).

Requests: a body sent with `Content-Encoding: gzip` (e.g. an offline sync upload) is inflated
before the view reads it, up to HTTP_GZIP_MAX_REQUEST_BYTES inflated (a zip bomb gets 413
`payload_too_large`); a corrupt body gets 400 `invalid_content_encoding`, any other encoding 415
`unsupported_content_encoding`.
"""

from __future__ import annotations

import io
import zlib

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.middleware.gzip import GZipMiddleware
from django.utils.deprecation import MiddlewareMixin

from .api import error_body

API_PREFIXES = ("/api/", "/realtime/v1/api/")
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


class GzipResponseMiddleware(GZipMiddleware):
    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if not _is_api(request):
            return response
        if not response.streaming and len(response.content) < settings.HTTP_GZIP_MIN_BYTES:
            return response
        return super().process_response(request, response)


class _TooLarge(Exception):
    pass


def gunzip(data: bytes, *, limit: int) -> bytes:
    """Inflate a gzip body; _TooLarge past `limit` bytes, zlib.error/EOFError when corrupt."""
    inflater = zlib.decompressobj(_GZIP_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise _TooLarge
    if not inflater.eof:
        raise EOFError("truncated gzip body")
    return out


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


class GzipRequestMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", "identity") or not _is_api(request):
            return None
        if encoding != "gzip":
            return _error(415, "unsupported_content_encoding", "Request bodies may be sent as gzip only.")
        limit = settings.HTTP_GZIP_MAX_REQUEST_BYTES
        try:
            body = gunzip(request.body, limit=limit)
        except _TooLarge:
            return _error(413, "payload_too_large", f"The inflated request body exceeds {limit} bytes.")
        except (zlib.error, EOFError):
            return _error(400, "invalid_content_encoding", "The request body is not valid gzip.")
        request._body = body
        request._stream = io.BytesIO(body)
        request.META["CONTENT_LENGTH"] = str(len(body))
        del request.META["HTTP_CONTENT_ENCODING"]
        return None
