"""What the document view's OCR panel asks before and while it reads a document: the models a
person may choose (and the one offered first), and the document's latest job — so a page opened
(or reloaded) while its document is being read finds the job and follows its progress."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from backend.documents.model_labels import describe
from backend.documents.models import Document, Line, Page
from backend.ocr.models import ACTIVE, ModelSource, OcrJob
from backend.ocr.schemas import OcrModelOut, OcrModelsOut

RECOGNITION = "recognition"


def recognition_models(listing: dict[str, Any]) -> list[str]:
    """The names ``GET /models`` lists that may read text: recognition models, and files whose
    kind the service has not found out yet (a model placed by hand is listed as ``checking``
    until the service inspected it, the default often among them); not a segmentation model,
    not a file the service refused (``problem``)."""
    entries = listing.get("models")
    names = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        if entry.get("kind") in (RECOGNITION, None) and not entry.get("problem"):
            names.append(entry["name"])
    return names


def model_choices(session: Session, listing: dict[str, Any], document: Document | None) -> OcrModelsOut:
    """The recognition models to choose from, the default first, then by name; preselected: the
    document's writer's own model if the service has it (a removed one reads nothing — the job
    would fall back to the default), else the default. The same order of choice as a job that
    names no model (backend/ocr/queue.py ``_model_for``), so choosing the preselected model and
    naming none read alike."""
    names = recognition_models(listing)
    default = listing.get("default") if isinstance(listing.get("default"), str) else None
    if default not in names:
        default = None
    names.sort(key=lambda name: (name != default, name.casefold()))
    models = []
    for name in names:
        model = describe(session, name, None).model
        assert model is not None  # described by name: never None for a name
        models.append(
            OcrModelOut(name=name, default=name == default, writer=model.writer, run_sequence=model.run_sequence)
        )
    writer_model = document.writer.model_name if document is not None and document.writer is not None else None
    if writer_model is not None and writer_model in names:
        preselected, source = writer_model, ModelSource.WRITER
    elif document is not None and default is not None:
        preselected, source = default, ModelSource.DEFAULT
    else:
        preselected, source = None, None
    return OcrModelsOut(models=models, default=default, preselected=preselected, preselected_source=source)


def latest_job(session: Session, document_id: int) -> OcrJob | None:
    """The document's queued or running job (it never has two), else its newest. Not simply the
    newest: a batch retry re-queues an older job under its own id, after a newer one ended."""
    active = case((OcrJob.status.in_(ACTIVE), 0), else_=1)
    return session.scalars(
        select(OcrJob).where(OcrJob.document_id == document_id).order_by(active, OcrJob.id.desc()).limit(1)
    ).first()


def corrected_lines(session: Session, document_id: int) -> int:
    """The document's lines with a person's text (what discarding corrections would archive)."""
    count = session.scalar(
        select(func.count())
        .select_from(Line)
        .join(Page, Page.id == Line.page_id)
        .where(Page.document_id == document_id, Line.text.is_not(None))
    )
    return int(count or 0)
