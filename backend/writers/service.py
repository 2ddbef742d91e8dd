"""Writers as the archive knows them: their documents and the model their documents are read with."""

from __future__ import annotations

from sqlalchemy import Row, Select, func, select
from sqlalchemy.orm import Session

from backend.documents.model_labels import writer_model_label
from backend.documents.models import Document, Writer
from backend.errors import AppError, ErrorCode
from backend.training.models import TrainingRun
from backend.writers.schemas import WriterFilter, WriterModelOut, WriterPage, WriterSummaryOut


def _summaries() -> Select[Writer, int, int | None]:
    """Each writer with their document count and their model's run number, in one query."""
    counted = (
        select(Document.writer_id, func.count().label("documents"))
        .where(Document.deleted_at.is_(None), Document.writer_id.is_not(None))
        .group_by(Document.writer_id)
        .subquery()
    )
    return (
        select(Writer, func.coalesce(counted.c.documents, 0), TrainingRun.sequence)
        .outerjoin(counted, counted.c.writer_id == Writer.id)
        .outerjoin(TrainingRun, TrainingRun.id == Writer.model_run_id)
    )


def _summary(row: Row[Writer, int, int | None]) -> WriterSummaryOut:
    writer, documents, sequence = row
    model = None
    if writer.model_name is not None:
        model = WriterModelOut(
            name=writer.model_name,
            run_id=writer.model_run_id,
            run_sequence=sequence,
            label=writer_model_label(writer.name, writer.model_name, sequence),
        )
    return WriterSummaryOut(
        id=writer.id, slug=writer.slug, name=writer.name, document_count=int(documents), model=model
    )


class Writers:
    def page(self, session: Session, query: WriterFilter) -> WriterPage:
        """By slug (the name's alphabetical order, umlauts spelled out), keyset-paged on it."""
        statement = _summaries()
        if query.cursor is not None:
            statement = statement.where(Writer.slug > query.cursor)
        rows = session.execute(statement.order_by(Writer.slug).limit(query.limit + 1)).all()
        more = len(rows) > query.limit
        items = [_summary(row) for row in rows[: query.limit]]
        return WriterPage(items=items, next_cursor=items[-1].slug if more else None)

    def get(self, session: Session, slug: str) -> WriterSummaryOut:
        row = session.execute(_summaries().where(Writer.slug == slug)).first()
        if row is None:
            raise AppError(ErrorCode.WRITER_NOT_FOUND, f"There is no writer {slug!r}.")
        return _summary(row)
