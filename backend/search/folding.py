"""Folding: one spelling for the many ways a word was written, read or typed.

The same function folds the index and the query, so ``Grüße``, ``Gruesse`` and ``Grusse`` are one
word ("grusse"), and so are ``Straße``/``Strasse`` and ``ſein``/``sein``. Each folded word keeps
where it came from in the original text, so highlights point into what people read.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import islice
from typing import NamedTuple

# Longer folded words are cut here (index and query alike): PostgreSQL refuses lexemes over
# 2 KiB, and no real word is this long; what is cut is the same on both sides, so it still matches.
MAX_WORD_LENGTH = 64
# A line's words beyond this are not indexed (a line is a few words; this bounds a pasted novel).
MAX_LINE_WORDS = 500
# What ends a line that breaks a word: hyphens as typed, as Fraktur prints them (⸗, =) and as
# transcription tools write them (¬), and the soft hyphen.
HYPHENS = frozenset("-\u00ad\u2010\u2011\u00ac\u2e17=")
# Letters NFKD leaves alone that old hands and their transcriptions use for plain ones.
_LETTERS = {"ꝛ": "r", "Ꝛ": "r", "ß": "ss", "ẞ": "ss"}
# ä, ö, ü are also written ae, oe, ue: an e after a, o or u is dropped (after ä... too, which fold to a...).
_DIGRAPH_BASES = frozenset("aou")


class Word(NamedTuple):
    """A folded word and the span [start, end) of the original text it was folded from (a tuple:
    made for every word of every hit shown, in less than half the time of a frozen dataclass)."""

    folded: str
    start: int
    end: int


@lru_cache(maxsize=4096)
def fold_char(char: str) -> str:
    """One character folded: compatibility-decomposed, accents dropped, case folded (to a fixpoint)."""
    folded = _LETTERS.get(char, char)
    for _ in range(4):
        step = "".join(
            _LETTERS.get(c, c)
            for c in unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", folded).casefold())
            if not unicodedata.combining(c)
        )
        if step == folded:
            break
        folded = step
    return folded


class _FoldTable(dict[int, str]):
    """``str.translate``'s table: every character folded, worked out once when first met."""

    def __missing__(self, code: int) -> str:
        folded = fold_char(chr(code))
        if len(folded) != 1:
            # Before the table's entry: whoever finds the entry (another thread) finds this too.
            _UNEVEN.add(chr(code))
        self[code] = folded
        return folded


_TABLE = _FoldTable()
# The characters met so far that fold to none or to several (ß, combining marks): a text without
# them folds character for character, so its words' spans are their places in the folded text.
_UNEVEN: set[str] = set()
# Runs of letters and digits (str.isalnum), and the e of an ae/oe/ue spelling.
_ALNUM = re.compile(r"[^\W_]+")
_DIGRAPH = re.compile(r"([aou])e+")


def words(text: str) -> list[Word]:
    """The folded words of ``text`` (at most MAX_LINE_WORDS), each with its span in ``text``.

    Anything that is not a letter or digit once folded splits words; combining marks are dropped
    without splitting (``u`` + U+0308 is ``u``), so a span covers the marks of its last letter.
    An e after a, o or u is dropped (ae/oe/ue are how ä/ö/ü are also written); the span keeps it.
    """
    folded = text.translate(_TABLE)
    matches = list(islice(_ALNUM.finditer(folded), MAX_LINE_WORDS))
    if not matches:
        return []
    # The words have no spaces: the e's of all of them dropped by one substitution.
    spelled = _DIGRAPH.sub(r"\1", " ".join([match.group() for match in matches])).split(" ")
    if _UNEVEN.isdisjoint(text):
        # Every character folded to one: the spans in the folded text are those in ``text``.
        return [
            Word(word[:MAX_WORD_LENGTH], match.start(), match.end())
            for word, match in zip(spelled, matches, strict=True)
        ]
    # Where each folded character came from.
    origin = [index for index, char in enumerate(text) for _ in _TABLE[ord(char)]]
    found = []
    for word, match in zip(spelled, matches, strict=True):
        start, end = origin[match.start()], origin[match.end() - 1] + 1
        # The marks on the last letter, dropped by folding, belong to the word.
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1
        found.append(Word(word[:MAX_WORD_LENGTH], start, end))
    return found


def terms(text: str) -> list[str]:
    """The folded words of ``text`` without their spans (what the index stores; no spans worked out)."""
    found = _ALNUM.findall(text.translate(_TABLE))[:MAX_LINE_WORDS]
    return [(_DIGRAPH.sub(r"\1", word) if "e" in word else word)[:MAX_WORD_LENGTH] for word in found]


def fold(text: str) -> str:
    """``text`` folded: its folded words separated by single spaces (idempotent)."""
    return " ".join(terms(text))


def ends_hyphenated(text: str) -> bool:
    """Does ``text`` end in a word broken by a hyphen (``Weih-``), to be continued on the next line?"""
    stripped = text.rstrip()
    if not stripped or stripped[-1] not in HYPHENS:
        return False
    before = words(stripped[-MAX_WORD_LENGTH - 8 : -1])
    return bool(before) and before[-1].end == len(stripped[-MAX_WORD_LENGTH - 8 : -1])
