"""Which messages the UI uses (found in the templates and in backend/web's Python) and how the
catalogs stand against them: missing in a language, or in a catalog but used nowhere.

``python -m backend.web.messages`` prints the report; ``--add AREA`` appends what is missing to
``frontend/locales/<language>/AREA.po`` (English filled in, the other languages left empty to
translate). tests/web/test_catalogs.py fails on any gap.

A plural message (``ngettext``, ``NP_``, ``plural_forms``) counts as translated only where its
catalog entry is a plural one with the same plural id and every form of the language's
``Plural-Forms`` filled in; each area file must carry the language's ``Plural-Forms``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po, write_po

from backend.users.schemas import LANGUAGES
from backend.web.i18n import read_catalog

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None, "gettext": None, "NP_": (1, 2), "plural_forms": (1, 2)}


def used_messages(frontend_dir: Path, python_dir: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every message id the templates and the web package's Python mark, with where each is; and
    the plural id of each plural message (by its singular id)."""
    found: dict[str, list[str]] = {}
    plurals: dict[str, str] = {}

    def collect(folder: Path, method: str, pattern: str) -> None:
        options = {pattern: {"extensions": "jinja2.ext.i18n", "trimmed": "false"}} if method != "python" else {}
        for filename, lineno, message, _comments, _context in extract_from_dir(
            folder, method_map=[(pattern, method)], options_map=options, keywords=KEYWORDS
        ):
            if isinstance(message, tuple):
                singular, plural = message[0], message[1]
                if singular and plural:
                    plurals[singular] = plural
            else:
                singular = message
            if singular:
                found.setdefault(singular, []).append(f"{folder.name}/{filename}:{lineno}")

    collect(frontend_dir / "templates", "jinja2.ext:babel_extract", "**.html")
    collect(python_dir, "python", "**.py")
    return found, plurals


def _translated(message: Message, plural: str | None, forms: int) -> bool:
    """Whether the entry translates the message as used: singular as singular, plural with every form."""
    if message.fuzzy:
        return False
    if plural is None:
        return not message.pluralizable and bool(message.string)
    strings = message.string
    return (
        message.pluralizable
        and message.id[1] == plural
        and isinstance(strings, tuple)
        and len(strings) == forms
        and all(strings)
    )


@dataclass
class Report:
    used: dict[str, list[str]]
    plurals: dict[str, str] = field(default_factory=dict)  # singular id -> plural id
    missing: dict[str, list[str]] = field(default_factory=dict)  # language -> ids without a translation
    unused: dict[str, list[str]] = field(default_factory=dict)  # language -> ids no template or code uses
    conflicts: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (any(self.missing.values()) or any(self.unused.values()) or self.conflicts)

    def lines(self) -> Iterator[str]:
        for language in LANGUAGES:
            for message in self.missing.get(language, []):
                kind = "plural " if message in self.plurals else ""
                yield f"{language}: missing {kind}{message!r} (used at {', '.join(self.used[message][:3])})"
            for message in self.unused.get(language, []):
                yield f"{language}: unused {message!r}"
        yield from self.conflicts


def check(frontend_dir: Path = ROOT / "frontend", python_dir: Path = ROOT / "backend" / "web") -> Report:
    report = Report(*used_messages(frontend_dir, python_dir))
    for language in LANGUAGES:
        catalog, problems = read_catalog(frontend_dir / "locales", language)
        report.conflicts.extend(f"{p.language}: {p.message!r} {p.problem}" for p in problems)
        report.conflicts.extend(_plural_form_headers(frontend_dir / "locales", language))
        forms = get_plural(language).num_plurals
        translated = {_singular(m) for m in catalog if m.id and _translated(m, report.plurals.get(_singular(m)), forms)}
        present = {_singular(m) for m in catalog if m.id}
        report.missing[language] = sorted(set(report.used) - translated)
        report.unused[language] = sorted(present - set(report.used))
    return report


def _singular(message: Message) -> str:
    return str(message.id[0] if message.pluralizable else message.id)


def _plural_form_headers(folder: Path, language: str) -> Iterator[str]:
    """Each area file of the language must say the language's plural rule (a wrong one picks wrong forms)."""
    wanted = get_plural(language)
    expected = f"nplurals={wanted.num_plurals}; plural={wanted.plural_expr};"
    for path in sorted((folder / language).glob("*.po")):
        with path.open("rb") as handle:
            header = dict(read_po(handle, locale=language).mime_headers).get("Plural-Forms")
        if header != expected:
            yield f"{language}: {path.name} has Plural-Forms {header!r}, not {expected!r}"


def add_missing(report: Report, area: str, frontend_dir: Path = ROOT / "frontend") -> None:
    """Append the missing messages to each language's AREA.po (English filled in as itself)."""
    for language in LANGUAGES:
        path = frontend_dir / "locales" / language / f"{area}.po"
        catalog = _load(path, language)
        forms = get_plural(language).num_plurals
        for message in report.missing[language]:
            if message in catalog:
                continue
            plural = report.plurals.get(message)
            if plural is None:
                catalog.add(message, message if language == "en" else "", locations=_locations(report.used[message]))
            else:
                strings = (message, plural) if language == "en" else ("",) * forms
                catalog.add((message, plural), strings, locations=_locations(report.used[message]))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write_po(handle, catalog, width=0, omit_header=False, sort_output=True)


def _load(path: Path, language: str) -> Catalog:
    if not path.exists():
        return Catalog(locale=language, domain="messages", project="Familienarchiv OCR")
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def _locations(places: Iterable[str]) -> list[tuple[str, int]]:
    out = []
    for place in places:
        name, _, line = place.rpartition(":")
        out.append((name, int(line)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--add", metavar="AREA", help="append missing messages to frontend/locales/*/AREA.po")
    args = parser.parse_args(argv)
    report = check()
    if args.add:
        add_missing(report, args.add)
        report = check()
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
