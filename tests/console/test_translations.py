"""Every string of the console's interface has its Russian translation, and
the language is chosen as documented (console_service/i18n.py)."""

import io
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from console_service import i18n
from shared.settings import REPO_ROOT

RUSSIAN_PO = Path(i18n.TRANSLATIONS_DIR) / "ru" / "LC_MESSAGES" / "messages.po"


def extracted_messages() -> set[str | tuple[str, str]]:
    """What `make translations` extracts: babel.cfg's map over the sources and templates."""
    method_map, options_map = parse_mapping_cfg(io.StringIO((REPO_ROOT / "babel.cfg").read_text()))
    found: set[str | tuple[str, str]] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(
        str(REPO_ROOT), method_map, options_map
    ):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


def russian_catalog():
    with RUSSIAN_PO.open("rb") as po_file:
        return read_po(po_file, locale="ru")


def test_the_sources_have_translatable_strings():
    messages = extracted_messages()
    assert "Sign in" in messages and "Requests by country" in messages, "the extraction map finds nothing"
    assert len(messages) > 40


def test_every_string_of_the_interface_has_a_russian_translation():
    catalog = russian_catalog()
    missing = []
    for message_id in sorted(extracted_messages(), key=str):
        lookup = message_id[0] if isinstance(message_id, tuple) else message_id
        entry = catalog.get(lookup)
        translated = entry is not None and not entry.fuzzy and (
            all(entry.string) if isinstance(entry.string, tuple) else bool(entry.string)
        )
        if not translated:
            missing.append(message_id)
    assert not missing, f"no Russian translation (run `make translations`, then fill in messages.po): {missing}"


def test_russian_translations_keep_their_placeholders():
    errors = [(message.id, [str(error) for error in message_errors])
              for message, message_errors in russian_catalog().check()]
    assert not errors


def test_russian_plural_forms_are_all_filled():
    catalog = russian_catalog()
    assert catalog.num_plurals == 3
    for message in catalog:
        if message.pluralizable and message.id:
            assert len(message.string) == 3 and all(message.string), message.id


@pytest.mark.parametrize(("query", "cookie", "accept_language", "expected"), [
    (None, None, None, "en"),
    ("ru", None, "en-GB,en;q=0.9", "ru"),  # ?lang= first
    (None, "ru", "en", "ru"),  # then the remembered switch
    ("de", "en", "ru", "en"),  # an unsupported ?lang is ignored
    (None, None, "ru-RU,ru;q=0.9,en;q=0.8", "ru"),
    (None, None, "de-DE,en;q=0.5,ru;q=0.7", "ru"),  # by quality, not order
    (None, None, "de-DE,fr;q=0.8", "en"),
    (None, None, "ru;q=0,en;q=0.1", "en"),  # q=0 means "not this one"
])
def test_the_language_is_chosen_from_query_then_cookie_then_accept_language(query, cookie, accept_language,
                                                                           expected):
    assert i18n.choose_language(query=query, cookie=cookie, accept_language=accept_language) == expected


def test_gettext_follows_the_request_language():
    token = i18n.current_language.set("ru")
    try:
        assert i18n.gettext("Sign in") == "Вход"
        assert i18n.ngettext("%(num)d commitment has had no progress report for too long",
                             "%(num)d commitments have had no progress report for too long", 5) % {"num": 5} \
            == "5 обязательств слишком долго без отчёта о ходе выполнения"
    finally:
        i18n.current_language.reset(token)
    assert i18n.gettext("Sign in") == "Sign in"
