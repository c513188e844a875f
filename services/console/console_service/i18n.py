"""Languages: gettext catalogs managed with Babel (see README.md, `make translations`).

The catalogs are read from their .po files when the process starts and
compiled in memory, so a fresh checkout needs no build step. The language of a
request is chosen from `?lang=`, then the remembered switch (a cookie), then
`Accept-Language`, then English; it lives in a context variable for the
request, which templates and Python code both read through `gettext`.
"""

import gettext as gettext_module
import io
from contextvars import ContextVar
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "caj_lang"
TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DOMAIN = "messages"

current_language: ContextVar[str] = ContextVar("console_language", default=DEFAULT_LANGUAGE)


def _load(language: str) -> gettext_module.NullTranslations:
    po_path = TRANSLATIONS_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po_path.exists():
        return gettext_module.NullTranslations()  # English: the msgids are the English text
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return gettext_module.GNUTranslations(compiled)


_TRANSLATIONS = {language: _load(language) for language in LANGUAGES}


def gettext(message: str) -> str:
    return _TRANSLATIONS[current_language.get()].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _TRANSLATIONS[current_language.get()].ngettext(singular, plural, n)


def supported(language: str | None) -> str | None:
    if not language:
        return None
    language = language.strip().lower()
    return language if language in LANGUAGES else None


def from_accept_language(header: str | None) -> str | None:
    """The supported language the browser prefers most (q-values honoured)."""
    if not header:
        return None
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        primary = tag.strip().split("-")[0].lower()
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return min(ranked)[2] if ranked else None


def choose_language(*, query: str | None, cookie: str | None, accept_language: str | None) -> str:
    return supported(query) or supported(cookie) or from_accept_language(accept_language) or DEFAULT_LANGUAGE
