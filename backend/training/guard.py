"""The one guard every kind of run passes before it starts, and the overview asks the same.

``assess`` works out what a run of a kind (and writer) would train on — the held-out pages
chosen by the one held-out seed, the lines left for the ZIP — and ``guard`` says why it may not
start now, in the order an admin can act on: training switched off, a run already active,
the OCR service not answering, too little data. The overview shows the refusal's message as
the reason; ``POST /api/admin/training/{kind}`` raises it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.documents.models import Writer
from backend.errors import AppError, ErrorCode
from backend.ocr_client import OcrClient
from backend.settings import Settings
from backend.training.models import TrainingKind, TrainingRun
from backend.training.ports import PageLike, TrainingData

LINES, PAGES = "lines", "pages"
# The held-out pages' seed: the same for every run, so a page held out stays held out while it
# can (a page's place depends on the seed and its id only). A seed of its own per run would
# hold out mostly pages the previous run trained on: the model it would replace would be judged
# on its own training pages, and a better new model would hardly ever be adopted.
HELDOUT_SEED = 0


@dataclass(frozen=True)
class Shortfall:
    needed: int
    have: int
    unit: str

    @property
    def missing(self) -> int:
        return self.needed - self.have

    def details(self) -> dict[str, int | str]:
        return {"needed": self.needed, "have": self.have, "missing": self.missing, "unit": self.unit}


@dataclass(frozen=True)
class Assessment:
    """What a run would train on now; ``shortfall`` is None when there is enough."""

    kind: TrainingKind
    writer: Writer | None
    pages: Sequence[PageLike]
    train: Sequence[PageLike]
    heldout: Sequence[PageLike]
    threshold: int
    unit: str
    shortfall: Shortfall | None

    @property
    def eligible_lines(self) -> int:
        return sum(page.lines for page in self.pages)

    @property
    def train_lines(self) -> int:
        return sum(page.lines for page in self.train)

    @property
    def heldout_lines(self) -> int:
        return sum(page.lines for page in self.heldout)


def threshold_of(settings: Settings, kind: TrainingKind) -> tuple[int, str]:
    if kind is TrainingKind.SEGMENTATION:
        return settings.training_min_segmentation_pages, PAGES
    if kind is TrainingKind.WRITER:
        return settings.training_min_writer_lines, LINES
    return settings.training_min_lines, LINES


def assess(
    session: Session,
    settings: Settings,
    data: TrainingData,
    kind: TrainingKind,
    writer: Writer | None,
    seed: int,
    pages: Sequence[PageLike] | None = None,
) -> Assessment:
    """``pages``: the eligible pages when the caller has them already (the overview asks for
    every writer's at once); else they are looked up."""
    threshold, unit = threshold_of(settings, kind)
    if pages is None:
        pages = data.eligible_pages(session, kind, writer.id if writer else None)
    if kind is TrainingKind.SEGMENTATION:
        # Nothing is held out: the OCR service validates on its own split, and only an admin adopts.
        short = Shortfall(threshold, len(pages), PAGES) if len(pages) < threshold else None
        return Assessment(kind, writer, pages, pages, [], threshold, unit, short)
    min_pages = settings.training_heldout_min_pages
    if len(pages) <= min_pages:
        # ``min_pages`` judge the new model and at least one must be left to train on (the
        # split refuses fewer: a run that cannot be judged must not start).
        short = Shortfall(min_pages + 1, len(pages), PAGES)
        return Assessment(kind, writer, pages, [], [], threshold, unit, short)
    train, heldout = data.split_heldout(pages, settings.training_heldout_share, min_pages, seed)
    lines = sum(page.lines for page in train)
    short = Shortfall(threshold, lines, LINES) if lines < threshold else None
    return Assessment(kind, writer, pages, train, heldout, threshold, unit, short)


def _what(kind: TrainingKind, writer: Writer | None) -> str:
    if writer is not None:
        return f"A run for {writer.name}"
    return f"A {kind.value} run"


def _not_enough(assessment: Assessment, heldout_min_pages: int) -> AppError:
    short = assessment.shortfall
    assert short is not None
    what = _what(assessment.kind, assessment.writer)
    if assessment.kind is TrainingKind.SEGMENTATION:
        message = (
            f"{what} needs at least {short.needed} pages whose lines a person has reviewed; "
            f"there are {short.have}, so {short.missing} more are missing."
        )
    elif short.unit == PAGES:
        message = (
            f"{what} needs corrected lines on at least {short.needed} pages "
            f"({heldout_min_pages} are held out to judge the new model); there are {short.have}, "
            f"so {short.missing} more pages are missing."
        )
    else:
        message = (
            f"{what} needs at least {short.needed} corrected lines besides the {len(assessment.heldout)} "
            f"held-out pages; there are {short.have}, so {short.missing} more lines are missing."
        )
    return AppError(ErrorCode.NOT_ENOUGH_TRAINING_DATA, message, details=short.details())


def active_run(session: Session) -> TrainingRun | None:
    return session.scalar(select(TrainingRun).where(TrainingRun.active.is_(True)))


def already_running(run: TrainingRun) -> AppError:
    return AppError(
        ErrorCode.TRAINING_ALREADY_RUNNING,
        f"Training run {run.id} ({run.kind.value}) is still {run.status.value.lower()}; "
        "one run at a time. Wait for it to end or cancel it.",
        details={"runId": run.id},
    )


@dataclass(frozen=True)
class Verdict:
    """The guard's answer: what a run would train on (None: training is off, nothing was
    counted) and why it may not start now (None: it may)."""

    assessment: Assessment | None
    refusal: AppError | None


def guard(
    session: Session,
    settings: Settings,
    ocr: OcrClient,
    data: TrainingData,
    kind: TrainingKind,
    writer: Writer | None,
    seed: int,
    pages: Sequence[PageLike] | None = None,
) -> Verdict:
    """The one guard of every kind, in the order an admin can act on (``pages``: see ``assess``)."""
    if settings.ocr_training_token is None:
        # Off: the eligibility queries are not run on every load of the admin page.
        disabled = AppError(
            ErrorCode.TRAINING_DISABLED,
            "Training is switched off: the backend has no training token for the OCR service (APP_OCR_TRAINING_TOKEN).",
        )
        return Verdict(None, disabled)
    assessment = assess(session, settings, data, kind, writer, seed, pages)
    running = active_run(session)
    if running is not None:
        return Verdict(assessment, already_running(running))
    if ocr.refuses_calls():
        unavailable = AppError(
            ErrorCode.OCR_SERVICE_UNAVAILABLE,
            "The OCR service is not answering at the moment. Please try again in a few minutes.",
        )
        return Verdict(assessment, unavailable)
    if assessment.shortfall is not None:
        return Verdict(assessment, _not_enough(assessment, settings.training_heldout_min_pages))
    return Verdict(assessment, None)
