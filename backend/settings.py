"""Settings of the backend: every knob is an ``APP_*`` environment variable.

Read once at start-up (``Settings()``), validated with a message naming the bad one, and
passed in (``create_app(settings)``); tests construct their own ``Settings(...)``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="APP_", extra="ignore", env_file=None)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # /health and /metrics listen here only, never on the public port (compose does not publish it).
    management_host: str = "127.0.0.1"
    management_port: int = Field(9100, ge=1, le=65535)
    # The address people open; the setup link is printed with it, and https here makes cookies Secure.
    public_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"

    # SQLite file by default; postgresql://user:pass@host/db in production.
    database_url: str = "sqlite:///./data/backend.db"
    # Originals (uploaded documents) live here, under keys the backend makes up.
    storage_dir: Path = Path("data/storage")

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

    @field_validator("admin_username", "admin_password", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.admin_username is None) != (self.admin_password is None):
            raise ValueError("APP_ADMIN_USERNAME and APP_ADMIN_PASSWORD must be set together")
        if self.port == self.management_port:
            raise ValueError("APP_MANAGEMENT_PORT must differ from APP_PORT")
        if self.login_max_delay_s < self.login_base_delay_s:
            raise ValueError("APP_LOGIN_MAX_DELAY_S must not be below APP_LOGIN_BASE_DELAY_S")
        self.storage_dir = self.storage_dir.expanduser().resolve()
        if not self.ocr_url_list:
            raise ValueError("APP_OCR_URLS must name at least one OCR service URL")
        for url in self.ocr_url_list:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"APP_OCR_URLS: {url!r} is not an http(s) URL")
        return self

    @property
    def ocr_url_list(self) -> tuple[str, ...]:
        return tuple(url.strip().rstrip("/") for url in self.ocr_urls.split(",") if url.strip())

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")
