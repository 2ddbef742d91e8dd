"""The production side of ``ports``: the dataset and adoption modules, bound to the app's services.

The modules are looked up when a run first needs them, not when the app starts: an app
whose training is switched off (no token) never loads them, and the rest of the backend
does not depend on them being importable.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any, BinaryIO, cast

from sqlalchemy.orm import Session

from backend.db import Database
from backend.documents.render import RenderLimits
from backend.ocr_client import OcrClient
from backend.storage import Storage
from backend.training.models import TrainingKind
from backend.training.ports import PageLike, ZipCounts
from backend.users.models import User


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"backend.training.{name}")


class DatasetModule:
    """``TrainingData`` by ``backend.training.dataset``."""

    def eligible_pages(self, session: Session, kind: TrainingKind, writer_id: int | None = None) -> Sequence[PageLike]:
        return cast(Sequence[PageLike], _module("dataset").eligible_pages(session, kind, writer_id))

    def split_heldout(
        self, pages: Sequence[PageLike], share: float, min_pages: int, seed: int
    ) -> tuple[Sequence[PageLike], Sequence[PageLike]]:
        split: Any = _module("dataset").split_heldout(pages, share, min_pages, seed)
        return cast(tuple[Sequence[PageLike], Sequence[PageLike]], split)

    def write_training_zip(
        self,
        session: Session,
        storage: Storage,
        limits: RenderLimits,
        pages: Sequence[PageLike],
        kind: TrainingKind,
        dest: BinaryIO,
    ) -> ZipCounts:
        return cast(ZipCounts, _module("dataset").write_training_zip(session, storage, limits, pages, kind, dest))

    def eligible_by_writer(self, session: Session) -> Mapping[int, Sequence[PageLike]]:
        return cast(Mapping[int, Sequence[PageLike]], _module("dataset").eligible_by_writer(session))

    def new_lines_by_writer(self, session: Session, since: Mapping[int, datetime | None]) -> Mapping[int, int]:
        return cast(Mapping[int, int], _module("dataset").new_lines_by_writer(session, since))


class AdoptionModule:
    """``ModelJudge`` by ``backend.training.adoption``, with the app's database, client, store and clock."""

    def __init__(self, db: Database, ocr: OcrClient, storage: Storage, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._ocr = ocr
        self._storage = storage
        self._clock = clock

    async def judge_and_adopt(self, run_id: int) -> None:
        await _module("adoption").judge_and_adopt(self._ocr, self._db.sessions, self._storage, run_id, self._clock)

    async def adopt_by_hand(self, run_id: int, admin_id: int) -> None:
        with self._db.sessions() as session:
            admin = session.get_one(User, admin_id)
        await _module("adoption").adopt_by_hand(self._ocr, self._db.sessions, run_id, admin, self._clock)
