"""Folding: one spelling for the many ways a word was written, read or typed.

The same function folds the index and the query, so ``Grüße``, ``Gruesse`` and ``Grusse`` are one
word ("grusse"), and so are ``Straße``/``Strasse`` and ``ſein``/``sein``. Each folded word keeps
where it came from in the original text, so highlights point into what people read.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache

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


@dataclass(frozen=True)
class Word:
    """A folded word and the span [start, end) of the original text it was folded from."""

    folded: str
    start: int
    end: int


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
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


def words(text: str) -> list[Word]:
    """The folded words of ``text`` (at most MAX_LINE_WORDS), each with its span in ``text``.

    Anything that is not a letter or digit once folded splits words; combining marks are dropped
    without splitting (``u`` + U+0308 is ``u``), so a span covers the marks of its last letter.
    """
    found: list[Word] = []
    chars: list[str] = []
    start = end = 0

    def close() -> None:
        if chars:
            found.append(Word("".join(chars)[:MAX_WORD_LENGTH], start, end))
            chars.clear()

    for index, char in enumerate(text):
        folded = _fold_char(char)
        if not folded:
            if chars and unicodedata.combining(char):
                end = index + 1
            continue
        for part in folded:
            if not part.isalnum():
                close()
                if len(found) >= MAX_LINE_WORDS:
                    return found
                continue
            if not chars:
                start = index
            end = index + 1
            if part == "e" and chars and chars[-1] in _DIGRAPH_BASES:
                continue
            chars.append(part)
    close()
    return found[:MAX_LINE_WORDS]


def terms(text: str) -> list[str]:
    """The folded words of ``text`` without their spans."""
    return [word.folded for word in words(text)]


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
