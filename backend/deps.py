"""What routes get injected: the app's services, a database session, the current user."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from backend.db import Database
from backend.documents.lines import Lines
from backend.documents.pages import PageImages
from backend.documents.render import RenderLimits
from backend.documents.service import Documents
from backend.errors import AppError, ErrorCode
from backend.exports.drawing import PageDrawing
from backend.exports.service import Exporter
from backend.imports.bundle import ImportLimits
from backend.imports.service import Imports
from backend.metrics import Metrics
from backend.ocr.service import Jobs
from backend.ocr_client import BreakerConfig, OcrClient, OcrClientConfig
from backend.search.runner import SearchRunner
from backend.settings import Settings
from backend.storage import LocalStorage, Storage
from backend.training.parts import AdoptionModule, DatasetModule
from backend.training.ports import ModelJudge, TrainingData
from backend.training.service import TrainingRuns
from backend.users.models import Credential, CredentialKind, Role, User
from backend.users.service import Credentials, Users, make_hasher
from backend.users.throttle import LoginThrottle
from backend.writers.service import Writers
from ocr_service.page_limits import render_address_space
from untrusted.archive import ArchiveLimits

Clock = Callable[[], datetime]

SESSION_COOKIE = "archiv_session"
CSRF_COOKIE = "archiv_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SetupState:
    """The one-time setup token, alive while there are no users (None once used or not needed)."""

    token: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def claim(self, given: str) -> bool:
        """Take the token if ``given`` is it: of two requests racing with the right token, one wins."""
        with self._lock:
            if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return False
            self.token = None
            return True

    def give_back(self, token: str) -> None:
        """The claimed token did not create an admin (e.g. the password was too short): it stays valid."""
        with self._lock:
            if self.token is None:
                self.token = token


@dataclass
class Services:
    """Everything one app instance shares between requests; built once by ``create_app``."""

    settings: Settings
    db: Database
    users: Users
    throttle: LoginThrottle
    documents: Documents
    pages: PageImages
    ocr: OcrClient
    metrics: Metrics
    training: TrainingRuns
    exports: Exporter
    imports: Imports
    searches: SearchRunner
    clock: Clock = utc_now
    credentials: Credentials = field(default_factory=Credentials)
    lines: Lines = field(default_factory=Lines)
    setup: SetupState = field(default_factory=SetupState)
    jobs: Jobs = field(default_factory=Jobs)
    writers: Writers = field(default_factory=Writers)

    @property
    def token_ttl(self) -> timedelta:
        return timedelta(hours=self.settings.token_ttl_hours)

    @property
    def session_ttl(self) -> timedelta:
        return timedelta(hours=self.settings.session_ttl_hours)


def ocr_client_config(settings: Settings) -> OcrClientConfig:
    return OcrClientConfig(
        urls=settings.ocr_url_list,
        attempts=settings.ocr_attempts,
        backoff_initial_s=settings.ocr_backoff_s,
        backoff_max_s=settings.ocr_backoff_s * 4,
        breaker=BreakerConfig(open_wait_s=settings.ocr_breaker_open_s),
        training_url=settings.ocr_training_url,
        training_token=settings.ocr_training_token.get_secret_value() if settings.ocr_training_token else None,
    )


def build_storage(settings: Settings) -> Storage:
    """The configured store of originals (no call is made here; ``check()`` at start-up makes one)."""
    if settings.storage == "s3":
        from backend.storage_s3 import S3Storage  # boto3 is loaded only where it is used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir)


def render_limits(settings: Settings) -> RenderLimits:
    return RenderLimits(
        display_dpi=settings.page_dpi,
        max_side=settings.page_max_side,
        thumbnail_side=settings.page_thumbnail_side,
        max_pixels=settings.page_max_pixels,
        ocr_pdf_dpi=settings.ocr_pdf_dpi,
        ocr_max_page_pixels=settings.ocr_max_page_pixels,
        pdf_render_timeout_s=settings.pdf_render_timeout_s,
        pdf_render_address_space=(
            settings.pdf_render_memory_mb * 2**20
            if settings.pdf_render_memory_mb is not None
            # The OCR service's rule for its renderer, for the largest page shown (max_side²).
            else render_address_space(settings.page_max_side**2)
        ),
    )


def import_limits(settings: Settings) -> ImportLimits:
    return ImportLimits(
        archive=ArchiveLimits(
            max_entries=settings.import_max_entries, max_unpacked_bytes=settings.import_max_unpacked_bytes
        ),
        max_xml_bytes=settings.import_max_xml_bytes,
        # An uncompressed 16-bit RGB page at the pixel limit (6 bytes a pixel), or the ZIP's size.
        max_image_bytes=min(settings.import_max_bytes, 6 * settings.ocr_max_page_pixels + 2**20),
        max_pages=settings.max_pages,
        max_lines_per_page=settings.import_max_lines_per_page,
        max_points=settings.import_max_points,
        max_text_chars=settings.import_max_text_chars,
    )


def build_services(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    ocr: OcrClient | None = None,
    training_data: TrainingData | None = None,
    judge: ModelJudge | None = None,
) -> Services:
    """``training_data`` / ``judge``: what training runs learn from and how a model is judged
    (default: backend.training.dataset and backend.training.adoption; tests script them)."""
    metrics = Metrics()
    storage = build_storage(settings)
    db = Database(settings.database_url)
    metrics.watch_jobs(db)
    jobs = Jobs(metrics)
    ocr = ocr or OcrClient(ocr_client_config(settings), metrics.registry, now=clock)
    pages = PageImages(storage, render_limits(settings), concurrency=settings.page_render_concurrency)
    documents = Documents(
        storage,
        max_upload_bytes=settings.max_upload_bytes,
        max_pages=settings.max_pages,
        trash_days=settings.trash_days,
        jobs=jobs,
    )
    return Services(
        metrics=metrics,
        ocr=ocr,
        training=TrainingRuns(
            settings, training_data or DatasetModule(pages.pdf), judge or AdoptionModule(db, ocr, storage, clock)
        ),
        settings=settings,
        db=db,
        users=Users(make_hasher(settings)),
        throttle=LoginThrottle(
            lambda: clock().timestamp(),
            free_attempts=settings.login_free_attempts,
            base_delay_s=settings.login_base_delay_s,
            max_delay_s=settings.login_max_delay_s,
            window_s=settings.login_window_s,
        ),
        documents=documents,
        imports=Imports(storage, documents, import_limits(settings), max_page_pixels=settings.ocr_max_page_pixels),
        pages=pages,
        searches=SearchRunner.from_settings(db, settings),
        exports=Exporter(PageDrawing(storage, pages.limits, pages.pdf), max_documents=settings.export_max_documents),
        clock=clock,
        jobs=jobs,
    )


# The dependencies that neither wait nor touch the database are ``async def``: FastAPI runs a
# plain ``def`` dependency in the thread pool, a trip there and back for each on every request.
async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One session per request; service functions commit what they change."""
    with services.db.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Authenticated:
    user: User
    credential: Credential


def _not_authenticated() -> AppError:
    return AppError(
        ErrorCode.NOT_AUTHENTICATED, "Please log in.", headers={"WWW-Authenticate": 'Bearer realm="familienarchiv"'}
    )


def get_authenticated(request: Request, services: ServicesDep, session: SessionDep) -> Authenticated:
    """A bearer token (API clients, no CSRF) or the session cookie (the web UI, CSRF checked)."""
    now = services.clock()
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _not_authenticated()
        found = services.credentials.resolve(session, token.strip(), CredentialKind.BEARER, now)
        if found is None:
            raise _not_authenticated()
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        found = services.credentials.resolve(session, cookie, CredentialKind.SESSION, now) if cookie else None
        if found is None:
            raise _not_authenticated()
        # A cookie is sent by the browser whoever made the page; the CSRF token proves it was ours.
        if request.method not in SAFE_METHODS and not services.credentials.csrf_matches(
            found[0], request.headers.get(CSRF_HEADER)
        ):
            raise AppError(ErrorCode.CSRF_FAILED, "The form is out of date. Please reload the page and try again.")
    credential, user = found
    return Authenticated(user=user, credential=credential)


AuthenticatedDep = Annotated[Authenticated, Depends(get_authenticated)]


async def get_current_user(auth: AuthenticatedDep) -> User:
    return auth.user


async def get_admin_user(auth: AuthenticatedDep) -> User:
    if auth.user.role is not Role.ADMIN:
        raise AppError(ErrorCode.FORBIDDEN, "Only an admin may do this.")
    return auth.user


CurrentUser = Annotated[User, Depends(get_current_user)]


def get_user_briefly(request: Request, services: ServicesDep) -> User:
    """The current user, read in a session of its own that is closed at once: for a route that
    then waits (a search queues for its turn) without holding a pooled connection meanwhile.
    The user comes back detached: its columns can be read, nothing can be loaded through it."""
    with services.db.sessions() as session:
        return get_authenticated(request, services, session).user


BriefUser = Annotated[User, Depends(get_user_briefly)]


async def get_ocr_client(services: ServicesDep) -> OcrClient:
    return services.ocr


OcrClientDep = Annotated[OcrClient, Depends(get_ocr_client)]
AdminUser = Annotated[User, Depends(get_admin_user)]
