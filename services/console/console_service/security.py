"""Headers every answer carries, and the CSRF check every form post passes.

The CSP allows scripts, styles and images from the console itself only: no
inline script or style, no framing, forms posting only back here.
"""

import hmac
import secrets

from fastapi import Request

CSRF_FIELD = "csrf_token"
# Before sign-in there is no session to hold the token: a cookie holds it.
ANONYMOUS_CSRF_COOKIE = "caj_csrf"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


class CsrfRejected(Exception):
    """A form post without the right token: answered with the 403 page."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def expected_csrf_token(request: Request) -> str:
    """The token forms carry: the session's once signed in, else the cookie's."""
    session = getattr(request.state, "session", None)
    if session is not None:
        return session.csrf_token
    return request.state.anonymous_csrf


async def check_csrf(request: Request) -> None:
    """A dependency for every POST route of a page."""
    form = await request.form()
    presented = form.get(CSRF_FIELD)
    if not isinstance(presented, str) or not hmac.compare_digest(presented, expected_csrf_token(request)):
        raise CsrfRejected()


def cookies_secure(request: Request, force: bool) -> bool:
    return force or request.url.scheme == "https"
