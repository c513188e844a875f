"""ETag / If-None-Match for the catalog's read-only resources."""

from fastapi import Request
from fastapi.responses import Response

CACHE_CONTROL = "public, max-age=60, must-revalidate"


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    # Weak comparison (RFC 9110 13.1.2): W/ prefixes do not matter for GET.
    candidates = {candidate.strip().removeprefix("W/") for candidate in if_none_match.split(",")}
    return etag.removeprefix("W/") in candidates


def cached_response(request: Request, *, body: bytes, etag: str, media_type: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Vary": "Accept-Encoding"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(content=body, media_type=media_type, headers=headers)
