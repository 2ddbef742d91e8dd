"""Lines of a document and their corrections. The OCR's text is never overwritten by a person's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from pydantic import TypeAdapter
from sqlalchemy import CursorResult, Table, Update, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from backend.db import keyset_page
from backend.documents.model_labels import AnySelect, ModelRead, model_read, with_model_runs
from backend.documents.models import DiscardedCorrection, Document, Line, LineCorrection, Page
from backend.documents.schemas import CorrectionOut, DiscardedCorrectionOut, DiscardedCorrectionPage, LineOut
from backend.errors import AppError, ErrorCode
from backend.schemas import Keyset
from backend.search.index import index_lines, index_pages, lock_documents
from backend.users.models import User

log = logging.getLogger(__name__)


def line_out(line: Line, page_number: int, read: ModelRead) -> LineOut:
    return LineOut(
        id=line.id,
        page=page_number,
        order_index=line.order_index,
        baseline=line.baseline,
        polygon=line.polygon,
        ocr_text=line.ocr_text,
        ocr_confidence=line.ocr_confidence,
        text=line.text,
        current_text=line.text if line.text is not None else line.ocr_text,
        corrected_by=line.corrected_by,
        corrected_at=line.corrected_at,
        model_name=line.model_name,
        model_version=line.model_version,
        model=read.model,
        model_label=read.label,
        version=line.version,
    )


# A document's lines as plain rows (Core, not ORM entities): a hundred lines are read on each
# page view, and the identity map and instance state of a hundred objects would be thrown away.
_LINE_COLUMNS = (
    Line.id,
    Page.number.label("page"),
    Line.order_index,
    Line.baseline,
    Line.polygon,
    Line.ocr_text,
    Line.ocr_confidence,
    Line.text,
    Line.corrected_by,
    Line.corrected_at,
    Line.model_name,
    Line.model_version,
    Line.version,
)
_LINE_NAMES = tuple(column.key for column in _LINE_COLUMNS)
LINE_LIST = TypeAdapter(list[LineOut])


# The queries of a page view and of a line saved, built once (on first use, when the mappers are
# configured) and executed with parameters: building them afresh, aliases and all, cost more CPU
# than running them (bench/profile_api.py), and SQLAlchemy memoizes a statement's cache key.
@cache
def _document_lines() -> AnySelect:
    statement = (
        select(*_LINE_COLUMNS)
        .join(Page, Page.id == Line.page_id)
        .where(Page.document_id == bindparam("document_id"))
        .order_by(Page.number, Line.order_index)
    )
    return with_model_runs(statement, Line.model_name)


@cache
def _page_lines() -> AnySelect:
    # The document view shows one page: its lines alone, not the whole document's.
    return _document_lines().where(Page.number == bindparam("page_number"))


@cache
def _live_line() -> AnySelect:
    """A line of a document not in the trash, its page's number, and the columns of its model's run."""
    statement = (
        select(Line, Page.number)
        .join(Page, Page.id == Line.page_id)
        .join(Document, Document.id == Page.document_id)
        .where(Line.id == bindparam("line_id"), Document.deleted_at.is_(None))
    )
    return with_model_runs(statement, Line.model_name)


@cache
def _save_line() -> Update:
    # The version guard sits in the UPDATE itself, so of two saves racing on one version exactly one wins.
    return (
        update(Line)
        .where(Line.id == bindparam("line_id"), Line.version == bindparam("expected_version"))
        .values(
            text=bindparam("new_text", type_=Line.text.type),
            corrected_by=bindparam("author", type_=Line.corrected_by.type),
            corrected_at=bindparam("saved_at", type_=Line.corrected_at.type),
            version=bindparam("new_version", type_=Line.version.type),
        )
        .execution_options(synchronize_session=False)
    )


class Lines:
    def for_document(self, session: Session, document: Document) -> list[LineOut]:
        return self._lines(session.execute(_document_lines(), {"document_id": document.id}))

    def for_page(self, session: Session, document: Document, page_number: int) -> list[LineOut]:
        """The lines of one page of ``document`` in reading order (none for a page it lacks)."""
        return self._lines(session.execute(_page_lines(), {"document_id": document.id, "page_number": page_number}))

    @staticmethod
    def _lines(rows: Any) -> list[LineOut]:
        count = len(_LINE_COLUMNS)
        lines = []
        for row in rows:
            fields = dict(zip(_LINE_NAMES, row[:count], strict=True))
            read = model_read(fields["model_name"], fields["model_version"], tuple(row[count:]))
            current = fields["text"] if fields["text"] is not None else fields["ocr_text"]
            lines.append(LineOut(**fields, current_text=current, model=read.model, model_label=read.label))
        return lines

    def for_document_json(self, session: Session, document: Document) -> bytes:
        """:meth:`for_document` as the JSON body of the lines route, validated once and dumped once."""
        return LINE_LIST.dump_json(self.for_document(session, document), by_alias=True)

    def discarded(self, session: Session, document: Document, page: Keyset) -> DiscardedCorrectionPage:
        """The corrections OCR re-runs dropped from the document, newest first, keyset-paged."""
        rows, next_cursor = keyset_page(
            session,
            select(DiscardedCorrection).where(DiscardedCorrection.document_id == document.id),
            DiscardedCorrection.id,
            page.cursor,
            page.limit,
        )
        items = [
            DiscardedCorrectionOut(
                id=row.id,
                page=row.page_number,
                order_index=row.order_index,
                line_id=row.line_id,
                ocr_text=row.ocr_text,
                text=row.text,
                corrected_by=row.corrected_by,
                corrected_at=row.corrected_at,
                version=row.version,
                history=[CorrectionOut.model_validate(entry) for entry in row.history],
                discarded_by=row.discarded_by,
                discarded_at=row.discarded_at,
                job_id=row.job_id,
            )
            for row in rows
        ]
        return DiscardedCorrectionPage(items=items, next_cursor=next_cursor)

    def store_page(
        self,
        session: Session,
        document_id: int,
        page_number: int,
        lines: Sequence[dict[str, Any]],
        *,
        model: str,
        model_version: str | None,
        now: datetime,
    ) -> None:
        """Store the OCR's lines of one page (the OCR service's LINE objects) in one transaction."""
        self.replace_page(session, document_id, page_number, lines, model=model, model_version=model_version, now=now)
        session.commit()

    def replace_page(
        self,
        session: Session,
        document_id: int,
        page_number: int,
        lines: Sequence[dict[str, Any]],
        *,
        model: str,
        model_version: str | None,
        now: datetime,
        size: tuple[int, int] | None = None,
        discard_by: int | None = None,
        job_id: int | None = None,
    ) -> int:
        """Put a new OCR reading of one page in place of the old one, without committing.

        ``size``: the page's width and height as the OCR service read it (its lines' coordinates
        are in those pixels); recorded in place of the size the backend worked out for itself.

        A person's work is never lost: a corrected line keeps its text and version and only
        takes the new OCR reading at its position (matched by reading-order index); a corrected
        line whose position the new reading lacks stays as it is. An uncorrected line takes the
        new reading in place (same id; its version rises where its text changes, so a save from
        the old text gets 409 LINE_CHANGED) or goes where the new reading has no line.
        A review of the page (``reviewed_at``) is cleared: the lines it vouched for are gone.

        ``discard_by`` (a user id): the person asked to drop the corrections; each corrected
        line is archived (see :meth:`_discard`) and read afresh like the others. Returns how
        many corrected lines were discarded.
        """
        page = session.scalars(select(Page).where(Page.document_id == document_id, Page.number == page_number)).one()
        page.ocr_model, page.ocr_model_version, page.ocr_at = model, model_version, now
        # A review vouched for the lines a person saw; a new reading puts lines nobody checked
        # (new positions, new OCR text) on the page, which must not pass as ground truth.
        page.reviewed_at, page.reviewed_by = None, None
        if size is not None:
            page.width, page.height = size
        # Locked (PostgreSQL; SQLite has one writer at a time): a person's save in flight on one of
        # these lines commits first and is read here, else archiving would copy the text before it
        # and the update below would wipe the one saved.
        present = {
            line.order_index: line
            for line in session.scalars(
                select(Line).where(Line.page_id == page.id).with_for_update().execution_options(populate_existing=True)
            )
        }
        # The document's row next (PostgreSQL), before a line goes: deleting one deletes its
        # search row, and a change of the document meanwhile would wait for that row while the
        # index below waits for the document (see lock_documents). Not before the lines: a
        # person's save holds its line, then the document, and would wait the other way round.
        lock_documents(session, [document_id])
        reading = {int(item["index"]): item for item in lines}
        discarded, cleared = 0, set[int]()
        corrected = {index: line for index, line in present.items() if line.text is not None}
        if discard_by is not None and corrected:
            new_texts = {index: str(item["text"]) for index, item in reading.items()}
            discarded = self._discard(session, page, corrected, new_texts, discard_by, job_id, now)
            cleared = set(corrected)  # what _discard left: the lines it cleared (it deleted the others)
            present = {index: line for index, line in present.items() if line.text is None}
        # An uncorrected line the new reading has no line for goes. The others are updated in
        # place, never deleted and inserted: the line keeps its id, so a person saving it from
        # the old reading gets 409 LINE_CHANGED with the new text, not 404 for a vanished id.
        stale = [line.id for index, line in present.items() if line.text is None and index not in reading]
        if stale:
            # "fetch": deleted lines leave the session too, so a reused id is never mistaken for them.
            session.execute(delete(Line).where(Line.id.in_(stale)).execution_options(synchronize_session="fetch"))
        for index, item in reading.items():
            ocr = {
                "baseline": item.get("baseline") or [],
                "polygon": item.get("polygon") or [],
                "ocr_text": item["text"],
                "ocr_confidence": item.get("confidence"),
                "model_name": model,
                "model_version": model_version,
            }
            kept = present.get(index)
            if kept is None:
                session.add(Line(page_id=page.id, order_index=index, version=1, **ocr))
                continue
            if kept.text is None and index not in cleared and kept.ocr_text != ocr["ocr_text"]:
                # The text people see changes: a save from the old reading is stale (409).
                kept.version += 1
            for name, value in ocr.items():
                setattr(kept, name, value)
        # Searchable by its new reading when this commits, no longer by the old one.
        index_pages(session, [page.id])
        return discarded

    def _discard(
        self,
        session: Session,
        page: Page,
        corrected: dict[int, Line],
        new_texts: dict[int, str],
        user_id: int,
        job_id: int | None,
        now: datetime,
    ) -> int:
        """Drop the person's text of every line in ``corrected``, archiving it with its history first.

        A line at a position the new reading has stays (same id, its history rows with it), its
        person's text cleared, its version raised, and one more history row says who dropped
        which text. A line at a position the new reading lacks is deleted (its history rows go
        with it): the archived copy is then the only record, which is why it is complete.
        Lines left in ``corrected`` are the ones the caller gives the new OCR reading.
        """
        history: dict[int, list[dict[str, Any]]] = {line.id: [] for line in corrected.values()}
        for row in session.scalars(
            select(LineCorrection)
            .where(LineCorrection.line_id.in_(list(history)))
            .order_by(LineCorrection.line_id, LineCorrection.version)
        ):
            history[row.line_id].append(
                {
                    "userId": row.user_id,
                    "correctedAt": row.corrected_at.isoformat(),
                    "textBefore": row.text_before,
                    "textAfter": row.text_after,
                    "version": row.version,
                }
            )
        gone: list[int] = []
        for index, line in sorted(corrected.items()):
            assert line.text is not None
            session.add(
                DiscardedCorrection(
                    document_id=page.document_id,
                    page_number=page.number,
                    order_index=index,
                    line_id=line.id,
                    ocr_text=line.ocr_text,
                    text=line.text,
                    corrected_by=line.corrected_by,
                    corrected_at=line.corrected_at,
                    version=line.version,
                    history=history[line.id],
                    discarded_by=user_id,
                    discarded_at=now,
                    job_id=job_id,
                )
            )
            if index not in new_texts:
                gone.append(line.id)
                continue
            session.add(
                LineCorrection(
                    line_id=line.id,
                    user_id=user_id,
                    corrected_at=now,
                    text_before=line.text,
                    text_after=new_texts[index],
                    version=line.version + 1,
                )
            )
            line.text, line.corrected_by, line.corrected_at = None, None, None
            line.version += 1
        count = len(corrected)
        if gone:
            session.execute(delete(Line).where(Line.id.in_(gone)).execution_options(synchronize_session="fetch"))
            for index in [i for i, line in corrected.items() if line.id in gone]:
                del corrected[index]
        return count

    def _line(self, session: Session, line_id: int) -> tuple[Line, int, ModelRead]:
        row = session.execute(_live_line(), {"line_id": line_id}).first()
        if row is None:
            raise AppError(ErrorCode.LINE_NOT_FOUND, f"There is no line {line_id}.")
        line, page_number, *runs = row
        return line, page_number, model_read(line.model_name, line.model_version, tuple(runs))

    def correct(self, session: Session, line_id: int, text: str, version: int, user: User, now: datetime) -> LineOut:
        """Save a person's text if ``version`` is still the line's; else 409 LINE_CHANGED with the current text."""
        line, page_number, read = self._line(session, line_id)
        before = line.text if line.text is not None else line.ocr_text
        saved = False
        if line.version == version:
            result = session.execute(
                _save_line(),
                {
                    "line_id": line_id,
                    "expected_version": version,
                    "new_text": text,
                    "author": user.id,
                    "saved_at": now,
                    "new_version": version + 1,
                },
            )
            saved = cast(CursorResult[Any], result).rowcount == 1
        if not saved:
            session.rollback()
            line, page_number, _ = self._line(session, line_id)
            session.refresh(line)
            current = line.text if line.text is not None else line.ocr_text
            raise AppError(
                ErrorCode.LINE_CHANGED,
                "Someone else saved this line in the meantime. Their text is shown; apply your change to it.",
                details={"text": current, "version": line.version, "correctedBy": line.corrected_by},
            )
        # Core, not the unit of work: one row, nothing in the session refers to it.
        session.execute(
            insert(cast(Table, LineCorrection.__table__)),
            {
                "line_id": line_id,
                "user_id": user.id,
                "corrected_at": now,
                "text_before": before,
                "text_after": text,
                "version": version + 1,
            },
        )
        index_lines(session, [line_id])
        session.commit()
        # What the guarded UPDATE wrote, without reading the row back: nothing else changed it
        # (the version guard), and the model's label does not change with the text.
        for name, value in (
            ("text", text),
            ("corrected_by", user.id),
            ("corrected_at", now.astimezone(UTC)),
            ("version", version + 1),
        ):
            set_committed_value(line, name, value)
        return line_out(line, page_number, read)

    def history(self, session: Session, line_id: int) -> list[CorrectionOut]:
        self._line(session, line_id)
        rows = session.scalars(
            select(LineCorrection).where(LineCorrection.line_id == line_id).order_by(LineCorrection.version)
        )
        return [CorrectionOut.model_validate(c) for c in rows]
