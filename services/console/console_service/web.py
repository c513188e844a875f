"""What pages share: the templates, rendering with the request's language,
the signed-in session as a dependency, and the API client."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response

from console_service import i18n, labels
from console_service.api import ServiceApi
from console_service.security import CSRF_FIELD, expected_csrf_token
from console_service.sessions import ConsoleSession

TEMPLATES_DIR = Path(__file__).parent / "templates"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]), extensions=["jinja2.ext.i18n"],
)
# `gettext` reads the request's language from a context variable (console_service.i18n).
_environment.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
templates = Jinja2Templates(env=_environment)


def format_utc(value: str | datetime | None) -> str:
    """Times are shown in UTC, saying so."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


templates.env.filters["utc"] = format_utc
templates.env.globals.update(
    status_label=labels.status_label, country_label=labels.country_label, role_label=labels.role_label,
    delivery_state_label=labels.delivery_state_label, condition_label=labels.condition_label,
    progress_label=labels.progress_label, offer_state_label=labels.offer_state_label,
    attempt_outcome_label=labels.attempt_outcome_label, event_type_label=labels.event_type_label,
)


class SignInRequired(Exception):
    """A page needs a session; answered with a redirect to /sign-in."""


def render(request: Request, template: str, context: dict[str, Any] | None = None, *,
           status_code: int = 200) -> Response:
    session: ConsoleSession | None = getattr(request.state, "session", None)
    base = {
        "session": session,
        "principal": session.principal if session else None,
        "language": i18n.current_language.get(),
        "languages": i18n.LANGUAGES,
        "csrf_field": CSRF_FIELD,
        "csrf_token": expected_csrf_token(request),
    }
    return templates.TemplateResponse(request, template, base | (context or {}), status_code=status_code)


def current_session(request: Request) -> ConsoleSession:
    session: ConsoleSession | None = getattr(request.state, "session", None)
    if session is None:
        raise SignInRequired()
    return session


def service_api(request: Request) -> ServiceApi:
    return request.app.state.api


SignedIn = Annotated[ConsoleSession, Depends(current_session)]
Api = Annotated[ServiceApi, Depends(service_api)]
