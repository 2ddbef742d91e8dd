"""Folding and the query's rules, without a database: one spelling for many, spans into the original."""

from __future__ import annotations

import unicodedata
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import AppError
from backend.search.folding import (
    MAX_LINE_WORDS,
    MAX_WORD_LENGTH,
    Word,
    ends_hyphenated,
    fold,
    fold_char,
    terms,
    words,
)
from backend.search.query import Phrase, Query, Verdict, highlights, judge, parse

# Letters of old German hands and their transcriptions, combining marks, and other scripts.
_ALPHABET = st.sampled_from(
    [*"aAeEoOuUsSrRäöüÄÖÜßẞſꝛꝚ -¬⸗=.,;'\"", "\u0308", "\u0301", "\u0327", "ﬁ", "İ", "½", "אב", "١", "\t"]
)
_TEXT = st.lists(st.one_of(_ALPHABET, st.characters()), max_size=60).map("".join)


@pytest.mark.parametrize(
    ("spellings", "folded"),
    [
        (["Grüße", "Gruesse", "Grusse", "GRÜSSE", "grüsse", "Gru\u0308ße"], "grusse"),
        (["Straße", "Strasse", "STRASSE", "Straſſe"], "strasse"),
        (["Mädchen", "Maedchen", "Madchen", "Ma\u0308dchen"], "madchen"),
        (["Köln", "Koeln", "Koln"], "koln"),
        (["ſein", "sein", "Sein"], "sein"),
        (["hieꝛ", "hier", "HIER"], "hier"),
        (["café", "Cafe", "CAFÉ"], "cafe"),
    ],
)
def test_the_spellings_of_a_word_fold_to_one(spellings: list[str], folded: str) -> None:
    assert {fold(spelling) for spelling in spellings} == {folded}


def test_punctuation_splits_words_and_combining_marks_do_not() -> None:
    assert terms("Liebe Mutter, (dein) Sohn's Brief—heute!") == [
        "liebe",
        "mutter",
        "dein",
        "sohn",
        "s",
        "brief",
        "heute",
    ]
    assert terms("Mu\u0308ller") == ["muller"]


def test_spans_point_into_the_original_text() -> None:
    text = "Gruesse, Grüße und Gru\u0308ße"
    assert [(w.folded, text[w.start : w.end]) for w in words(text)] == [
        ("grusse", "Gruesse"),
        ("grusse", "Grüße"),
        ("und", "und"),
        ("grusse", "Gru\u0308ße"),
    ]


def test_long_words_and_long_lines_are_bounded_the_same_for_index_and_query() -> None:
    word = "x" * (MAX_WORD_LENGTH * 3)
    assert terms(word) == ["x" * MAX_WORD_LENGTH]
    assert len(terms("a " * (MAX_LINE_WORDS * 2))) == MAX_LINE_WORDS


@pytest.mark.parametrize(
    ("text", "hyphenated"),
    [("der Weih-", True), ("der Weih¬ ", True), ("der Weih⸗", True), ("der Weih=", True), ("Grü-", True)],
)
def test_a_word_broken_at_the_end_of_a_line_is_recognised(text: str, hyphenated: bool) -> None:
    assert ends_hyphenated(text) is hyphenated


@pytest.mark.parametrize("text", ["a -", "Ende.", "---", "", "Mutter - ", "1914 -"])
def test_a_dash_after_a_space_or_no_word_is_no_broken_word(text: str) -> None:
    assert ends_hyphenated(text) is False


def _words_by_definition(text: str) -> list[Word]:
    """:func:`words` as defined, one character at a time (the module's is the fast equivalent)."""
    found: list[Word] = []
    chars: list[str] = []
    start = end = 0
    for index, char in enumerate(text):
        folded = fold_char(char)
        if not folded and chars and unicodedata.combining(char):
            end = index + 1
        for part in folded:
            if not part.isalnum():
                if chars:
                    found.append(Word("".join(chars)[:MAX_WORD_LENGTH], start, end))
                    chars.clear()
                continue
            if not chars:
                start = index
            end = index + 1
            if not (part == "e" and chars and chars[-1] in "aou"):
                chars.append(part)
    if chars:
        found.append(Word("".join(chars)[:MAX_WORD_LENGTH], start, end))
    return found[:MAX_LINE_WORDS]


@settings(max_examples=1000)
@given(_TEXT)
def test_words_are_found_as_defined_character_by_character(text: str) -> None:
    assert words(text) == _words_by_definition(text)


@given(_TEXT)
def test_terms_are_the_words_without_their_spans(text: str) -> None:
    assert terms(text) == [word.folded for word in words(text)]


@given(_TEXT)
def test_fold_is_idempotent(text: str) -> None:
    assert fold(fold(text)) == fold(text)


@given(_TEXT)
def test_every_word_span_lies_inside_the_text_in_order_and_folds_to_its_word(text: str) -> None:
    found = words(text)
    # In order; two words share a character only where it folds to several (½ is 1⁄2).
    assert [w.start for w in found] == sorted(w.start for w in found)
    assert [w.end for w in found] == sorted(w.end for w in found)
    for word in found:
        assert 0 <= word.start < word.end <= len(text)
        assert word.folded and word.folded.isalnum() and " " not in word.folded
        assert word.folded in terms(text[word.start : word.end])
        # A span never begins with a combining mark: it begins at a letter or digit.
        assert not unicodedata.combining(text[word.start])


@given(_TEXT, st.data())
def test_highlights_stay_inside_the_text_and_cover_the_searched_word(text: str, data: st.DataObject) -> None:
    found = words(text)
    if not found:
        return
    word = data.draw(st.sampled_from(found)).folded
    query = Query(word, [Phrase((word,))], [])
    spans, exact = highlights(text, query, "", [])
    assert exact and spans
    assert all(0 <= start < end <= len(text) for start, end in spans)
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(spans))
    assert any(word in terms(text[start:end]) for start, end in spans)


def _query(text: str, **variants: set[str]) -> Query:
    query = parse(text)
    query.variants.update(variants)
    return query


def test_a_phrase_must_start_in_the_line_and_may_end_on_the_next() -> None:
    query = _query('"liebe Mutter"')
    assert judge(query, ["meine", "liebe"], "", ["mutter", "ich"]) is not None
    assert judge(query, ["mutter", "liebe"], "", ["ich"]) is None
    # Only on the next line: never this one's hit.
    assert judge(query, ["gruss"], "", ["liebe", "mutter"]) is None


def test_a_hyphenated_word_is_found_on_the_line_where_it_starts() -> None:
    query = _query("Weihnachten")
    verdict = judge(query, ["frohe", "weih"], "weihnachten", ["nachten", "euch"])
    assert verdict is not None and verdict.marked == {(1, 1)}
    assert judge(query, ["nachten", "euch"], "", []) is None


def test_an_excluded_word_rules_out_the_line_but_not_by_a_near_spelling() -> None:
    query = _query("Mutter -Krieg", mutter={"muter"})
    assert judge(query, ["mutter", "krieg"], "", []) is None
    assert judge(query, ["mutter", "kriege"], "", []) is not None
    assert judge(query, ["mutter"], "", ["krieg"]) is not None


def test_a_near_spelling_matches_but_not_exactly() -> None:
    query = _query("Weihnachten", weihnachten={"weihnahten"})
    verdict = judge(query, ["weihnahten"], "", [])
    assert verdict is not None and not verdict.exact
    exact = judge(query, ["weihnachten"], "", [])
    assert exact is not None and exact.exact


def _judge_by_definition(query: Query, own: list[str], joined: str, bridge: list[str]) -> Verdict | None:
    """:func:`judge` as its docstring defines it, every start and every phrase tried (the module's is the fast one)."""
    size = len(own)
    readings = [own + bridge] + ([[*own[:-1], joined, *bridge[1:]]] if joined else [])

    def at(reading: list[str], start: int, phrase: Phrase, near: bool) -> bool | None:
        """``phrase`` at ``start`` of ``reading``: exactly (True), by near spellings (False), not at all (None)."""
        seen = reading[start : start + len(phrase.words)]
        if len(seen) < len(phrase.words):
            return None
        spellings = [query.spellings(word) if near else {word} for word in phrase.words]
        if not all(word in accepted for word, accepted in zip(seen, spellings, strict=True)):
            return None
        return list(seen) == list(phrase.words)

    for phrase in query.exclude:
        if any(at(reading[:size], start, phrase, near=False) for reading in readings for start in range(size)):
            return None
    exact_all = True
    marked: set[tuple[int, int]] = set()
    for phrase in query.include:
        hits = [
            (start, exact)
            for reading in readings
            for start in range(size)
            if (exact := at(reading, start, phrase, near=True)) is not None
        ]
        if not hits:
            return None
        exact_all = exact_all and any(exact for _, exact in hits)
        marked.update((start, min(start + len(phrase.words), size) - 1) for start, _ in hits)
    return Verdict(exact_all, frozenset(marked))


# Three words, each with a near spelling, so that lines and queries drawn from them often meet.
_VOCABULARY = ["liebe", "mutter", "tag"]
_NEAR = {word: {word + "x"} for word in _VOCABULARY}
_LINE_WORDS = st.lists(st.sampled_from([*_VOCABULARY, *(word + "x" for word in _VOCABULARY)]), max_size=8)
_PHRASE = st.lists(st.sampled_from(_VOCABULARY), min_size=1, max_size=3).map(lambda words: Phrase(tuple(words)))


@settings(max_examples=1000)
@given(
    st.lists(_PHRASE, min_size=1, max_size=2),
    st.lists(_PHRASE, max_size=2),
    _LINE_WORDS,
    st.sampled_from(["", "tagx", "liebe"]),
    _LINE_WORDS,
)
def test_a_line_is_judged_as_defined(
    include: list[Phrase], exclude: list[Phrase], own: list[str], joined: str, bridge: list[str]
) -> None:
    query = Query("", include, exclude, {word: _NEAR[word] for phrase in include for word in phrase.words})
    assert judge(query, own, joined, bridge) == _judge_by_definition(query, own, joined, bridge)


def test_highlights_cover_the_words_of_a_phrase_as_one_span() -> None:
    text = "Meine liebe  Mutter, Grüße"
    spans, exact = highlights(text, _query('"liebe Mutter" Gruesse'), "", [])
    assert exact
    assert [text[start:end] for start, end in spans] == ["liebe  Mutter", "Grüße"]


@pytest.mark.parametrize(
    "text",
    ["", "   ", "-Krieg", '-"liebe Mutter"', "...", "x" * 201, " ".join(["wort"] * 11), '"', "- - -"],
)
def test_queries_with_nothing_to_find_or_too_much_are_refused(text: str) -> None:
    with pytest.raises(AppError) as refused:
        parse(text)
    assert refused.value.code.value == "SEARCH_QUERY_INVALID"


def test_an_unbalanced_quote_closes_at_the_end() -> None:
    query = parse('Brief "liebe Mutter')
    assert query.include == [Phrase(("brief",)), Phrase(("liebe", "mutter"))]
    assert parse("Weih-nachten").include == [Phrase(("weih", "nachten"))]
