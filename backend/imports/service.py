"""Importing a ZIP of page images with PAGE XML or ALTO as documents whose text a person checked.

Every page imported is marked reviewed by the importer and each line's text counts as their
correction, so the pages are training data at once. All or nothing: the documents, their
pages and lines are committed in one transaction, and the originals stored for them are
removed again when anything fails.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import PurePosixPath
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backend.documents.models import DatePrecision, Document, DocumentStatus, Line, Page, folded_title
from backend.documents.schemas import parse_partial_date
from backend.documents.service import Documents, safe_filename
from backend.errors import AppError, ErrorCode
from backend.imports.bundle import BundledDocument, ImportLimits, as_app_error, read_bundle
from backend.imports.original import Frame, TiffOriginal
from backend.imports.schemas import ImportFields
from backend.imports.transkribus import DocumentFacts
from backend.search.index import index_pages
from backend.storage import Storage
from backend.transcripts.model import Point, TranscriptLine
from backend.users.models import User
from untrusted.archive import UnpackBudget, open_archive, read_entry

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
TIFF = "image/tiff"


@dataclass
class _Built:
    """A document's original, already in the store under ``storage_key``, with its pages' frames."""

    bundled: BundledDocument
    storage_key: str
    frames: list[Frame]
    sha256: str
    size: int


def _scaled(points: Iterable[Point], sx: float, sy: float, width: int, height: int) -> list[list[int]]:
    # Into the frame's pixels; a point past the page's edge (tools draw outlines a little beyond
    # it) is brought onto its last pixel, as the export and the training data do.
    return [[min(max(round(x * sx), 0), width - 1), min(max(round(y * sy), 0), height - 1)] for x, y in points]


def store_lines(
    session: Session,
    page: Page,
    lines: Iterable[TranscriptLine],
    frame: Frame,
    scale: tuple[float, float],
    user: User,
    now: datetime,
) -> None:
    """The imported lines of ``page``: each one's text is the importer's, its OCR text the same
    (or the file's OCR reading, where it has one). The one place an import writes lines."""
    sx, sy = scale
    session.add_all(
        Line(
            page_id=page.id,
            order_index=index,
            baseline=_scaled(line.baseline, sx, sy, frame.width, frame.height),
            polygon=_scaled(line.polygon, sx, sy, frame.width, frame.height),
            ocr_text=line.ocr_text if line.ocr_text is not None else line.text,
            ocr_confidence=line.confidence,
            text=line.text,
            corrected_by=user.id,
            corrected_at=now,
            version=1,
        )
        for index, line in enumerate(lines)
    )
    # Searchable at once, in the import's transaction (and the previous page's last line learns
    # this page's first words: a phrase or a hyphenated word across the page break).
    session.flush()
    index_pages(session, [page.id])


class Imports:
    def __init__(self, storage: Storage, documents: Documents, limits: ImportLimits, *, max_page_pixels: int) -> None:
        self.storage = storage
        self.documents = documents
        self.limits = limits
        self.max_page_pixels = max_page_pixels

    def run(
        self, session: Session, user: User, fields: ImportFields, filename: str | None, source: BinaryIO, now: datetime
    ) -> list[Document]:
        """Import the ZIP ``source`` (seekable); the documents made, in the ZIP's order."""
        source.seek(0)
        with as_app_error():
            archive = open_archive(source, self.limits.archive)
        # Each original goes into the store as soon as it is built (one temporary file open at a
        # time, however many documents the ZIP holds), and out again if anything fails.
        built: list[_Built] = []
        budget = UnpackBudget(self.limits.archive.max_unpacked_bytes)
        try:
            with archive:
                bundled = read_bundle(archive, self.limits, budget)
                if fields.title is not None and len(bundled) > 1:
                    raise AppError(
                        ErrorCode.INVALID_REQUEST,
                        f"The ZIP holds {len(bundled)} documents; a title can be given for a ZIP of one document only.",
                    )
                for document in bundled:
                    built.append(self._build(session, archive, document, budget, built))
            return self._record(session, user, fields, filename, built, now)
        except BaseException:
            session.rollback()
            self._remove([item.storage_key for item in built])
            raise

    def _build(
        self,
        session: Session,
        archive: zipfile.ZipFile,
        document: BundledDocument,
        budget: UnpackBudget,
        before: list[_Built],
    ) -> _Built:
        """The document's original, built and stored, unless the archive holds it already (409)."""
        with tempfile.TemporaryFile() as out:
            digest, size, frames = self._write_original(archive, document, budget, out)
            existing = session.scalar(select(Document).where(Document.sha256 == digest))
            if existing is not None:
                raise self.documents.duplicate(existing)
            if any(item.sha256 == digest for item in before):
                raise AppError(
                    ErrorCode.DUPLICATE_DOCUMENT,
                    f"The ZIP holds the same pages twice (in {document.folder or 'its root'!r}).",
                )
            out.seek(0)
            key = self.storage.save(out)
        return _Built(document, key, frames, digest, size)

    def _write_original(
        self, archive: zipfile.ZipFile, document: BundledDocument, budget: UnpackBudget, out: BinaryIO
    ) -> tuple[str, int, list[Frame]]:
        """The document's pages as one TIFF in ``out``: its sha256, size and frames."""
        tiff = TiffOriginal(out, self.max_page_pixels)
        for page in document.pages:
            with as_app_error():
                data = read_entry(archive, page.image, budget, max_bytes=self.limits.max_image_bytes, what="page image")
            tiff.add(data, page.image.filename, (page.read.width, page.read.height))
        tiff.close()
        digest, size = hashlib.sha256(), 0
        out.seek(0)
        while chunk := out.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return digest.hexdigest(), size, tiff.frames

    def _title(self, fields: ImportFields, built: _Built, filename: str | None) -> str:
        if fields.title is not None:
            return fields.title
        if built.bundled.pages[0].read.title:
            return built.bundled.pages[0].read.title
        if built.bundled.facts is not None and built.bundled.facts.title:
            return built.bundled.facts.title
        folder = PurePosixPath(built.bundled.folder).name if built.bundled.folder else ""
        stem = PurePosixPath(safe_filename(filename) or "").stem
        first = PurePosixPath(built.bundled.pages[0].image.filename).stem
        title = " ".join((folder or stem or first).split())
        return title[:500] or "Import"

    def _record(
        self,
        session: Session,
        user: User,
        fields: ImportFields,
        filename: str | None,
        built: list[_Built],
        now: datetime,
    ) -> list[Document]:
        """The documents' rows, committed at once (the caller removes the stored originals on failure)."""
        try:
            made = [self._document(session, user, fields, filename, item, now) for item in built]
            session.commit()
        except IntegrityError as exc:
            # Another upload or import stored the same original meanwhile.
            session.rollback()
            for item in built:
                existing = session.scalar(select(Document).where(Document.sha256 == item.sha256))
                if existing is not None:
                    raise self.documents.duplicate(existing) from exc
            raise
        for document in made:
            log.info("document %d imported (%d pages) by user %d", document.id, document.page_count, user.id)
        return made

    def _remove(self, keys: list[str]) -> None:
        for key in keys:
            self.storage.delete(key)

    def _document(
        self,
        session: Session,
        user: User,
        fields: ImportFields,
        filename: str | None,
        item: _Built,
        now: datetime,
    ) -> Document:
        first = item.bundled.pages[0].read
        # Each fact from the form, else from this archive's own export, else from Transkribus' metadata.
        known = item.bundled.facts or DocumentFacts()
        writer_name = fields.writer or first.writer or known.writer
        day: date | None
        precision: DatePrecision | None
        if fields.date:
            day, precision = parse_partial_date(fields.date)
        elif first.date is not None:
            day, precision = first.date, first.date_precision
        else:
            day, precision = known.date, known.date_precision
        document = Document(
            title=self._title(fields, item, filename),
            writer=self.documents.writer_named(session, writer_name, now) if writer_name else None,
            date=day,
            date_precision=precision,
            original_filename=safe_filename(filename),
            media_type=TIFF,
            storage_key=item.storage_key,
            sha256=item.sha256,
            size_bytes=item.size,
            page_count=len(item.frames),
            status=DocumentStatus.DONE,
            created_by=user.id,
            created_at=now,
        )
        document.title_folded = folded_title(document.title)
        session.add(document)
        session.flush()
        for number, (page, frame) in enumerate(zip(item.bundled.pages, item.frames, strict=True), start=1):
            row = Page(
                document_id=document.id,
                number=number,
                width=frame.width,
                height=frame.height,
                reviewed_at=now,
                reviewed_by=user.id,
            )
            session.add(row)
            session.flush()
            read = page.read
            # A size the file does not give (or gives as 0) means its coordinates are the image's (one
            # under a pixel is refused when the file is read: backend/transcripts/reading.page_size).
            scale = (
                frame.width / read.width if read.width > 0 else 1.0,
                frame.height / read.height if read.height > 0 else 1.0,
            )
            store_lines(session, row, read.lines, frame, scale, user, now)
        return document
