"""Signing in with an API key, and out."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from console_service.i18n import gettext as _
from console_service.security import check_csrf, cookies_secure
from console_service.sessions import SESSION_COOKIE, SessionStore
from console_service.web import SignedIn, render

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path on this site (no //host, no scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/sign-in")
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    if request.state.session is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "sign_in.html", {"next": _safe_next(next), "error": None})


@router.post("/sign-in", dependencies=[Depends(check_csrf)])
async def sign_in(request: Request, key: Annotated[str, Form(max_length=200)] = "",
                  next: Annotated[str, Form(max_length=500)] = "/") -> Response:
    sessions: SessionStore = request.app.state.sessions
    if not request.app.state.key_store.caught_up:
        error = _("Keys are still loading. Try again in a moment.")
        return render(request, "sign_in.html", {"next": _safe_next(next), "error": error}, status_code=503)
    session = sessions.open(key.strip())
    if session is None:
        error = _("This key is not valid, or it has been revoked.")
        return render(request, "sign_in.html", {"next": _safe_next(next), "error": error}, status_code=401)
    sessions.close(request.cookies.get(SESSION_COOKIE))  # a new id at sign-in: no session fixation
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, session.session_id, httponly=True, samesite="strict",
                        secure=cookies_secure(request, request.app.state.settings.force_secure_cookies),
                        max_age=int(sessions.lifetime_seconds))
    return response


@router.post("/sign-out", dependencies=[Depends(check_csrf)])
async def sign_out(request: Request, session: SignedIn) -> Response:
    request.app.state.sessions.close(session.session_id)
    response = RedirectResponse("/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    return response
