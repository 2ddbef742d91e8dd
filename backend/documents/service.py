"""Documents: ingesting an upload, reading, listing with keyset paging, the trash. No HTTP here."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from datetime import datetime, timedelta
from functools import cache
from typing import Any, BinaryIO

from sqlalchemy import Row, Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.db import keyset_rows
from backend.documents.inspect import inspect
from backend.documents.models import Document, DocumentStatus, Page, Writer, folded_title
from backend.documents.schemas import (
    DocumentFilter,
    DocumentOut,
    DocumentPage,
    TrashedDocumentOut,
    UploadFields,
    WriterOut,
    format_partial_date,
    parse_partial_date,
)
from backend.errors import AppError, ErrorCode
from backend.ocr.models import OcrJob
from backend.ocr.service import Jobs
from backend.storage import Storage, StorageUnavailableError
from backend.users.models import Role, User

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})


def slugify(name: str) -> str:
    """A stable, readable slug: ``Anna Müller`` → ``anna-mueller``; names without Latin letters get a hash."""
    ascii_name = unicodedata.normalize("NFKD", name.casefold().translate(_GERMAN)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-")[:180]
    return slug or "writer-" + hashlib.sha256(name.encode()).hexdigest()[:12]


def document_out(document: Document) -> DocumentOut:
    return DocumentOut(
        id=document.id,
        title=document.title,
        writer=WriterOut.model_validate(document.writer) if document.writer else None,
        date=format_partial_date(document.date, document.date_precision),
        original_filename=document.original_filename,
        media_type=document.media_type,
        sha256=document.sha256,
        size_bytes=document.size_bytes,
        page_count=document.page_count,
        status=document.status,
        created_by=document.created_by,
        created_at=document.created_at,
        deleted_at=document.deleted_at,
    )


# The list's columns, read as plain rows (Core): fifty documents and their writers on every
# page of the list, whose ORM objects (identity map, instance state) would be thrown away.
_LISTED_COLUMNS = (
    Document.id,
    Document.title,
    Document.date,
    Document.date_precision,
    Document.original_filename,
    Document.media_type,
    Document.sha256,
    Document.size_bytes,
    Document.page_count,
    Document.status,
    Document.created_by,
    Document.created_at,
    Document.deleted_at,
    Writer.id.label("writer_id"),
    Writer.name.label("writer_name"),
    Writer.slug.label("writer_slug"),
)


@cache
def _listed_documents() -> Select[*tuple[Any, ...]]:
    # Built once (on first use); each request adds its filters to a copy.
    return (
        select(*_LISTED_COLUMNS).outerjoin(Writer, Writer.id == Document.writer_id).where(Document.deleted_at.is_(None))
    )


def _listed_out(row: Row[Any]) -> DocumentOut:
    """The same answer as :func:`document_out` gives for the document's ORM object."""
    writer = (
        WriterOut(id=row.writer_id, name=row.writer_name, slug=row.writer_slug) if row.writer_id is not None else None
    )
    return DocumentOut(
        id=row.id,
        title=row.title,
        writer=writer,
        date=format_partial_date(row.date, row.date_precision),
        original_filename=row.original_filename,
        media_type=row.media_type,
        sha256=row.sha256,
        size_bytes=row.size_bytes,
        page_count=row.page_count,
        status=row.status,
        created_by=row.created_by,
        created_at=row.created_at,
        deleted_at=row.deleted_at,
    )


def _hash(source: BinaryIO) -> tuple[str, int]:
    source.seek(0)
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    source.seek(0)
    return digest.hexdigest(), size


class Documents:
    def __init__(
        self, storage: Storage, *, max_upload_bytes: int, max_pages: int, trash_days: int, jobs: Jobs | None = None
    ) -> None:
        self.storage = storage
        # Moving a document to the trash cancels its OCR job (the runner stops within APP_OCR_POLL_S).
        self.jobs = jobs or Jobs()
        self.max_upload_bytes = max_upload_bytes
        self.max_pages = max_pages
        self.trash = timedelta(days=trash_days)

    def duplicate(self, existing: Document) -> AppError:
        """409 DUPLICATE_DOCUMENT naming the document already stored (an upload's or an import's)."""
        where = " It is in the trash; an admin can restore it." if existing.deleted_at else ""
        return AppError(
            ErrorCode.DUPLICATE_DOCUMENT,
            f"This file is already in the archive as document {existing.id} ({existing.title!r}).{where}",
            details={"documentId": existing.id, "title": existing.title, "inTrash": existing.deleted_at is not None},
        )

    def writer_named(self, session: Session, name: str, now: datetime) -> Writer:
        """The writer of this name (by its slug), made now if there is none yet."""
        slug = slugify(name)
        writer = session.scalar(select(Writer).where(Writer.slug == slug))
        if writer is not None:
            return writer
        try:
            with session.begin_nested():
                writer = Writer(name=name, slug=slug, created_at=now)
                session.add(writer)
        except IntegrityError:  # made by a parallel upload a moment ago
            writer = session.scalars(select(Writer).where(Writer.slug == slug)).one()
        return writer

    def ingest(
        self, session: Session, user: User, fields: UploadFields, filename: str | None, source: BinaryIO, now: datetime
    ) -> Document:
        """Check an uploaded file (spooled to disk by the caller), store it, record it with its pages."""
        sha256, size = _hash(source)
        if size > self.max_upload_bytes:
            raise AppError(ErrorCode.DOCUMENT_TOO_LARGE, f"The file is larger than {self.max_upload_bytes} bytes.")
        existing = session.scalar(select(Document).where(Document.sha256 == sha256))
        if existing is not None:
            raise self.duplicate(existing)
        inspected = inspect(source, self.max_pages)
        day, precision = parse_partial_date(fields.date) if fields.date else (None, None)
        key = self.storage.save(source)
        try:
            document = Document(
                title=fields.title,
                title_folded=folded_title(fields.title),
                writer=self.writer_named(session, fields.writer, now) if fields.writer else None,
                date=day,
                date_precision=precision,
                original_filename=safe_filename(filename),
                media_type=inspected.media_type,
                storage_key=key,
                sha256=sha256,
                size_bytes=size,
                page_count=inspected.page_count,
                status=DocumentStatus.NEW,
                created_by=user.id,
                created_at=now,
            )
            session.add(document)
            session.flush()
            session.add_all(Page(document_id=document.id, number=n) for n in range(1, inspected.page_count + 1))
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            self.storage.delete(key)
            existing = session.scalar(select(Document).where(Document.sha256 == sha256))
            if existing is None:
                raise
            raise self.duplicate(existing) from exc
        except BaseException:
            session.rollback()
            self.storage.delete(key)
            raise
        log.info(
            "document %d stored (%s, %d pages, %d bytes)", document.id, inspected.media_type, document.page_count, size
        )
        return document

    def get(self, session: Session, document_id: int) -> Document:
        document = session.get(Document, document_id)
        if document is None or document.deleted_at is not None:
            raise AppError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {document_id}.")
        return document

    def get_for(self, session: Session, document_id: int, user: User) -> Document:
        """Like :meth:`get`, but an admin also sees a document in the trash (to recognise it before restoring)."""
        document = session.get(Document, document_id)
        if document is None or (document.deleted_at is not None and user.role is not Role.ADMIN):
            raise AppError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {document_id}.")
        return document

    def search(self, session: Session, query: DocumentFilter) -> DocumentPage:
        """Newest first, keyset-paged on the id (stable while documents are added)."""
        statement = _listed_documents()
        if query.writer is not None:
            statement = statement.where(Writer.slug == query.writer)
        if query.status is not None:
            statement = statement.where(Document.status == query.status)
        if query.date_from is not None:
            statement = statement.where(Document.date >= query.date_from)
        if query.date_to is not None:
            statement = statement.where(Document.date <= query.date_to)
        if query.title:
            statement = statement.where(Document.title_folded.contains(query.title.casefold(), autoescape=True))
        rows, next_cursor = keyset_rows(session, statement, Document.id, query.cursor, query.limit)
        return DocumentPage(items=[_listed_out(row) for row in rows], next_cursor=next_cursor)

    def move_to_trash(self, session: Session, document_id: int, user: User, now: datetime) -> None:
        """Into the trash, and its OCR job (queued or running) cancelled in the same transaction:
        nobody reads a document nobody can see. The pages already read keep their lines."""
        document = self.get(session, document_id)
        # The jobs first, then the document: the order a runner's claim and end lock them in
        # (the other order could deadlock with a claim on PostgreSQL). A start racing this may
        # still queue a job; the runner cancels it at its claim (JobQueue.claim).
        stopped = self.jobs.stop(session, OcrJob.document_id == document_id, user, now)
        document.deleted_at, document.deleted_by = now, user.id
        session.commit()
        self.jobs.record_stopped(stopped, now)
        log.info(
            "document %d moved to the trash by user %d (OCR jobs cancelled: %s)", document_id, user.id, list(stopped)
        )

    def trashed(self, session: Session) -> list[TrashedDocumentOut]:
        rows = session.scalars(
            select(Document).where(Document.deleted_at.is_not(None)).order_by(Document.deleted_at.desc())
        ).unique()
        return [
            TrashedDocumentOut(**document_out(d).model_dump(), purge_at=d.deleted_at + self.trash)  # type: ignore[operator]
            for d in rows
        ]

    def restore(self, session: Session, document_id: int, now: datetime) -> Document:
        document = session.get(Document, document_id)
        if document is None:
            raise AppError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {document_id}.")
        if document.deleted_at is None:
            raise AppError(ErrorCode.NOT_IN_TRASH, f"Document {document_id} is not in the trash.")
        if now >= document.deleted_at + self.trash:
            raise AppError(ErrorCode.TRASH_EXPIRED, f"Document {document_id} was deleted too long ago to restore.")
        document.deleted_at = document.deleted_by = None
        session.commit()
        return document

    def delete_for_good(self, session: Session, document_id: int) -> None:
        """An admin empties one document from the trash before its time: its rows (pages, lines,
        corrections, jobs and search entries go with it by cascade), then its files. Only a
        document in the trash: one still in the archive must be moved there first, so deleting
        for good is always the second of two deliberate steps."""
        document = session.get(Document, document_id)
        if document is None:
            raise AppError(ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {document_id}.")
        if document.deleted_at is None:
            raise AppError(ErrorCode.NOT_IN_TRASH, f"Document {document_id} is not in the trash.")
        self._delete(session, [document])
        log.info("document %d deleted for good from the trash", document_id)

    def purge_expired(self, session: Session, now: datetime) -> int:
        """Delete for good what has been in the trash longer than the trash period."""
        expired = list(session.scalars(select(Document).where(Document.deleted_at <= now - self.trash)).unique())
        self._delete(session, expired)
        if expired:
            log.info("purged %d documents from the trash", len(expired))
        return len(expired)

    def _delete(self, session: Session, documents: list[Document]) -> None:
        """Delete documents' rows, then their files: the originals and their rendered page images.

        A page being rendered while its document is deleted finds its row gone when it stores its
        keys, and deletes its own files.
        """
        keys = [d.storage_key for d in documents]
        if documents:
            rendered = session.execute(
                select(Page.image_key, Page.thumbnail_key).where(Page.document_id.in_([d.id for d in documents]))
            )
            keys += [key for row in rendered for key in row if key is not None]
        for document in documents:
            session.delete(document)
        session.commit()
        for key in keys:
            try:
                self.storage.delete(key)
            except StorageUnavailableError as exc:
                # The rows are gone already; a store that fails now must not stop the backend's start.
                log.error("purge: original %s is left in the store (delete it by hand): %s", key, exc)


def safe_filename(name: str | None) -> str | None:
    """The client's file name, for display only: its last part, printable, bounded."""
    if not name:
        return None
    last = re.split(r"[\\/]", name)[-1]
    cleaned = "".join(ch for ch in last if ch.isprintable())[:255].strip()
    return cleaned or None
