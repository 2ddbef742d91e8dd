"""Settings of the OCR service: every knob is an ``OCR_*`` environment variable.

Read once at start-up (``Settings()``), validated with clear messages, and passed in;
tests construct their own ``Settings(...)``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Measured on this design's target (2 cores, kraken 7.1.1, torch 2.14): one worker process
# with the packaged segmentation model and a recognition model peaks at about 1.1 GB while
# it segments a 300-dpi page. Rounded up so a worker never pushes the container over its limit.
WORKER_MEMORY_MB = 1400
# The parent process (FastAPI, the PDF rasteriser, pages waiting in the queue).
SERVICE_BASE_MEMORY_MB = 800

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


def _container_memory_limit_mb() -> int | None:
    """The cgroup memory limit of this container, or None when there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw) // (1024 * 1024)
    return None


def _physical_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OCR_", extra="ignore", env_file=None)

    host: str = "127.0.0.1"
    port: int = Field(8001, ge=1, le=65535)
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
    # A page's width once blla has scaled it to 1800 px height; a worker's memory grows with it
    # (one process segmenting with blla, measured: 1.8 GB at 1273 px (A4 portrait), 2.6 GB at
    # 2546 px (A4 landscape), 3.9 GB at 4500 px). 3700 px (2.05:1) lets every ISO, US and
    # envelope format in either orientation in (a DL or C6/5 envelope lying down: 3600-3616 px).
    max_segmentation_width: int = Field(3700, ge=1800, le=20_000)
    # Seconds reading one document's structure (its page count, every page's size) may take on
    # the shared documents thread before it is refused (422 DOCUMENT_TOO_COMPLEX).
    document_open_timeout_s: float = Field(5.0, gt=0, le=600)

    # worker pool
    memory_limit_mb: int | None = Field(None, gt=0)
    workers: int | None = Field(None, gt=0)
    threads_per_worker: int | None = Field(None, gt=0)
    queue_size: int = Field(8, ge=0)
    retry_after_s: int = Field(10, gt=0)
    # A page that takes longer (seconds) is stuck: its worker is ended and replaced. 0: no limit.
    page_timeout_s: float = Field(300.0, ge=0, le=86_400)

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
    # accepted. Public kraken models are 5–50 MB; the bound keeps an upload from filling the disk.
    max_model_bytes: int = Field(500 * 1024 * 1024, gt=0)
    # How long loading a candidate model (in a child process) may take before it is refused.
    model_validation_timeout_s: float = Field(120.0, gt=0)

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
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

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
        if self.training_max_epochs < self.training_default_epochs:
            raise ValueError("OCR_TRAINING_MAX_EPOCHS must not be below OCR_TRAINING_DEFAULT_EPOCHS")
        return self

    @property
    def training_thread_count(self) -> int:
        return self.training_threads or max(1, (os.cpu_count() or 1) // 2)

    @property
    def effective_memory_limit_mb(self) -> int:
        return self.memory_limit_mb or _container_memory_limit_mb() or _physical_memory_mb()

    @property
    def worker_count(self) -> int:
        """Workers that fit in memory, never more than cores.

        Each worker process holds its own copy of the models, so the count is bounded by
        ``(memory limit - service base) / per-worker memory``. An explicit ``OCR_WORKERS``
        wins, but must fit too (checked in :meth:`check_memory_budget`).
        """
        if self.workers is not None:
            return self.workers
        fit = (self.effective_memory_limit_mb - SERVICE_BASE_MEMORY_MB) // WORKER_MEMORY_MB
        return max(1, min(os.cpu_count() or 1, fit))

    @property
    def worker_threads(self) -> int:
        """torch threads per worker: cores shared out, so workers never oversubscribe them (kraken #528)."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.worker_count)

    def check_memory_budget(self) -> None:
        need = SERVICE_BASE_MEMORY_MB + self.worker_count * WORKER_MEMORY_MB
        if need > self.effective_memory_limit_mb:
            raise ValueError(
                f"{self.worker_count} OCR workers need about {need} MB, but the memory limit is "
                f"{self.effective_memory_limit_mb} MB: lower OCR_WORKERS or raise OCR_MEMORY_LIMIT_MB"
            )
