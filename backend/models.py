"""Every table of the backend, imported in one place so Alembic and the app see the same metadata."""

from __future__ import annotations

from backend.documents.models import DiscardedCorrection, Document, Line, LineCorrection, Page, Writer
from backend.ocr.models import OcrBatch, OcrJob
from backend.search.models import SearchLine, SearchVariant, SearchWord
from backend.training.models import TrainingRun
from backend.users.models import Credential, User

__all__ = [
    "Credential",
    "DiscardedCorrection",
    "Document",
    "Line",
    "LineCorrection",
    "OcrBatch",
    "OcrJob",
    "Page",
    "SearchLine",
    "SearchVariant",
    "SearchWord",
    "TrainingRun",
    "User",
    "Writer",
]
