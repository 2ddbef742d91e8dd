"""Settings of the backend: every knob is an ``APP_*`` environment variable.

Read once at start-up (``Settings()``), validated with a message naming the bad one, and
passed in (``create_app(settings)``); tests construct their own ``Settings(...)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

REGION = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
PREFIX = re.compile(r"[A-Za-z0-9._/-]+")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")


def _in_memory(url: str) -> bool:
    """A SQLite database of this process alone (in its memory, or a private temporary file)."""
    # Read as SQLAlchemy reads it: options after "?" and %-escapes hide the name from string tests.
    try:
        parsed = make_url(url)
    except ArgumentError:
        return False  # not a URL: the engine refuses it at start
    if parsed.get_backend_name() != "sqlite":
        return False
    name = parsed.database or ""
    name = name.removeprefix("file:")  # an SQLite URI (uri=true): "file::memory:", "file:"
    return (
        name in ("", ":memory:")
        or "memory" in _values(parsed.query.get("mode"))
        or "memdb" in _values(parsed.query.get("vfs"))
    )


def _values(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """A URL option's values (SQLAlchemy gives a repeated option as a tuple)."""
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value


def bucket_name_problem(name: str) -> str | None:
    """What is wrong with an S3 bucket name (AWS's general-purpose bucket rules), or None."""
    if not _BUCKET.fullmatch(name):
        return "must be 3-63 lower-case letters, digits, '.' and '-', beginning and ending with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return "must not have two dots in a row or a dot beside a hyphen"
    if _IPV4.fullmatch(name):
        return "must not look like an IP address"
    if name.startswith(("xn--", "sthree-", "amzn-s3-demo-")) or name.endswith(("-s3alias", "--ol-s3", "--x-s3")):
        return "must not use a prefix or suffix S3 reserves (xn--, sthree-, -s3alias, --ol-s3, --x-s3)"
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore", env_file=None)

    # production: refuse to serve with an empty or guessable secret (backend/production.py).
    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # /health and /metrics listen here only, never on the public port (compose does not publish it).
    management_host: str = "127.0.0.1"
    management_port: int = Field(9100, ge=1, le=65535)
    # The address people open; the setup link is printed with it, and https here makes cookies Secure.
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    # The web UI's templates, scripts, styles and message catalogs (the repository's frontend/;
    # the image copies it to /app/frontend).
    frontend_dir: Path = Path(__file__).resolve().parents[1] / "frontend"

    # SQLite file by default; postgresql://user:pass@host/db in production.
    database_url: str = "sqlite:///./data/backend.db"
    # Where originals (and rendered pages) live: "local" (the folder storage_dir) or "s3"
    # (an S3-compatible bucket, e.g. MinIO: the s3_* settings below).
    storage: Literal["local", "s3"] = "local"
    # Originals (uploaded documents) live here, under keys the backend makes up.
    storage_dir: Path = Path("data/storage")
    # S3: the endpoint (empty: AWS's own for s3_region), the bucket (it must exist), an optional
    # key prefix (several archives in one bucket). Credentials: both keys here, or neither and
    # boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role).
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = ""
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # "path" (bucket in the URL's path) works with MinIO and most S3-compatible stores; AWS also
    # takes "virtual" (bucket in the host name).
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"
    # Every call: connect and read time limits, and attempts in all (botocore's standard retry
    # mode: throttling, 5xx and connection errors, with jittered exponential back-off).
    s3_connect_timeout_s: float = Field(5.0, gt=0, le=300)
    s3_read_timeout_s: float = Field(60.0, gt=0, le=3600)
    s3_max_attempts: int = Field(3, ge=1, le=10)
    # Originals larger than this are uploaded in parts of this size (S3's minimum is 5 MiB);
    # one upload holds at most a few parts in memory, never the whole file.
    s3_part_size_mib: int = Field(8, ge=5, le=512)

    # The first admin, created unattended at start when there are no users (both or neither).
    admin_username: str | None = None
    admin_password: SecretStr | None = None

    # Argon2id cost of password hashes. The defaults (RFC 9106's second recommendation)
    # take about 0.25 s on one core; lower only on very small machines.
    argon2_time_cost: int = Field(3, ge=1, le=20)
    argon2_memory_kib: int = Field(65536, ge=8192, le=4 * 1024 * 1024)
    # Lifetime of a bearer token (API clients) and of a browser session.
    token_ttl_hours: float = Field(24 * 30, gt=0)
    session_ttl_hours: float = Field(12, gt=0)
    # Failed logins: this many are free per user name and per address; every further one
    # doubles the wait before the next try (from login_base_delay_s up to login_max_delay_s).
    # Failures are forgotten after login_window_s without a new one.
    login_free_attempts: int = Field(5, ge=1)
    login_base_delay_s: float = Field(1.0, gt=0)
    login_max_delay_s: float = Field(900.0, gt=0)
    login_window_s: float = Field(3600.0, gt=0)

    # Uploads: the largest original accepted (bytes) and the most pages a document may have.
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0)
    max_pages: int = Field(500, gt=0)
    # A deleted document stays in the trash this long; an admin can restore it until then.
    trash_days: int = Field(30, ge=1)
    # The most documents one export ZIP (GET /api/exports) may hold (more: 422 EXPORT_SELECTION_TOO_LARGE).
    export_max_documents: int = Field(200, ge=1)

    # --- Imports (POST /api/imports: page images with PAGE XML or ALTO in a ZIP) ------------
    # The largest ZIP accepted (bytes, cut off while it arrives: 413 IMPORT_TOO_LARGE), its
    # entries and the bytes it may unpack to (a zip bomb stops there: 422 IMPORT_UNSAFE_ARCHIVE).
    import_max_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    import_max_entries: int = Field(20_000, ge=1)
    import_max_unpacked_bytes: int = Field(8 * 1024 * 1024 * 1024, gt=0)
    # One PAGE/ALTO file (a dense page's is under 1 MB) and its lines. A page image may have at
    # most APP_OCR_MAX_PAGE_PIXELS pixels (the OCR service reads no larger page), a document at
    # most APP_MAX_PAGES pages.
    # One PAGE/ALTO file: parsing costs about 15x its size in memory; a dense page with word
    # boxes is 1-3 MB.
    import_max_xml_bytes: int = Field(8 * 1024 * 1024, gt=0)
    import_max_lines_per_page: int = Field(5000, ge=1)
    # Coordinate points of all the ZIP's lines together (baselines and outlines): every page read
    # stays in memory until the last file is, at about 64 bytes a point; dense deflated polygons
    # would otherwise make a small upload gigabytes (more: 422 IMPORT_UNSAFE_ARCHIVE). A
    # 1000-page Transkribus export of 40 lines a page has some 3 million.
    import_max_points: int = Field(5_000_000, ge=1)
    # Characters of all the ZIP's lines' texts together, kept in memory the same way: a line of
    # 8 million letters deflates to a few kilobytes (more: 422 IMPORT_UNSAFE_ARCHIVE). That
    # 1000-page export holds about 2.4 million. One line holds at most MAX_LINE_TEXT (5000), as a
    # correction may.
    import_max_text_chars: int = Field(20_000_000, ge=1)

    # --- Page images for the UI ---------------------------------------------------------
    # A PDF page is rendered at this DPI; an image page keeps its own pixels. Either way its
    # long side is brought down to page_max_side (px) and its thumbnail's to page_thumbnail_side.
    page_dpi: int = Field(150, ge=36, le=600)
    page_max_side: int = Field(2400, ge=64, le=16383)  # WebP's own limit is 16383 px a side
    page_thumbnail_side: int = Field(300, ge=16, le=2000)
    # An image page with more pixels than this is not decoded for display (422 PAGE_TOO_LARGE):
    # decoding one holds about 4 bytes a pixel (a JPEG is decoded at a reduced scale instead).
    page_max_pixels: int = Field(100_000_000, ge=1_000_000)
    # Pages rendered at once by this process (each holds one decoded page in memory).
    page_render_concurrency: int = Field(2, ge=1, le=32)
    # A PDF page is drawn in a child process (one per page rendered at once): past this many
    # seconds it is killed, and a page that needs more than this address space (MB) ends it;
    # either way the page is 422 DOCUMENT_TOO_COMPLEX. Memory unset: 512 MB + 16 bytes per
    # pixel of the largest page shown (APP_PAGE_MAX_SIDE squared: 604 MB at 2400 px).
    pdf_render_timeout_s: float = Field(30.0, gt=0, le=600)
    pdf_render_memory_mb: int | None = Field(None, ge=256)
    # How long a browser may reuse a page image without asking (it then asks with If-None-Match).
    page_cache_max_age_s: int = Field(3600, ge=0)
    # The OCR service's OCR_PDF_DPI and OCR_MAX_PAGE_PIXELS: a page's width and height (the space of
    # its lines' coordinates) are those of the image the OCR service reads. Keep them equal to its.
    ocr_pdf_dpi: int = Field(300, ge=50, le=1200)
    ocr_max_page_pixels: int = Field(60_000_000, gt=0)

    # --- OCR service and OCR jobs -------------------------------------------------------
    # The OCR service's replicas, comma-separated; the backend is their only caller.
    ocr_urls: str = "http://127.0.0.1:8001"
    # Calls to it: attempts in all (retries only on 5xx, connect errors, time-outs), the first
    # back-off (doubling, at most 8x), and how long the breaker stays open before it probes.
    ocr_attempts: int = Field(4, ge=1, le=10)
    ocr_backoff_s: float = Field(2.0, ge=0)
    ocr_breaker_open_s: float = Field(60.0, ge=0)
    # OCR jobs this process runs at once: as many as the OCR service has workers, so every
    # worker stays busy and none queues behind another. 0: this process runs no jobs.
    ocr_jobs_concurrency: int = Field(2, ge=0, le=64)
    # A running job's lease: a live runner renews it; a job whose lease expired (its runner
    # died) is taken up again by any runner. Long enough to outlast a slow page's commit.
    ocr_lease_s: float = Field(60.0, gt=0)
    # How often an idle runner looks for queued jobs, the progress stream for news, and a
    # runner whether its running jobs were cancelled (a cancel stops the stream within this).
    ocr_poll_s: float = Field(1.0, gt=0)
    # A broken stream re-queues the job (it resumes at the first missing page) until it has
    # been taken up this often; then it is FAILED with OCR_SERVICE_UNAVAILABLE.
    ocr_max_attempts: int = Field(3, ge=1, le=20)

    # --- Training runs (admin only) ----------------------------------------------------
    # The OCR service's OCR_TRAINING_TOKEN; empty: training is off (the admin page says so).
    ocr_training_token: SecretStr | None = None
    # The replica that trains (its jobs live there); empty: the first of APP_OCR_URLS.
    ocr_training_url: str | None = None
    # Corrected lines a recognition / writer run needs at least, and pages whose every line a
    # person has reviewed that a segmentation run needs at least.
    training_min_lines: int = Field(200, ge=1)
    training_min_writer_lines: int = Field(100, ge=1)
    training_min_segmentation_pages: int = Field(10, ge=1)
    # Share of the eligible pages held out to judge a new recognition / writer model against
    # the model it would replace (chosen by page), and the fewest pages held out.
    training_heldout_share: float = Field(0.1, ge=0.01, le=0.5)
    training_heldout_min_pages: int = Field(2, ge=1)
    # New corrections of a writer since their last run after which the training page suggests
    # another run (it never starts one by itself).
    training_writer_suggest_lines: int = Field(50, ge=1)
    # Stem of the names trained models get in the OCR service's store (``<stem>-v3``,
    # ``<stem>-seg-v2``; writers' models are ``writer-<slug>-v<n>``).
    training_model_prefix: str = Field("archive", pattern=r"^[a-z0-9](?:[a-z0-9-]{0,40}[a-z0-9])?$")
    # Epochs of a run (empty: the OCR service's own choice).
    training_epochs: int | None = Field(None, ge=1, le=1000)
    # How often the follower asks the OCR service about a running job, and its lease.
    training_poll_s: float = Field(5.0, gt=0)
    training_lease_s: float = Field(120.0, gt=0)
    # A run whose job the OCR service has not answered about for this long ends FAILED.
    training_lost_after_s: float = Field(3600.0, gt=0)
    # Runs the training overview lists (shared with the admin page).
    training_runs_listed: int = Field(10, ge=1, le=100)

    # Search: the lines shown per document in a result (best first).
    search_hits_per_document: int = Field(5, ge=1, le=50)
    # The candidate lines one search judges at most (a very common word matches far more); the
    # best are sought first (a person's text, exact matches), so the cut drops the weakest. Each
    # candidate is a read of its index row scattered over the file: at 1M lines 1000 cost a
    # common word's search about three times the CPU of 300 (bench/bench_search.py).
    search_candidate_lines: int = Field(300, ge=100, le=200_000)
    # Worker processes that run searches (0: the backend's own process, one search at a time).
    # Each uses a core of its own and about 80 MB; see backend/search/runner.py.
    search_processes: int = Field(0, ge=0, le=64)
    # Searches the backend holds at once, running and waiting for their turn; one more is
    # answered 503 SEARCH_BUSY at once (Retry-After) rather than queued behind the others: past
    # this a person waits seconds, and a queue without a bound grows for as long as searches come
    # faster than they are answered.
    search_max_pending: int = Field(100, ge=1, le=100_000)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("s3_endpoint_url", "s3_bucket", "s3_access_key_id", "s3_secret_access_key", mode="before")
    @classmethod
    def _s3_empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL such as http://minio:9000")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use APP_S3_ACCESS_KEY_ID / APP_S3_SECRET_ACCESS_KEY")
        return value.rstrip("/")

    @field_validator("s3_bucket")
    @classmethod
    def _s3_bucket(cls, value: str | None) -> str | None:
        if value is not None and (problem := bucket_name_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("s3_region")
    @classmethod
    def _s3_region(cls, value: str) -> str:
        if not REGION.fullmatch(value):
            raise ValueError("must be a region name such as us-east-1 (lower-case letters, digits, hyphens)")
        return value

    @field_validator("s3_prefix")
    @classmethod
    def _s3_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value:
            return ""
        if len(value) > 200 or not PREFIX.fullmatch(value) or any(part in {"", ".", ".."} for part in value.split("/")):
            raise ValueError("must be folder names of letters, digits, '-', '_' and '.' joined by '/' (no '..')")
        return value + "/"

    @field_validator(
        "admin_username",
        "admin_password",
        "ocr_training_token",
        "ocr_training_url",
        "training_epochs",
        "pdf_render_memory_mb",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.admin_username is None) != (self.admin_password is None):
            raise ValueError("APP_ADMIN_USERNAME and APP_ADMIN_PASSWORD must be set together")
        if self.port == self.management_port:
            raise ValueError("APP_MANAGEMENT_PORT must differ from APP_PORT")
        if self.page_thumbnail_side > self.page_max_side:
            raise ValueError("APP_PAGE_THUMBNAIL_SIDE must not be above APP_PAGE_MAX_SIDE")
        if self.login_max_delay_s < self.login_base_delay_s:
            raise ValueError("APP_LOGIN_MAX_DELAY_S must not be below APP_LOGIN_BASE_DELAY_S")
        if self.search_processes and _in_memory(self.database_url):
            raise ValueError("APP_SEARCH_PROCESSES needs a database file or server: other processes cannot see memory")
        self.storage_dir = self.storage_dir.expanduser().resolve()
        if self.storage == "s3" and self.s3_bucket is None:
            raise ValueError("APP_S3_BUCKET must name the bucket when APP_STORAGE is s3")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("APP_S3_ACCESS_KEY_ID and APP_S3_SECRET_ACCESS_KEY must be set together")
        if not self.ocr_url_list:
            raise ValueError("APP_OCR_URLS must name at least one OCR service URL")
        for url in (*self.ocr_url_list, *([self.ocr_training_url] if self.ocr_training_url else [])):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"APP_OCR_URLS / APP_OCR_TRAINING_URL: {url!r} is not an http(s) URL")
        return self

    @property
    def ocr_url_list(self) -> tuple[str, ...]:
        return tuple(url.strip().rstrip("/") for url in self.ocr_urls.split(",") if url.strip())

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")
