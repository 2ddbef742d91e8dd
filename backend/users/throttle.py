"""Slows down repeated failed logins, per user name and per client address."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from backend.errors import AppError, ErrorCode


@dataclass
class _Failures:
    count: int
    last_at: float
    blocked_until: float


class LoginThrottle:
    """After ``free_attempts`` failures on a key, each further failure doubles the wait
    before that key may try again (``base_delay_s`` … ``max_delay_s``). A key's failures are
    forgotten ``window_s`` after its last one. Memory is bounded: the oldest keys go first.

    Kept in the process: several backend processes each slow down on their own.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        free_attempts: int,
        base_delay_s: float,
        max_delay_s: float,
        window_s: float,
        max_keys: int = 100_000,
    ) -> None:
        self._clock = clock
        self._free = free_attempts
        self._base = base_delay_s
        self._max = max_delay_s
        self._window = window_s
        self._max_keys = max_keys
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, keys: Iterable[str]) -> None:
        """Raise 429 LOGIN_THROTTLED while any of ``keys`` must still wait."""
        now = self._clock()
        with self._lock:
            wait = max(
                (self._current(key, now).blocked_until - now for key in keys if key in self._failures), default=0
            )
        if wait > 0:
            seconds = math.ceil(wait)
            raise AppError(
                ErrorCode.LOGIN_THROTTLED,
                f"Too many failed logins. Try again in {seconds} seconds.",
                headers={"Retry-After": str(seconds)},
            )

    def failed(self, keys: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                entry = self._current(key, now)
                entry.count += 1
                entry.last_at = now
                extra = entry.count - self._free
                if extra > 0:
                    entry.blocked_until = now + min(self._max, self._base * 2 ** min(extra - 1, 60))
                self._failures[key] = entry
                self._failures.move_to_end(key)
            while len(self._failures) > self._max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _current(self, key: str, now: float) -> _Failures:
        entry = self._failures.get(key)
        if entry is None or now - entry.last_at > self._window:
            return _Failures(count=0, last_at=now, blocked_until=0.0)
        return entry
