"""A new model earns its place: judged on the held-out pages, adopted only if it reads them better.

When a recognition or writer run ends, the held-out pages are read with the new model and
with the model it would replace (:func:`replaced_model`), and both CERs are stored on the run.
The new model becomes the default (recognition: the OCR service's ``PUT /models/default``) or
the writer's model (writer: ``Writer.model_name``) only if its CER is lower; otherwise it stays
in the service's store under its own name, the run's ``adoption_note`` says why, and an admin
can adopt it by hand (:func:`adopt_by_hand`). A segmentation model is adopted only by an admin
(the OCR service's rule). No database session is open while the OCR service is called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.documents.models import Writer
from backend.errors import AppError, ErrorCode
from backend.ocr_client import OcrClient, OcrClientError, OcrRejected, OcrUnavailable
from backend.storage import Storage
from backend.training.evaluation import SessionFactory, UnusableReadingError, heldout_cer
from backend.training.models import RunStatus, TrainingKind, TrainingRun
from backend.users.models import User

Clock = Callable[[], datetime]

BY_HAND = "an admin can adopt it by hand"
SEGMENTATION_NOTE = (
    f"not adopted: a segmentation model is adopted only by an admin (the OCR service's rule); {BY_HAND}."
)


def replaced_model(
    session: Session, run: TrainingRun, default_model: str | None, usable: Collection[str] | None = None
) -> str | None:
    """The model the run's model would replace: for a writer run the writer's own model, else
    the default (``default_model``: the OCR service's, as ``GET /models`` names it).
    ``usable``: the models the service can read with; a writer's model not among them (an admin
    removed it) reads nothing now — the writer's documents are read with the default."""
    if run.kind is TrainingKind.WRITER:
        writers = _writers_model(session, run)
        if writers is not None and (usable is None or writers in usable):
            return writers
    return default_model


def usable_models(listing: dict[str, Any]) -> set[str]:
    """The names ``GET /models`` lists without a problem (a file the service cannot use)."""
    entries = listing.get("models")
    return {
        entry["name"]
        for entry in (entries if isinstance(entries, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and not entry.get("problem")
    }


def _writers_model(session: Session, run: TrainingRun) -> str | None:
    writer = session.get(Writer, run.writer_id) if run.writer_id is not None else None
    return writer.model_name if writer is not None else None


@dataclass(frozen=True)
class Verdict:
    note: str
    heldout_cer: float | None = None
    replaced_model: str | None = None
    replaced_cer: float | None = None
    adopted: bool = False
    # A writer run: the writer's own model when it was judged (adopting checks it is still that one).
    writers_model: str | None = None


def cer_text(value: float, other: float | None = None) -> str:
    """A CER with three decimals, or as many more (up to six) as it takes to tell it from a
    different ``other``."""
    decimals = 3
    while other is not None and other != value and decimals < 6 and round(value, decimals) == round(other, decimals):
        decimals += 1
    return f"{value:.{decimals}f}"


def comparison(new: float, replaced: str | None, old: float) -> str:
    """``held-out CER 0.101 is lower than archive-v2's 0.182`` (or ``is not lower than``)."""
    relation = "is lower than" if new < old else "is not lower than"
    label = replaced or "the OCR service's default model"
    return f"held-out CER {cer_text(new, old)} {relation} {label}'s {cer_text(old, new)}"


def _judged(verdict: Verdict) -> str:
    if verdict.heldout_cer is None or verdict.replaced_cer is None:
        return ""
    return comparison(verdict.heldout_cer, verdict.replaced_model, verdict.replaced_cer)


async def judge_and_adopt(
    ocr: OcrClient, sessions: SessionFactory, storage: Storage, run_id: int, clock: Clock
) -> TrainingRun:
    """Judge a run whose model the OCR service has installed, store the CERs, and adopt the
    model if it reads the held-out pages better. The run's status is left to the caller (the
    run ends DONE either way): when the pages cannot be read now, the model stays unadopted
    and the note says why. Returns the run as stored."""
    run = await asyncio.to_thread(_load, sessions, run_id)
    if run.kind is TrainingKind.SEGMENTATION:
        verdict = Verdict(SEGMENTATION_NOTE)
    else:
        verdict = await _judge(ocr, sessions, storage, run)
    if verdict.adopted and run.kind is TrainingKind.RECOGNITION:
        try:
            await ocr.set_default_model(run.model_name)
        except OcrClientError as exc:
            reason = f"the OCR service did not make it the default ({exc.message})"
            verdict = replace(verdict, adopted=False, note=f"not adopted: {_judged(verdict)}, but {reason}; {BY_HAND}.")
    return await asyncio.to_thread(_store_verdict, sessions, run_id, verdict, clock())


async def _judge(ocr: OcrClient, sessions: SessionFactory, storage: Storage, run: TrainingRun) -> Verdict:
    if not run.heldout_page_ids:
        return Verdict(f"not adopted: no pages were held out to judge it on; {BY_HAND}.")
    try:
        listing = await ocr.models()
        default = listing.get("default")

        def models_now() -> tuple[str | None, str | None]:
            with sessions() as session:
                replaced = replaced_model(
                    session, run, default if isinstance(default, str) else None, usable_models(listing)
                )
                return replaced, _writers_model(session, run)

        replaced, writers = await asyncio.to_thread(models_now)
        new_cer = await heldout_cer(ocr, sessions, storage, run.heldout_page_ids, run.model_name)
        old_cer = await heldout_cer(ocr, sessions, storage, run.heldout_page_ids, replaced)
    except OcrUnavailable as exc:
        return Verdict(f"not adopted: the OCR service could not read the held-out pages ({exc.message}); {BY_HAND}.")
    except OcrRejected as exc:
        return Verdict(f"not adopted: the OCR service refused to read the held-out pages ({exc.message}); {BY_HAND}.")
    except UnusableReadingError as exc:
        return Verdict(f"not adopted: the held-out pages could not be judged ({exc}); {BY_HAND}.")
    except OSError as exc:
        return Verdict(f"not adopted: an original of the held-out pages cannot be read ({exc}); {BY_HAND}.")
    if new_cer is None or old_cer is None:
        return Verdict(
            "not adopted: its held-out pages have no ground truth left to judge it on (deleted or moved to "
            f"the trash since the run started); {BY_HAND}.",
            replaced_model=replaced,
        )
    verdict = Verdict("", new_cer, replaced, old_cer, adopted=new_cer < old_cer, writers_model=writers)
    if verdict.adopted:
        return replace(verdict, note=f"adopted: {_judged(verdict)}.")
    return replace(verdict, note=f"not adopted: {_judged(verdict)}; {BY_HAND}.")


async def adopt_by_hand(
    ocr: OcrClient, sessions: SessionFactory, run_id: int, admin: User, clock: Clock
) -> TrainingRun:
    """An admin adopts a finished run's model whatever its CER: recognition → the default,
    writer → the writer's model, segmentation → the segmentation model ``/ocr`` finds lines
    with. Raises ``AppError``: ``TRAINING_RUN_NOT_FOUND``; ``MODEL_NOT_ADOPTABLE`` (the run is
    not DONE, or the OCR service refuses the model, e.g. removed from its store);
    ``TRAINING_DISABLED`` (no training token to change models with); ``OCR_SERVICE_UNAVAILABLE``."""
    run = await asyncio.to_thread(_load, sessions, run_id)
    if run.status is not RunStatus.DONE:
        raise AppError(
            ErrorCode.MODEL_NOT_ADOPTABLE,
            f"Only the model of a finished run can be adopted; run {run.id} is {run.status.value}.",
            details={"status": run.status.value},
        )
    if not ocr.config.training_token:
        raise AppError(
            ErrorCode.TRAINING_DISABLED,
            "Models cannot be changed: no training token is set for the OCR service (APP_OCR_TRAINING_TOKEN).",
        )
    try:
        if run.kind is TrainingKind.RECOGNITION:
            await ocr.set_default_model(run.model_name)
        elif run.kind is TrainingKind.SEGMENTATION:
            await ocr.set_segmentation_model(run.model_name)
        else:
            _check_installed(await ocr.models(), run.model_name)
    except OcrRejected as exc:
        raise AppError(
            ErrorCode.MODEL_NOT_ADOPTABLE,
            f"The OCR service did not take {run.model_name}: {exc.message}",
            details={"serviceCode": exc.code},
        ) from exc
    except OcrUnavailable as exc:
        raise AppError(
            ErrorCode.OCR_SERVICE_UNAVAILABLE,
            f"The OCR service cannot be reached, so {run.model_name} was not adopted. Please try again later.",
            details={"reason": exc.reason.value},
        ) from exc
    judged = _judged(Verdict("", run.heldout_cer, run.replaced_model, run.replaced_cer))
    note = f"adopted by hand by {admin.username}" + (f" ({judged})" if judged else "") + "."
    verdict = Verdict(note, run.heldout_cer, run.replaced_model, run.replaced_cer, adopted=True)
    return await asyncio.to_thread(_store_verdict, sessions, run_id, verdict, clock(), admin.id)


def _check_installed(listing: dict[str, Any], name: str) -> None:
    """A writer's model is chosen in the database only: first make sure the service has it."""
    for entry in listing.get("models") or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            if entry.get("problem"):
                raise OcrRejected(409, "INVALID_MODEL", f"the model cannot be used: {entry['problem']}")
            return
    raise OcrRejected(404, "MODEL_NOT_FOUND", "its store has no model of that name (removed?)")


def _load(sessions: SessionFactory, run_id: int) -> TrainingRun:
    with sessions() as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise AppError(ErrorCode.TRAINING_RUN_NOT_FOUND, f"There is no training run {run_id}.")
        session.expunge(run)
        return run


def _store_verdict(
    sessions: SessionFactory, run_id: int, verdict: Verdict, now: datetime, by: int | None = None
) -> TrainingRun:
    """Write the verdict (and, adopting a writer run, the writer's model) in one transaction."""
    with sessions() as session:
        with session.begin():
            run = session.get(TrainingRun, run_id, with_for_update=True)
            if run is None:
                raise AppError(ErrorCode.TRAINING_RUN_NOT_FOUND, f"There is no training run {run_id}.")
            adopted, note = verdict.adopted, verdict.note
            if adopted and run.kind is TrainingKind.WRITER:
                adopted, note = _make_writers_model(session, run, verdict, by_hand=by is not None)
            run.heldout_cer = verdict.heldout_cer
            run.replaced_model = verdict.replaced_model
            run.replaced_cer = verdict.replaced_cer
            run.adoption_note = note
            if adopted:
                run.adopted, run.adopted_at, run.adopted_by = True, now, by
        session.expunge(run)
        return run


def _make_writers_model(session: Session, run: TrainingRun, verdict: Verdict, *, by_hand: bool) -> tuple[bool, str]:
    writer = session.get(Writer, run.writer_id, with_for_update=True) if run.writer_id is not None else None
    if writer is None:
        return False, f"not adopted: the run's writer no longer exists; {BY_HAND}."
    if not by_hand and writer.model_name != verdict.writers_model:
        # An admin chose another model for the writer while this one was being judged: theirs stands.
        return False, (
            f"not adopted: {_judged(verdict)}, but while it was judged the writer's model became "
            f"{writer.model_name or 'the default model'}; {BY_HAND}."
        )
    writer.model_name, writer.model_run_id = run.model_name, run.id
    return True, verdict.note
