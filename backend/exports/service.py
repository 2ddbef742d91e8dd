"""Exports: the transcript of a document from the database, and the download of one or many.

Every format goes through the one table ``WRITERS``. A download is prepared in the request's
session (documents checked, page sizes measured, transcripts read; the transaction ends there)
and then streamed: the writers fill a small buffer page by page and the response sends it on,
so neither the database nor memory holds more than a page's worth while the bytes travel.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.documents.models import Document, Line, Page
from backend.documents.pages import record_sizes
from backend.errors import AppError, ErrorCode
from backend.exports import pdf
from backend.exports.drawing import Original, PageDrawing, image_stem
from backend.exports.formats import (
    DocumentExport,
    FileFormat,
    FolderFormat,
    entry,
    write_alto_folder,
    write_page_folder,
    write_text,
)
from backend.exports.schemas import ExportFormat
from backend.transcripts.geometry import clamp_points
from backend.transcripts.model import TranscriptDocument, TranscriptLine, TranscriptPage

log = logging.getLogger(__name__)

ZIP_MEDIA_TYPE = "application/zip"
# The response is sent in pieces of about this size (small writes joined, large ones kept whole).
_CHUNK = 64 * 1024

# The one dispatch table: how each format writes a document (see backend/exports/formats.py).
WRITERS: dict[ExportFormat, FileFormat | FolderFormat] = {
    ExportFormat.TXT: FileFormat(media_type="text/plain; charset=utf-8", extension="txt", write=write_text),
    ExportFormat.PAGE: FolderFormat(write=write_page_folder),
    ExportFormat.ALTO: FolderFormat(write=write_alto_folder),
    ExportFormat.PDF: FileFormat(media_type=pdf.MEDIA_TYPE, extension="pdf", write=pdf.write_pdf),
}


def transcript_of(session: Session, document: Document) -> TranscriptDocument:
    """The document's pages and lines as they stand: each line's current text (a person's
    correction, else the OCR's), the OCR's text where a person changed it, coordinates as whole
    pixels inside the page. Pages whose size is still unknown are left out (measure them first:
    ``record_sizes``); image names are ``0001.png`` ... until the export knows better."""
    pages = session.scalars(select(Page).where(Page.document_id == document.id).order_by(Page.number)).all()
    rows = session.execute(
        select(Line.page_id, Line.baseline, Line.polygon, Line.text, Line.ocr_text, Line.ocr_confidence)
        .join(Page, Page.id == Line.page_id)
        .where(Page.document_id == document.id)
        .order_by(Page.number, Line.order_index)
    )
    lines: dict[int, list[TranscriptLine]] = {}
    sizes = {page.id: (page.width, page.height) for page in pages}
    for page_id, baseline, polygon, text, ocr_text, confidence in rows:
        width, height = sizes[page_id]
        if width is None or height is None:
            continue
        changed = text is not None and text != ocr_text
        lines.setdefault(page_id, []).append(
            TranscriptLine(
                baseline=clamp_points(baseline, width, height),
                polygon=clamp_points(polygon, width, height),
                text=text if text is not None else ocr_text,
                ocr_text=ocr_text if changed else None,
                confidence=confidence,
            )
        )
    transcribed = []
    for page in pages:
        if page.width is None or page.height is None:
            log.warning("export of document %d: page %d has no known size; left out", document.id, page.number)
            continue
        name = f"{image_stem(page.number)}.png"
        transcribed.append(TranscriptPage(page.number, page.width, page.height, name, tuple(lines.get(page.id, ()))))
    return TranscriptDocument(
        title=document.title,
        writer=document.writer.name if document.writer else None,
        date=document.date,
        date_precision=document.date_precision,
        pages=tuple(transcribed),
    )


# --- file names -------------------------------------------------------------------------------

_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"})
_NOT_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Path separators, quotes, control characters, the bidirectional controls (which make
# "\u202etxt.exe" read "exe.txt") and invisible ones never reach a header or a ZIP entry's name.
_NOT_IN_NAME = re.compile(r'[\x00-\x1f\x7f-\x9f/\\"\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]+')
_NAME_LENGTH = 80
# Names Windows keeps for its devices, whatever their extension: a ZIP folder "CON" cannot be unpacked there.
_WINDOWS_DEVICES = re.compile(r"(?i)con|prn|aux|nul|com[0-9]|lpt[0-9]")


def ascii_name(title: str, fallback: str) -> str:
    """A file name stem from ``title`` in ASCII letters, digits, '-', '_' and '.' (``Brief an
    Müller`` → ``Brief_an_Mueller``), never starting with a dot nor a Windows device's name
    (``CON`` → ``CON_``); ``fallback`` where none is left."""
    folded = unicodedata.normalize("NFKD", title.translate(_GERMAN)).encode("ascii", "ignore").decode()
    name = _NOT_SAFE.sub("_", folded).strip("._-")[:_NAME_LENGTH].strip("._-")
    return _not_a_device(name) or fallback


def _not_a_device(name: str) -> str:
    """``name``, its stem followed by '_' where Windows would take it for a device (as it reads
    it: compatibility forms folded, trailing spaces and dots ignored: ``COM¹``, ``CON .txt``)."""
    stem, dot, rest = name.partition(".")
    if _WINDOWS_DEVICES.fullmatch(unicodedata.normalize("NFKD", stem).rstrip(" .")):
        return f"{stem.rstrip(' .')}_{dot}{rest}"
    return name


def content_disposition(title: str, fallback: str, extension: str) -> str:
    """``attachment`` with a safe ASCII ``filename`` and the title in UTF-8 as ``filename*`` (RFC 6266/5987)."""
    plain = f"{ascii_name(title, fallback)}.{extension}"
    readable = _not_a_device(
        _NOT_IN_NAME.sub("_", unicodedata.normalize("NFC", title)).strip(" ._")[:_NAME_LENGTH] or fallback
    )
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(f'{readable}.{extension}', safe='')}"


# --- downloads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Download:
    """A prepared download: its headers' values, and its body as it is written."""

    media_type: str
    content_disposition: str
    body: Iterator[bytes]


class _Buffer:
    """Where writers write and the response takes the bytes from: never seekable, so zipfile
    writes each entry's sizes after its data (a data descriptor) instead of seeking back."""

    def __init__(self) -> None:
        self._parts: deque[bytes] = deque()

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the bytes are taken by :meth:`take`."""

    def close(self) -> None:
        """Nothing to release: what is left is taken by :meth:`take`."""

    def take(self) -> Iterator[bytes]:
        """What was written, in chunks of about ``_CHUNK`` bytes, each released as it is taken
        (joined all at once, a page's image would be held twice)."""
        while self._parts:
            chunk = [self._parts.popleft()]
            size = len(chunk[0])
            while self._parts and size < _CHUNK:
                size += len(self._parts[0])
                chunk.append(self._parts.popleft())
            yield b"".join(chunk)


def _streamed(buffer: _Buffer, steps: Iterator[None]) -> Iterator[bytes]:
    for _ in steps:
        yield from buffer.take()
    yield from buffer.take()


class Exporter:
    def __init__(self, drawing: PageDrawing, *, max_documents: int) -> None:
        self.drawing = drawing
        self.max_documents = max_documents

    def prepare(self, session: Session, document_ids: Sequence[int], now: datetime) -> list[DocumentExport]:
        """The documents ready to be written, in the order asked (an id twice: once). Ids unknown
        or in the trash: 404 DOCUMENT_NOT_FOUND naming them. Commits (page sizes measured)."""
        wanted = list(dict.fromkeys(document_ids))
        if len(wanted) > self.max_documents:
            raise AppError(
                ErrorCode.EXPORT_SELECTION_TOO_LARGE,
                f"At most {self.max_documents} documents can be exported at once; {len(wanted)} were chosen.",
                details={"max": self.max_documents, "chosen": len(wanted)},
            )
        found = {
            document.id: document
            for document in session.scalars(
                select(Document).where(Document.id.in_(wanted), Document.deleted_at.is_(None))
            )
        }
        missing = [document_id for document_id in wanted if document_id not in found]
        if missing:
            listed = ", ".join(str(document_id) for document_id in missing)
            raise AppError(
                ErrorCode.DOCUMENT_NOT_FOUND, f"There is no document {listed}.", details={"documentIds": missing}
            )
        exports = []
        for document_id in wanted:
            document = found[document_id]
            pages = session.scalars(select(Page).where(Page.document_id == document_id).order_by(Page.number)).all()
            if any(page.width is None or page.height is None for page in pages):
                record_sizes(session, self.drawing.storage, self.drawing.limits, document, pages)
            exports.append(
                DocumentExport(
                    document_id=document_id,
                    name=ascii_name(document.title, f"document-{document_id}"),
                    transcript=transcript_of(session, document),
                    original=Original(document.storage_key, document.media_type, document.page_count),
                    drawing=self.drawing,
                    now=now,
                )
            )
        # Nothing of the database is needed while the bytes are written: no transaction stays open.
        session.commit()
        return exports

    def document(self, session: Session, document_id: int, export_format: ExportFormat, now: datetime) -> Download:
        """One document: a file format as its file, a folder format as a ZIP of its folder."""
        (export,) = self.prepare(session, [document_id], now)
        title = export.transcript.title
        fallback = f"document-{document_id}"
        writer = WRITERS[export_format]
        buffer = _Buffer()
        if isinstance(writer, FileFormat):
            return Download(
                writer.media_type,
                content_disposition(title, fallback, writer.extension),
                _streamed(buffer, writer.write(export, buffer)),
            )
        return Download(
            ZIP_MEDIA_TYPE,
            content_disposition(title, fallback, "zip"),
            _streamed(buffer, _zipped(buffer, [export], writer, folders=False)),
        )

    def selection(
        self, session: Session, document_ids: Sequence[int], export_format: ExportFormat, now: datetime
    ) -> Download:
        """Many documents as one ZIP: a folder each (folder formats) or a file each."""
        exports = self.prepare(session, document_ids, now)
        buffer = _Buffer()
        writer = WRITERS[export_format]
        name = f"export-{now:%Y-%m-%d}"
        return Download(
            ZIP_MEDIA_TYPE,
            content_disposition(name, name, "zip"),
            _streamed(buffer, _zipped(buffer, exports, writer, folders=True)),
        )


def _zipped(
    buffer: _Buffer, exports: Sequence[DocumentExport], writer: FileFormat | FolderFormat, *, folders: bool
) -> Iterator[None]:
    """The exports into one ZIP written to ``buffer``; ``folders``: each document's entries named
    with its id too (two documents may share a title)."""
    with zipfile.ZipFile(buffer, "w") as archive:
        for export in exports:
            stem = f"{export.document_id}_{export.name}" if folders else export.name
            if isinstance(writer, FolderFormat):
                yield from writer.write(export, archive, f"{stem}/")
                continue
            info = entry(f"{stem}.{writer.extension}", export.now, zipfile.ZIP_DEFLATED)
            with archive.open(info, "w") as out:
                yield from writer.write(export, out)
            yield
