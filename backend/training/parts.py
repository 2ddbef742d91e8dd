"""The production side of ``ports``: the dataset and adoption modules, bound to the app's services."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import BinaryIO, cast

from sqlalchemy.orm import Session

from backend.db import Database
from backend.documents.render import PdfRenderers, RenderLimits
from backend.ocr_client import OcrClient
from backend.storage import Storage
from backend.training import adoption, dataset
from backend.training.models import TrainingKind
from backend.training.ports import PageLike, ZipCounts
from backend.users.models import User


class DatasetModule:
    """``TrainingData`` by ``backend.training.dataset``; PDF pages are drawn by ``renderers``
    (the page images' children, with their time and memory limits)."""

    def __init__(self, renderers: PdfRenderers) -> None:
        self._renderers = renderers

    def eligible_pages(self, session: Session, kind: TrainingKind, writer_id: int | None = None) -> Sequence[PageLike]:
        return dataset.eligible_pages(session, kind, writer_id)

    def split_heldout(
        self, pages: Sequence[PageLike], share: float, min_pages: int, seed: int
    ) -> tuple[Sequence[PageLike], Sequence[PageLike]]:
        # The pages are the ones eligible_pages gave (EligiblePage); the port names only what it reads.
        return dataset.split_heldout(cast(Sequence[dataset.EligiblePage], pages), share, min_pages, seed)

    def write_training_zip(
        self,
        session: Session,
        storage: Storage,
        limits: RenderLimits,
        pages: Sequence[PageLike],
        kind: TrainingKind,
        dest: BinaryIO,
    ) -> ZipCounts:
        chosen = cast(Sequence[dataset.EligiblePage], pages)
        return dataset.write_training_zip(session, storage, limits, chosen, kind, dest, renderers=self._renderers)

    def eligible_by_writer(self, session: Session) -> Mapping[int, Sequence[PageLike]]:
        return dataset.eligible_by_writer(session)

    def new_lines_by_writer(self, session: Session, since: Mapping[int, datetime | None]) -> Mapping[int, int]:
        return dataset.new_lines_by_writer(session, since)


class AdoptionModule:
    """``ModelJudge`` by ``backend.training.adoption``, with the app's database, client, store and clock."""

    def __init__(self, db: Database, ocr: OcrClient, storage: Storage, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._ocr = ocr
        self._storage = storage
        self._clock = clock

    async def judge_and_adopt(self, run_id: int) -> None:
        await adoption.judge_and_adopt(self._ocr, self._db.sessions, self._storage, run_id, self._clock)

    async def adopt_by_hand(self, run_id: int, admin_id: int) -> None:
        with self._db.sessions() as session:
            admin = session.get_one(User, admin_id)
        await adoption.adopt_by_hand(self._ocr, self._db.sessions, run_id, admin, self._clock)
