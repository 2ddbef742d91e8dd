"""Every error code either service can return has a calm message for a person, in every language."""

from __future__ import annotations

from enum import StrEnum

from hypothesis import given
from hypothesis import strategies as st

from backend.errors import ErrorCode as BackendCode
from backend.users.schemas import LANGUAGES
from backend.web.error_messages import ERROR_MESSAGES, FALLBACK, codes_without_message
from backend.web.i18n import Catalogs, read_catalog
from backend.web.messages import ROOT
from backend.web.rendering import Renderer
from ocr_service.errors import ErrorCode as OcrCode

LOCALES = ROOT / "frontend" / "locales"
CATALOGS = Catalogs(LOCALES)
RENDERER = Renderer(ROOT / "frontend")


def test_every_code_of_both_services_has_a_message() -> None:
    assert codes_without_message(BackendCode, OcrCode) == []


def test_a_new_code_without_a_message_is_found() -> None:
    class Newer(StrEnum):
        LINE_CHANGED = "LINE_CHANGED"
        SOMETHING_NEW = "SOMETHING_NEW"

    assert codes_without_message(BackendCode, OcrCode, Newer) == ["SOMETHING_NEW"]
    # And one taken out of the mapping is missed too.
    fewer = {code: text for code, text in ERROR_MESSAGES.items() if code != "PAGE_TIMEOUT"}
    assert codes_without_message(BackendCode, OcrCode, messages=fewer) == ["PAGE_TIMEOUT"]


def test_no_message_is_kept_for_a_code_neither_service_has() -> None:
    known = {c.value for c in BackendCode} | {c.value for c in OcrCode}
    assert set(ERROR_MESSAGES) - known == set()


def test_every_message_is_translated_into_every_language_in_the_compiled_catalogs() -> None:
    english, _ = read_catalog(LOCALES, "en")
    untranslated: list[str] = []
    for code, text in ERROR_MESSAGES.items():
        entry = english.get(text)
        if entry is None or entry.string != text:
            untranslated.append(f"en {code}")
        for language in (lang for lang in LANGUAGES if lang != "en"):
            translated = CATALOGS.gettext(language, text)
            # A sentence left in English is untranslated (gettext hands back the English id).
            if not translated.strip() or translated == text:
                untranslated.append(f"{language} {code}")
    assert untranslated == []


def test_each_message_says_what_happened_and_is_a_whole_sentence() -> None:
    for language in LANGUAGES:
        for code, text in ERROR_MESSAGES.items():
            shown = CATALOGS.gettext(language, text)
            assert shown[0].isupper() and shown.endswith("."), (language, code, shown)
            # No developer's words reach a person: no code names, no HTTP status numbers.
            assert code not in shown and "HTTP" not in shown, (language, code, shown)


def test_the_ocr_service_being_unavailable_reads_as_the_issue_says() -> None:
    renderer = RENDERER
    assert renderer.error_message("de", "OCR_SERVICE_UNAVAILABLE") == (
        "Der OCR-Dienst ist gerade nicht verfügbar. Bitte warte einen Moment und versuche es erneut."
    )
    assert renderer.error_message("es", "LAST_ADMIN") != renderer.error_message("en", "LAST_ADMIN")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=30))
def test_a_code_this_ui_does_not_know_gets_the_calm_general_message(code: str) -> None:
    renderer = RENDERER
    expected = ERROR_MESSAGES.get(code, ERROR_MESSAGES[FALLBACK])
    for language in LANGUAGES:
        assert renderer.error_message(language, code) == CATALOGS.gettext(language, expected)
