"""The backend's error model: one enum of codes, one exception, one place mapping to HTTP.

Every error body is ``{"code": "UPPER_SNAKE", "message": str}`` plus optional ``details``
(DESIGN.md). Domain code raises :class:`AppError`; nothing else builds error responses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.storage import StorageUnavailableError

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    # request shape
    INVALID_REQUEST = "INVALID_REQUEST"
    MALFORMED_JSON = "MALFORMED_JSON"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    # users and security
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    LOGIN_THROTTLED = "LOGIN_THROTTLED"
    FORBIDDEN = "FORBIDDEN"
    CSRF_FAILED = "CSRF_FAILED"
    SETUP_DONE = "SETUP_DONE"
    SETUP_TOKEN_INVALID = "SETUP_TOKEN_INVALID"  # noqa: S105 (an error code, not a secret)
    USER_EXISTS = "USER_EXISTS"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    LAST_ADMIN = "LAST_ADMIN"
    WRONG_PASSWORD = "WRONG_PASSWORD"  # noqa: S105 (an error code, not a secret)
    # documents
    DOCUMENT_NOT_FOUND = "DOCUMENT_NOT_FOUND"
    DUPLICATE_DOCUMENT = "DUPLICATE_DOCUMENT"
    UNSUPPORTED_DOCUMENT_TYPE = "UNSUPPORTED_DOCUMENT_TYPE"
    CORRUPT_DOCUMENT = "CORRUPT_DOCUMENT"
    EMPTY_DOCUMENT = "EMPTY_DOCUMENT"
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
    TOO_MANY_PAGES = "TOO_MANY_PAGES"
    NOT_IN_TRASH = "NOT_IN_TRASH"
    PAGE_NOT_FOUND = "PAGE_NOT_FOUND"
    PAGE_TOO_LARGE = "PAGE_TOO_LARGE"
    PAGE_HAS_NO_LINES = "PAGE_HAS_NO_LINES"
    DOCUMENT_TOO_COMPLEX = "DOCUMENT_TOO_COMPLEX"
    TRASH_EXPIRED = "TRASH_EXPIRED"
    # lines
    LINE_NOT_FOUND = "LINE_NOT_FOUND"
    LINE_CHANGED = "LINE_CHANGED"
    # the OCR service
    OCR_SERVICE_UNAVAILABLE = "OCR_SERVICE_UNAVAILABLE"
    # OCR jobs
    OCR_JOB_NOT_FOUND = "OCR_JOB_NOT_FOUND"
    OCR_BATCH_NOT_FOUND = "OCR_BATCH_NOT_FOUND"
    OCR_ALREADY_RUNNING = "OCR_ALREADY_RUNNING"
    OCR_JOB_FINISHED = "OCR_JOB_FINISHED"
    # training runs
    WRITER_NOT_FOUND = "WRITER_NOT_FOUND"
    TRAINING_DISABLED = "TRAINING_DISABLED"
    TRAINING_ALREADY_RUNNING = "TRAINING_ALREADY_RUNNING"
    NOT_ENOUGH_TRAINING_DATA = "NOT_ENOUGH_TRAINING_DATA"
    TRAINING_RUN_NOT_FOUND = "TRAINING_RUN_NOT_FOUND"
    TRAINING_RUN_FINISHED = "TRAINING_RUN_FINISHED"
    MODEL_NOT_ADOPTABLE = "MODEL_NOT_ADOPTABLE"
    # search
    SEARCH_QUERY_INVALID = "SEARCH_QUERY_INVALID"
    SEARCH_UNAVAILABLE = "SEARCH_UNAVAILABLE"
    SEARCH_BUSY = "SEARCH_BUSY"
    # export
    EXPORT_SELECTION_TOO_LARGE = "EXPORT_SELECTION_TOO_LARGE"
    # import
    IMPORT_TOO_LARGE = "IMPORT_TOO_LARGE"
    IMPORT_NOT_A_ZIP = "IMPORT_NOT_A_ZIP"
    IMPORT_UNSAFE_ARCHIVE = "IMPORT_UNSAFE_ARCHIVE"
    IMPORT_INVALID_XML = "IMPORT_INVALID_XML"
    IMPORT_IMAGE_MISSING = "IMPORT_IMAGE_MISSING"
    IMPORT_IMAGE_INVALID = "IMPORT_IMAGE_INVALID"
    IMPORT_NOTHING_FOUND = "IMPORT_NOTHING_FOUND"
    # the backend itself
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL_ERROR = "INTERNAL_ERROR"


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.NOT_AUTHENTICATED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.LOGIN_THROTTLED: 429,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CSRF_FAILED: 403,
    ErrorCode.SETUP_DONE: 409,
    ErrorCode.SETUP_TOKEN_INVALID: 403,
    ErrorCode.USER_EXISTS: 409,
    ErrorCode.USER_NOT_FOUND: 404,
    ErrorCode.LAST_ADMIN: 409,
    # Not 401: the caller is logged in; only the current password they typed is wrong.
    ErrorCode.WRONG_PASSWORD: 403,
    ErrorCode.DOCUMENT_NOT_FOUND: 404,
    ErrorCode.DUPLICATE_DOCUMENT: 409,
    ErrorCode.UNSUPPORTED_DOCUMENT_TYPE: 415,
    ErrorCode.CORRUPT_DOCUMENT: 422,
    ErrorCode.EMPTY_DOCUMENT: 422,
    ErrorCode.DOCUMENT_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_PAGES: 413,
    ErrorCode.NOT_IN_TRASH: 409,
    ErrorCode.PAGE_NOT_FOUND: 404,
    # 422, not 413: the request is small; the stored page is too large to be shown.
    ErrorCode.PAGE_TOO_LARGE: 422,
    # Marking a page reviewed that OCR has not read (or read as empty): nothing to vouch for.
    ErrorCode.PAGE_HAS_NO_LINES: 422,
    # A PDF page past APP_PDF_RENDER_TIMEOUT_S or APP_PDF_RENDER_MEMORY_MB (a hostile or absurd page).
    ErrorCode.DOCUMENT_TOO_COMPLEX: 422,
    ErrorCode.TRASH_EXPIRED: 410,
    ErrorCode.LINE_NOT_FOUND: 404,
    ErrorCode.LINE_CHANGED: 409,
    ErrorCode.OCR_SERVICE_UNAVAILABLE: 503,
    ErrorCode.OCR_JOB_NOT_FOUND: 404,
    ErrorCode.OCR_BATCH_NOT_FOUND: 404,
    ErrorCode.OCR_ALREADY_RUNNING: 409,
    # Cancelling a job (or every job of a batch) that has already ended.
    ErrorCode.OCR_JOB_FINISHED: 409,
    ErrorCode.WRITER_NOT_FOUND: 404,
    # No training token configured: the operator turned training off.
    ErrorCode.TRAINING_DISABLED: 503,
    ErrorCode.TRAINING_ALREADY_RUNNING: 409,
    ErrorCode.NOT_ENOUGH_TRAINING_DATA: 422,
    ErrorCode.TRAINING_RUN_NOT_FOUND: 404,
    # Cancelling a run that has already ended.
    ErrorCode.TRAINING_RUN_FINISHED: 409,
    # Adopting a run that has no model (not DONE), or one already adopted.
    ErrorCode.MODEL_NOT_ADOPTABLE: 409,
    # Empty, too long, or only exclusions (nothing to look for).
    ErrorCode.SEARCH_QUERY_INVALID: 422,
    # The search worker processes died twice in a row (APP_SEARCH_PROCESSES).
    ErrorCode.SEARCH_UNAVAILABLE: 503,
    # APP_SEARCH_MAX_PENDING searches are running or waiting already.
    ErrorCode.SEARCH_BUSY: 503,
    # More documents in one export ZIP than APP_EXPORT_MAX_DOCUMENTS.
    ErrorCode.EXPORT_SELECTION_TOO_LARGE: 422,
    ErrorCode.IMPORT_TOO_LARGE: 413,
    ErrorCode.IMPORT_NOT_A_ZIP: 422,
    # Traversal, absolute paths, links, too many entries, a bomb: refused before anything is written.
    ErrorCode.IMPORT_UNSAFE_ARCHIVE: 422,
    # Not well-formed, a DTD or entity, or neither PAGE nor ALTO.
    ErrorCode.IMPORT_INVALID_XML: 422,
    # A PAGE/ALTO file names an image the ZIP does not hold (under any extension or folder).
    ErrorCode.IMPORT_IMAGE_MISSING: 422,
    ErrorCode.IMPORT_IMAGE_INVALID: 422,
    # A ZIP without one PAGE or ALTO file.
    ErrorCode.IMPORT_NOTHING_FOUND: 422,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    # A request caught by the backend stopping (its PDF renderers closed under it).
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.INTERNAL_ERROR: 500,
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
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.NOT_AUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.REQUEST_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}
_HTTP_MESSAGES = {
    404: "There is nothing at this address.",
    405: "This address does not accept that method.",
}


def _problems(exc: RequestValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": str(e.get("msg", ""))}
        for e in exc.errors()
    ]


# Renders an error as a page for a person (the web UI's pages), or None where JSON is right (the API).
PageErrors = Callable[[Request, AppError, int], Response | None]


def install_error_handlers(app: FastAPI, page_errors: PageErrors | None = None) -> None:
    """Map every failure to the ``{"code","message"}`` body; no stack trace reaches a client.

    ``page_errors`` lets the web UI answer a browser's page request with a page in its language."""

    def respond(request: Request, error: AppError, status: int | None = None) -> Response:
        status = status or error.status
        if page_errors is not None:
            page = page_errors(request, error, status)
            if page is not None:
                return page
        return JSONResponse(error.body(), status_code=status, headers=error.headers)

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        return respond(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return respond(request, AppError(ErrorCode.MALFORMED_JSON, "The request body is not valid JSON."))
        problems = _problems(exc)
        text = "; ".join(f"{p['field']}: {p['problem']}" if p["field"] else p["problem"] for p in problems)
        return respond(
            request,
            AppError(ErrorCode.INVALID_REQUEST, f"The request is not valid: {text}", details={"problems": problems}),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        message = _HTTP_MESSAGES.get(exc.status_code)
        if message is None:
            message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        error = AppError(code, message, headers=getattr(exc, "headers", None))
        return respond(request, error, exc.status_code)

    @app.exception_handler(StorageUnavailableError)
    async def _storage(request: Request, exc: StorageUnavailableError) -> Response:
        # The detail (endpoint, bucket, botocore's reason) is for the operator's log, not the client.
        log.error("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
        return respond(
            request,
            AppError(
                ErrorCode.STORAGE_UNAVAILABLE,
                "The document store cannot be reached just now. Please try again in a minute.",
                headers={"Retry-After": "30"},
            ),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return respond(request, AppError(ErrorCode.INTERNAL_ERROR, "Something went wrong inside the backend."))
