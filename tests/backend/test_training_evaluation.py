"""Judging a model: lines matched by where they lie, CER over the held-out pages.

The matching and the CER are checked on generated pages (hypothesis); ``heldout_cer`` reads
real documents of the backend through the resilient client from the scripted stand-in.
"""

from __future__ import annotations

import asyncio
import random
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein
from sqlalchemy import select

from backend.documents.models import Document, Line, Page
from backend.ocr_client import OcrRejected
from backend.training.evaluation import (
    HeldoutPage,
    TextLine,
    UnusableReadingError,
    heldout_cer,
    match_lines,
    points,
    read_lines,
    score_page,
)
from tests.backend.conftest import Actors, services_of
from tests.backend.ocr_client_support import client_config, make_client
from tests.backend.ocr_jobs import upload
from tests.backend.ocr_standin import Reply, StandIn
from tests.backend.training_support import Stored, baseline, ocr_answer, store_lines, strip
from tests.support.servers import RunningApp
from tests.support.synthetic import page_texts, render_page, to_png


def on_strip(index: int, text: str | None, jitter: tuple[int, int] = (0, 0)) -> TextLine:
    dx, dy = jitter
    return TextLine(
        text,
        tuple((x + dx, y + dy) for x, y in strip(index)),
        tuple((x + dx, y + dy) for x, y in baseline(index)),
    )


texts = st.text(alphabet="abcdeäöüßſ ,.-ABC", max_size=25)
pages = st.lists(texts, min_size=1, max_size=8).filter(lambda lines: any(t.strip() for t in lines))
jitters = st.tuples(st.integers(-4, 4), st.integers(-4, 4))


def total(lines: Sequence[TextLine]) -> int:
    return sum(len(line.text.strip()) for line in lines if line.text is not None)


@given(pages, st.randoms(use_true_random=False), jitters)
def test_a_reading_identical_to_the_ground_truth_has_cer_0(truth_texts: list[str], rng: random.Random, jitter) -> None:
    truth = [on_strip(i, t) for i, t in enumerate(truth_texts)]
    read = [on_strip(i, t, jitter) for i, t in enumerate(truth_texts)]
    rng.shuffle(read)
    assert score_page(truth, read).cer == 0


@st.composite
def readings(draw: st.DrawFn) -> tuple[list[TextLine], list[TextLine]]:
    """A page's ground truth and a reading of it: each line read right, wrong, not at all, or
    twice in the very same place (two lines tied for one), and lines found where there is none
    (on strips below the page's last line)."""
    truth_texts = draw(pages)
    truth = [on_strip(i, t) for i, t in enumerate(truth_texts)]
    read: list[TextLine] = []
    for i, text in enumerate(truth_texts):
        how = draw(st.sampled_from(["right", "wrong", "missing", "twice"]))
        if how == "twice":
            jitter = draw(jitters)
            read += [on_strip(i, draw(texts), jitter), on_strip(i, draw(texts), jitter)]
        elif how != "missing":
            read.append(on_strip(i, text if how == "right" else draw(texts), draw(jitters)))
    extra = draw(st.lists(texts, max_size=3))
    read += [on_strip(len(truth_texts) + k, t) for k, t in enumerate(extra)]
    return truth, read


@given(readings())
def test_the_cer_lies_between_the_length_difference_and_all_characters(page: tuple) -> None:
    truth, read = page
    tally = score_page(truth, read)
    expected, got = total(truth), total(read)
    assert tally.characters == expected
    assert abs(expected - got) <= tally.errors <= expected + got


@given(readings())
def test_errors_are_the_same_when_truth_and_reading_swap_roles(page: tuple) -> None:
    truth, read = page
    assert score_page(truth, read).errors == score_page(read, truth).errors


@given(readings(), st.randoms(use_true_random=False))
def test_the_order_of_the_lines_does_not_matter(page: tuple, rng: random.Random) -> None:
    truth, read = page
    shuffled_truth, shuffled_read = list(truth), list(read)
    rng.shuffle(shuffled_truth)
    rng.shuffle(shuffled_read)
    assert score_page(shuffled_truth, shuffled_read) == score_page(truth, read)


@given(pages, st.data())
def test_a_line_not_read_raises_the_cer_by_its_characters(truth_texts: list[str], data: st.DataObject) -> None:
    truth = [on_strip(i, t) for i, t in enumerate(truth_texts)]
    read = [on_strip(i, t) for i, t in enumerate(truth_texts)]
    gone = data.draw(st.sampled_from([i for i, t in enumerate(truth_texts) if t.strip()]))
    before = score_page(truth, read)
    after = score_page(truth, read[:gone] + read[gone + 1 :])
    assert after.errors == before.errors + len(truth_texts[gone].strip())
    assert after.cer is not None and before.cer is not None and after.cer > before.cer


def test_lines_are_matched_by_where_they_lie_not_by_their_order() -> None:
    truth = [on_strip(0, "Liebe Mutter"), on_strip(1, "wie geht es")]
    # Found bottom-up: still the same lines.
    assert score_page(truth, [on_strip(1, "wie geht es"), on_strip(0, "Liebe Mutter")]).errors == 0
    # The right texts on the wrong lines: every character of both is compared with the other line.
    swapped = score_page(truth, [on_strip(0, "wie geht es"), on_strip(1, "Liebe Mutter")])
    assert swapped.errors > 0


def test_a_line_the_segmentation_split_matches_one_half_and_the_other_counts_as_inserted() -> None:
    truth = [TextLine("Liebe Mutter", ((0, 0), (400, 0), (400, 30), (0, 30)))]
    left = TextLine("Liebe", ((0, 0), (250, 0), (250, 30), (0, 30)))
    right = TextLine("Mutter", ((250, 0), (400, 0), (400, 30), (250, 30)))
    assert match_lines(truth, [right, left]) == [(0, 1)]
    # "Liebe" against "Liebe Mutter": 7 deleted; "Mutter" read where no line is left: 6 inserted.
    assert score_page(truth, [left, right]).errors == 7 + 6


def test_lines_that_barely_touch_are_not_the_same_line() -> None:
    truth = [on_strip(0, "Liebe Mutter")]
    # Shifted down by 80 % of a line's height: it shares a fifth of the line.
    shifted = on_strip(0, "Liebe Mutter", (0, 24))
    assert match_lines(truth, [shifted]) == []
    assert score_page(truth, [shifted]).errors == 2 * len("Liebe Mutter")


def test_a_line_with_only_a_baseline_or_a_bbox_is_still_matched() -> None:
    truth = [on_strip(0, "Liebe Mutter"), on_strip(1, "wie geht es")]
    only_baseline = TextLine("Liebe Mutter", (), tuple(map(tuple, baseline(0))))
    page = HeldoutPage(1, 1, "originals/" + "0" * 32, None, tuple(truth))
    answer = {"pages": [{"page": 1, "lines": [{"text": "wie geht es", "bbox": [10, 60, 410, 90]}]}]}
    assert score_page(truth, [only_baseline, *read_lines(answer, page)]).errors == 0


def test_texts_are_compared_in_nfc_without_the_spaces_at_their_ends() -> None:
    truth = [on_strip(0, "Grüße")]
    decomposed = unicodedata.normalize("NFD", " Grüße  ")
    assert score_page(truth, [on_strip(0, decomposed)]).errors == 0


def test_lines_nobody_confirmed_are_neither_right_nor_wrong() -> None:
    # Line 1 of the page was never corrected (text None): whatever the OCR reads there is not judged.
    truth = [on_strip(0, "Liebe Mutter"), on_strip(1, None), on_strip(2, "Dein Sohn")]
    read = [on_strip(0, "Liebe Mutter"), on_strip(1, "anything"), on_strip(2, "Dein Sohn"), on_strip(3, "ghost")]
    tally = score_page(truth, read)
    assert (tally.errors, tally.characters) == (len("ghost"), len("Liebe Mutter") + len("Dein Sohn"))


def test_a_page_without_ground_truth_characters_has_no_cer() -> None:
    assert score_page([on_strip(0, "")], [on_strip(0, "x")]).cer is None


def test_points_drop_what_is_not_a_pair_of_finite_numbers() -> None:
    garbage = [[1, 2], [True, 3], ["1", 2], [float("nan"), 1], [1, 2, 3], None, [4.5, 6]]
    assert points(garbage) == ((1.0, 2.0), (4.5, 6.0))
    assert points("[[1,2]]") == ()


def test_a_reading_of_another_size_is_brought_into_the_pages_pixels() -> None:
    page = HeldoutPage(1, 2, "originals/" + "0" * 32, (1000, 1400), ())
    answer = {"pages": [{"page": 2, "width": 500, "height": 700, "lines": [{"text": "a", "polygon": [[10, 20]]}]}]}
    assert read_lines(answer, page)[0].polygon == ((20.0, 40.0),)


@pytest.mark.parametrize(
    "answer",
    [{"pages": []}, {"pages": [{"page": 1, "lines": []}]}, {"pages": [{"page": 2}]}, {"model": "tiny"}],
)
def test_an_answer_without_the_page_asked_for_is_not_judged(answer: dict) -> None:
    page = HeldoutPage(1, 2, "originals/" + "0" * 32, None, ())
    with pytest.raises(UnusableReadingError):
        read_lines(answer, page)


# heldout_cer: real documents, read through the resilient client from the stand-in.

LETTER = [Stored("Liebe Mutter", "Liebe Mutter"), Stored("wie geht es Dir", "wie geht es Dir")]


def cer_of(standin: StandIn, actors: Actors, page_ids: list[int], model: str | None) -> float | None:
    services = services_of(actors.client)

    async def go() -> float | None:
        client, _ = make_client(client_config(standin.url))
        async with client:
            return await heldout_cer(client, services.db.sessions, services.documents.storage, page_ids, model)

    return asyncio.run(go())


def test_heldout_cer_reads_each_page_alone_with_the_model_and_sums_over_pages(standin: StandIn, actors: Actors) -> None:
    first = upload(actors, seed=1, pages=3)
    second = upload(actors, seed=2, pages=1)
    page_a = store_lines(actors.client, first, 2, LETTER, reviewed=True)
    page_b = store_lines(actors.client, second, 1, [Stored("Dein Sohn", "Dein Sohn"), Stored("Karl", None)])
    # "new" misreads 2 characters on the first document's page 2 and reads the uncorrected "Karl" as
    # "Kurt" (not judged); on the second document it finds a line where there is none.
    standin.service.answer_for_model(
        "new", Reply(200, ocr_answer(3, {2: ["Liebe Muttar", "wie geht es Dix"], 1: ["x"]}))
    )
    standin.service.plan(
        "POST /ocr",
        Reply(200, ocr_answer(3, {2: ["Liebe Muttar", "wie geht es Dix"]})),
        Reply(200, ocr_answer(1, {1: ["Dein Sohn", "Kurt", "Gruß"]})),
    )
    characters = len("Liebe Mutter") + len("wie geht es Dir") + len("Dein Sohn")
    assert cer_of(standin, actors, [page_b, page_a], "new") == pytest.approx((2 + len("Gruß")) / characters)

    seen = [s for s in standin.service.seen if s.path == "/ocr"]
    assert [(s.fields["firstPage"], s.fields["lastPage"], s.fields["model"]) for s in seen] == [
        ("2", "2", "new"),
        ("1", "1", "new"),
    ]
    with services_of(actors.client).db.sessions() as session:
        originals = [session.get(Document, d) for d in (first, second)]
    assert [s.file_sha256 for s in seen] == [d.sha256 for d in originals if d is not None]


def test_heldout_cer_of_the_default_model_names_no_model(standin: StandIn, actors: Actors) -> None:
    document = upload(actors, seed=3, pages=1)
    page = store_lines(actors.client, document, 1, LETTER)
    standin.service.answer_for_model("tiny", Reply(200, ocr_answer(1, {1: ["Liebe Mutter", "wie geht es Dir"]})))
    assert cer_of(standin, actors, [page], None) == 0
    assert "model" not in standin.service.seen[-1].fields


def test_pages_of_documents_in_the_trash_are_not_read(standin: StandIn, actors: Actors) -> None:
    document = upload(actors, seed=4, pages=1)
    page = store_lines(actors.client, document, 1, LETTER)
    assert actors.client.delete(f"/api/documents/{document}", headers=actors.admin).status_code == 204
    assert cer_of(standin, actors, [page, 999_999], "new") is None
    assert standin.service.count("POST /ocr") == 0


def test_a_page_the_service_refuses_raises_the_clients_error(standin: StandIn, actors: Actors) -> None:
    document = upload(actors, seed=5, pages=1)
    page = store_lines(actors.client, document, 1, LETTER)
    standin.service.plan("POST /ocr", Reply(422, {"code": "UNKNOWN_MODEL", "message": "no model 'new'"}))
    with pytest.raises(OcrRejected, match="UNKNOWN_MODEL"):
        cer_of(standin, actors, [page], "new")


@pytest.mark.slow
def test_the_real_services_lines_are_matched_to_ground_truth_drawn_where_the_text_is(
    shared_service: RunningApp, actors: Actors, tmp_path: Path
) -> None:
    """Ground truth placed by hand (the rendered text's boxes, as an imported transcription
    has them) against the lines kraken's segmentation finds: each is matched to its own."""
    texts = page_texts(seed=14, lines=4, words=4)
    # Tall (700x2800): blla scales a page to 1800 px height, so the default 1200x900 page was
    # segmented 2400 px wide, twice (tests/ocr_service/test_ocr_api.py, LETTER_SIZE).
    rendered = render_page(texts, width=700, height=2800)
    original = tmp_path / "page.png"
    original.write_bytes(to_png(rendered.image))
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("page.png", original.read_bytes(), "image/png")},
        data={"title": "Probe"},
    )
    assert response.status_code == 201, response.text
    document = int(response.json()["id"])
    services = services_of(actors.client)
    with services.db.session() as session:
        page = session.scalars(select(Page).where(Page.document_id == document)).one()
        page.width, page.height = rendered.image.size
        page.reviewed_at = datetime(2026, 1, 1, tzinfo=UTC)
        for index, drawn in enumerate(rendered.lines):
            polygon, line_baseline = [list(p) for p in drawn.polygon], [list(p) for p in drawn.baseline]
            session.add(
                Line(page_id=page.id, order_index=index, baseline=line_baseline, polygon=polygon, ocr_text=drawn.text)
            )
        page_id = page.id

    async def go() -> tuple[dict[str, Any], float | None]:
        # A page takes many seconds on a CPU shared with the other tests: the suite's short limits would cut it off.
        client, _ = make_client(client_config(shared_service.url, attempt_timeout_s=600.0, deadline_s=1200.0))
        async with client:
            answer = await client.ocr_document(original, model="tiny")
            cer = await heldout_cer(client, services.db.sessions, services.documents.storage, [page_id], "tiny")
            return answer, cer

    answer, cer = asyncio.run(go())
    # On a clean page kraken finds the drawn lines top-down: its reading in order is the expectation.
    read = [line["text"].strip() for line in answer["pages"][0]["lines"]]
    assert len(read) == len(texts), read
    errors = sum(Levenshtein.distance(t, r) for t, r in zip(texts, read, strict=True))
    assert cer == pytest.approx(errors / sum(map(len, texts)))
