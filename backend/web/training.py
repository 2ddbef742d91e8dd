"""Admin → Training: the data each kind of run has against its threshold, the start buttons
(disabled with the reason), the OCR service's health and circuit, and the history of runs with
their charts. Starting, cancelling and adopting go through ``/api/admin/training`` from the
page's script, which re-reads this page's parts when a run changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from babel.dates import format_datetime
from babel.numbers import format_decimal
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from backend.deps import OcrClientDep, Services, ServicesDep
from backend.errors import ErrorCode
from backend.ocr_client import BreakerState, OcrClient
from backend.training.models import ACTIVE_RUN, RunStatus, TrainingKind
from backend.training.routes import service_state
from backend.training.schemas import KindOut, OcrServiceOut, OverviewOut, RunOut, RunPage, WriterKindOut
from backend.web.deps import AdminPage, Page
from backend.web.i18n import N_, NP_
from backend.web.training_chart import EpochChart, HeldOutChart, epoch_chart, heldout_chart

router = APIRouter(include_in_schema=False)

# The runs the history holds (the newest three are shown until the admin asks for all).
HISTORY_RUNS = 100
HISTORY_SHOWN = 3

KIND_NAMES: Mapping[TrainingKind, str] = {
    TrainingKind.RECOGNITION: N_("Text recognition (all handwriting)"),
    TrainingKind.SEGMENTATION: N_("Finding the lines (segmentation)"),
    TrainingKind.WRITER: N_("One writer's handwriting"),
}
STATUS_NAMES: Mapping[RunStatus, tuple[str, str]] = {
    RunStatus.QUEUED: (N_("Waiting to start"), "neutral"),
    RunStatus.RUNNING: (N_("Running"), "info"),
    RunStatus.DONE: (N_("Finished"), "success"),
    RunStatus.FAILED: (N_("Failed"), "danger"),
    RunStatus.CANCELLED: (N_("Cancelled"), "warning"),
}
BREAKER_NAMES: Mapping[BreakerState, str] = {
    BreakerState.CLOSED: N_("Requests go through normally."),
    BreakerState.HALF_OPEN: N_("Trying again carefully after problems."),
    BreakerState.OPEN: N_("Paused after repeated problems; the backend tries again by itself."),
}
# Why a start button is disabled, by the guard's code (details as placeholders).
REASONS: Mapping[str, str] = {
    ErrorCode.TRAINING_DISABLED: N_("Training is switched off on this server (it has no training token)."),
    ErrorCode.TRAINING_ALREADY_RUNNING: N_("Run {runId} is still going. One run at a time: wait for it or cancel it."),
    ErrorCode.OCR_SERVICE_UNAVAILABLE: N_("The OCR service is not answering at the moment. Please try again later."),
}
# Not enough data: plural messages, their form chosen by the number still missing.
SHORT_OF_LINES = NP_(
    "Not enough yet: {missing} more corrected line is needed ({have} of {needed}, "
    "not counting the pages kept back for judging).",
    "Not enough yet: {missing} more corrected lines are needed ({have} of {needed}, "
    "not counting the pages kept back for judging).",
)
SHORT_OF_PAGES = NP_(
    "Not enough yet: corrected lines are needed on {missing} more page ({have} of {needed}; "
    "some pages are kept back to judge the new model).",
    "Not enough yet: corrected lines are needed on {missing} more pages ({have} of {needed}; "
    "some pages are kept back to judge the new model).",
)
SHORT_OF_REVIEWED_PAGES = NP_(
    "Not enough yet: {missing} more fully reviewed page is needed ({have} of {needed}).",
    "Not enough yet: {missing} more fully reviewed pages are needed ({have} of {needed}).",
)
UNKNOWN_REASON = N_("A run cannot start just now.")


@dataclass(frozen=True)
class KindView:
    """One start button's line: what the data is, how much there is, and why it may not start."""

    id: str
    name: str
    kind: TrainingKind
    writer_slug: str | None
    have: int
    needed: int
    unit: str
    can_start: bool
    reason: str | None
    suggested: bool = False
    model: str | None = None
    new_lines: int | None = None


@dataclass(frozen=True)
class RunView:
    run: RunOut
    title: str
    status: str
    badge: str
    chart: EpochChart | None
    heldout: HeldOutChart | None
    error: str | None


def reason_text(page: Page, kind: KindOut) -> str | None:
    if kind.can_start:
        return None
    details = kind.reason_details or {}
    code = kind.reason_code
    missing = details.get("missing")
    if code == ErrorCode.NOT_ENOUGH_TRAINING_DATA and isinstance(missing, int):
        if details.get("unit") == "lines":
            singular, plural = SHORT_OF_LINES
        elif kind.kind is TrainingKind.SEGMENTATION:
            singular, plural = SHORT_OF_REVIEWED_PAGES
        else:
            singular, plural = SHORT_OF_PAGES
        text = page.ngettext(singular, plural, missing)
    else:
        text = page.gettext(REASONS.get(code or "", UNKNOWN_REASON))
    return text.format_map(_Missing({k: _number(page, v) for k, v in details.items()}))


class _Missing(dict[str, str]):
    """A placeholder whose detail is missing stays as it is rather than failing the page."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _number(page: Page, value: int | str) -> str:
    return format_decimal(value, locale=page.language) if isinstance(value, int) else value


def kind_view(page: Page, kind: KindOut) -> KindView:
    unit = kind.threshold_unit
    view = KindView(
        id=kind.kind.value,
        name=page.gettext(KIND_NAMES[kind.kind]),
        kind=kind.kind,
        writer_slug=None,
        have=kind.eligible_pages if unit == "pages" else kind.eligible_lines,
        needed=kind.threshold,
        unit=unit,
        can_start=kind.can_start,
        reason=reason_text(page, kind),
    )
    if not isinstance(kind, WriterKindOut):
        return view
    return replace(
        view,
        id=f"writer-{kind.writer.slug}",
        name=kind.writer.name,
        writer_slug=kind.writer.slug,
        suggested=kind.suggested,
        model=kind.model.name if kind.model else None,
        new_lines=kind.new_lines_since_last_run,
    )


def run_view(page: Page, run: RunOut) -> RunView:
    status, badge = STATUS_NAMES[run.status]
    title = page.gettext(KIND_NAMES[run.kind]) if run.writer is None else run.writer.name
    heldout = heldout_chart(
        run.heldout_cer, run.replaced_cer, page.gettext(N_("New model")), page.gettext(N_("Previous model"))
    )
    error = None
    if run.status is RunStatus.FAILED:
        error = page.renderer.error_message(page.language, run.error_code or "")
    return RunView(run, title, page.gettext(status), badge, epoch_chart(run.metrics), heldout, error)


def percent(language: str, share: float | None) -> str:
    if share is None:
        return "–"
    return format_decimal(share * 100, format="#,##0.0", locale=language) + "\u00a0%"


def _read(services: Services, client: OcrClient, service: OcrServiceOut) -> tuple[OverviewOut, RunPage]:
    with services.db.sessions() as session:
        overview = services.training.overview(session, client, service)
        return overview, services.training.page(session, HISTORY_RUNS)


@router.get("/admin/training")
async def training_page(page: AdminPage, services: ServicesDep, client: OcrClientDep) -> Response:
    service = await service_state(client)
    overview, history = await run_in_threadpool(_read, services, client, service)
    runs = [run_view(page, run) for run in history.runs]
    active = next((run.run for run in runs if run.run.status in ACTIVE_RUN), None)
    return page.render(
        "training.html",
        title=page.gettext(N_("Training")),
        overview=overview,
        kinds=[kind_view(page, kind) for kind in overview.kinds],
        writers=[kind_view(page, writer) for writer in overview.writers],
        service=overview.ocr_service,
        breaker_text=page.gettext(BREAKER_NAMES[overview.ocr_service.breaker]),
        runs=runs,
        shown=HISTORY_SHOWN,
        more_runs=history.next_before is not None,
        active=active,
        percent=lambda share: percent(page.language, share),
        number=lambda value: format_decimal(value, locale=page.language),
        when=lambda moment: when(page.language, moment),
    )


def when(language: str, moment: datetime) -> str:
    """A moment in UTC, said so (the page's script shows it in the reader's own time)."""
    return format_datetime(moment, "short", tzinfo=UTC, locale=language) + " UTC"
