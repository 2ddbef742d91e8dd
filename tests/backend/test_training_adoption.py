"""A new model earns its place: judged on the held-out pages against the model it would replace,
adopted only if it reads them better; an admin adopts by hand.

The OCR service is the scripted stand-in: each model reads the held-out page with the texts a
test gives it (``answer_for_model``), and the stand-in records which model became the default.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from backend.documents.models import Writer
from backend.errors import AppError, ErrorCode
from backend.ocr_client import OcrClient, OcrRejected, OcrUnavailable, Unavailability
from backend.training import adoption
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.users.models import User
from tests.backend.conftest import Actors, FakeClock, services_of
from tests.backend.documents import make_document
from tests.backend.ocr_client_support import client_config, make_client
from tests.backend.ocr_standin import Reply, StandIn, error_body
from tests.backend.training_support import Stored, add_run, ocr_answer, run_of, store_lines, writer_of

DEFAULT = "PUT /models/default"
SEGMENTATION = "PUT /models/segmentation"
TRUTH = ["Liebe Mutter", "wie geht es Dir", "Dein Sohn Karl"]
CHARACTERS = sum(map(len, TRUTH))
# Readings of the held-out page, and their errors against TRUTH.
PERFECT = TRUTH
TWO_WRONG = ["Liebe Muttar", "wie geht es Dir", "Dein Sohn Kurl"]
FOUR_WRONG = ["Liebe Muttar", "wie geht es Dix", "Dein Sohn Kurt"]


def upload(actors: Actors, seed: int, writer: str | None = None) -> int:
    response = actors.client.post(
        "/api/documents",
        headers=actors.archivist,
        files={"file": ("a.pdf", make_document("pdf", seed), "application/pdf")},
        data={"title": f"Brief {seed}", **({"writer": writer} if writer else {})},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@dataclass
class World:
    actors: Actors
    standin: StandIn
    clock: FakeClock
    page_id: int
    document_id: int

    def readings(self, **by_model: list[str]) -> None:
        for model, texts in by_model.items():
            self.standin.service.answer_for_model(model.replace("_", "-"), Reply(200, ocr_answer(1, {1: texts})))

    def client(self, url: str | None = None, **config: Any) -> OcrClient:
        return make_client(client_config(url or self.standin.url, attempts=1, **config))[0]

    def judge(self, run_id: int, client: OcrClient | None = None) -> TrainingRun:
        services = services_of(self.actors.client)

        async def go() -> TrainingRun:
            async with client or self.client() as ocr:
                return await adoption.judge_and_adopt(
                    ocr, services.db.sessions, services.documents.storage, run_id, self.clock
                )

        return asyncio.run(go())

    def adopt_by_hand(self, run_id: int, client: OcrClient | None = None) -> TrainingRun:
        services = services_of(self.actors.client)
        with services.db.sessions() as session:
            admin = session.scalars(select(User).where(User.username == "admin")).one()

        async def go() -> TrainingRun:
            async with client or self.client() as ocr:
                return await adoption.adopt_by_hand(ocr, services.db.sessions, run_id, admin, self.clock)

        return asyncio.run(go())

    def writer(self) -> Writer:
        return writer_of(self.actors.client, self.document_id)

    def set_writers_model(self, name: str | None) -> None:
        with services_of(self.actors.client).db.session() as session:
            writer = session.get(Writer, self.writer().id)
            assert writer is not None
            writer.model_name = name


@pytest.fixture
def world(actors: Actors, standin: StandIn, clock: FakeClock) -> Iterator[World]:
    """One held-out page of Anna Müller's letter (three corrected lines); the service's default
    model is ``archive-v1``."""
    document = upload(actors, seed=1, writer="Anna Müller")
    page = store_lines(actors.client, document, 1, [Stored(t, t) for t in TRUTH])
    service = standin.service
    service.models = [{"name": name, "kind": "recognition"} for name in ("archive-v1", "archive-v2", "writer-anna-v1")]
    service.default_model = "archive-v1"
    yield World(actors, standin, clock, page, document)


# The client's model administration.


def test_choosing_a_model_sends_its_name_with_the_training_token_once(standin: StandIn) -> None:
    standin.service.plan(DEFAULT, Reply(500, error_body("INTERNAL_ERROR")))

    async def go() -> None:
        client, _ = make_client(client_config(standin.url))  # four attempts for idempotent calls
        async with client:
            with pytest.raises(OcrUnavailable) as failed:
                await client.set_default_model("archive-v2")
            assert failed.value.code == "INTERNAL_ERROR"
            assert await client.set_default_model("archive-v2") == {"name": "archive-v2"}
            assert await client.set_default_model(None) == {"name": None}
            assert await client.set_segmentation_model("archive-seg-v1") == {
                "name": "archive-seg-v1",
                "chosen": "archive-seg-v1",
            }

    asyncio.run(go())
    seen = [s for s in standin.service.seen if s.method == "PUT"]
    assert [(s.path, s.json) for s in seen] == [
        ("/models/default", {"name": "archive-v2"}),
        ("/models/default", {"name": "archive-v2"}),
        ("/models/default", {"name": None}),
        ("/models/segmentation", {"name": "archive-seg-v1"}),
    ]
    assert all(s.headers["x-training-token"] == "s3cret" for s in seen)


@pytest.mark.parametrize(
    ("status", "code"), [(404, "MODEL_NOT_FOUND"), (422, "WRONG_MODEL_KIND"), (401, "INVALID_TRAINING_TOKEN")]
)
def test_a_choice_the_service_refuses_is_its_own_answer(standin: StandIn, status: int, code: str) -> None:
    standin.service.plan(SEGMENTATION, Reply(status, error_body(code, "not that one")))

    async def go() -> OcrRejected:
        client, _ = make_client(client_config(standin.url))
        async with client:
            with pytest.raises(OcrRejected) as refused:
                await client.set_segmentation_model("archive-v2")
            return refused.value

    refused = asyncio.run(go())
    assert (refused.status, refused.code, refused.message) == (status, code, "not that one")
    assert standin.service.count(SEGMENTATION) == 1


def test_choosing_a_model_with_the_service_unreachable_is_unavailable(unused_url: str) -> None:
    async def go() -> None:
        client, _ = make_client(client_config(unused_url))
        async with client:
            with pytest.raises(OcrUnavailable) as failed:
                await client.set_default_model("archive-v2")
            assert failed.value.reason is Unavailability.CONNECTION

    asyncio.run(go())


@pytest.fixture
def unused_url(standin: StandIn) -> str:
    """The address of a stand-in that has stopped: nothing answers there."""
    standin.stop()
    return standin.url


# Judged at the end of a run.


def test_a_better_recognition_model_becomes_the_default(world: World) -> None:
    world.readings(archive_v2=TWO_WRONG, archive_v1=FOUR_WRONG)
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id)
    assert (run.adopted, run.adopted_at, run.adopted_by) == (True, world.clock.now, None)
    assert (run.heldout_cer, run.replaced_model, run.replaced_cer) == (
        pytest.approx(2 / CHARACTERS),
        "archive-v1",
        pytest.approx(4 / CHARACTERS),
    )
    assert run.adoption_note == "adopted: held-out CER 0.049 is lower than archive-v1's 0.098."
    assert [s.json for s in world.standin.service.seen if s.method == "PUT"] == [{"name": "archive-v2"}]
    assert world.standin.service.default_model == "archive-v2"
    assert run_of(world.actors.client, run_id).status is RunStatus.DONE
    # Both models read the held-out page, each by its name.
    assert [s.fields["model"] for s in world.standin.service.seen if s.path == "/ocr"] == ["archive-v2", "archive-v1"]


@pytest.mark.parametrize(("new", "old"), [(FOUR_WRONG, TWO_WRONG), (TWO_WRONG, TWO_WRONG)], ids=["worse", "equal"])
def test_a_recognition_model_that_is_not_better_is_not_adopted(world: World, new: list[str], old: list[str]) -> None:
    world.readings(archive_v2=new, archive_v1=old)
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id)
    new_cer, old_cer = (4 if new is FOUR_WRONG else 2) / CHARACTERS, 2 / CHARACTERS
    assert (run.adopted, run.adopted_at) == (False, None)
    assert (run.heldout_cer, run.replaced_model, run.replaced_cer) == (
        pytest.approx(new_cer),
        "archive-v1",
        pytest.approx(old_cer),
    )
    assert run.adoption_note == (
        f"not adopted: held-out CER {new_cer:.3f} is not lower than archive-v1's {old_cer:.3f}; "
        "an admin can adopt it by hand."
    )
    assert world.standin.service.count(DEFAULT) == 0
    assert world.standin.service.default_model == "archive-v1"


def test_a_better_writer_model_replaces_the_writers_model(world: World) -> None:
    world.set_writers_model("writer-anna-v1")
    # The default reads this hand perfectly: a writer model is judged against the writer's own.
    world.readings(writer_anna_v2=TWO_WRONG, writer_anna_v1=FOUR_WRONG, archive_v1=PERFECT)
    writer = world.writer()
    run_id = add_run(world.actors.client, TrainingKind.WRITER, "writer-anna-v2", [world.page_id], writer_id=writer.id)
    run = world.judge(run_id)
    assert (run.adopted, run.replaced_model) == (True, "writer-anna-v1")
    assert run.adoption_note == "adopted: held-out CER 0.049 is lower than writer-anna-v1's 0.098."
    assert (world.writer().model_name, world.writer().model_run_id) == ("writer-anna-v2", run_id)
    assert world.standin.service.count(DEFAULT) == 0
    assert world.standin.service.default_model == "archive-v1"


def test_a_writers_first_model_is_judged_against_the_default(world: World) -> None:
    world.readings(writer_anna_v1=TWO_WRONG, archive_v1=FOUR_WRONG)
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v1", [world.page_id], writer_id=world.writer().id
    )
    run = world.judge(run_id)
    assert (run.adopted, run.replaced_model, world.writer().model_name) == (True, "archive-v1", "writer-anna-v1")


def test_a_writers_model_gone_from_the_store_is_judged_against_the_default_that_reads_for_it(world: World) -> None:
    # An admin removed the writer's model from the store: the writer's documents are read with
    # the default now (the OCR job falls back), so that is what the new model would replace.
    world.set_writers_model("writer-anna-v0")
    world.standin.service.answer_for_model("writer-anna-v0", Reply(422, error_body("UNKNOWN_MODEL")))
    world.readings(writer_anna_v1=TWO_WRONG, archive_v1=FOUR_WRONG)
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v1", [world.page_id], writer_id=world.writer().id
    )
    run = world.judge(run_id)
    assert (run.adopted, run.replaced_model, run.adoption_note) == (
        True,
        "archive-v1",
        "adopted: held-out CER 0.049 is lower than archive-v1's 0.098.",
    )
    assert (world.writer().model_name, world.writer().model_run_id) == ("writer-anna-v1", run_id)


def test_a_writer_model_that_is_not_better_leaves_the_writers_model(world: World) -> None:
    world.set_writers_model("writer-anna-v1")
    world.readings(writer_anna_v2=FOUR_WRONG, writer_anna_v1=TWO_WRONG)
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v2", [world.page_id], writer_id=world.writer().id
    )
    run = world.judge(run_id)
    assert run.adopted is False
    assert run.adoption_note == (
        "not adopted: held-out CER 0.098 is not lower than writer-anna-v1's 0.049; an admin can adopt it by hand."
    )
    assert (world.writer().model_name, world.writer().model_run_id) == ("writer-anna-v1", None)


def test_a_writers_model_chosen_while_judging_is_not_overwritten(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.readings(writer_anna_v2=TWO_WRONG, archive_v1=FOUR_WRONG)
    judged = adoption.heldout_cer
    calls: list[str | None] = []

    async def judged_while_an_admin_chooses(*args: Any) -> float | None:
        calls.append(args[-1])
        if len(calls) == 2:
            await asyncio.to_thread(world.set_writers_model, "writer-anna-v1")
        return await judged(*args)

    monkeypatch.setattr(adoption, "heldout_cer", judged_while_an_admin_chooses)
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v2", [world.page_id], writer_id=world.writer().id
    )
    run = world.judge(run_id)
    assert calls == ["writer-anna-v2", "archive-v1"]
    assert run.adopted is False
    assert run.heldout_cer == pytest.approx(2 / CHARACTERS)
    assert run.adoption_note is not None
    assert "while it was judged the writer's model became writer-anna-v1" in run.adoption_note
    assert world.writer().model_name == "writer-anna-v1"


def test_with_the_service_unreachable_the_run_stays_done_and_unadopted(world: World, unused_url: str) -> None:
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id, world.client(unused_url))
    assert (run.status, run.adopted, run.heldout_cer, run.replaced_cer) == (RunStatus.DONE, False, None, None)
    assert run.adoption_note is not None
    assert run.adoption_note.startswith("not adopted: the OCR service could not read the held-out pages (")
    assert run.adoption_note.endswith("; an admin can adopt it by hand.")


def test_a_service_failing_while_reading_leaves_the_model_unadopted(world: World) -> None:
    world.readings(archive_v2=PERFECT)
    world.standin.service.plan("POST /ocr", Reply(200, ocr_answer(1, {1: PERFECT})), Reply(503, error_body("BUSY")))
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id)
    assert (run.adopted, run.heldout_cer) == (False, None)
    assert run.adoption_note is not None and "could not read the held-out pages" in run.adoption_note
    assert world.standin.service.count(DEFAULT) == 0


def test_a_better_model_the_service_will_not_make_the_default_is_not_adopted(world: World) -> None:
    world.readings(archive_v2=TWO_WRONG, archive_v1=FOUR_WRONG)
    world.standin.service.plan(DEFAULT, Reply(422, error_body("WRONG_MODEL_KIND", "not a recognition model")))
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id)
    assert (run.adopted, run.heldout_cer) == (False, pytest.approx(2 / CHARACTERS))
    assert run.adoption_note == (
        "not adopted: held-out CER 0.049 is lower than archive-v1's 0.098, but the OCR service did not make it "
        "the default (not a recognition model); an admin can adopt it by hand."
    )


def test_a_segmentation_model_is_never_adopted_by_itself(world: World) -> None:
    run_id = add_run(world.actors.client, TrainingKind.SEGMENTATION, "archive-seg-v1", [])
    run = world.judge(run_id)
    assert run.adopted is False
    assert run.adoption_note == (
        "not adopted: a segmentation model is adopted only by an admin (the OCR service's rule); "
        "an admin can adopt it by hand."
    )
    assert world.standin.service.seen == []


def test_held_out_pages_gone_to_the_trash_leave_nothing_to_judge(world: World) -> None:
    actors = world.actors
    assert actors.client.delete(f"/api/documents/{world.document_id}", headers=actors.admin).status_code == 204
    run_id = add_run(actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    run = world.judge(run_id)
    assert (run.adopted, run.heldout_cer) == (False, None)
    assert run.adoption_note is not None and "no ground truth left to judge it on" in run.adoption_note
    assert world.standin.service.count("POST /ocr") == 0


def test_close_cers_are_told_apart_in_the_note() -> None:
    assert adoption.comparison(0.15104, "writer-anna-v2", 0.1512) == (
        "held-out CER 0.1510 is lower than writer-anna-v2's 0.1512"
    )
    assert (
        adoption.comparison(0.2, None, 0.2)
        == "held-out CER 0.200 is not lower than the OCR service's default model's 0.200"
    )


# Adopted by an admin's hand.


def test_an_admin_adopts_a_recognition_model_as_the_default(world: World) -> None:
    world.readings(archive_v2=FOUR_WRONG, archive_v1=TWO_WRONG)
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    world.judge(run_id)
    run = world.adopt_by_hand(run_id)
    assert (run.adopted, run.adopted_at) == (True, world.clock.now)
    assert run.adopted_by is not None
    assert run.adoption_note == ("adopted by hand by admin (held-out CER 0.098 is not lower than archive-v1's 0.049).")
    assert world.standin.service.default_model == "archive-v2"


def test_an_admin_adopts_a_writer_model_as_the_writers_model(world: World) -> None:
    world.set_writers_model("writer-anna-v1")
    world.standin.service.models.append({"name": "writer-anna-v2", "kind": "recognition"})
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v2", [world.page_id], writer_id=world.writer().id
    )
    run = world.adopt_by_hand(run_id)
    assert (run.adopted, run.adoption_note) == (True, "adopted by hand by admin.")
    assert (world.writer().model_name, world.writer().model_run_id) == ("writer-anna-v2", run_id)
    assert world.standin.service.count(DEFAULT) == 0


def test_an_admin_adopts_a_segmentation_model(world: World) -> None:
    run_id = add_run(world.actors.client, TrainingKind.SEGMENTATION, "archive-seg-v1", [])
    run = world.adopt_by_hand(run_id)
    assert run.adopted is True
    assert [(s.path, s.json) for s in world.standin.service.seen] == [
        ("/models/segmentation", {"name": "archive-seg-v1"})
    ]
    assert world.standin.service.segmentation_model == "archive-seg-v1"


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELLED])
def test_only_a_finished_runs_model_can_be_adopted(world: World, status: RunStatus) -> None:
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id], status=status)
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(run_id)
    assert refused.value.code is ErrorCode.MODEL_NOT_ADOPTABLE
    assert refused.value.message == f"Only the model of a finished run can be adopted; run {run_id} is {status.value}."
    assert world.standin.service.seen == []
    assert run_of(world.actors.client, run_id).adopted is False


def test_a_model_the_service_refuses_is_not_adoptable(world: World) -> None:
    world.standin.service.plan(DEFAULT, Reply(404, error_body("MODEL_NOT_FOUND", "There is no model 'archive-v2'.")))
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(run_id)
    assert refused.value.code is ErrorCode.MODEL_NOT_ADOPTABLE
    assert refused.value.details == {"serviceCode": "MODEL_NOT_FOUND"}
    assert run_of(world.actors.client, run_id).adopted is False


def test_a_writer_model_gone_from_the_store_is_not_adoptable(world: World) -> None:
    run_id = add_run(
        world.actors.client, TrainingKind.WRITER, "writer-anna-v9", [world.page_id], writer_id=world.writer().id
    )
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(run_id)
    assert refused.value.code is ErrorCode.MODEL_NOT_ADOPTABLE
    assert world.writer().model_name is None


def test_adopting_by_hand_with_the_service_unreachable_is_unavailable(world: World, unused_url: str) -> None:
    run_id = add_run(world.actors.client, TrainingKind.RECOGNITION, "archive-v2", [world.page_id])
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(run_id, world.client(unused_url))
    assert refused.value.code is ErrorCode.OCR_SERVICE_UNAVAILABLE
    assert run_of(world.actors.client, run_id).adopted is False


def test_adopting_by_hand_without_a_training_token_is_disabled(world: World) -> None:
    run_id = add_run(world.actors.client, TrainingKind.SEGMENTATION, "archive-seg-v1", [])
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(run_id, world.client(training_token=None))
    assert refused.value.code is ErrorCode.TRAINING_DISABLED
    assert world.standin.service.seen == []


def test_adopting_a_run_that_does_not_exist_is_not_found(world: World) -> None:
    with pytest.raises(AppError) as refused:
        world.adopt_by_hand(424242)
    assert refused.value.code is ErrorCode.TRAINING_RUN_NOT_FOUND
