"""A search query: parsed, its words widened to their near spellings, matched against lines.

The database finds candidate lines by the index (indexed lookups only, a bounded number); this
module then decides each candidate in Python by the same rules for both databases: phrases,
exclusions, words and phrases broken across lines, exact or near matches, and where to highlight.
User text reaches the engines only as folded words (letters and digits), and quoted even so.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.errors import AppError, ErrorCode
from backend.search.folding import Word, words
from backend.search.index import deletions, fuzzy_candidate
from backend.search.models import SearchVariant

MAX_QUERY_LENGTH = 200
MAX_QUERY_TERMS = 10
# A word ending in * stands for every word that begins so (``Weihn*``); a shorter beginning would
# stand for a good part of the archive's words.
PREFIX_MARK = "*"
MIN_PREFIX_LENGTH = 3
# Beginnings in one search: SQLite's FTS5 merges the lists of every word a beginning stands for
# (``ein*`` on 1 000 000 lines: about 28 ms), so ten of them would hold a search for a second.
MAX_PREFIXES = 3
# Near spellings a query word is widened to, closest first.
MAX_VARIANTS = 12
# A quoted phrase (closing quote implied at the end), or a run of anything but space and quotes.
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(-?)([^\s"]+)')


@dataclass(frozen=True)
class Phrase:
    """Words that must follow each other (one word: a phrase of one); a word ending in
    PREFIX_MARK is a beginning (folded words are letters and digits only, so none else ends so)."""

    words: tuple[str, ...]


def is_prefix(word: str) -> bool:
    """Does ``word`` (a query's) stand for every word that begins with ``word[:-1]``?"""
    return word.endswith(PREFIX_MARK)


def _query_words(text: str) -> list[str]:
    """The folded words of a query's token, a word followed by a * marked as a beginning."""
    found = []
    for word in words(text):
        if text[word.end : word.end + 1] == PREFIX_MARK:
            if len(word.folded) < MIN_PREFIX_LENGTH:
                raise _invalid(
                    f"Give at least {MIN_PREFIX_LENGTH} letters before the {PREFIX_MARK}"
                    f" (“{text[word.start : word.end + 1]}”)."
                )
            found.append(word.folded + PREFIX_MARK)
        else:
            found.append(word.folded)
    return found


@dataclass
class Query:
    text: str
    include: list[Phrase]
    exclude: list[Phrase]
    # Each positive word's accepted spellings besides itself (filled by ``widen``).
    variants: dict[str, set[str]] = field(default_factory=dict)

    def spellings(self, word: str) -> set[str]:
        return {word} | self.variants.get(word, set())


def _invalid(message: str) -> AppError:
    return AppError(ErrorCode.SEARCH_QUERY_INVALID, message)


def parse(text: str) -> Query:
    """``text`` as a query: words, "quoted phrases", -excluded words and -"phrases"; a word
    followed by ``*`` (``Weihn*``, also in a phrase or an exclusion) stands for every word that begins so.

    A word that folds to several (``Weih-nachten``, ``d'Arc``) is a phrase of them. Refused
    (422 SEARCH_QUERY_INVALID): nothing to search for, over 200 characters or 10 words, only
    exclusions, fewer than MIN_PREFIX_LENGTH letters before a ``*``, more than MAX_PREFIXES ``*``.
    """
    if len(text) > MAX_QUERY_LENGTH:
        raise _invalid(f"The search is too long; use at most {MAX_QUERY_LENGTH} characters.")
    include: list[Phrase] = []
    exclude: list[Phrase] = []
    for match in _TOKEN.finditer(text):
        negated = bool(match.group(1) or match.group(3))
        folded = _query_words(match.group(2) if match.group(2) is not None else match.group(4))
        if folded:
            (exclude if negated else include).append(Phrase(tuple(folded)))
    count = sum(len(p.words) for p in [*include, *exclude])
    if count == 0:
        raise _invalid("Type a word to search for.")
    if count > MAX_QUERY_TERMS:
        raise _invalid(f"The search has too many words; use at most {MAX_QUERY_TERMS}.")
    if not include:
        raise _invalid("Say what to look for, not only what to leave out.")
    if sum(is_prefix(word) for phrase in [*include, *exclude] for word in phrase.words) > MAX_PREFIXES:
        raise _invalid(f"Use at most {MAX_PREFIXES} words ending in {PREFIX_MARK} in one search.")
    return Query(text, include, exclude)


def max_distance(word: str) -> int:
    return 2 if len(word) >= 8 else 1


# Made once, and run on the session's connection: a new statement each search, and the ORM's
# execution of it, cost more than the lookup.
_NEAR_WORDS = select(SearchVariant.word).where(SearchVariant.variant.in_(bindparam("keys", expanding=True)))


def widen(session: Session, query: Query) -> None:
    """Find each positive word's near spellings in the vocabulary (within max_distance edits)."""
    for word in {w for p in query.include for w in p.words}:
        if not fuzzy_candidate(word):
            continue
        keys = {word} | deletions(word)
        if max_distance(word) >= 2:
            keys |= {d2 for d1 in deletions(word) for d2 in deletions(d1)}
        found = set(session.connection().execute(_NEAR_WORDS, {"keys": sorted(keys)}).scalars())
        limit = max_distance(word)
        near = sorted(
            (distance, other)
            for other in found - {word}
            if (distance := Levenshtein.distance(word, other, score_cutoff=limit)) <= limit
        )
        query.variants[word] = {other for _, other in near[:MAX_VARIANTS]}


@dataclass(frozen=True)
class Verdict:
    exact: bool
    # Runs of the line's own words to highlight: (first, last) indexes, a phrase's words as one run.
    marked: frozenset[tuple[int, int]]


_NO_VARIANTS: frozenset[str] = frozenset()


def _occurrences(sequence: Sequence[str], starts: int, phrase: Phrase, query: Query) -> list[tuple[int, bool]]:
    """Where ``phrase`` starts in ``sequence`` (before index ``starts``), and whether exactly there."""
    found: list[tuple[int, bool]] = []
    words = phrase.words
    first, first_near = words[0], query.variants.get(words[0], _NO_VARIANTS)
    # A beginning (``weihn*``) matches every word that starts with it, exactly; no word equals it.
    first_begins = first[:-1] if is_prefix(first) else None
    # The first word picks the starts (most positions fail there); the rest are checked after.
    for start in range(min(starts, len(sequence) - len(words) + 1)):
        seen = sequence[start]
        if seen == first or (first_begins is not None and seen.startswith(first_begins)):
            exact = True
        elif seen in first_near:
            exact = False
        else:
            continue
        offset = start
        for word in words[1:]:
            offset += 1
            seen = sequence[offset]
            if seen == word or (is_prefix(word) and seen.startswith(word[:-1])):
                continue
            if seen not in query.variants.get(word, _NO_VARIANTS):
                break
            exact = False
        else:
            found.append((start, exact))
    return found


def judge(query: Query, own: Sequence[str], joined: str, bridge: Sequence[str]) -> Verdict | None:
    """Is a line with these words (see SearchLine) a hit for ``query``? None: no.

    Every phrase must start among the line's own words: in them as written, or with the line's
    last word joined to the next line's first where a hyphen broke it. None of the excluded
    phrases may occur among the line's own words.
    """
    size = len(own)
    readings = [[*own, *bridge]]
    if joined:
        readings.append([*own[:-1], joined, *bridge[1:]])
    for phrase in query.exclude:
        for reading in readings:
            # No near spellings: every occurrence is exact.
            if _occurrences(reading[:size], size, phrase, _EXACT):
                return None
    exact_all = True
    marked: set[tuple[int, int]] = set()
    # Called for hundreds of lines a search: one pass over each phrase's occurrences, no lists between.
    for phrase in query.include:
        last = len(phrase.words) - 1
        found = exact_found = False
        for reading in readings:
            for start, exact in _occurrences(reading, size, phrase, query):
                found = True
                exact_found = exact_found or exact
                marked.add((start, min(start + last, size - 1)))
        if not found:
            return None
        exact_all = exact_all and exact_found
    return Verdict(exact_all, frozenset(marked))


# Exclusions match as written (folded), never by near spellings.
_EXACT = Query("", [], [])


def highlights(text: str, query: Query, joined: str, bridge: Sequence[str]) -> tuple[list[tuple[int, int]], bool]:
    """Spans [start, end) of ``text`` (a line's current text) to highlight, merged, and whether
    the line matches exactly; computed afresh from the text so they point into what is shown."""
    found: list[Word] = words(text)
    verdict = judge(query, [w.folded for w in found], joined, bridge)
    if verdict is None:
        return [], False
    spans: list[tuple[int, int]] = []
    for start, end in sorted((found[first].start, found[last].end) for first, last in verdict.marked):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans, verdict.exact
