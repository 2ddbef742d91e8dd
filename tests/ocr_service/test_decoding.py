"""The decoding guard: any failure of a decoder on client bytes is a 422, and an unexpected one
(perhaps a bug of ours) keeps its traceback in the log."""

from __future__ import annotations

import logging
import struct
import zlib

import pypdfium2 as pdfium
import pytest
from PIL import UnidentifiedImageError

from ocr_service.decoding import decoding
from ocr_service.errors import AppError, ErrorCode


def struct_error() -> Exception:
    try:
        struct.unpack("<L", b"\x00")
    except struct.error as exc:
        return exc
    raise AssertionError("unreachable")


def zlib_error() -> Exception:
    try:
        zlib.decompress(b"not deflate")
    except zlib.error as exc:
        return exc
    raise AssertionError("unreachable")


DECLARED = [
    OSError("broken data stream"),
    UnidentifiedImageError("cannot identify image file"),
    ValueError("tile cannot extend outside image"),
    SyntaxError("not a TIFF file"),
    EOFError("no more images"),
    struct_error(),
    zlib_error(),
    pdfium.PdfiumError("Failed to load document"),
]
UNDECLARED = [
    TypeError("Missing dimensions"),
    KeyError(273),
    IndexError("tuple index out of range"),
    AttributeError("'NoneType' object has no attribute 'read'"),
    ZeroDivisionError("division by zero"),
    RecursionError("maximum recursion depth exceeded"),
    AssertionError(),
]


def raise_in_guard(error: BaseException) -> AppError:
    with pytest.raises(AppError) as caught, decoding("Page 2 of the image"):
        raise error
    return caught.value


@pytest.mark.parametrize("error", DECLARED + UNDECLARED, ids=lambda e: type(e).__name__)
def test_any_decoder_failure_is_a_damaged_document(error: Exception) -> None:
    refused = raise_in_guard(error)
    assert refused.code is ErrorCode.CORRUPT_DOCUMENT
    assert refused.status == 422
    assert refused.message == "Page 2 of the image is damaged and cannot be read."
    assert refused.__cause__ is error


@pytest.mark.parametrize("error", DECLARED, ids=lambda e: type(e).__name__)
def test_a_declared_failure_is_logged_without_a_traceback(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ocr_service.decoding"):
        raise_in_guard(error)
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


@pytest.mark.parametrize("error", UNDECLARED, ids=lambda e: type(e).__name__)
def test_an_undeclared_failure_keeps_its_traceback(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ocr_service.decoding"):
        raise_in_guard(error)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.exc_info is not None and record.exc_info[1] is error
    assert type(error).__name__ in record.getMessage()


def test_an_app_error_passes_through_unchanged() -> None:
    too_large = AppError(ErrorCode.PAGE_TOO_LARGE, "too large")
    assert raise_in_guard(too_large) is too_large


def test_running_out_of_memory_is_not_blamed_on_the_document() -> None:
    with pytest.raises(MemoryError), decoding("The image"):
        raise MemoryError


def test_cancellation_passes_through() -> None:
    with pytest.raises(KeyboardInterrupt), decoding("The image"):
        raise KeyboardInterrupt
