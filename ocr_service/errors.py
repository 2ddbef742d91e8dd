"""The OCR service's error model: one enum of codes, one exception, one place mapping to HTTP.

Every error body is ``{"code": "UPPER_SNAKE", "message": str}`` plus optional ``details``
(see DESIGN.md). Domain code raises :class:`AppError`; nothing else builds error responses.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    # request shape
    INVALID_REQUEST = "INVALID_REQUEST"
    MALFORMED_JSON = "MALFORMED_JSON"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    BODY_TIMEOUT = "BODY_TIMEOUT"
    # documents
    UNSUPPORTED_DOCUMENT_TYPE = "UNSUPPORTED_DOCUMENT_TYPE"
    CORRUPT_DOCUMENT = "CORRUPT_DOCUMENT"
    EMPTY_DOCUMENT = "EMPTY_DOCUMENT"
    TOO_MANY_PAGES = "TOO_MANY_PAGES"
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
    PAGE_TOO_LARGE = "PAGE_TOO_LARGE"
    # documents: structure too costly to read, pages kraken cannot segment sensibly
    DOCUMENT_TOO_COMPLEX = "DOCUMENT_TOO_COMPLEX"
    PAGE_SHAPE_UNSUPPORTED = "PAGE_SHAPE_UNSUPPORTED"
    # firstPage / lastPage: not a page number, or past the document's last page
    INVALID_PAGE_RANGE = "INVALID_PAGE_RANGE"
    # document URLs
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    DOCUMENT_FETCH_FAILED = "DOCUMENT_FETCH_FAILED"
    DOCUMENT_UNREACHABLE = "DOCUMENT_UNREACHABLE"
    DOCUMENT_FETCH_TIMEOUT = "DOCUMENT_FETCH_TIMEOUT"
    # models
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    WRONG_MODEL_KIND = "WRONG_MODEL_KIND"
    INVALID_MODEL_NAME = "INVALID_MODEL_NAME"
    INVALID_MODEL = "INVALID_MODEL"
    MODEL_TOO_LARGE = "MODEL_TOO_LARGE"
    MODEL_EXISTS = "MODEL_EXISTS"
    MODEL_PROTECTED = "MODEL_PROTECTED"
    MODEL_IS_DEFAULT = "MODEL_IS_DEFAULT"
    MODEL_IN_USE = "MODEL_IN_USE"
    # training
    TRAINING_DISABLED = "TRAINING_DISABLED"
    UNAUTHORIZED = "UNAUTHORIZED"
    TRAINING_BUSY = "TRAINING_BUSY"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_FINISHED = "JOB_FINISHED"
    INVALID_ARCHIVE = "INVALID_ARCHIVE"
    UNSAFE_ARCHIVE = "UNSAFE_ARCHIVE"
    ARCHIVE_TOO_LARGE = "ARCHIVE_TOO_LARGE"
    INVALID_TRAINING_DATA = "INVALID_TRAINING_DATA"
    # service state
    SERVICE_BUSY = "SERVICE_BUSY"
    MODELS_NOT_READY = "MODELS_NOT_READY"
    SEGMENTATION_MODEL_UNUSABLE = "SEGMENTATION_MODEL_UNUSABLE"
    OCR_FAILED = "OCR_FAILED"
    PAGE_TIMEOUT = "PAGE_TIMEOUT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # worker pool
    PAGE_KILLED_WORKER = "PAGE_KILLED_WORKER"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.BODY_TIMEOUT: 408,
    ErrorCode.UNSUPPORTED_DOCUMENT_TYPE: 415,
    ErrorCode.CORRUPT_DOCUMENT: 422,
    ErrorCode.EMPTY_DOCUMENT: 422,
    ErrorCode.TOO_MANY_PAGES: 413,
    ErrorCode.DOCUMENT_TOO_LARGE: 413,
    ErrorCode.PAGE_TOO_LARGE: 413,
    # 4xx: the same document would take as long again, so a retry would only block others.
    ErrorCode.DOCUMENT_TOO_COMPLEX: 422,
    ErrorCode.PAGE_SHAPE_UNSUPPORTED: 422,
    ErrorCode.INVALID_PAGE_RANGE: 422,
    ErrorCode.URL_NOT_ALLOWED: 400,
    # The remote server answered 4xx: the URL is wrong, retrying will not help.
    ErrorCode.DOCUMENT_FETCH_FAILED: 422,
    # The remote server could not be reached or failed: a retry may help.
    ErrorCode.DOCUMENT_UNREACHABLE: 502,
    ErrorCode.DOCUMENT_FETCH_TIMEOUT: 504,
    ErrorCode.UNKNOWN_MODEL: 422,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.WRONG_MODEL_KIND: 422,
    ErrorCode.INVALID_MODEL_NAME: 422,
    ErrorCode.INVALID_MODEL: 422,
    ErrorCode.MODEL_TOO_LARGE: 413,
    ErrorCode.MODEL_EXISTS: 409,
    ErrorCode.MODEL_PROTECTED: 409,
    ErrorCode.MODEL_IS_DEFAULT: 409,
    ErrorCode.MODEL_IN_USE: 409,
    ErrorCode.TRAINING_DISABLED: 503,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TRAINING_BUSY: 409,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.JOB_FINISHED: 409,
    ErrorCode.INVALID_ARCHIVE: 422,
    ErrorCode.UNSAFE_ARCHIVE: 422,
    ErrorCode.ARCHIVE_TOO_LARGE: 413,
    ErrorCode.INVALID_TRAINING_DATA: 422,
    ErrorCode.SERVICE_BUSY: 503,
    ErrorCode.MODELS_NOT_READY: 503,
    ErrorCode.SEGMENTATION_MODEL_UNUSABLE: 503,
    ErrorCode.OCR_FAILED: 500,
    # A 4xx: retrying a page that hung would only hang a worker again.
    ErrorCode.PAGE_TIMEOUT: 422,
    ErrorCode.INTERNAL_ERROR: 500,
    # A 4xx: the page ended its worker on two tries (out of memory, a crash in kraken's C code);
    # a retry by the backend would only end more workers.
    ErrorCode.PAGE_KILLED_WORKER: 422,
}


class AppError(Exception):
    """An error the caller can act on; carries its code, message and HTTP status."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code.value, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


_HTTP_CODES = {
    404: (ErrorCode.NOT_FOUND, "There is nothing at this address."),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "This address does not accept that method."),
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the ``{"code","message"}`` body; no stack trace reaches a client."""

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_response(AppError(ErrorCode.MALFORMED_JSON, "The request body is not valid JSON."))
        text = "; ".join(f"{p['field']}: {p['problem']}" if p["field"] else p["problem"] for p in problems)
        return error_response(
            AppError(ErrorCode.INVALID_REQUEST, f"The request is not valid: {text}", details={"problems": problems})
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, message = _HTTP_CODES.get(
            exc.status_code, (ErrorCode.INVALID_REQUEST, HTTPStatus(exc.status_code).phrase)
        )
        return error_response(AppError(code, message, headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(AppError(ErrorCode.INTERNAL_ERROR, "Something went wrong inside the OCR service."))
