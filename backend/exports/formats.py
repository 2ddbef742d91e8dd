"""How each format writes one document: plain text as one file; PAGE and ALTO as a folder of a ZIP.

Writers are generators: they write into what they are given and yield after each page, so the
caller passes the bytes on before the next page is drawn (the export streams; one page image is
held at a time). The ZIP layout of PAGE and ALTO is the one Transkribus reads and writes: the
page images at the folder's root (``0001.png`` ...) and one XML per page in a subfolder
(``page/0001.xml`` or ``alto/0001.xml``) named after its image; eScriptorium's ZIP import finds
the XML files anywhere in the ZIP and matches them to images by the file name the XML names.
"""

from __future__ import annotations

import stat
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from PIL import Image

from backend.exports.drawing import Original, PageDrawing, image_stem, page_files, page_images
from backend.transcripts.alto import alto_xml
from backend.transcripts.model import TranscriptDocument, TranscriptPage
from backend.transcripts.page_xml import page_xml
from backend.transcripts.text import document_text


@dataclass(frozen=True)
class DocumentExport:
    """One document ready to be written: its transcript and where its page images come from."""

    document_id: int
    # A safe ASCII name for its file or folder: letters, digits, '-', '_' and '.' only.
    name: str
    transcript: TranscriptDocument
    original: Original
    drawing: PageDrawing
    now: datetime

    def page_images(self) -> Iterator[tuple[TranscriptPage, Image.Image]]:
        """Each page upright at its recorded size, closed as the caller asks for the next."""
        return page_images(self.drawing, self.original, self.transcript.pages)


class Writable(Protocol):
    """Where a writer writes: a file, a ZIP entry, or the response's buffer (none can seek)."""

    def write(self, data: bytes, /) -> int: ...


# A file format writes the document into ``out``; a folder format into ``archive`` under ``folder``
# (ending with '/'). Both yield after each page.
FileWrite = Callable[[DocumentExport, Writable], Iterator[None]]
FolderWrite = Callable[[DocumentExport, zipfile.ZipFile, str], Iterator[None]]


@dataclass(frozen=True)
class FileFormat:
    media_type: str
    extension: str
    write: FileWrite


@dataclass(frozen=True)
class FolderFormat:
    write: FolderWrite


def entry(name: str, when: datetime, compression: int) -> zipfile.ZipInfo:
    """A ZIP entry for a plain file (no link, no odd mode) written at ``when``."""
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = compression
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def write_text(export: DocumentExport, out: Writable) -> Iterator[None]:
    for chunk in document_text(export.transcript):
        out.write(chunk.encode())
        yield


def _xml_folder(
    subfolder: str, serialise: Callable[[TranscriptDocument, TranscriptPage, datetime], bytes]
) -> FolderWrite:
    def write(export: DocumentExport, archive: zipfile.ZipFile, folder: str) -> Iterator[None]:
        for page_file in page_files(export.drawing, export.original, export.transcript.pages):
            page = page_file.page
            # Deflated although PNG and JPEG hardly shrink: a streamed ZIP gives each entry's sizes
            # after its data, and Java's ZipInputStream (Transkribus is Java) refuses that for a
            # stored entry ("only DEFLATED entries can have EXT descriptor").
            with archive.open(entry(f"{folder}{page.image_name}", export.now, zipfile.ZIP_DEFLATED), "w") as out:
                page_file.write(out)
            xml = entry(f"{folder}{subfolder}/{image_stem(page.number)}.xml", export.now, zipfile.ZIP_DEFLATED)
            archive.writestr(xml, serialise(export.transcript, page, export.now))
            yield

    return write


def _page(document: TranscriptDocument, page: TranscriptPage, now: datetime) -> bytes:
    return page_xml(document, page, now=now)


def _alto(document: TranscriptDocument, page: TranscriptPage, now: datetime) -> bytes:
    return alto_xml(document, page, now=now)


write_page_folder = _xml_folder("page", _page)
write_alto_folder = _xml_folder("alto", _alto)
