"""Training runs (admin only): the overview, start one of a kind, the runs, cancel, adopt by hand."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query
from starlette.concurrency import run_in_threadpool

from backend.deps import AdminUser, OcrClientDep, Services, ServicesDep, SessionDep
from backend.errors import AppError, ErrorCode
from backend.ocr_client import OcrClient, OcrClientError, OcrRejected, OcrUnavailable
from backend.training.follower import cancel_job, cancel_unseen_job
from backend.training.models import ACTIVE_RUN, RunStatus, TrainingKind
from backend.training.schemas import OcrServiceOut, OverviewOut, RunOut, RunPage, StartIn
from backend.users.models import User

router = APIRouter(prefix="/api/admin/training")

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]


async def service_state(client: OcrClient) -> OcrServiceOut:
    """The breaker as this backend sees it, and each replica's own word (a probe past the breaker)."""
    state = client.state()
    probes = await client.health()
    problems = [answer.message for _, answer in probes if isinstance(answer, OcrClientError)]
    healthy = len(problems) < len(probes)
    return OcrServiceOut(
        healthy=healthy, breaker=state.state, since=state.since, message=None if healthy else " ".join(problems)
    )


def _overview(services: Services, client: OcrClient, service: OcrServiceOut) -> OverviewOut:
    with services.db.sessions() as session:
        return services.training.overview(session, client, service)


@router.get("")
async def overview(_: AdminUser, services: ServicesDep, client: OcrClientDep) -> OverviewOut:
    service = await service_state(client)
    return await run_in_threadpool(_overview, services, client, service)


@router.post("/{kind}", status_code=202)
def start_run(
    kind: TrainingKind,
    admin: AdminUser,
    services: ServicesDep,
    session: SessionDep,
    client: OcrClientDep,
    body: Annotated[StartIn | None, Body()] = None,
) -> RunOut:
    """202: the run is QUEUED; the follower builds and sends its ZIP and follows the job."""
    writer = body.writer if body else None
    run = services.training.start(session, client, kind, writer, admin, services.clock())
    return services.training.out(session, run)


@router.get("/runs")
def list_runs(
    _: AdminUser,
    services: ServicesDep,
    session: SessionDep,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> RunPage:
    """Newest first; ``before``: the previous page's ``nextBefore``."""
    return services.training.page(session, limit or services.settings.training_runs_listed, before)


@router.get("/runs/{run_id}")
def get_run(run_id: Id, _: AdminUser, services: ServicesDep, session: SessionDep) -> RunOut:
    return services.training.out(session, services.training.get(session, run_id))


def _read(services: Services, run_id: int) -> RunOut:
    with services.db.sessions() as session:
        return services.training.out(session, services.training.get(session, run_id))


def _request_cancel(services: Services, run_id: int, admin: User) -> RunOut:
    with services.db.sessions() as session:
        run = services.training.request_cancel(session, run_id, admin, services.clock())
        return services.training.out(session, run)


def _confirm_cancelled(services: Services, run_id: int, message: str | None) -> None:
    with services.db.sessions() as session:
        services.training.confirm_cancelled(session, run_id, services.clock(), message)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: Id, admin: AdminUser, services: ServicesDep, client: OcrClientDep) -> RunOut:
    """A run not yet sent: CANCELLED at once. A running one: its job is cancelled in the OCR
    service, and the run is CANCELLED once the service confirms (else its follower goes on
    asking the service to cancel it)."""
    run = await run_in_threadpool(_request_cancel, services, run_id, admin)
    if run.status is RunStatus.CANCELLED and run.ocr_job_id is None:
        # Ended before it had a job: one its follower sent without living to record it is cancelled too.
        await cancel_unseen_job(client, run.model_name)
        return run
    if run.status not in ACTIVE_RUN or run.ocr_job_id is None:
        return run
    try:
        answer = await cancel_job(client, run.ocr_job_id)
    except OcrRejected:
        # 404: the service lost the job; the follower records that.
        return await run_in_threadpool(_read, services, run_id)
    except OcrUnavailable as exc:
        raise AppError(
            ErrorCode.OCR_SERVICE_UNAVAILABLE,
            "The cancel is recorded, but the OCR service is not answering; the backend will cancel the "
            f"training job as soon as it answers again ({exc.message})",
        ) from exc
    # A job that ended otherwise (DONE, FAILED) just before the cancel is the follower's to record.
    if answer.get("status") == "CANCELLED":
        error = answer.get("error")
        await run_in_threadpool(_confirm_cancelled, services, run_id, error if isinstance(error, str) else None)
    return await run_in_threadpool(_read, services, run_id)


def _adoptable(services: Services, run_id: int) -> None:
    with services.db.sessions() as session:
        services.training.adoptable(session, run_id)


@router.post("/runs/{run_id}/adopt")
async def adopt_run(run_id: Id, admin: AdminUser, services: ServicesDep) -> RunOut:
    """The admin adopts a DONE run's model: the default (recognition), the writer's model, or
    the segmentation model; 409 ``MODEL_NOT_ADOPTABLE`` when not DONE or adopted already."""
    await run_in_threadpool(_adoptable, services, run_id)
    await services.training.judge.adopt_by_hand(run_id, admin.id)
    return await run_in_threadpool(_read, services, run_id)
