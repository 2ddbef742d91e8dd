"""What an uploaded file is and how many pages it has, judged from its bytes, with bounded work.

Every decoder call on client bytes is here, and any failure inside a decoder is the
document's fault (422 CORRUPT_DOCUMENT), logged with its traceback so a bug of ours stays visible.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import BinaryIO

import pypdfium2
from PIL import Image

from backend.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

PDF, PNG, JPEG, TIFF, WEBP = "application/pdf", "image/png", "image/jpeg", "image/tiff", "image/webp"
PILLOW_FORMATS = {PNG: "PNG", JPEG: "JPEG", TIFF: "TIFF", WEBP: "WEBP"}

# pdfium is not thread-safe, not even for different documents (pypdfium2's docs: concurrent
# calls corrupt the process); uploads and page renders run in threads. Every pdfium call of
# the backend holds this lock.
PDFIUM_LOCK = threading.Lock()


def sniff(head: bytes) -> str:
    """The media type from the first bytes (never from the file name or the client's Content-Type)."""
    if not head:
        raise AppError(ErrorCode.EMPTY_DOCUMENT, "The file is empty.")
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    raise AppError(ErrorCode.UNSUPPORTED_DOCUMENT_TYPE, "Only PDF, PNG, JPEG, TIFF and WebP files can be uploaded.")


@dataclass(frozen=True)
class Inspected:
    media_type: str
    page_count: int


def _too_many(max_pages: int) -> AppError:
    return AppError(ErrorCode.TOO_MANY_PAGES, f"The document has more than {max_pages} pages.")


def _count_pdf(source: BinaryIO) -> int:
    with PDFIUM_LOCK:
        pdf = pypdfium2.PdfDocument(source)
        try:
            return len(pdf)  # read from the page tree: no page is parsed
        finally:
            pdf.close()


def _count_image(source: BinaryIO, media_type: str, max_pages: int) -> int:
    with Image.open(source) as image:
        if image.format != PILLOW_FORMATS[media_type]:
            raise AppError(ErrorCode.CORRUPT_DOCUMENT, "The file's content does not match its type.")
        if media_type != TIFF:
            return int(getattr(image, "n_frames", 1))
        # Pillow's n_frames walks every frame; stop one past the limit instead.
        frames = 1
        while frames <= max_pages:
            try:
                image.seek(frames)
            except EOFError:
                break
            frames += 1
        return frames


def inspect(source: BinaryIO, max_pages: int) -> Inspected:
    """Sniff the type and count the pages of ``source`` (a seekable file, read from the start)."""
    source.seek(0)
    media_type = sniff(source.read(16))
    source.seek(0)
    try:
        pages = _count_pdf(source) if media_type == PDF else _count_image(source, media_type, max_pages)
    except AppError:
        raise
    except Image.DecompressionBombError as exc:
        raise AppError(ErrorCode.DOCUMENT_TOO_LARGE, "A page of this image has too many pixels.") from exc
    except Exception as exc:
        log.warning("could not read an uploaded %s", media_type, exc_info=True)
        raise AppError(ErrorCode.CORRUPT_DOCUMENT, "The file is damaged or not readable.") from exc
    finally:
        source.seek(0)
    if pages < 1:
        raise AppError(ErrorCode.EMPTY_DOCUMENT, "The document has no pages.")
    if pages > max_pages:
        raise _too_many(max_pages)
    return Inspected(media_type, pages)
