"""Opening a PDF with pdfium, closed again on every path that does not hand it on.

Used by the service (to count and size pages) and by the PDF renderer's child process, so it
imports nothing but pypdfium2: the child starts without the web framework.
"""

from __future__ import annotations

import enum
from typing import Any, BinaryIO

import pypdfium2 as pdfium
import pypdfium2.internal as pdfium_i
import pypdfium2.raw as pdfium_c


class LoadFailure(enum.Enum):
    DAMAGED = "damaged"
    PASSWORD = "password"  # noqa: S105 - the kind of refusal, not a secret
    NO_PAGES = "no pages"


class PdfLoadError(Exception):
    def __init__(self, failure: LoadFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure


class OpenPdf:
    """A loaded PDF with at least one page, and what pdfium reads it through (kept alive with it)."""

    def __init__(self, source: bytes | BinaryIO) -> None:
        # pypdfium2's PdfDocument(source) raises for a PDF without pages but keeps its handle
        # open (5.15: _open_pdf raises before anything owns the handle): one leaked document per
        # such upload. Loading here closes it; pypdfium2 then owns only a handle that is valid.
        reader: tuple[Any, ...]
        if isinstance(source, bytes):
            raw = pdfium_c.FPDF_LoadMemDocument64(source, len(source), None)
            reader = (source,)
        else:
            access, callbacks = pdfium_i.get_bufreader(source)
            raw = pdfium_c.FPDF_LoadCustomDocument(access, None)
            reader = (access, *callbacks)
        if not raw:
            # Read at once: the error is pdfium's per-thread last error, set by this failed load.
            error = pdfium_c.FPDF_GetLastError()
            failure = LoadFailure.PASSWORD if error == pdfium_c.FPDF_ERR_PASSWORD else LoadFailure.DAMAGED
            raise PdfLoadError(failure, f"pdfium error {pdfium_i.ErrorToStr.get(error, error)}")
        pages = pdfium_c.FPDF_GetPageCount(raw)
        if pages < 1:
            pdfium_c.FPDF_CloseDocument(raw)
            raise PdfLoadError(LoadFailure.NO_PAGES, "the page tree is empty")
        self.pages = pages
        # The callbacks pdfium reads through must outlive the handle; they live as long as this object.
        self._reader = reader
        self.document = pdfium.PdfDocument(raw)

    def close(self) -> None:
        self.document.close()
