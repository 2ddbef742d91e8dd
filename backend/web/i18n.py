"""The web UI's languages: message catalogs (gettext .po, compiled when the backend starts) and
which language a request gets.

The catalogs live in ``frontend/locales/<language>/<area>.po``, one file per part of the UI, so
the pages' authors never edit one file at once; they are merged into one catalog per language.
A message may appear in several areas only with the same translation (tests/web/test_catalogs.py).
The message ids are the English texts, so English needs no lookup, but en/*.po lists them too:
every message is present in all three languages, and a test checks it.

A message that shows a count is a plural message (``msgid_plural``, ``msgstr[n]``, chosen by each
catalog's ``Plural-Forms``): ``ngettext`` in templates and Python, ``NP_`` where it is defined
apart from where it is shown, and ``plural_forms`` for the pages' scripts, which choose the form
themselves with ``Intl.PluralRules`` (see ``t`` in frontend/static/js/api.js).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from babel import Locale
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from backend.users.schemas import LANGUAGES

log = logging.getLogger(__name__)

DEFAULT_LANGUAGE = LANGUAGES[0]
# Before anyone logs in (the login page), the choice is kept in this cookie.
LANGUAGE_COOKIE = "archiv_lang"
# Each language's own name, as its speakers write it, for the switch.
LANGUAGE_NAMES: Mapping[str, str] = {"de": "Deutsch", "en": "English", "es": "Español"}


def N_(message: str) -> str:  # noqa: N802 (gettext's conventional marker name)
    """Marks a message for the catalogs where it is defined; it is translated where it is shown."""
    return message


def NP_(singular: str, plural: str) -> tuple[str, str]:  # noqa: N802 (as N_)
    """Marks a plural message where it is defined; ``Catalogs.ngettext`` chooses its form where shown."""
    return singular, plural


# Counts that fall into each CLDR plural category of the languages here ("many" in Spanish is
# 1000000, 2000000, ...): enough to find one number of every category a language has.
_SAMPLE_COUNTS = (*range(0, 200), 1000, 1_000_000)


@dataclass(frozen=True)
class CatalogProblem:
    language: str
    message: str
    problem: str


def read_catalog(folder: Path, language: str) -> tuple[Catalog, list[CatalogProblem]]:
    """All area catalogs of one language merged into one; the problems found on the way."""
    merged = Catalog(locale=language, domain="messages")
    problems: list[CatalogProblem] = []
    for path in sorted((folder / language).glob("*.po")):
        with path.open("rb") as handle:
            area = read_po(handle, locale=language)
        for message in area:
            if not message.id:
                continue  # the header
            earlier = merged.get(message.id, message.context)
            if earlier is not None and earlier.string != message.string:
                problems.append(CatalogProblem(language, str(message.id), f"translated differently in {path.name}"))
                continue
            merged[message.id] = message
    return merged, problems


def compile_catalog(catalog: Catalog) -> Translations:
    """The merged catalog as gettext translations, compiled in memory (no .mo file to go stale)."""
    buffer = io.BytesIO()
    # Fuzzy entries would be dropped silently by gettext: they count as untranslated (the test says so).
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(buffer, domain="messages")


class Catalogs:
    """The compiled translations of every language, loaded once per process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._translations: dict[str, Translations] = {}
        for language in LANGUAGES:
            catalog, problems = read_catalog(folder, language)
            for problem in problems:
                log.warning("message catalog %s: %r %s", problem.language, problem.message, problem.problem)
            self._translations[language] = compile_catalog(catalog)

    def translations(self, language: str) -> Translations:
        return self._translations.get(language, self._translations[DEFAULT_LANGUAGE])

    def gettext(self, language: str, message: str) -> str:
        return self.translations(language).gettext(message)

    def ngettext(self, language: str, singular: str, plural: str, count: int) -> str:
        return self.translations(language).ngettext(singular, plural, count)

    def plural_forms(self, language: str, singular: str, plural: str) -> dict[str, str]:
        """The message's text for each CLDR plural category of the language ("one", "other", ...),
        for a script that picks one with ``Intl.PluralRules`` (it cannot run gettext's rule: CSP
        allows no eval). Each category's text is gettext's own choice for a number of it."""
        rule = Locale.parse(language).plural_form
        forms: dict[str, str] = {}
        for count in _SAMPLE_COUNTS:
            forms.setdefault(rule(count), self.ngettext(language, singular, plural, count))
        return forms


def choose_language(user_choice: str | None, cookie: str | None) -> str:
    """The user's own choice, else the login page's cookie, else German: the archive's default is
    not the browser's language, so a shared tablet set to English still opens in German."""
    for candidate in (user_choice, cookie):
        if candidate in LANGUAGES:
            return candidate
    return DEFAULT_LANGUAGE
