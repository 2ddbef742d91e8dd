"""OCR jobs and batches: start, read, cancel, retry, and live progress as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from backend.deps import CurrentUser, OcrClientDep, Services, ServicesDep, SessionDep
from backend.errors import AppError, ErrorCode
from backend.ocr.models import FINISHED
from backend.ocr.panel import corrected_lines, latest_job, model_choices
from backend.ocr.schemas import (
    BatchCancelled,
    BatchCreated,
    BatchIn,
    BatchOut,
    BatchRetried,
    DocumentOcrOut,
    JobCreated,
    JobOut,
    OcrModelsOut,
    OcrStartIn,
    RetryIn,
)
from backend.ocr_client import OcrClient, OcrClientError
from backend.users.models import User

router = APIRouter(prefix="/api")

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _refuse_while_open(client: OcrClient) -> None:
    """Starting OCR while every replica's breaker is open would only queue failures: 503 at once.

    Once a breaker's open wait is over the start is accepted: its job's call is the probe that
    closes the breaker again (nothing else would call an idle service and end the wait)."""
    if client.refuses_calls():
        raise AppError(
            ErrorCode.OCR_SERVICE_UNAVAILABLE,
            "The OCR service is not answering at the moment. Please try again in a few minutes.",
        )


@router.post("/documents/{document_id}/ocr", status_code=202)
def start_document_ocr(
    document_id: Id,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    client: OcrClientDep,
    body: Annotated[OcrStartIn | None, Body()] = None,
) -> JobCreated:
    _refuse_while_open(client)
    body = body or OcrStartIn()
    _, jobs = services.jobs.start(
        session,
        [document_id],
        user,
        body.model,
        services.clock(),
        batch=False,
        discard_corrections=body.discard_corrections,
    )
    return JobCreated(job_id=jobs[0].id)


@router.post("/ocr/batches", status_code=202)
def start_batch(
    body: BatchIn, user: CurrentUser, services: ServicesDep, session: SessionDep, client: OcrClientDep
) -> BatchCreated:
    _refuse_while_open(client)
    batch_id, _ = services.jobs.start(
        session,
        body.document_ids,
        user,
        body.model,
        services.clock(),
        batch=True,
        discard_corrections=body.discard_corrections,
    )
    assert batch_id is not None
    return BatchCreated(batch_id=batch_id)


@router.get("/ocr/jobs/{job_id}")
def get_job(job_id: Id, _: CurrentUser, services: ServicesDep, session: SessionDep) -> JobOut:
    return services.jobs.job_out(session, services.jobs.job(session, job_id), services.clock())


@router.post("/ocr/jobs/{job_id}/cancel")
def cancel_job(job_id: Id, user: CurrentUser, services: ServicesDep, session: SessionDep) -> JobOut:
    """CANCELLED at once; a running job's runner stops within APP_OCR_POLL_S; pages stored stay."""
    return services.jobs.cancel(session, job_id, user, services.clock())


@router.get("/ocr/batches/{batch_id}")
def get_batch(batch_id: Id, _: CurrentUser, services: ServicesDep, session: SessionDep) -> BatchOut:
    return services.jobs.batch(session, batch_id, services.clock())


@router.post("/ocr/batches/{batch_id}/cancel")
def cancel_batch(batch_id: Id, user: CurrentUser, services: ServicesDep, session: SessionDep) -> BatchCancelled:
    return BatchCancelled(
        batch_id=batch_id, cancelled=services.jobs.cancel_batch(session, batch_id, user, services.clock())
    )


@router.post("/ocr/batches/{batch_id}/retry", status_code=202)
def retry_batch(
    batch_id: Id,
    user: CurrentUser,
    services: ServicesDep,
    session: SessionDep,
    client: OcrClientDep,
    body: Annotated[RetryIn | None, Body()] = None,
) -> BatchRetried:
    _refuse_while_open(client)
    include_cancelled = body.include_cancelled if body else False
    requeued = services.jobs.retry_batch(session, batch_id, user, include_cancelled=include_cancelled)
    return BatchRetried(batch_id=batch_id, requeued=requeued)


@router.get("/documents/{document_id}/ocr-job")
def document_ocr(document_id: Id, user: CurrentUser, services: ServicesDep, session: SessionDep) -> DocumentOcrOut:
    """The document's queued or running job, else its latest (``job`` null: never read); a page
    opened while the document is read follows that job's events."""
    document = services.documents.get_for(session, document_id, user)
    job = latest_job(session, document.id)
    return DocumentOcrOut(
        job=services.jobs.job_out(session, job, services.clock()) if job is not None else None,
        corrected_lines=corrected_lines(session, document.id),
    )


def _check_document(services: Services, document_id: int, user: User) -> None:
    with services.db.sessions() as session:
        services.documents.get_for(session, document_id, user)


def _choices(services: Services, listing: dict[str, Any], document_id: int | None, user: User) -> OcrModelsOut:
    with services.db.sessions() as session:
        document = services.documents.get_for(session, document_id, user) if document_id is not None else None
        return model_choices(session, listing, document)


@router.get("/ocr/models")
async def ocr_models(
    user: CurrentUser,
    services: ServicesDep,
    client: OcrClientDep,
    document_id: Annotated[int | None, Query(alias="documentId", ge=1, le=2**31 - 1)] = None,
) -> OcrModelsOut:
    """The recognition models to start OCR with; with ``documentId`` also the one to offer first
    (the writer's own model, else the default). Through the breaker: 503
    ``OCR_SERVICE_UNAVAILABLE`` while the OCR service cannot answer."""
    if document_id is not None:
        # The document first: a person asking about one they cannot see learns nothing else.
        await run_in_threadpool(_check_document, services, document_id, user)
    try:
        listing = await client.models()
    except OcrClientError as exc:
        raise AppError(
            ErrorCode.OCR_SERVICE_UNAVAILABLE,
            f"The OCR service cannot list its models at the moment ({exc.message}). Please try again in a few minutes.",
        ) from exc
    return await run_in_threadpool(_choices, services, listing, document_id, user)


def read_job(services: Services, job_id: int) -> JobOut:
    with services.db.sessions() as session:
        return services.jobs.job_out(session, services.jobs.job(session, job_id), services.clock())


def _sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def progress_events(services: Services, first: JobOut) -> AsyncIterator[bytes]:
    # The database is the source of truth (the job may run in another backend process), so
    # the stream polls it; each page stored since the last look is one "page" event.
    job, sent = first, 0
    while True:
        for page in range(sent + 1, job.pages_done + 1):
            # The estimate as of the latest look (the same for pages seen in one look).
            yield _sse(
                "page", {"page": page, "pagesDone": page, "pagesTotal": job.pages_total, "etaSeconds": job.eta_seconds}
            )
        sent = max(sent, job.pages_done)
        if job.status in FINISHED:
            yield _sse("end", job.model_dump(mode="json", by_alias=True))
            return
        await asyncio.sleep(services.settings.ocr_poll_s)
        try:
            job = await run_in_threadpool(read_job, services, job.id)
        except AppError as exc:
            # The job went with its document (purged from the trash): the stream says so and ends.
            yield _sse("end", exc.body())
            return


@router.get("/ocr/jobs/{job_id}/events", response_class=StreamingResponse)
async def job_events(job_id: Id, _: CurrentUser, services: ServicesDep) -> StreamingResponse:
    """``event: page`` per page stored (``{page, pagesDone, pagesTotal, etaSeconds}``), then ``event: end``
    with the job."""
    first = await run_in_threadpool(read_job, services, job_id)
    return StreamingResponse(
        progress_events(services, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
