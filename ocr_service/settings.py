"""Settings of the OCR service: every knob is an ``OCR_*`` environment variable.

Read once at start-up (``Settings()``), validated with clear messages, and passed in;
tests construct their own ``Settings(...)``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ocr_service.cgroups import Cgroup, available_cpus
from ocr_service.engine.device import Device, parse_device
from ocr_service.page_limits import PDF_RENDER_TIMEOUT_S, render_address_space
from untrusted.guessable import guessable_secret_problem

# One worker process's peak while it reads a page grows with the page's width once blla has
# scaled it to 1800 px height (its input is (1, 3, 1800, width)) and, less, with the page's own
# pixels (the page crosses to the worker whole). Measured with bench/bench_worker_memory.py
# (one process, the packaged blla and a recognition model, torch on one thread; peak RSS, the
# highest of repeated runs, which differ by up to 12 %): 1987 MB at 1273 px (A4 portrait),
# 2500 MB at 2546 px (A4 landscape), 3277 MB at 3700 px (12.6 MP), 3457 MB at 3700 px (60 MP).
# A worker reserves that peak, with a margin of 10 % or more, for the widest and largest page
# admitted (OCR_MAX_SEGMENTATION_WIDTH, OCR_MAX_PAGE_PIXELS), so that no page admitted can push
# the container over its limit.
WORKER_BASE_MEMORY_MB = 1400
WORKER_MEMORY_PER_WIDTH_PX_MB = 0.6
WORKER_BYTES_PER_PAGE_PIXEL = 8


def worker_memory_mb(max_segmentation_width: int, max_page_pixels: int) -> int:
    """The memory one worker may take at its peak, for pages up to ``max_segmentation_width``
    px wide at blla's height and ``max_page_pixels`` in all."""
    return math.ceil(
        WORKER_BASE_MEMORY_MB
        + WORKER_MEMORY_PER_WIDTH_PX_MB * max_segmentation_width
        + WORKER_BYTES_PER_PAGE_PIXEL * max_page_pixels / 2**20
    )


# The parent process (FastAPI, the PDF rasteriser, pages waiting in the queue).
SERVICE_BASE_MEMORY_MB = 800
# The model-check child (engine/validate.py) imports torch and kraken and loads one candidate
# model: 1.1 GB at its peak for the packaged blla (5 MB), 2.0 GB for a 250 MB CoreML file, so
# about 1.1 GB plus 3.7 times the file. It runs for uploads, trained models and hand-placed
# files, while workers read pages and a trainer may run, so its peak is reserved at start-up.
MODEL_CHECK_BASE_MEMORY_MB = 1200
MODEL_CHECK_MEMORY_PER_MODEL_MB = 4

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Of that, the process itself with every admitted document open (interpreter, libraries,
# pdfium's and Pillow's per-document state; uploads are spooled to disk). The rest is the
# page memory: decoded pages in flight (OCR_PAGE_MEMORY_MB). See bench/bench_memory.py.
SERVICE_PROCESS_MEMORY_MB = 250

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def _container_memory_limit_mb() -> int | None:
    """The cgroup memory limit of this container (the tightest on any level), or None."""
    limit = Cgroup().memory_limit_bytes()
    return None if limit is None else limit // (1024 * 1024)


def _physical_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCR_", extra="ignore", env_file=None)

    # production: refuse to start with an empty or guessable training token (production_problems).
    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
    # /health and /metrics for Prometheus, on a port that is never published (compose exposes
    # it on the internal network only); /health stays on the public port too.
    management_host: str = "127.0.0.1"
    management_port: int = Field(9101, ge=1, le=65535)
    # Where kraken reads pages and trains: "cpu", or a GPU ("cuda" = "cuda:0", "cuda:N") of an
    # image built with torch's CUDA wheels (docs/deployment-reference.md, "GPU").
    device: str = "cpu"
    log_level: str = "INFO"
    log_json: bool = False

    # model store
    models_dir: Path = Path("data/models")
    segmentation_model: Path | None = None
    default_model: str | None = None

    # documents
    allowed_pdf_hosts: Annotated[list[str], NoDecode] = []
    allow_private_addresses: bool = False
    max_document_bytes: int = Field(100 * 1024 * 1024, gt=0)
    max_pages: int = Field(200, gt=0)
    max_page_pixels: int = Field(60_000_000, gt=0)
    pdf_dpi: int = Field(300, ge=50, le=1200)
    fetch_timeout_s: float = Field(60.0, gt=0)
    fetch_max_redirects: int = Field(5, ge=0, le=20)

    # page shapes and document structure (see README "Limits on documents")
    # The long side of a page over its short side: blla scales every page to 1800 px height,
    # so a tall strip (1:10 → 180 px wide) has little left to segment. 1:10 lets long receipts in.
    max_page_aspect_ratio: float = Field(10.0, ge=1.5, le=100.0)
    # A page's width once blla has scaled it to 1800 px height; a worker's memory grows with it,
    # and each worker reserves it (worker_memory_mb). 3700 px (2.05:1) lets every ISO, US and
    # envelope format in either orientation in (a DL or C6/5 envelope lying down: 3600-3616 px).
    max_segmentation_width: int = Field(3700, ge=1800, le=20_000)
    # Seconds reading one document's structure (its page count, every page's size) may take on
    # the shared documents thread before it is refused (422 DOCUMENT_TOO_COMPLEX).
    document_open_timeout_s: float = Field(5.0, gt=0, le=600)
    # Seconds rendering one PDF page may take; past it the renderer process is killed and the
    # document refused (422 DOCUMENT_TOO_COMPLEX), so the next document is rendered at once.
    pdf_render_timeout_s: float = Field(PDF_RENDER_TIMEOUT_S, gt=0, le=600)
    # Address space (not resident memory) the PDF renderer process may map, in MB; a page that
    # needs more is refused (422 DOCUMENT_TOO_COMPLEX). None: 512 MB + 16 bytes per pixel of
    # OCR_MAX_PAGE_PIXELS (1.4 GB at 60 MP). Below 256 MB the renderer cannot start.
    pdf_render_memory_mb: int | None = Field(None, ge=256)

    # worker pool
    memory_limit_mb: int | None = Field(None, gt=0)
    workers: int | None = Field(None, gt=0)
    threads_per_worker: int | None = Field(None, gt=0)
    queue_size: int = Field(8, ge=0)
    retry_after_s: int = Field(10, gt=0)
    # A page that takes longer (seconds) is stuck: its worker is ended and replaced. 0: no limit.
    page_timeout_s: float = Field(300.0, ge=0, le=86_400)

    # read path: bytes of decoded pages the service process may hold at once (pages being
    # rendered, waiting for a worker or handed to one); a page waits for its share. None: the
    # service's memory (SERVICE_BASE_MEMORY_MB) less what the process itself needs.
    page_memory_mb: int | None = Field(None, gt=0)
    # Seconds a /ocr request body (upload or JSON) may take to arrive once it is admitted: a
    # client that trickles its body would otherwise hold a place in the queue for ever.
    body_timeout_s: float = Field(120.0, gt=0, le=3600)

    # training (fail closed: no token, no training)
    training_token: SecretStr | None = None
    # Training jobs (POST /train, /segtrain): one directory per job with its state (JSON),
    # the unpacked data, checkpoints and the trainer's log.
    training_dir: Path = Path("data/training")
    # Training jobs that may run at once; one more is refused with 409 TRAINING_BUSY.
    training_max_jobs: int = Field(1, ge=1)
    # Finished jobs whose folders (state and trainer log) are kept; older ones are deleted.
    training_keep_jobs: int = Field(100, ge=1)
    # Bounds on an uploaded training ZIP: its size, its entries, and its unpacked size.
    training_max_upload_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    training_max_entries: int = Field(20_000, gt=0)
    training_max_unpacked_bytes: int = Field(4 * 1024 * 1024 * 1024, gt=0)
    # torch threads of the trainer process; None = half the cores, so OCR keeps the rest.
    training_threads: int | None = Field(None, gt=0)
    # Epochs when a request names none, and the most a request may ask for.
    training_default_epochs: int = Field(50, gt=0)
    training_max_epochs: int = Field(200, gt=0)
    # A trainer that reports nothing (no batch, no epoch) for this long is killed: job FAILED.
    training_stall_timeout_s: float = Field(900.0, gt=0)
    # Input height of segmentation training. blla's 1800 px needs ~6.6 GB to train; 800 px
    # stays under 3 GB. A base model of another height cannot be fine-tuned (kraken ignores
    # the spec's height when loading weights), so such runs start from scratch at this height.
    segtrain_height: int = Field(800, ge=64, le=4000)

    # model management (POST /models, `python -m ocr_service models`): the largest model file
    # accepted. Public kraken models are 5–50 MB; the bound keeps an upload from filling the disk,
    # and the memory reserved for checking a model grows with it (MODEL_CHECK_*), so it is 100 MB.
    max_model_bytes: int = Field(100 * 1024 * 1024, gt=0)
    # How long loading a candidate model (in a child process) may take before it is refused.
    model_validation_timeout_s: float = Field(120.0, gt=0)

    # --- container resources (CPU quota, memory reserved beside the workers) ---------------
    # Whole CPUs the service may use; None = the container's CPU quota (cgroup), rounded down,
    # within the CPUs this process may run on. Workers, their threads and the trainer's share it.
    cpus: int | None = Field(None, gt=0)
    # Memory reserved for each trainer process when training is on (OCR_TRAINING_TOKEN set):
    # segmentation training at 800 px peaks under 3 GB, recognition at about 2 GB (README,
    # "Benchmark: training"); 1800-px segmentation training (OCR_SEGTRAIN_HEIGHT) needs 6.6 GB.
    training_memory_mb: int = Field(3072, gt=0)
    # Address space (not resident memory) of the model-check child, so that a hostile model file
    # cannot take the machine's memory. torch maps about 3 GB of libraries and arenas when it is
    # imported; 4 GB already refuses a 250 MB CoreML file, hence 16 GB.
    model_validation_address_space_mb: int = Field(16 * 1024, ge=4096)

    @field_validator("allowed_pdf_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip().lower().rstrip(".") for h in value.split(",") if h.strip()]
        if isinstance(value, list):
            return [str(h).strip().lower().rstrip(".") for h in value if str(h).strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return parse_device(value).name

    @field_validator("default_model")
    @classmethod
    def _default_name(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not MODEL_NAME_PATTERN.fullmatch(value):
            raise ValueError("must be a model name: lowercase letters, digits and '-'")
        return value

    @field_validator("training_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    @model_validator(mode="after")
    def _paths(self) -> Settings:
        self.models_dir = self.models_dir.expanduser().resolve()
        if self.segmentation_model is not None:
            seg = self.segmentation_model.expanduser()
            if not seg.is_absolute():
                raise ValueError(f"OCR_SEGMENTATION_MODEL must be an absolute path, got {seg}")
            if not seg.resolve().is_relative_to(self.models_dir):
                raise ValueError(f"OCR_SEGMENTATION_MODEL must lie inside the model store {self.models_dir}, got {seg}")
            self.segmentation_model = seg.resolve()
        self.training_dir = self.training_dir.expanduser().resolve()
        if self.management_port == self.port:
            raise ValueError(f"OCR_MANAGEMENT_PORT must differ from OCR_PORT (both {self.port})")
        if self.training_max_epochs < self.training_default_epochs:
            raise ValueError("OCR_TRAINING_MAX_EPOCHS must not be below OCR_TRAINING_DEFAULT_EPOCHS")
        return self

    @property
    def kraken_device(self) -> Device:
        return parse_device(self.device)

    @property
    def effective_cpus(self) -> int:
        return self.cpus or available_cpus()

    @property
    def page_memory_bytes(self) -> int:
        return (self.page_memory_mb or SERVICE_BASE_MEMORY_MB - SERVICE_PROCESS_MEMORY_MB) * 1024 * 1024

    @property
    def pdf_render_address_space(self) -> int:
        """Bytes the PDF renderer process may map (OCR_PDF_RENDER_MEMORY_MB, or derived)."""
        if self.pdf_render_memory_mb is not None:
            return self.pdf_render_memory_mb * 2**20
        return render_address_space(self.max_page_pixels)

    @property
    def service_memory_mb(self) -> int:
        """The service process's own memory: SERVICE_BASE_MEMORY_MB, or more where
        OCR_PAGE_MEMORY_MB is raised (it then leaves less room for workers)."""
        return max(SERVICE_BASE_MEMORY_MB, SERVICE_PROCESS_MEMORY_MB + self.page_memory_bytes // (1024 * 1024))

    @property
    def training_thread_count(self) -> int:
        return self.training_threads or max(1, self.effective_cpus // 2)

    @property
    def effective_memory_limit_mb(self) -> int:
        return self.memory_limit_mb or _container_memory_limit_mb() or _physical_memory_mb()

    @property
    def model_check_memory_mb(self) -> int:
        return MODEL_CHECK_BASE_MEMORY_MB + MODEL_CHECK_MEMORY_PER_MODEL_MB * math.ceil(self.max_model_bytes / 2**20)

    @property
    def trainers_memory_mb(self) -> int:
        """Memory the trainer processes may take at once; nothing when training is off."""
        return self.training_memory_mb * self.training_max_jobs if self.training_token is not None else 0

    @property
    def reserved_memory_mb(self) -> int:
        """Memory that is not the workers': the service itself, a model check, the trainers."""
        return self.service_memory_mb + self.model_check_memory_mb + self.trainers_memory_mb

    @property
    def worker_memory_mb(self) -> int:
        """What one worker may take at its peak: it grows with the widest and largest page admitted."""
        return worker_memory_mb(self.max_segmentation_width, self.max_page_pixels)

    @property
    def worker_count(self) -> int:
        """Workers that fit in memory, never more than CPUs.

        Each worker process holds its own copy of the models and segments one page at a time,
        so the count is bounded by ``(memory limit - reserved) / worker_memory_mb``. An explicit ``OCR_WORKERS``
        wins, but must fit too (checked in :meth:`check_memory_budget`).
        """
        if self.workers is not None:
            return self.workers
        fit = (self.effective_memory_limit_mb - self.reserved_memory_mb) // self.worker_memory_mb
        return max(1, min(self.effective_cpus, fit))

    @property
    def worker_threads(self) -> int:
        """torch threads per worker: CPUs shared out, so workers never oversubscribe them (kraken #528)."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, self.effective_cpus // self.worker_count)

    def check_memory_budget(self) -> None:
        workers_mb = self.worker_count * self.worker_memory_mb
        need = self.reserved_memory_mb + workers_mb
        limit = self.effective_memory_limit_mb
        if need <= limit:
            return
        parts = [
            f"{self.worker_count} OCR worker(s) {workers_mb} MB, {self.worker_memory_mb} MB each for pages up to "
            f"{self.max_segmentation_width} px wide at blla's 1800 px height and {self.max_page_pixels:,} pixels "
            "(lower OCR_WORKERS, OCR_MAX_SEGMENTATION_WIDTH or OCR_MAX_PAGE_PIXELS)",
            f"the service {self.service_memory_mb} MB (lower OCR_PAGE_MEMORY_MB)",
            f"a model check {self.model_check_memory_mb} MB (lower OCR_MAX_MODEL_BYTES)",
        ]
        if self.trainers_memory_mb:
            parts.append(
                f"{self.training_max_jobs} trainer(s) {self.trainers_memory_mb} MB (lower "
                "OCR_TRAINING_MAX_JOBS or OCR_TRAINING_MEMORY_MB, or unset OCR_TRAINING_TOKEN)"
            )
        raise ValueError(
            f"the OCR service needs about {need} MB — {'; '.join(parts)} — but the memory limit is "
            f"{limit} MB: raise OCR_MEMORY_LIMIT_MB (and the container's limit) or lower one of those"
        )


# As the backend's (backend/production.py): token_hex(16) at least.
TOKEN_MIN_LENGTH = 32


def production_problems(settings: Settings) -> list[str]:
    """What keeps these settings from production (``OCR_ENV=production``), naming the setting; empty: none."""
    if settings.env != "production":
        return []
    token = settings.training_token.get_secret_value() if settings.training_token is not None else ""
    problem = guessable_secret_problem(token, min_length=TOKEN_MIN_LENGTH)
    return [] if problem is None else [f"OCR_TRAINING_TOKEN {problem}"]
