"""The message catalogs: every message the UI shows is translated into German, English and Spanish,
none sits in a catalog unused, and a message shared by two parts of the UI reads the same in both.
A message that shows a count is a plural message with every form of each language translated."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po

from backend.users.schemas import LANGUAGES
from backend.web.i18n import Catalogs, read_catalog
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


@pytest.mark.parametrize(
    ("language", "one", "two"),
    [("de", "1 Seite", "2 Seiten"), ("en", "1 page", "2 pages"), ("es", "1 página", "2 páginas")],
)
def test_a_plural_message_takes_the_form_of_its_count(language: str, one: str, two: str) -> None:
    catalogs = Catalogs(ROOT / "frontend" / "locales")
    forms = [catalogs.ngettext(language, "{count} page", "{count} pages", n).format(count=n) for n in (1, 2, 0)]
    assert forms == [one, two, two.replace("2", "0")]


def test_a_script_gets_the_form_of_every_plural_category_of_the_language() -> None:
    catalogs = Catalogs(ROOT / "frontend" / "locales")
    assert catalogs.plural_forms("de", "{count} page", "{count} pages") == {
        "one": "{count} Seite",
        "other": "{count} Seiten",
    }
    # Spanish has a "many" (1000000, ...) in CLDR; gettext's rule gives it the plural form.
    assert catalogs.plural_forms("es", "{count} page", "{count} pages") == {
        "one": "{count} página",
        "other": "{count} páginas",
        "many": "{count} páginas",
    }


def test_every_plural_message_has_every_form_and_every_catalog_the_languages_rule() -> None:
    used = check()
    assert used.plurals, "no plural messages found: the extraction of ngettext is broken"
    for language in LANGUAGES:
        catalog, _ = read_catalog(ROOT / "frontend" / "locales", language)
        wanted = get_plural(language).num_plurals
        for singular, plural in used.plurals.items():
            message = catalog.get(singular)
            assert message is not None and message.pluralizable, (language, singular)
            assert message.id == (singular, plural)
            strings = message.string
            assert isinstance(strings, tuple) and len(strings) == wanted and all(strings), (language, singular, strings)


def test_a_gap_or_a_leftover_is_reported(tmp_path: Path) -> None:
    # The check must be able to fail: a copy of the catalogs with one translation emptied and one
    # message no template uses.
    frontend = tmp_path / "frontend"
    (frontend / "templates").mkdir(parents=True)
    (frontend / "templates" / "t.html").write_text(
        '{{ _("Log in") }} {{ _("Brand new") }} {{ ngettext("%(num)s new page", "%(num)s new pages", 2) }}'
        ' {{ ngettext("Log out", "Log outs", 2) }}',
        encoding="utf-8",
    )
    for language in LANGUAGES:
        folder = frontend / "locales" / language
        folder.mkdir(parents=True)
        source = ROOT / "frontend" / "locales" / language / "base.po"
        (folder / "base.po").write_bytes(source.read_bytes())
        # One plural message with its German plural form left empty, one with both forms.
        forms = {"de": ("%(num)s neue Seite", ""), "en": ("%(num)s new page", "%(num)s new pages")}
        forms["es"] = ("%(num)s página nueva", "%(num)s páginas nuevas")
        with (folder / "base.po").open("ab") as handle:
            one, other = forms[language]
            handle.write(
                f'\nmsgid "%(num)s new page"\nmsgid_plural "%(num)s new pages"\n'
                f'msgstr[0] "{one}"\nmsgstr[1] "{other}"\n'.encode()
            )
    # A catalog with the wrong plural rule for its language.
    spanish = frontend / "locales" / "es" / "base.po"
    spanish.write_text(
        spanish.read_text(encoding="utf-8").replace("plural=(n != 1)", "plural=(n > 1)"), encoding="utf-8"
    )
    report = check(frontend, tmp_path / "no-python")
    assert "Brand new" in report.missing["de"] and "Brand new" in report.missing["es"]
    assert "Log in" not in report.missing["de"]
    assert "Log out" not in report.unused["de"]
    # Used as a plural, translated as a singular only: missing.
    assert "Log out" in report.missing["de"]
    assert "%(num)s new page" in report.missing["de"] and "%(num)s new page" not in report.missing["en"]
    assert "%(num)s new page" not in report.missing["es"]
    assert any("es: base.po has Plural-Forms" in line for line in report.conflicts), report.conflicts
    assert not any(line.startswith(("de:", "en:")) for line in report.conflicts), report.conflicts
    with (frontend / "locales" / "de" / "base.po").open("rb") as handle:
        assert read_po(handle).get("Log in") is not None
