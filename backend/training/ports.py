"""What the run lifecycle needs from the training data and from the judging of a new model.

The lifecycle (service, guard, follower) calls these two small interfaces, not the modules
behind them, so its tests can script eligibility, the ZIP and adoption without real pages
or real OCR. Production binds them to ``backend.training.dataset`` (eligibility, held-out
split, the ZIP) and ``backend.training.adoption`` (judging and adopting), in ``parts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import BinaryIO, Protocol

from sqlalchemy.orm import Session

from backend.documents.render import RenderLimits
from backend.storage import Storage
from backend.training.models import TrainingKind


class PageLike(Protocol):
    """One eligible page (dataset's ``EligiblePage``)."""

    @property
    def page_id(self) -> int: ...

    @property
    def lines(self) -> int: ...


class ZipCounts(Protocol):
    """What went into a training ZIP (dataset's ``ZipSummary``)."""

    @property
    def pages(self) -> int: ...

    @property
    def lines(self) -> int: ...


class TrainingData(Protocol):
    def eligible_pages(self, session: Session, kind: TrainingKind, writer_id: int | None = None) -> Sequence[PageLike]:
        """The pages whose ground truth a run of ``kind`` (and writer) would learn from."""
        ...

    def split_heldout(
        self, pages: Sequence[PageLike], share: float, min_pages: int, seed: int
    ) -> tuple[Sequence[PageLike], Sequence[PageLike]]:
        """(train, held out): whole pages, the same for the same seed."""
        ...

    def write_training_zip(
        self,
        session: Session,
        storage: Storage,
        limits: RenderLimits,
        pages: Sequence[PageLike],
        kind: TrainingKind,
        dest: BinaryIO,
    ) -> ZipCounts:
        """The pages' images and PAGE XML, streamed into ``dest``."""
        ...

    def eligible_by_writer(self, session: Session) -> Mapping[int, Sequence[PageLike]]:
        """Every writer's eligible pages for a writer run, at once (writers without any: absent)."""
        ...

    def new_lines_by_writer(self, session: Session, since: Mapping[int, datetime | None]) -> Mapping[int, int]:
        """Ground-truth lines of each writer in ``since`` corrected or reviewed after the writer's
        moment there (None: all of them), at once; a writer with none is absent."""
        ...


class ModelJudge(Protocol):
    async def judge_and_adopt(self, run_id: int) -> None:
        """Read the run's held-out pages with its new model and the one it would replace,
        store both CERs, and adopt the new model only if it reads them better (else say why
        in ``adoption_note``). Never raises for an OCR service that cannot be reached: the
        note says so, and an admin may adopt by hand."""
        ...

    async def adopt_by_hand(self, run_id: int, admin_id: int) -> None:
        """An admin adopts the run's model: the default (recognition), the writer's model
        (writer) or the segmentation model (segmentation). Raises ``AppError`` (e.g.
        ``OCR_SERVICE_UNAVAILABLE``) where the OCR service refuses or cannot be reached."""
        ...
