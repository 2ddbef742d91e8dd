"""backend.imports.transkribus: Transkribus' document metadata read as hints, over generated values
(the API tests in test_imports.py take it through a whole import)."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from backend.documents.models import DatePrecision
from backend.imports.transkribus import TITLE_LENGTH, WRITER_LENGTH, embedded, read_facts
from tests.backend.transcript_files import transkribus_metadata, transkribus_midnight_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Zones people date documents in: a day is kept as its midnight there.
_OFFSETS = st.integers(-11, 11)
_DAYS = st.dates(date(1, 1, 2), date(9999, 12, 30)).filter(lambda d: d != _EPOCH.date())


def _facts(**fields: object) -> tuple[date | None, DatePrecision | None]:
    facts = read_facts(etree.fromstring(transkribus_metadata(**fields)))
    return facts.date, facts.date_precision


@given(_DAYS, _OFFSETS, st.sampled_from([None, 0, 1]))
def test_a_day_kept_as_its_midnight_in_any_zone_is_that_day(day: date, offset: int, end: int | None) -> None:
    fields: dict[str, object] = {"createdFromTimestamp": transkribus_midnight_ms(day, offset)}
    if end is not None:  # the same midnight, or the next one
        fields["createdToTimestamp"] = transkribus_midnight_ms(day + timedelta(days=end), offset)
    assert _facts(**fields) == (day, DatePrecision.DAY)


# From year 2: year 1's first midnight east of UTC is before the first day a timestamp can name.
@given(st.integers(2, 9998), st.integers(1, 12), _OFFSETS, st.booleans())
def test_a_whole_month_or_year_is_kept_as_such(year: int, month: int, offset: int, next_midnight: bool) -> None:
    month_end = date(year, month, calendar.monthrange(year, month)[1])
    for first, last, precision in [
        (date(year, month, 1), month_end, DatePrecision.MONTH),
        (date(year, 1, 1), date(year, 12, 31), DatePrecision.YEAR),
    ]:
        end = transkribus_midnight_ms(last + timedelta(days=next_midnight), offset)
        facts = _facts(createdFromTimestamp=transkribus_midnight_ms(first, offset), createdToTimestamp=end)
        assert facts == (first, precision)


@given(_DAYS, st.integers(2, 400), _OFFSETS)
def test_another_span_is_no_date(day: date, days: int, offset: int) -> None:
    last = day + timedelta(days=days)
    whole_month = day.day == 1 and last in (
        date(day.year, day.month, calendar.monthrange(day.year, day.month)[1]),
        date(day.year, day.month, calendar.monthrange(day.year, day.month)[1]) + timedelta(days=1),
    )
    whole_year = (day.month, day.day) == (1, 1) and last in (date(day.year, 12, 31), date(day.year + 1, 1, 1))
    if last.year <= 9999 and not whole_month and not whole_year:
        assert _facts(
            createdFromTimestamp=transkribus_midnight_ms(day, offset),
            createdToTimestamp=transkribus_midnight_ms(last, offset),
        ) == (None, None)


_ANY = st.one_of(st.integers(-(10**18), 10**18).map(str), st.text(max_size=30), st.just("0"), st.just(""))


@given(_ANY, _ANY, st.text(max_size=700), st.text(max_size=300), st.text(max_size=300))
def test_whatever_the_fields_hold_the_facts_are_hints_never_an_error(
    start: str, end: str, title: str, writer: str, author: str
) -> None:
    # Only what XML can carry (the import's parser refuses the rest before this is read).
    def xml_text(raw: str) -> str:
        return "".join(c for c in raw if c in "\t\n\r" or (" " <= c <= "\ud7ff") or ("\ue000" <= c <= "\ufffd"))

    facts = read_facts(
        etree.fromstring(
            transkribus_metadata(
                title=xml_text(title),
                writer=xml_text(writer),
                author=xml_text(author),
                createdFromTimestamp=xml_text(start),
                createdToTimestamp=xml_text(end),
            )
        )
    )
    assert facts.title is None or (0 < len(facts.title) <= TITLE_LENGTH and facts.title == facts.title.strip())
    assert facts.writer is None or 0 < len(facts.writer) <= WRITER_LENGTH
    assert (facts.date is None) == (facts.date_precision is None)
    assert facts.date != _EPOCH.date()


def test_the_metadata_is_found_in_a_mets_file_in_any_namespace_and_depth() -> None:
    for wrapped in (
        b'<mets xmlns="http://www.loc.gov/METS/"><dmdSec><mdWrap><xmlData><trpDocMetadata><title>A</title>'
        b"</trpDocMetadata></xmlData></mdWrap></dmdSec></mets>",
        b'<m:mets xmlns:m="http://www.loc.gov/METS/"><m:dmdSec><x><TrpDocMetadata><title>A</title>'
        b"</TrpDocMetadata></x></m:dmdSec></m:mets>",
    ):
        found = embedded(etree.fromstring(wrapped))
        assert found is not None and read_facts(found).title == "A"
    assert embedded(etree.fromstring(b'<mets xmlns="http://www.loc.gov/METS/"><!-- c --></mets>')) is None
