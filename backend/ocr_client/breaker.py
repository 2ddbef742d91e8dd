"""A circuit breaker with Resilience4j's semantics, on top of pybreaker's state machine.

pybreaker keeps the state (closed / open / half-open) and tells its listeners (the metrics)
when it changes. What it lacks is added here (see ../shared/RESILIENCE.md):

- a count-based sliding window that opens on a failure rate or a slow-call rate once it
  holds a minimum number of calls (pybreaker trips on consecutive failures only);
- a fixed number of half-open probes, judged together when all have answered (pybreaker
  lets every caller through and decides on the first);
- ignored outcomes (a 4xx) that count neither way (pybreaker's ``exclude`` counts a success);
- outcomes of calls that started before the last state change are dropped (pybreaker lets a
  late failure re-open an open breaker).

We never use pybreaker's ``calling()``: it has no asyncio support and would count a
cancelled stream as a failure. Callers take a :class:`Permit` and report its outcome. All
methods are synchronous and never await, so on one event loop they are atomic.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pybreaker

from backend.ocr_client.config import BreakerConfig


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


_FROM_PYBREAKER = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}


def from_pybreaker(state_name: str) -> BreakerState:
    return _FROM_PYBREAKER[state_name]


class Outcome(StrEnum):
    SUCCESS = "successful"
    FAILURE = "failed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; its outcome counts only in the state it was given in."""

    epoch: int
    started: float


@dataclass(frozen=True)
class BreakerSnapshot:
    name: str
    state: BreakerState
    since: datetime
    calls_in_window: int
    failure_rate_percent: float | None
    slow_call_rate_percent: float | None


@dataclass(frozen=True)
class _Call:
    failed: bool
    slow: bool


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        listeners: tuple[pybreaker.CircuitBreakerListener, ...] = (),
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._now = now
        # fail_max is never reached: the window below decides when to open.
        self._state = pybreaker.CircuitBreaker(
            fail_max=sys.maxsize, reset_timeout=config.open_wait_s, name=name, listeners=listeners
        )
        self._window: deque[_Call] = deque(maxlen=config.window_size)
        self._probes: list[_Call] = []
        self._probes_out = 0
        self._epoch = 0
        self._opened_at = 0.0
        self._since = now()

    @property
    def state(self) -> BreakerState:
        return _FROM_PYBREAKER[self._state.current_state]

    def add_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        self._state.add_listener(listener)

    def refuses_calls(self) -> bool:
        """Whether a call now would fail at once: open, and the open wait not over yet.

        An open breaker whose wait is over still reports OPEN until the next call makes it
        HALF_OPEN (that call is the probe); whoever refuses work up front must ask this, not
        the state, or an idle breaker that nothing calls would refuse work for ever.
        """
        return self.state is BreakerState.OPEN and self._clock() - self._opened_at < self.config.open_wait_s

    def try_acquire(self) -> Permit | None:
        """A permit, or None when the call must fail at once without touching the network."""
        if self.state is BreakerState.OPEN:
            if self.refuses_calls():
                return None
            self._move_to(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probes_out >= self.config.half_open_permits:
                return None
            self._probes_out += 1
        return Permit(self._epoch, self._clock())

    def record(self, permit: Permit, outcome: Outcome) -> None:
        if permit.epoch != self._epoch:
            return
        if outcome is Outcome.IGNORED:
            # Resilience4j releases the permission of an ignored call: another probe may go.
            if self.state is BreakerState.HALF_OPEN:
                self._probes_out -= 1
            return
        call = _Call(failed=outcome is Outcome.FAILURE, slow=self._clock() - permit.started >= self.config.slow_call_s)
        if self.state is BreakerState.HALF_OPEN:
            self._probes.append(call)
            if len(self._probes) >= self.config.half_open_permits:
                self._move_to(BreakerState.OPEN if self._exceeds(self._probes) else BreakerState.CLOSED)
            return
        self._window.append(call)
        if len(self._window) >= min(self.config.minimum_calls, self.config.window_size) and self._exceeds(self._window):
            self._move_to(BreakerState.OPEN)

    def snapshot(self) -> BreakerSnapshot:
        calls = list(self._probes if self.state is BreakerState.HALF_OPEN else self._window)
        return BreakerSnapshot(
            name=self.name,
            state=self.state,
            since=self._since,
            calls_in_window=len(calls),
            failure_rate_percent=_rate(calls, failed=True) if calls else None,
            slow_call_rate_percent=_rate(calls, failed=False) if calls else None,
        )

    def _exceeds(self, calls: deque[_Call] | list[_Call]) -> bool:
        return (
            _rate(calls, failed=True) >= self.config.failure_rate_percent
            or _rate(calls, failed=False) >= self.config.slow_call_rate_percent
        )

    def _move_to(self, state: BreakerState) -> None:
        self._epoch += 1
        self._window.clear()
        self._probes.clear()
        self._probes_out = 0
        self._since = self._now()
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
            self._state.open()
        elif state is BreakerState.HALF_OPEN:
            self._state.half_open()
        else:
            self._state.close()


def _rate(calls: deque[_Call] | list[_Call], *, failed: bool) -> float:
    hits = sum(1 for call in calls if (call.failed if failed else call.slow))
    return 100.0 * hits / len(calls)
