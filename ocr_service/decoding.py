"""The one place where decoders meet client bytes, and the time budget for reading a document's structure.

Pillow and pdfium are run on whatever a client sends. A damaged file makes them fail in
ways no signature announces — Pillow's TIFF decoder raises ``TypeError("Missing
dimensions")``, ``KeyError`` or ``IndexError`` as readily as ``OSError`` — so every call that
touches client bytes runs inside :func:`decoding`, which turns any such failure into
422 ``CORRUPT_DOCUMENT``. Failures of kinds decoders are not known to raise are logged with
their traceback, so that a bug of our own inside such a block is still seen.
"""

from __future__ import annotations

import logging
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pypdfium2 as pdfium

from ocr_service.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

# What Pillow and pypdfium2 raise, by their documentation or by design, for bytes they
# cannot read (UnidentifiedImageError and DecompressionBombError are among the OSErrors
# and the warnings-turned-errors among the ValueErrors).
DECODER_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    pdfium.PdfiumError,
)


@contextmanager
def decoding(subject: str) -> Iterator[None]:
    """Run decoder calls on client bytes; any failure of theirs becomes 422 CORRUPT_DOCUMENT.

    ``subject`` names what is read, as the start of a sentence ("Page 3 of the image").
    :class:`AppError` passes through unchanged; ``MemoryError`` too, because running out of
    memory is the service's condition, not proof that the document is damaged.
    """
    try:
        yield
    except (AppError, MemoryError):
        raise
    except DECODER_ERRORS as exc:
        log.info("%s cannot be decoded: %s: %s", subject, type(exc).__name__, exc)
        raise corrupt(subject) from exc
    except Exception as exc:
        # The trust boundary: known for damaged TIFFs (TypeError, KeyError, IndexError), but it
        # may also be a bug of ours inside the block, so the traceback goes to the log.
        log.warning(
            "%s: the decoder failed with an unexpected %s; answered as a damaged document",
            subject,
            type(exc).__name__,
            exc_info=exc,
        )
        raise corrupt(subject) from exc


def corrupt(subject: str) -> AppError:
    """422 CORRUPT_DOCUMENT for ``subject`` (the start of a sentence: "Page 3 of the PDF")."""
    return AppError(ErrorCode.CORRUPT_DOCUMENT, f"{subject} is damaged and cannot be read.")


class ParseBudget:
    """Time a document may spend having its structure read (page count, every page's size).

    Only the time spent inside :meth:`running` counts, so a document whose steps wait behind
    other documents' work on the shared documents thread is not charged for that wait. The
    clock is the wall clock, because what the budget bounds is how long the other documents
    wait for this one (the thread's CPU time would let a loaded machine stretch that: 29 s
    instead of 5.8 s in bench/bench_documents.py).
    """

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._spent = 0.0
        self._started: float | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        self._started = self._clock()
        try:
            yield
        finally:
            self._spent += self._clock() - self._started
            self._started = None

    @property
    def spent(self) -> float:
        running = self._clock() - self._started if self._started is not None else 0.0
        return self._spent + running

    def check(self) -> None:
        """Refuse the document once reading its structure has taken longer than the budget."""
        if self.spent > self.seconds:
            raise AppError(
                ErrorCode.DOCUMENT_TOO_COMPLEX,
                f"Reading the structure of this document (its pages and their sizes) took longer than "
                f"{self.seconds:g} s; it is refused as too complex. Retrying will not help.",
                details={"seconds": round(self.spent, 3), "limitSeconds": self.seconds},
            )
