"""GET /api/search over every line's current text, on SQLite and PostgreSQL: tolerant folding,
near spellings, phrases, exclusions, words broken across lines and pages, filters, ranking, paging,
indexed in the same transaction as every line write."""

from __future__ import annotations

import random
import sqlite3
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from backend.documents.models import Document, Writer
from backend.search.query import MAX_QUERY_LENGTH
from backend.search.schemas import SearchParams
from backend.search.service import SearchLimits
from backend.search.service import search as search_service
from backend.users.models import Role
from tests.backend.conftest import DATABASE_KIND, Actors, AppFactory, FakeClock, add_user, bearer, services_of
from tests.backend.ocr_jobs import drain, page_events, runner, upload
from tests.backend.ocr_standin import Drip, StandIn
from tests.backend.search_support import correct, document, hit_lines, hit_texts, line_ids, search, store_page


def _spans(answer: dict, line_id: int) -> list[str]:
    """The highlighted parts of a hit's text."""
    for result in answer["results"]:
        for hit in result["hits"]:
            if hit["lineId"] == line_id:
                return [hit["text"][start:end] for start, end in hit["highlights"]]
    raise AssertionError(f"line {line_id} is no hit")


def test_the_sqlite_in_use_has_fts5() -> None:
    connection = sqlite3.connect(":memory:")
    options = {row[0] for row in connection.execute("PRAGMA compile_options")}
    connection.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='ascii', detail=column)")
    connection.close()
    assert "ENABLE_FTS5" in options


def test_umlauts_sharp_s_and_case_are_folded(actors: Actors) -> None:
    document_id = document(actors, ["Viele Grüße aus Köln", "herzliche Gruesse", "GRUSSE an alle", "Großvater"])
    lines = line_ids(actors, document_id)
    for spelling in ["Grüße", "Gruesse", "grusse", "GRÜSSE"]:
        answer = search(actors, spelling)
        assert sorted(hit_lines(answer)) == lines[:3], spelling
        assert all(hit["exact"] for hit in answer["results"][0]["hits"])
    assert _spans(search(actors, "grosse"), lines[0]) == ["Grüße"]
    assert hit_lines(search(actors, "GROSSVATER")) == [lines[3]]
    assert hit_lines(search(actors, "Koeln")) == [lines[0]]


def test_a_misread_word_is_found_and_ranks_below_exact_matches(actors: Actors) -> None:
    document_id = document(actors, ["zu Weihnaehten bei euch", "an Weihnachten zu Hause", "Weih nachten"])
    lines = line_ids(actors, document_id)
    answer = search(actors, "Weihnachten")
    hits = answer["results"][0]["hits"]
    assert [(hit["lineId"], hit["exact"]) for hit in hits] == [(lines[1], True), (lines[0], False)]
    assert _spans(answer, lines[0]) == ["Weihnaehten"]
    assert answer["results"][0]["hitCount"] == 2


def test_short_words_are_found_only_as_typed(actors: Actors) -> None:
    document_id = document(actors, ["der Hof", "der Huf"])
    assert hit_lines(search(actors, "Hof")) == line_ids(actors, document_id)[:1]


def test_a_phrase_is_found_only_with_its_words_in_order(actors: Actors) -> None:
    document_id = document(actors, ["Meine liebe Mutter!", "Mutter, liebe Schwester", "liebe gute Mutter"])
    lines = line_ids(actors, document_id)
    answer = search(actors, '"liebe Mutter"')
    assert hit_lines(answer) == [lines[0]]
    assert _spans(answer, lines[0]) == ["liebe Mutter"]
    assert sorted(hit_lines(search(actors, "liebe Mutter"))) == lines


def test_an_excluded_word_rules_out_the_lines_that_have_it(actors: Actors) -> None:
    document_id = document(actors, ["Mutter schreibt vom Krieg", "Mutter schreibt vom Garten", "Krieg"])
    lines = line_ids(actors, document_id)
    assert hit_lines(search(actors, "Mutter -Krieg")) == [lines[1]]
    assert hit_lines(search(actors, 'Mutter -"vom Garten"')) == [lines[0]]


def test_a_word_ending_in_a_star_finds_every_word_that_begins_so(actors: Actors) -> None:
    document_id = document(
        actors,
        [
            "Frohe Weihnachten euch",
            "am Weihnachtsabend",
            "die Weihe der Kirche",
            "viele Grüße und Grussworte",
            "liebe Mutti, liebe gute Mutter",
            "Brief vom Kriegsende",
            "Brief vom Garten",
            "zur Weih-",
            "nachtszeit",
        ],
    )
    lines = line_ids(actors, document_id)
    answer = search(actors, "Weihn*")
    assert sorted(hit_lines(answer)) == [lines[0], lines[1], lines[7]]
    assert all(hit["exact"] for hit in answer["results"][0]["hits"])
    assert _spans(answer, lines[0]) == ["Weihnachten"]
    assert _spans(answer, lines[1]) == ["Weihnachtsabend"]
    # The word broken across lines is found where it starts, as a whole word is.
    assert _spans(answer, lines[7]) == ["Weih"]
    assert sorted(hit_lines(search(actors, "weih*"))) == [lines[0], lines[1], lines[2], lines[7]]
    # Folded like every word: the beginning of Grüße is that of Grusse.
    answer = search(actors, "GRÜß*")
    assert _spans(answer, lines[3]) == ["Grüße", "Grussworte"]
    # In a phrase, and left out.
    answer = search(actors, '"liebe Mut*"')
    assert _spans(answer, lines[4]) == ["liebe Mutti"]
    assert sorted(hit_lines(search(actors, "Brief -Krieg*"))) == [lines[6]]
    assert sorted(hit_lines(search(actors, "Brief -Kriegsende*"))) == [lines[6]]
    # A beginning is taken as typed: no near spellings of it (Weihm* is not Weihn*).
    assert hit_lines(search(actors, "Weihm*")) == []


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("We*", "at least 3 letters before the *"),
        ('"liebe Mu*"', "at least 3 letters before the *"),
        ("Brief -Kr*", "at least 3 letters before the *"),
        ("*", "Type a word"),
        ("Wei* lie* Mut* Bri*", "at most 3 words ending in *"),
        ('"Wei* lie*" Mut* -Kri*', "at most 3 words ending in *"),
    ],
)
def test_a_short_beginning_or_too_many_are_refused(actors: Actors, q: str, message: str) -> None:
    document(actors, ["Weihnachten", "liebe Mutter", "Brief vom Krieg"])
    response = actors.client.get("/api/search", params={"q": q}, headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (422, "SEARCH_QUERY_INVALID")
    assert message in response.json()["message"]
    assert actors.client.get("/api/search", params={"q": "Wei* lie* Mut*"}, headers=actors.archivist).status_code == 200


_SYLLABLES = ("ba", "bra", "da", "dra", "ka", "kra", "ta", "tra", "ban", "dan")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_beginning_finds_exactly_the_lines_with_a_word_that_begins_so(actors: Actors, data: st.DataObject) -> None:
    """Seeded lines of made-up words that share their beginnings; each beginning's hits are the lines
    (brute force over their folded words) that have a word beginning so, no more and no fewer."""
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    texts = [
        " ".join("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 4)))
        for _ in range(rng.randint(1, 12))
    ]
    # A word of its own marks this example's document: the beginnings are searched with it.
    mark = f"zeichen{rng.randrange(10**9)}"
    document_id = document(actors, [f"{text} {mark}" for text in texts])
    lines = line_ids(actors, document_id)
    services = services_of(actors.client)
    limits = SearchLimits(hits_per_document=len(lines), candidate_lines=1000)
    for _ in range(4):
        syllables = "".join(rng.choice(_SYLLABLES) for _ in range(3))
        beginning = syllables[: rng.randint(3, 6)]
        with services.db.sessions() as session:
            answer = search_service(session, SearchParams(q=f"{beginning}* {mark}"), limits)
        found = sorted(hit.line_id for result in answer.results for hit in result.hits)
        expected = [
            line for line, text in zip(lines, texts, strict=True) if any(w.startswith(beginning) for w in text.split())
        ]
        assert found == expected, (beginning, texts)
        # Each hit shows the words that begin so, and the mark.
        for hit in (hit for result in answer.results for hit in result.hits):
            shown = {hit.text[start:end] for start, end in hit.highlights}
            assert mark in shown and all(w == mark or w.startswith(beginning) for w in shown), (beginning, hit.text)
            assert any(w.startswith(beginning) for w in shown), (beginning, hit.text)


def test_a_word_hyphenated_across_lines_is_found_on_the_line_where_it_starts(actors: Actors) -> None:
    document_id = document(actors, ["frohe Weih-", "nachten euch allen", "und gute Ernte¬", "zeit wünscht"])
    lines = line_ids(actors, document_id)
    answer = search(actors, "Weihnachten")
    assert hit_lines(answer) == [lines[0]]
    assert _spans(answer, lines[0]) == ["Weih"]
    assert hit_lines(search(actors, "Erntezeit")) == [lines[2]]
    # The second half is still a word of its own line.
    assert hit_lines(search(actors, "nachten")) == [lines[1]]


def test_a_word_and_a_phrase_broken_across_a_page_break_are_found(actors: Actors) -> None:
    document_id = document(actors, ["Brief", "am Weih-"], ["nachtsabend", "liebe"], ["Mutter kam"])
    lines = line_ids(actors, document_id)
    assert hit_lines(search(actors, "Weihnachtsabend")) == [lines[1]]
    answer = search(actors, '"liebe Mutter"')
    assert hit_lines(answer) == [lines[3]]
    assert answer["results"][0]["hits"][0]["pageNumber"] == 2
    assert _spans(answer, lines[3]) == ["liebe"]


def test_a_line_is_never_a_hit_only_for_its_neighbours_words(actors: Actors) -> None:
    document_id = document(actors, ["ein Gruss", "an die Mutter"])
    lines = line_ids(actors, document_id)
    assert hit_lines(search(actors, "Mutter")) == [lines[1]]
    assert hit_lines(search(actors, "Gruss Mutter")) == []
    assert hit_lines(search(actors, '"Gruss an"')) == [lines[0]]


def test_a_new_reading_of_the_next_page_updates_the_broken_word(actors: Actors) -> None:
    document_id = document(actors, ["am Weih-"], ["nachten"])
    first = line_ids(actors, document_id)[0]
    assert hit_lines(search(actors, "Weihnachten")) == [first]
    store_page(actors.client, document_id, 2, ["mittag"])
    assert hit_lines(search(actors, "Weihnachten")) == []
    assert hit_lines(search(actors, "Weihmittag")) == [first]
    store_page(actors.client, document_id, 2, [])
    assert hit_lines(search(actors, "Weihmittag")) == []


def test_a_correction_is_found_by_its_new_text_at_once_and_no_longer_by_the_old(actors: Actors) -> None:
    document_id = document(actors, ["Liebe Muter", "Dein Sohn"])
    lines = line_ids(actors, document_id)
    correct(actors, lines[0], "Lieber Vater")
    assert hit_lines(search(actors, "Vater")) == [lines[0]]
    assert hit_lines(search(actors, "Muter")) == []
    hit = search(actors, "Vater")["results"][0]["hits"][0]
    assert (hit["text"], hit["corrected"]) == ("Lieber Vater", True)
    # The line before a corrected first word: its broken word follows the correction.
    correct(actors, lines[1], "Dein Sohn-")
    correct(actors, lines[0], "tag und Nacht", version=2)
    assert hit_lines(search(actors, "Sohntag")) == []


def test_a_correction_of_a_next_lines_first_word_updates_the_broken_word(actors: Actors) -> None:
    document_id = document(actors, ["am Sonn-", "abend"])
    lines = line_ids(actors, document_id)
    correct(actors, lines[1], "tag früh")
    assert hit_lines(search(actors, "Sonntag")) == [lines[0]]
    assert hit_lines(search(actors, "Sonnabend")) == []


def test_corrected_lines_rank_first_then_exact_matches(actors: Actors) -> None:
    plain = document(actors, ["Gruss aus Berlin"], title="A")
    near = document(actors, ["Grus aus Berlin"], title="B")
    fixed = document(actors, ["Gruß von hier"], title="C")
    fixed_near = document(actors, ["Grusz aus Wien"], title="D")
    correct(actors, line_ids(actors, fixed)[0], "Gruß aus Bremen")
    correct(actors, line_ids(actors, fixed_near)[0], "Grusz aus Bremen")
    answer = search(actors, "Gruss")
    assert [result["document"]["id"] for result in answer["results"]] == [fixed, fixed_near, plain, near]
    assert [(hit["corrected"], hit["exact"]) for hit in [r["hits"][0] for r in answer["results"]]] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]


def test_results_are_grouped_by_document_with_their_link_and_paged(actors: Actors) -> None:
    documents = [
        document(actors, [f"Brief Nummer {n}", "Gruss", "noch ein Gruss"], title=f"Brief {n}") for n in range(5)
    ]
    answer = search(actors, "Gruss", pageSize=2)
    assert (answer["total"], answer["page"], answer["pageSize"], len(answer["results"])) == (5, 1, 2, 2)
    pages = [search(actors, "Gruss", pageSize=2, page=page)["results"] for page in (1, 2, 3, 4)]
    assert [len(results) for results in pages] == [2, 2, 1, 0]
    shown = [result["document"]["id"] for results in pages for result in results]
    assert sorted(shown) == documents
    result = pages[0][0]
    assert result["hitCount"] == 2 and len(result["hits"]) == 2
    for hit in result["hits"]:
        assert hit["link"] == f"/documents/{result['document']['id']}?page=1&line={hit['lineId']}"
    assert sorted((hit["pageNumber"], hit["orderIndex"]) for hit in result["hits"]) == [(1, 1), (1, 2)]
    assert result["document"]["title"].startswith("Brief ")
    too_big = actors.client.get("/api/search", params={"q": "Gruss", "pageSize": 51}, headers=actors.archivist)
    assert (too_big.status_code, too_big.json()["code"]) == (422, "INVALID_REQUEST")


def test_at_most_the_configured_hits_per_document(app_factory: AppFactory, clock: FakeClock) -> None:
    client = app_factory(clock=clock, search_hits_per_document=2)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    document(actors, ["Gruss"] * 4)
    result = search(actors, "Gruss")["results"][0]
    assert (result["hitCount"], len(result["hits"])) == (4, 2)


def test_filters_by_writer_date_and_status(actors: Actors) -> None:
    anna = document(actors, ["Gruss von Anna"], title="A", writer="Anna Müller", date="1914-12")
    karl = document(actors, ["Gruss von Karl"], title="K", writer="Karl Schmidt", date="1916-05-03")
    none = document(actors, ["Gruss ohne Datum"], title="N")

    def found(**params: str) -> list[int]:
        return [result["document"]["id"] for result in search(actors, "Gruss", **params)["results"]]

    assert sorted(found()) == [anna, karl, none]
    assert found(writer="anna-mueller") == [anna]
    assert found(writer="nobody") == []
    assert found(dateFrom="1915-01-01") == [karl]
    assert found(dateTo="1915-01-01") == [anna]
    assert found(dateFrom="1914-01-01", dateTo="1916-12-31", writer="karl-schmidt") == [karl]
    assert sorted(found(status="NEW")) == [anna, karl, none]
    assert found(status="DONE") == []
    assert search(actors, "Gruss", writer="anna-mueller")["results"][0]["document"] == {
        "id": anna,
        "title": "A",
        "writer": {"slug": "anna-mueller", "name": "Anna Müller"},
        "date": "1914-12-01",
        "datePrecision": "month",
        "status": "NEW",
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_filters_find_what_the_documents_say_also_after_their_writer_and_date_change(actors: Actors, seed: int) -> None:
    """The engines' copy of each document's writer and year (migration 0008) and whether it is
    trashed (0010) narrows a filtered search; it must follow the document whatever changes it, so
    every filter finds exactly the documents a plain reading of the documents table gives, with
    ranges narrow, wide, open and of whole years (PostgreSQL then reads no document at all)."""
    rng = random.Random(seed)

    def some_date(early: bool = False) -> date:
        # Early: a year of fewer than four digits now and then (SQLite stores it zero-padded).
        year = rng.randint(1, 999) if early and rng.random() < 0.3 else rng.randint(1900, 1960)
        return date(year, rng.randint(1, 12), rng.randint(1, 28))

    ids = []
    for number in range(6):
        fields = {}
        if rng.random() < 0.8:
            fields["writer"] = rng.choice(["Anna Müller", "Karl Schmidt", "Dora Förster"])
        if rng.random() < 0.8:
            fields["date"] = some_date().isoformat()
        ids.append(document(actors, ["Gruss und Kuss", f"Seite {number}"], title=f"D{number}", **fields))
    services = services_of(actors.client)
    with services.db.sessions() as session:
        writers = list(session.scalars(select(Writer)))
        # Changed in the database as any future writer of documents would change them (the API has no edit yet).
        for document_id in rng.sample(ids, 4):
            changed = session.get_one(Document, document_id)
            changed.writer_id = rng.choice([*(w.id for w in writers), None])
            changed.date = rng.choice([None, some_date(early=True)])
        session.commit()
    # Two in the trash, one of them restored again.
    trashed = rng.sample(ids, 2)
    for document_id in trashed:
        assert actors.client.delete(f"/api/documents/{document_id}", headers=actors.archivist).status_code == 204
    restored = rng.choice(trashed)
    assert actors.client.post(f"/api/trash/{restored}/restore", headers=actors.admin).status_code == 200
    with services.db.sessions() as session:
        slugs = {w.id: w.slug for w in writers}
        truth = {
            d.id: (slugs.get(d.writer_id or 0), d.date)
            for d in session.scalars(select(Document).where(Document.id.in_(ids), Document.deleted_at.is_(None)))
        }
    for _ in range(30):
        params: dict[str, str] = {}
        writer = rng.choice([None, None, *slugs.values()])
        if writer is not None:
            params["writer"] = writer
        dated = [when for _, when in truth.values() if when is not None]
        start = some_date() if rng.random() < 0.7 else None
        if start is not None and dated and rng.random() < 0.4:
            # Around a document's own date, so narrow ranges find something too.
            start = max(date(1, 1, 1), rng.choice(dated) - timedelta(days=rng.randint(0, 400)))
        end = start + timedelta(days=rng.choice([0, 200, 2000, 8000, 30000])) if start else None
        if start is not None and end is not None and rng.random() < 0.4:
            # Whole years, as the facts hold them.
            start, end = date(start.year, 1, 1), date(min(end.year, start.year + rng.randint(0, 20)), 12, 31)
        if start is not None and rng.random() < 0.2:
            start = None  # open at the start
        if start is not None:
            params["dateFrom"] = start.isoformat()
        if end is not None:
            params["dateTo"] = end.isoformat()
        expected = sorted(
            document_id
            for document_id, (slug, when) in truth.items()
            if (writer is None or slug == writer)
            and (start is None or (when is not None and when >= start))
            and (end is None or (when is not None and when <= end))
        )
        found = sorted(result["document"]["id"] for result in search(actors, "Gruss", **params)["results"])
        assert found == expected, params
    for document_id, (slug, when) in truth.items():
        # Each document by its own day (and writer): found.
        params = {"dateFrom": when.isoformat(), "dateTo": when.isoformat()} if when else {}
        if slug is not None:
            params["writer"] = slug
        found = [result["document"]["id"] for result in search(actors, "Gruss", **params)["results"]]
        assert document_id in found, params
        if when is not None and (when.month, when.day) != (12, 31):
            # The next day, in the same year: the year alone must not let it through.
            params.update(
                dateFrom=(when + timedelta(days=1)).isoformat(), dateTo=(when + timedelta(days=1)).isoformat()
            )
            found = [result["document"]["id"] for result in search(actors, "Gruss", **params)["results"]]
            assert document_id not in found, params


def test_documents_in_the_trash_are_never_found_and_purged_ones_leave_nothing(actors: Actors, clock: FakeClock) -> None:
    kept = document(actors, ["Gruss aus Wien"])
    trashed = document(actors, ["Gruss aus Graz"])
    assert actors.client.delete(f"/api/documents/{trashed}", headers=actors.archivist).status_code == 204
    assert [r["document"]["id"] for r in search(actors, "Gruss")["results"]] == [kept]
    assert search(actors, "Graz")["total"] == 0
    assert actors.client.post(f"/api/trash/{trashed}/restore", headers=actors.admin).status_code == 200
    assert search(actors, "Graz")["total"] == 1
    actors.client.delete(f"/api/documents/{trashed}", headers=actors.archivist)
    clock.advance(timedelta(days=31).total_seconds())
    services = services_of(actors.client)
    with services.db.sessions() as session:
        assert services.documents.purge_expired(session, clock()) == 1
        session.commit()
    with services.db.engine.connect() as connection:
        left = connection.execute(text("SELECT count(*) FROM search_lines WHERE document_id = :d"), {"d": trashed})
        assert left.scalar_one() == 0
        if DATABASE_KIND == "sqlite":
            rows = connection.execute(text("SELECT count(*) FROM search_fts")).scalar_one()
            assert rows == 1  # only the kept document's line
    # A new line that takes a purged line's id (SQLite reuses ids) is found by its own text only.
    actors = Actors(actors.client, bearer(actors.client, "admin"), bearer(actors.client, "erika"))
    again = document(actors, ["Brief aus Linz"])
    assert search(actors, "Graz")["total"] == 0
    assert [r["document"]["id"] for r in search(actors, "Linz")["results"]] == [again]


def test_an_ocr_job_s_page_is_searchable_when_stored(actors: Actors, standin: StandIn) -> None:
    document_id = upload(actors, 4242, pages=2)
    standin.service.plan("POST /ocr/stream", Drip(page_events(2, tag="Weihnachtsbrief ")))
    response = actors.client.post(f"/api/documents/{document_id}/ocr", headers=actors.archivist)
    assert response.status_code == 202, response.text
    drain(runner(actors.client, standin.url))
    answer = search(actors, "Weihnachtsbrief")
    assert answer["total"] == 1 and answer["results"][0]["hitCount"] == 4
    assert sorted(hit_texts(answer)) == sorted(f"Weihnachtsbrief p{p} l{i}" for p in (1, 2) for i in (0, 1))


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("", "Type a word"),
        ("  ?! ", "Type a word"),
        ("x" * (MAX_QUERY_LENGTH + 1), "too long"),
        (" ".join(f"w{n}" for n in range(11)), "too many words"),
        ("-Krieg -Not", "not only what to leave out"),
    ],
)
def test_a_query_with_nothing_to_find_or_too_much_is_refused(actors: Actors, q: str, message: str) -> None:
    response = actors.client.get("/api/search", params={"q": q}, headers=actors.archivist)
    assert (response.status_code, response.json()["code"]) == (422, "SEARCH_QUERY_INVALID")
    assert message in response.json()["message"]


def test_a_query_is_required_and_the_route_needs_a_login(actors: Actors) -> None:
    missing = actors.client.get("/api/search", headers=actors.archivist)
    assert missing.status_code == 422
    anonymous = actors.client.get("/api/search", params={"q": "Gruss"})
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, "NOT_AUTHENTICATED")


_HOSTILE = st.sampled_from(
    ['"', "-", "*", "^", ":", "(", ")", "NEAR", "OR", "AND", "NOT", "{own}", "'", "\\", "!", "&", "|", "<->", " "]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_HOSTILE, st.text(max_size=12)), max_size=25).map("".join))
def test_any_query_is_answered_or_refused_never_an_error(actors: Actors, q: str) -> None:
    response = actors.client.get("/api/search", params={"q": q}, headers=actors.archivist)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.json()["code"] in ("SEARCH_QUERY_INVALID", "INVALID_REQUEST")


def test_where_the_cap_cuts_a_person_s_text_and_exact_matches_are_still_found_first(
    app_factory: AppFactory, clock: FakeClock
) -> None:
    client = app_factory(clock=clock, search_candidate_lines=100)
    add_user(client, "erika", Role.ARCHIVIST)
    actors = Actors(client, {}, bearer(client, "erika"))
    near = document(actors, ["Grusz"] * 60, title="near")
    common = [document(actors, ["Gruss"] * 60, title=f"common {n}") for n in range(2)]
    last = document(actors, ["Brief"], title="corrected")
    correct(actors, line_ids(actors, last)[0], "Grusz an alle")
    answer = search(actors, "Gruss")
    assert answer["capped"] is True
    shown = [result["document"]["id"] for result in answer["results"]]
    # The corrected line (a near spelling) first, then exact matches; the uncorrected near
    # spellings are past the cap.
    assert shown[0] == last and set(shown[1:]) <= set(common) and near not in shown


@pytest.mark.skipif(DATABASE_KIND != "postgresql", reason="the planner settings are PostgreSQL's")
def test_a_search_leaves_the_planner_settings_of_its_transaction_as_it_found_them(actors: Actors) -> None:
    document_id = document(actors, ["Gruss und Kuss", "Kuss"])
    status = actors.client.get(f"/api/documents/{document_id}", headers=actors.archivist).json()["status"]
    services = services_of(actors.client)
    settings = (
        "enable_seqscan",
        "enable_indexscan",
        "enable_bitmapscan",
        "enable_hashjoin",
        "enable_mergejoin",
        "enable_nestloop",
    )
    with services.db.sessions() as session:
        before = [session.scalar(text(f"SHOW {name}")) for name in settings]
        # Without a filter (the joins set too), with one, and cut by the cap with one the index
        # does not see (a person's lines then joined by a hash).
        for params, cap in [
            (SearchParams(q="Kuss"), 300),
            (SearchParams(q="Kuss", status=status), 300),
            (SearchParams(q="Kuss", status=status), 1),
        ]:
            answer = search_service(session, params, SearchLimits(hits_per_document=3, candidate_lines=cap))
            assert (answer.total, answer.capped) == (1, cap == 1)
            assert [session.scalar(text(f"SHOW {name}")) for name in settings] == before == ["on"] * len(settings)
