"""The message catalogs: every message the UI shows is translated into German, English and Spanish,
none sits in a catalog unused, and a message shared by two parts of the UI reads the same in both."""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

from backend.users.schemas import LANGUAGES
from backend.web.i18n import Catalogs
from backend.web.messages import ROOT, check


def test_every_message_the_ui_uses_is_translated_into_every_language_and_none_is_unused() -> None:
    report = check()
    assert report.used, "no messages found: the extraction itself is broken"
    assert report.clean, "\n".join(report.lines())


def test_the_catalogs_compile_and_translate(tmp_path: Path) -> None:
    catalogs = Catalogs(ROOT / "frontend" / "locales")
    assert catalogs.gettext("de", "Log in") == "Anmelden"
    assert catalogs.gettext("es", "Log in") == "Iniciar sesión"
    assert catalogs.gettext("en", "Log in") == "Log in"


def test_a_gap_or_a_leftover_is_reported(tmp_path: Path) -> None:
    # The check must be able to fail: a copy of the catalogs with one translation emptied and one
    # message no template uses.
    frontend = tmp_path / "frontend"
    (frontend / "templates").mkdir(parents=True)
    (frontend / "templates" / "t.html").write_text('{{ _("Log in") }} {{ _("Brand new") }}', encoding="utf-8")
    for language in LANGUAGES:
        folder = frontend / "locales" / language
        folder.mkdir(parents=True)
        source = ROOT / "frontend" / "locales" / language / "base.po"
        (folder / "base.po").write_bytes(source.read_bytes())
    report = check(frontend, tmp_path / "no-python")
    assert "Brand new" in report.missing["de"] and "Brand new" in report.missing["es"]
    assert "Log in" not in report.missing["de"]
    assert "Log out" in report.unused["de"]
    with (frontend / "locales" / "de" / "base.po").open("rb") as handle:
        assert read_po(handle).get("Log in") is not None
