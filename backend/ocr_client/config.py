"""The client's knobs in one dataclass; the backend's Settings fills it (``APP_OCR_*``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class BreakerConfig:
    """Resilience4j's circuit-breaker settings, count-based window.

    The open wait (60 s) is longer than the OCR service's cold start, so a restarting
    service is probed once it can answer rather than while it is still loading models.
    """

    window_size: int = 20
    minimum_calls: int = 10
    failure_rate_percent: float = 50.0
    slow_call_s: float = 60.0
    slow_call_rate_percent: float = 100.0
    open_wait_s: float = 60.0
    half_open_permits: int = 3

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError("window_size must be at least 1")
        if self.minimum_calls < 1:
            raise ValueError("minimum_calls must be at least 1")
        for name in ("failure_rate_percent", "slow_call_rate_percent"):
            value = getattr(self, name)
            if not 0 < value <= 100:
                raise ValueError(f"{name} must be in (0, 100]")
        if self.slow_call_s <= 0 or self.open_wait_s < 0:
            raise ValueError("slow_call_s must be positive and open_wait_s not negative")
        if self.half_open_permits < 1:
            raise ValueError("half_open_permits must be at least 1")


@dataclass(frozen=True)
class OcrClientConfig:
    """Where the OCR service replicas are and how patiently to call them.

    ``attempt_timeout_s`` limits one attempt of a unary call (``/ocr`` reads the whole
    document in it) and the connection phase of a stream; ``deadline_s`` limits a unary call
    with all its retries and back-off; ``stream_deadline_s`` a whole stream, and
    ``stream_idle_s`` the gap between two of its lines (a page takes tens of seconds on a CPU).
    """

    urls: tuple[str, ...] = ("http://127.0.0.1:8001",)
    name: str = "ocr-service"
    attempts: int = 4
    # Back-off before retry n (1-based): initial × multiplier^(n-1), at most max: 2, 4, 8 s.
    backoff_initial_s: float = 2.0
    backoff_multiplier: float = 2.0
    backoff_max_s: float = 8.0
    attempt_timeout_s: float = 600.0
    deadline_s: float = 1800.0
    stream_deadline_s: float = 6 * 3600.0
    stream_idle_s: float = 300.0
    connect_timeout_s: float = 5.0
    training_timeout_s: float = 300.0
    # Training jobs live on the replica that runs them: every training call goes to this one
    # (the first URL when unset), without retry or breaker.
    training_url: str | None = None
    training_token: str | None = field(default=None, repr=False)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one OCR service URL is needed")
        for url in (*self.urls, *([self.training_url] if self.training_url else [])):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"not an http(s) URL of an OCR service: {url!r}")
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff_initial_s < 0 or self.backoff_multiplier < 1 or self.backoff_max_s < 0:
            raise ValueError("the back-off needs initial >= 0, multiplier >= 1 and max >= 0")
        timeouts = (
            self.attempt_timeout_s,
            self.deadline_s,
            self.stream_deadline_s,
            self.stream_idle_s,
            self.connect_timeout_s,
            self.training_timeout_s,
        )
        if any(value <= 0 for value in timeouts):
            raise ValueError("every time limit must be positive")
