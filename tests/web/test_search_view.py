"""The search page's pieces without a browser: highlighting from the hits' offsets, dates as
precise as known, the links of a search's pages."""

from __future__ import annotations

import itertools
from datetime import date
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from backend.documents.models import DatePrecision
from backend.web.search import Filters, document_date, marked_segments, page_numbers

spans = st.lists(st.tuples(st.integers(-5, 60), st.integers(-5, 60)), max_size=6)


@given(st.text(max_size=50), spans)
def test_every_character_is_shown_once_and_exactly_the_spans_are_marked(
    text: str, given_spans: list[tuple[int, int]]
) -> None:
    segments = marked_segments(text, given_spans)
    assert "".join(s.text for s in segments) == text
    inside = {i for start, end in given_spans for i in range(max(start, 0), min(end, len(text)))}
    position, marked = 0, set()
    for segment in segments:
        assert segment.text, "no empty pieces"
        if segment.marked:
            marked |= set(range(position, position + len(segment.text)))
        position += len(segment.text)
    assert marked == inside
    # Neighbours never share a kind: a run of marked text is one <mark>.
    assert all(a.marked != b.marked for a, b in itertools.pairwise(segments))


def test_a_date_is_shown_as_precisely_as_it_is_known() -> None:
    day = date(1923, 3, 5)
    assert document_date(day, DatePrecision.YEAR, "de") == "1923"
    assert document_date(day, DatePrecision.MONTH, "de") == "März 1923"
    assert document_date(day, DatePrecision.DAY, "de") == "5. März 1923"
    assert document_date(day, DatePrecision.DAY, "es") == "5 de marzo de 1923"
    assert document_date(day, DatePrecision.MONTH, "en") == "March 1923"
    assert document_date(None, None, "de") == ""


@given(st.text(max_size=30), st.sampled_from(["", "anna-roth"]), st.integers(1, 50))
def test_a_page_link_keeps_the_words_and_filters_and_nothing_else(q: str, writer: str, number: int) -> None:
    filters = Filters(q=q, writer=writer, date_from="1920-01-01", status="DONE", page="7")
    link = urlsplit(filters.link(number))
    assert link.path == "/search"
    expected = {"dateFrom": ["1920-01-01"], "status": ["DONE"]}
    if q:
        expected["q"] = [q]
    if writer:
        expected["writer"] = [writer]
    if number > 1:
        expected["page"] = [str(number)]
    assert parse_qs(link.query, keep_blank_values=True) == expected
    unfiltered = urlsplit(filters.unfiltered_link)
    assert parse_qs(unfiltered.query, keep_blank_values=True) == ({"q": [q]} if q else {})


def test_the_pager_offers_the_ends_and_the_neighbourhood() -> None:
    assert list(page_numbers(1, 1)) == [1]
    assert list(page_numbers(1, 9)) == [1, 2, 3, 9]
    assert list(page_numbers(5, 9)) == [1, 3, 4, 5, 6, 7, 9]
    assert list(page_numbers(9, 9)) == [1, 7, 8, 9]
