"""A Transkribus document's own metadata: its title, writer and date, as an export carries them.

Transkribus writes the document's metadata (``trpDocMetadata``, the fields of its document
dialog) as ``metadata.xml`` beside ``mets.xml``, and inside ``mets.xml`` too (a ``dmdSec``'s
``xmlData``). Read: ``title``; ``writer`` (the hand), else ``author``; the date from
``createdFromTimestamp``/``createdToTimestamp`` (milliseconds since 1970, the document's
"created from"/"to" days). A hint only, never refused: what is missing or not understood is left
out, and the import goes on with the next source of each fact.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from lxml import etree

from backend.documents.models import TITLE_LENGTH, DatePrecision
from backend.transcripts.reading import one_line

# The root element's names (JAXB writes the class name with a small first letter; some tools do not).
ROOTS = frozenset({"trpDocMetadata", "TrpDocMetadata"})
# A writer's name's characters (as PAGE's and ALTO's readers take it).
WRITER_LENGTH = 200
_MILLISECONDS = re.compile(r"-?\d{1,15}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Transkribus keeps a day as its midnight in the user's zone (in Central Europe 22:00 or 23:00 UTC
# the day before): the day is the one whose UTC midnight is nearest.
_HALF_DAY = timedelta(hours=12)


@dataclass(frozen=True)
class DocumentFacts:
    title: str | None = None
    writer: str | None = None
    date: date | None = None
    date_precision: DatePrecision | None = None

    def or_else(self, other: DocumentFacts) -> DocumentFacts:
        """Each fact from these, else from ``other`` (metadata.xml, else its copy in mets.xml)."""
        dated = self if self.date is not None else other
        return DocumentFacts(self.title or other.title, self.writer or other.writer, dated.date, dated.date_precision)


def is_trp_metadata(root: etree._Element) -> bool:
    return etree.QName(root).localname in ROOTS


def embedded(root: etree._Element) -> etree._Element | None:
    """The ``trpDocMetadata`` element in a METS file (any namespace, any depth), if any."""
    return next((e for e in root.iter(etree.Element) if etree.QName(e).localname in ROOTS), None)


def _child_text(element: etree._Element, name: str) -> str | None:
    found = next((c for c in element if isinstance(c.tag, str) and etree.QName(c).localname == name), None)
    return found.text if found is not None else None


def _day(raw: str | None) -> date | None:
    """The day a Transkribus timestamp names; None where it is no number, no day there is, or
    1970-01-01: Transkribus writes 0 (and tools a few hours past it) for a document never dated."""
    if raw is None or not _MILLISECONDS.fullmatch(raw.strip()):
        return None
    try:
        day = (_EPOCH + timedelta(milliseconds=int(raw.strip())) + _HALF_DAY).date()
    except OverflowError:  # before year 1 or after 9999
        return None
    return None if day == _EPOCH.date() else day


def _span(first: date | None, last: date | None) -> tuple[date | None, DatePrecision | None]:
    """A day, or the first day of a whole month or year, as the archive keeps dates; a range of
    other days cannot be kept and is left to the person. A span ends on its last day or on the
    first day after it (an end given as the next midnight)."""
    if first is None:
        return None, None
    if last is None or last == first:
        return first, DatePrecision.DAY
    try:
        if last == first + timedelta(days=1):
            return first, DatePrecision.DAY
        month_end = date(first.year, first.month, calendar.monthrange(first.year, first.month)[1])
        if first.day == 1 and last in (month_end, month_end + timedelta(days=1)):
            return first, DatePrecision.MONTH
        if (first.month, first.day) == (1, 1) and last in (date(first.year, 12, 31), date(first.year + 1, 1, 1)):
            return first, DatePrecision.YEAR
    except (OverflowError, ValueError):  # the day after 9999-12-31 does not exist
        pass
    return None, None


def read_facts(element: etree._Element) -> DocumentFacts:
    """The title, writer and date of a ``trpDocMetadata`` element."""
    first = _day(_child_text(element, "createdFromTimestamp"))
    last = _day(_child_text(element, "createdToTimestamp"))
    day, precision = _span(first, last)
    writer = one_line(_child_text(element, "writer"), WRITER_LENGTH) or one_line(
        _child_text(element, "author"), WRITER_LENGTH
    )
    return DocumentFacts(one_line(_child_text(element, "title"), TITLE_LENGTH), writer, day, precision)
