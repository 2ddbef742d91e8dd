"""PostgreSQL: which searches read their lines from the sample index first (migration 0009).

A GIN index answers a word with the sorted bitmap of every line that holds it before the first row
is read, however few rows the search takes (``APP_SEARCH_CANDIDATE_LINES``). The sample indexes
hold every sixteenth and every fourth line only: for a word on tens of thousands of lines the
sparser one's bitmap is a sixteenth as long and still holds more lines than the cap. How many lines
a query has is judged from the planner's own statistics of ``search_lines.tsv`` (the most common
lexemes and the share of rows holding each, refreshed by ANALYZE), read once every few minutes a
process. A guess that is wrong costs time, never lines: where a sample holds fewer lines than the
cap, the whole index is read.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Connection, text

from backend.search.query import is_prefix

# The samples, sparsest first: the lines whose key is a multiple of each (the partial indexes'
# predicates, migration 0009).
SAMPLES = (16, 4)


def predicate(every: int) -> str:
    """A sample's lines, as its index's predicate has them (a literal: a bound value would not prove it)."""
    return f"(search_lines.line_id % {every}) = 0"


# A sample must be expected to hold this many times the cap (the statistics are an estimate from
# a sample of the rows; a guess too high costs a read of the sample in vain).
MARGIN = 3.0
# Above this share of the lines a sample's bitmap is no longer small (`wir`, on 39 % of the lines:
# 10 ms), while the planner's own plan — the documents one by one, each one's lines, until the
# cap — stops after a few dozen documents (1–2 ms). Measured on the benchmark's 1 000 000 lines:
# `dass` (5.8 %) 11.1 → 2.6 ms from the sample, `tag` (12 %) 1.8 → 5.5 ms.
MAX_SHARE = 0.08
# How long a process trusts the statistics it read. ANALYZE (autovacuum's, after a tenth of the
# table changed) renews them far less often.
REFRESH_S = 300.0

# The table the search path finds, and its statistics in its own schema.
_READ = text(
    """SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'tsv'
    WHERE c.oid = to_regclass('search_lines')"""
)


@dataclass(frozen=True)
class LexemeShares:
    """The share of the index's rows that hold each of the most common lexemes, and the rows."""

    rows: float
    shares: dict[str, float] = field(default_factory=dict)

    @cached_property
    def _ordered(self) -> list[str]:
        # For a beginning's lexemes (``weihn*``): those in its range of the sorted list.
        return sorted(self.shares)

    def _lexeme_share(self, lexeme: str) -> float:
        if not is_prefix(lexeme):
            return self.shares.get(lexeme, 0.0)
        # A beginning: the sum of its most common words' shares (a line with two of them counted
        # twice; a guess too high costs one read of a sample, see ``sample``).
        stem = lexeme[:-1]
        first = bisect.bisect_left(self._ordered, stem)
        last = bisect.bisect_left(self._ordered, stem + "\U0010ffff", first)
        return math.fsum(self.shares[word] for word in self._ordered[first:last])

    def share(self, group: Iterable[str]) -> float:
        """The share of rows holding one of the lexemes. One not among the most common counts
        as none: a rare word is never read from a sample."""
        return min(1.0, math.fsum(self._lexeme_share(lexeme) for lexeme in group))

    def expected_rows(self, words: Sequence[Iterable[str]], facts: Sequence[Iterable[str]] = ()) -> float:
        """Rows holding one lexeme of every group: the words' groups as the rarest of them (the
        words of a phrase go together: taken as independent, "nach Hause" would look rare), the
        document's facts as independent of the words and of each other."""
        if not words:
            return 0.0
        share = min(self.share(group) for group in words)
        for group in facts:
            share *= self.share(group)
        return share * self.rows

    def very_common(self, words: Sequence[Iterable[str]]) -> bool:
        """Is a query of these groups, without facts, on more than MAX_SHARE of the rows? Then a
        plain read of the table in its order stops at the cap after a few thousand rows, where
        the GIN index builds a bitmap of every one (``und``, on 22 % of the lines: 0.6 ms
        against 45 ms). Only a query of one group: two words each common may be rare together,
        and the read would then go through the whole table."""
        return len(words) == 1 and self.expected_rows(words) > MAX_SHARE * self.rows

    def sample(self, words: Sequence[Iterable[str]], facts: Sequence[Iterable[str]], cap: int) -> int | None:
        """The sparsest sample (its ``every``) expected to hold more than enough rows for a query of
        these groups (each: lexemes one of which a row must hold), None where none is or where the
        query's lines are so many that the planner's own plan stops sooner. A guess too high costs
        one read of the sample."""
        expected = self.expected_rows(words, facts)
        if expected > MAX_SHARE * self.rows:
            return None
        return next((every for every in SAMPLES if expected / every >= MARGIN * cap), None)


NO_SHARES = LexemeShares(rows=0.0)


def read_shares(connection: Connection) -> LexemeShares:
    """The statistics as the planner has them (none before the table's first ANALYZE)."""
    row = connection.execute(_READ).first()
    if row is None:
        return NO_SHARES
    lexemes, frequencies, rows = row
    if not lexemes or not frequencies or rows is None or rows <= 0:
        return NO_SHARES
    # The frequencies list has more entries than the lexemes (for a tsvector: the least and the most).
    return LexemeShares(rows=float(rows), shares=dict(zip(lexemes, frequencies[: len(lexemes)], strict=True)))


class SharesCache:
    """The shares per database, read again once they are ``REFRESH_S`` old."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._read: dict[str, tuple[float, LexemeShares]] = {}

    def get(self, connection: Connection) -> LexemeShares:
        key = connection.engine.url.render_as_string(hide_password=True)
        now = self._clock()
        with self._lock:
            known = self._read.get(key)
        if known is not None and now - known[0] < REFRESH_S:
            return known[1]
        shares = read_shares(connection)
        with self._lock:
            self._read[key] = (now, shares)
        return shares

    def forget(self) -> None:
        with self._lock:
            self._read.clear()


# One a process: the searches of a process share what they read.
SHARES = SharesCache()
