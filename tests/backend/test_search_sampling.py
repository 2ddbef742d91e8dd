"""PostgreSQL reads a very common word from a sample of the lines first (migration 0009,
backend/search/sampling.py): where the sample has enough lines, the search reads no other; where
it has too few, the whole index is read and the answer is the one without sampling."""

from __future__ import annotations

import random
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from backend.search import sampling, service
from backend.search.sampling import (
    MARGIN,
    MAX_SHARE,
    NO_SHARES,
    REFRESH_S,
    SAMPLES,
    SHARES,
    LexemeShares,
    SharesCache,
    predicate,
    read_shares,
)
from backend.search.schemas import SearchOut, SearchParams
from backend.search.service import SearchLimits
from backend.search.service import search as search_service
from tests.backend.conftest import DATABASE_KIND, Actors, services_of
from tests.backend.search_support import correct, document, line_ids

postgres_only = pytest.mark.skipif(DATABASE_KIND != "postgresql", reason="the sample indexes are PostgreSQL's")

_lexeme = st.sampled_from(["mutter", "vater", "tag", "brief", "w1", "#w1", "#y1914", "#y1915"])
_shares = st.dictionaries(_lexeme, st.floats(0.0, 1.0), max_size=7)
_groups = st.lists(st.sets(_lexeme, min_size=1, max_size=3), max_size=3)


@given(_shares, st.floats(0.0, 5e6), _groups, _groups, st.integers(1, 5000))
def test_the_sparsest_sample_expected_to_hold_enough_is_chosen(
    shares: dict[str, float], rows: float, words: list[set[str]], facts: list[set[str]], cap: int
) -> None:
    known = LexemeShares(rows=rows, shares=shares)
    expected = known.expected_rows(words, facts)
    chosen = known.sample(words, facts, cap)
    assert SAMPLES == tuple(sorted(SAMPLES, reverse=True))  # sparsest first
    if chosen is not None:
        # Enough lines expected in it, and in no sparser one; not so many that a sample is slower.
        assert expected / chosen >= MARGIN * cap
        assert all(expected / every < MARGIN * cap for every in SAMPLES if every > chosen)
        assert expected <= MAX_SHARE * rows
        assert words
    # Never more rows than the rarest word has, none where a word is no common word.
    word_rows = [known.share(group) * rows for group in words]
    assert expected <= min(word_rows, default=0.0) + 1e-6


def test_a_word_the_statistics_do_not_name_is_rare_and_the_facts_narrow() -> None:
    shares = {"tag": 0.12, "dass": 0.058, "liebe": 0.02, "#y1914": 0.015, "#y1915": 0.015, "#w3": 0.11, "#c": 0.05}
    known = LexemeShares(rows=1_000_000, shares=shares)
    assert known.sample([{"rubensaft"}], [], 300) is None
    assert known.sample([{"dass"}], [], 300) == 16  # 58 000 rows: 3 600 in every sixteenth line
    # On more than 8 % of the lines the planner's walk of the documents stops sooner.
    assert known.sample([{"tag"}], [], 300) is None
    # A phrase's words go together: as rare as its rarest word, not as the product.
    assert known.expected_rows([{"liebe"}, {"tag"}]) == pytest.approx(20_000)
    assert known.sample([{"liebe"}, {"tag"}], [], 300) == 16
    assert known.sample([{"liebe"}, {"tag"}], [], 1000) == 4  # 1 250 in every sixteenth: too few
    # Two years of documents: 3 % of the word's rows.
    assert known.expected_rows([{"tag"}], [{"#y1914", "#y1915"}]) == pytest.approx(3_600)
    assert known.sample([{"tag"}], [{"#y1914", "#y1915"}], 300) == 4
    assert known.sample([{"tag"}], [{"#y1914", "#y1915"}], 1000) is None
    # A word spelt like a writer's or a year's token, or the corrected flag: not counted as the fact.
    for token in ("w3", "y1914", "c"):
        assert known.expected_rows([{token}]) == 0 and known.sample([{token}], [], 1) is None
    assert known.expected_rows([{"dass"}], [{"#w3"}]) == pytest.approx(58_000 * 0.11)
    assert NO_SHARES.sample([{"dass"}], [], 1) is None


def test_a_beginning_counts_as_its_most_common_words_and_one_word_on_many_lines_is_very_common() -> None:
    shares = {"mutter": 0.04, "mutti": 0.01, "mut": 0.002, "muster": 0.01, ">mutter": 0.04, "und": 0.22, "#w3": 0.5}
    known = LexemeShares(rows=1_000_000, shares=shares)
    # mut* stands for mutter, mutti and mut; not for muster, nor for the next line's >mutter.
    assert known.share({"mut*"}) == pytest.approx(0.052)
    assert known.share({"mutt*"}) == pytest.approx(0.05)
    assert known.share({"mutz*"}) == 0 and known.share({"zzz*"}) == 0
    assert known.sample([{"mut*"}], [], 300) == 16
    assert known.share({">mut*"}) == pytest.approx(0.04)
    # Very common: one group on more than MAX_SHARE of the lines.
    assert known.very_common([{"und"}]) and known.very_common([{"un*"}])
    assert known.very_common([{"und", "mutter"}])
    assert not known.very_common([{"mutter"}]) and not known.very_common([{"mut*"}])
    # Two words each common may be rare together; a fact is never a word.
    assert not known.very_common([{"und"}, {"und"}])
    assert not known.very_common([{"w3"}]) and not known.very_common([])
    assert not NO_SHARES.very_common([{"und"}])


def test_the_statistics_are_read_again_only_once_they_are_old(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    cache = SharesCache(clock=lambda: now[0])
    reads: list[str] = []

    def fake_read(connection: Any) -> LexemeShares:
        reads.append(connection.engine.url.render_as_string(hide_password=True))
        return LexemeShares(rows=float(len(reads)))

    monkeypatch.setattr(sampling, "read_shares", fake_read)
    archive, other = _Connection("postgresql://archive"), _Connection("postgresql://other")
    assert cache.get(archive).rows == 1  # type: ignore[arg-type]
    now[0] = REFRESH_S - 1
    assert cache.get(archive).rows == 1  # type: ignore[arg-type]
    assert cache.get(other).rows == 2  # type: ignore[arg-type]  # each database its own
    now[0] = REFRESH_S + 1
    assert cache.get(archive).rows == 3  # type: ignore[arg-type]
    cache.forget()
    assert cache.get(archive).rows == 4  # type: ignore[arg-type]
    assert reads == ["postgresql://archive", "postgresql://other", "postgresql://archive", "postgresql://archive"]


class _Connection:
    """What the cache asks of a connection: its engine's URL."""

    def __init__(self, url: str) -> None:
        self.engine = SimpleNamespace(url=SimpleNamespace(render_as_string=lambda hide_password: url))


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def fresh_shares() -> Iterator[None]:
    """The process's statistics read anew in the test, and forgotten after it (they describe its archive)."""
    SHARES.forget()
    yield
    SHARES.forget()


def _search(actors: Actors, q: str, cap: int, **params: Any) -> tuple[SearchOut, list[str]]:
    """The answer, and the candidate lines' statements the search ran."""
    services = services_of(actors.client)
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "tsv @@" in statement:
            seen.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        with services.db.sessions() as session:
            answer = search_service(session, SearchParams(q=q, **params), SearchLimits(50, cap))
    finally:
        event.remove(services.db.engine, "before_cursor_execute", record)
    return answer, seen


def _samples_read(statements: list[str]) -> list[int | None]:
    """Each statement's sample (its ``every``), None for the whole index; a person's lines left out."""
    read: list[int | None] = []
    for statement in statements:
        flat = " ".join(statement.replace("%%", "%").split())
        if "search_lines.corrected LIMIT" in flat:
            continue
        read.append(next((every for every in SAMPLES if f"% {every}) = 0" in flat), None))
    return read


def _fake(monkeypatch: pytest.MonkeyPatch, rows: float, **shares: float) -> None:
    monkeypatch.setattr(service, "SHARES", _Fixed(LexemeShares(rows=rows, shares=shares)))


def _answer(session: Session, q: str, cap: int) -> tuple[bool, list[tuple[int, list[tuple[int, bool, bool]]]]]:
    """Whether the cap cut the search, and every document with its hits (line, corrected, exact)."""
    out = search_service(session, SearchParams(q=q, pageSize=50), SearchLimits(50, cap))
    return out.capped, [(r.document.id, [(h.line_id, h.corrected, h.exact) for h in r.hits]) for r in out.results]


@postgres_only
def test_the_sample_indexes_are_the_ones_the_search_reads(actors: Actors) -> None:
    services = services_of(actors.client)
    with services.db.engine.connect() as connection:
        made = dict(
            connection.execute(
                text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE 'ix_search_lines_tsv_sample%'")
            ).all()
        )
        connection.rollback()
        assert sorted(made) == sorted(f"ix_search_lines_tsv_sample_{every}" for every in SAMPLES)
        for every in SAMPLES:
            assert made[f"ix_search_lines_tsv_sample_{every}"].endswith(f"WHERE ((line_id % {every}) = 0)")
            # The planner proves the search's predicate implies the index's, so it can read it.
            with connection.begin():
                connection.exec_driver_sql("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off")
                plan = connection.execute(
                    text(f"EXPLAIN SELECT line_id FROM search_lines WHERE tsv @@ 'mutter:A' AND {predicate(every)}")
                ).scalars()
                assert f"ix_search_lines_tsv_sample_{every}" in "\n".join(plan)
    assert predicate(16) == "(search_lines.line_id % 16) = 0"


@postgres_only
def test_the_planner_s_statistics_are_read_as_shares_of_the_lines(actors: Actors, fresh_shares: None) -> None:
    document(actors, [f"Liebe Mutter Nummer {n}" if n % 4 == 0 else f"Zeile {n}" for n in range(200)])
    services = services_of(actors.client)
    with services.db.engine.connect() as connection:
        connection.execute(text("ANALYZE search_lines"))
        # Also where the search path starts with a schema of the user's name (a common hardening).
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS sampling_probe"))
        connection.execute(text("SET LOCAL search_path = sampling_probe, public"))
        try:
            shares = read_shares(connection)
        finally:
            connection.rollback()
    assert shares.rows == pytest.approx(200, abs=2)
    # "mutter": 50 lines as their own word; 49 more as the next line's, a lexeme of its own.
    assert shares.shares["mutter"] == pytest.approx(50 / 200, abs=0.02)
    assert shares.shares[">mutter"] == pytest.approx(49 / 200, abs=0.02)
    assert "rubensaft" not in shares.shares


@postgres_only
def test_a_common_word_is_read_from_the_sparsest_sample_that_has_enough_and_a_person_s_lines_first(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = document(actors, *[[f"Liebe Mutter Nummer {n} {page}" for n in range(100)] for page in range(4)])
    rare = document(actors, ["Der Rübensaft ist gut", "Liebe Mutter"])
    correct(actors, line_ids(actors, rare)[1], "Liebe Mutter, schreib bald")
    # Said to be on 5 000 of 1 000 000 lines: 312 expected in every sixteenth line, more than
    # three times the cap; on 100: 6 in every sixteenth, too few, 25 in every fourth.
    for share, every in [(0.005, 16), (0.0001, 4)]:
        _fake(monkeypatch, 1e6, mutter=share)
        answer, statements = _search(actors, "Mutter", cap=5)
        assert answer.capped is True
        assert _samples_read(statements) == [every]  # the sample alone: it had enough
        hits = [(hit.line_id, hit.corrected) for result in answer.results for hit in result.hits]
        # A person's line first (read on its own, whole index), then only lines of the sample.
        assert hits[0] == (line_ids(actors, rare)[1], True)
        assert hits[1:] and all(line_id % every == 0 for line_id, _ in hits[1:]), hits
        assert {result.document.id for result in answer.results} == {common, rare}

    answer, statements = _search(actors, "Rübensaft", cap=5)
    assert [hit.line_id for result in answer.results for hit in result.hits] == [line_ids(actors, rare)[0]]
    assert _samples_read(statements) == [None]


@postgres_only
def test_a_filter_the_index_sees_is_read_from_the_sample_one_it_does_not_see_never(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [[f"Liebe Mutter Nummer {n} {page}" for n in range(100)] for page in range(4)]
    anna = document(actors, *texts, writer="Anna Adam", date="1914-05-01")
    document(actors, *texts, writer="Karl Berg", date="1930-05-01")
    with services_of(actors.client).db.engine.connect() as connection:
        writer_id = connection.execute(text("SELECT id FROM writers WHERE slug = 'anna-adam'")).scalar_one()
    status = actors.client.get(f"/api/documents/{anna}", headers=actors.archivist).json()["status"]
    _fake(monkeypatch, 1e6, mutter=0.01, **{f"#w{writer_id}": 0.5, "#y1914": 0.5})
    for params in ({"writer": "anna-adam"}, {"dateFrom": "1914-01-01", "dateTo": "1914-12-31"}):
        answer, statements = _search(actors, "Mutter", cap=3, **params)
        assert _samples_read(statements) == [16], params
        assert answer.capped is True
        assert [result.document.id for result in answer.results] == [anna], params
        assert all(hit.line_id % 16 == 0 for result in answer.results for hit in result.hits)
    # A status, a date range wider than the facts cover, one end of a range: the whole index only.
    for params in ({"status": status}, {"dateFrom": "1900-01-01", "dateTo": "1950-12-31"}, {"dateFrom": "1914-01-01"}):
        answer, statements = _search(actors, "Mutter", cap=3, **params)
        assert _samples_read(statements) == [None], params
        assert answer.capped is True


@pytest.mark.parametrize("capped_exactly", [True, False])
def test_a_person_s_near_spellings_are_read_only_where_their_exact_lines_did_not_reach_the_cap(
    actors: Actors, capped_exactly: bool
) -> None:
    exact = document(actors, ["Gruss an alle"] * 6, title="exact")
    near = document(actors, ["Brief"], title="near")
    ids = line_ids(actors, exact)
    for line_id in ids[: 4 if capped_exactly else 2]:
        correct(actors, line_id, "Gruss an alle, korrigiert")
    correct(actors, line_ids(actors, near)[0], "Grusz an alle")
    answer, _ = _search(actors, "Gruss", cap=3)
    assert answer.capped is True
    shown = [result.document.id for result in answer.results]
    # Four of a person's exact lines reach the cap of 3: their near spellings rank after all of
    # them and are not read; two do not, and the near one is found after them.
    assert shown == ([exact] if capped_exactly else [exact, near])


@postgres_only
@pytest.mark.parametrize("seed", [1, 2])
def test_where_a_sample_has_too_few_lines_the_answer_is_the_one_without_sampling(
    actors: Actors, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Statistics that call every word common (stale, or wrong): the samples are read first and
    mostly hold too few lines; any answer not cut by the cap is the one without sampling."""
    rng = random.Random(seed)
    words = ["Mutter", "Vater", "Brief", "Hof", "Weihnachten", "Krieg", "Gruss", "Grusz"]
    for _ in range(6):
        pages = [[" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(rng.randint(1, 30))]]
        document(actors, *pages)
    everything = {w.lower(): 1.0 for w in words}
    services = services_of(actors.client)
    queries = [*words, "Mutter -Krieg", '"liebe Mutter"', '"Vater Brief"', "Weihnaehten", "Hof Brief"]
    compared = 0
    for q in queries:
        for cap in (3, 10, 40, 1000):
            monkeypatch.setattr(service, "SHARES", _Fixed(NO_SHARES))
            with services.db.sessions() as session:
                capped, expected = _answer(session, q, cap)
            monkeypatch.setattr(service, "SHARES", _Fixed(LexemeShares(rows=1e9, shares=everything)))
            with services.db.sessions() as session:
                sampled_capped, got = _answer(session, q, cap)
            assert sampled_capped == capped, (q, cap)
            if not capped:
                assert got == expected, (q, cap)
                compared += 1
    assert compared >= len(queries)  # the large cap cuts none


@postgres_only
def test_a_very_common_word_is_read_in_the_table_s_order_and_a_person_s_lines_by_their_index(
    actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a filter the first exact pass runs with the planner left to itself (it reads the
    table until the cap); a person's lines, and near spellings after an uncapped pass, by bitmaps."""
    texts = [[f"Liebe Mutter Nummer {n} {page}" for n in range(50)] for page in range(2)]
    document(actors, *texts)
    person = document(actors, ["Brief", "an die Muttcr"])  # a near spelling: a pass of its own
    correct(actors, line_ids(actors, person)[0], "Liebe Mutter, schreib bald")
    services = services_of(actors.client)
    for q, cap in [
        ("Mutter", 5),
        ("Mutter", 500),
        ("Mutter -Brief", 5),
        ("Mutter -Mutter", 5),
        ("Mutt*", 5),
        ("Liebe Mutter", 5),
    ]:
        monkeypatch.setattr(service, "SHARES", _Fixed(NO_SHARES))
        with services.db.sessions() as session:
            expected = _answer(session, q, cap)
        _fake(monkeypatch, 1e6, mutter=0.5, liebe=0.5)
        statements: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *_: Any, seen: list[str] = statements) -> None:
            seen.append(" ".join(statement.split()))

        event.listen(services.db.engine, "before_cursor_execute", record)
        try:
            with services.db.sessions() as session:
                got = _answer(session, q, cap)
        finally:
            event.remove(services.db.engine, "before_cursor_execute", record)
        assert got == expected, (q, cap)
        reads = [n for n, statement in enumerate(statements) if "tsv @@" in statement]
        settings = [n for n, statement in enumerate(statements) if statement.startswith("SET LOCAL enable_seqscan")]
        if q in ("Liebe Mutter", "Mutter -Brief", "Mutter -Mutter"):
            # Two words, or an excluded one (which the planner does not count: `Mutter -Mutter` would
            # be read to the table's end): the bitmaps before any read.
            assert settings and settings[0] < reads[0], statements
            continue
        # The exact pass alone before the bitmaps' settings: every later read (a person's lines when
        # capped, the near spellings when not) after them.
        assert all(reads[0] < n for n in settings), (q, cap)
        assert all(settings and settings[0] < n for n in reads[1:]), (q, cap)
        assert len(reads) > 1, (q, cap)
        person_reads = [statements[n] for n in reads if "search_lines.corrected LIMIT" in statements[n]]
        assert bool(person_reads) == got[0], (q, cap)


class _Fixed:
    """Statistics as the test says they are."""

    def __init__(self, shares: LexemeShares) -> None:
        self.shares = shares

    def get(self, connection: Any) -> LexemeShares:
        return self.shares
