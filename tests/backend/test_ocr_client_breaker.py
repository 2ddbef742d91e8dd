"""The circuit breaker alone, against a reference model of Resilience4j's rules.

Random interleavings of calls taken, calls answered (success, failure, 4xx, slow), and time
passing; after every step the breaker must agree with the model on its state and on whether
a call would be let through.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pybreaker
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from backend.ocr_client.breaker import BreakerState, CircuitBreaker, Outcome, Permit
from backend.ocr_client.config import BreakerConfig
from backend.ocr_client.metrics import OcrClientMetrics
from tests.backend.ocr_client_support import HandClock


@dataclass
class ReferenceBreaker:
    """Resilience4j's count-based breaker written out plainly, for comparison only."""

    config: BreakerConfig
    state: BreakerState = BreakerState.CLOSED
    calls: list[tuple[bool, bool]] = field(default_factory=list)
    probes: list[tuple[bool, bool]] = field(default_factory=list)
    probes_out: int = 0
    generation: int = 0
    opened_at: float = 0.0

    def acquire(self, now: float) -> tuple[int, float] | None:
        if self.state is BreakerState.OPEN:
            if now < self.opened_at + self.config.open_wait_s:
                return None
            self._become(BreakerState.HALF_OPEN, now)
        if self.state is BreakerState.HALF_OPEN:
            if self.probes_out == self.config.half_open_permits:
                return None
            self.probes_out += 1
        return (self.generation, now)

    def finish(self, taken: tuple[int, float], outcome: Outcome, now: float) -> None:
        generation, started = taken
        if generation != self.generation:
            return  # the call began before the last change of state: it says nothing now
        if outcome is Outcome.IGNORED:
            if self.state is BreakerState.HALF_OPEN:
                self.probes_out -= 1
            return
        call = (outcome is Outcome.FAILURE, now - started >= self.config.slow_call_s)
        if self.state is BreakerState.HALF_OPEN:
            self.probes.append(call)
            if len(self.probes) == self.config.half_open_permits:
                self._become(BreakerState.OPEN if self._too_bad(self.probes) else BreakerState.CLOSED, now)
            return
        self.calls.append(call)
        window = self.calls[-self.config.window_size :]
        if len(window) >= min(self.config.minimum_calls, self.config.window_size) and self._too_bad(window):
            self._become(BreakerState.OPEN, now)

    def _too_bad(self, calls: list[tuple[bool, bool]]) -> bool:
        failed = 100 * sum(f for f, _ in calls) / len(calls)
        slow = 100 * sum(s for _, s in calls) / len(calls)
        return failed >= self.config.failure_rate_percent or slow >= self.config.slow_call_rate_percent

    def _become(self, state: BreakerState, now: float) -> None:
        self.state = state
        self.generation += 1
        self.calls, self.probes, self.probes_out = [], [], 0
        if state is BreakerState.OPEN:
            self.opened_at = now


configs = st.builds(
    BreakerConfig,
    window_size=st.integers(1, 8),
    minimum_calls=st.integers(1, 10),
    failure_rate_percent=st.sampled_from([25.0, 50.0, 60.0, 100.0]),
    slow_call_s=st.just(5.0),
    slow_call_rate_percent=st.sampled_from([50.0, 100.0]),
    open_wait_s=st.sampled_from([0.0, 10.0, 60.0]),
    half_open_permits=st.integers(1, 4),
)

# Weighted so that runs open, probe, close and open again many times.
_outcomes = st.sampled_from([Outcome.SUCCESS] * 3 + [Outcome.FAILURE] * 2 + [Outcome.IGNORED])
_slow = st.sampled_from([False, False, False, True])

# ("call", outcome, slow?) takes a call and answers it at once; ("take",) leaves one
# outstanding, ("answer", which, outcome, slow?) answers one of those later (interleaved
# and late answers); ("wait", seconds) moves the clock.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("call"), _outcomes, _slow),
        st.tuples(st.just("call"), _outcomes, _slow),
        st.tuples(st.just("take")),
        st.tuples(st.just("answer"), st.integers(0, 7), _outcomes, _slow),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 30.0, 60.0, 60.0])),
    ),
    min_size=10,
    max_size=100,
)


@settings(max_examples=250, deadline=None, derandomize=True, database=None)
@given(config=configs, script=steps)
def test_the_breaker_follows_the_reference_model(config: BreakerConfig, script: list[tuple]) -> None:
    clock = HandClock()
    breaker = CircuitBreaker("ocr", config, clock=clock)
    model = ReferenceBreaker(config)
    outstanding: list[tuple[Permit, tuple[int, float]]] = []
    for step in script:
        if step[0] in ("take", "call"):
            permit, taken = breaker.try_acquire(), model.acquire(clock.now)
            assert (permit is None) == (taken is None)
            if permit is not None and taken is not None:
                outstanding.append((permit, taken))
                if step[0] == "call":
                    step = ("answer", len(outstanding) - 1, step[1], step[2])
        if step[0] == "answer" and outstanding:
            _, which, outcome, slow = step
            permit, taken = outstanding.pop(which % len(outstanding))
            # A slow answer arrives slow_call_s after the call began; time moves for both.
            finish_at = max(clock.now, taken[1] + config.slow_call_s) if slow else clock.now
            clock.advance(finish_at - clock.now)
            breaker.record(permit, outcome)
            model.finish(taken, outcome, clock.now)
        elif step[0] == "wait":
            clock.advance(step[1])
        assert breaker.state is model.state


def _config(**overrides: float) -> BreakerConfig:
    values: dict[str, float] = {"window_size": 4, "minimum_calls": 4, "failure_rate_percent": 50, "open_wait_s": 60}
    values.update(overrides)
    return BreakerConfig(**values)  # type: ignore[arg-type]


def _answer(breaker: CircuitBreaker, *outcomes: Outcome) -> None:
    for outcome in outcomes:
        permit = breaker.try_acquire()
        assert permit is not None
        breaker.record(permit, outcome)


def test_failures_below_the_minimum_number_of_calls_do_not_open() -> None:
    breaker = CircuitBreaker("ocr", _config(), clock=HandClock())
    _answer(breaker, Outcome.FAILURE, Outcome.FAILURE, Outcome.FAILURE)
    assert breaker.state is BreakerState.CLOSED
    _answer(breaker, Outcome.SUCCESS)
    assert breaker.state is BreakerState.OPEN


def test_a_late_failure_of_a_call_from_before_the_opening_changes_nothing() -> None:
    clock = HandClock()
    breaker = CircuitBreaker("ocr", _config(window_size=1, minimum_calls=1, half_open_permits=1), clock=clock)
    early = breaker.try_acquire()
    assert early is not None
    _answer(breaker, Outcome.FAILURE)
    clock.advance(60)
    _answer(breaker, Outcome.SUCCESS)
    assert breaker.state is BreakerState.CLOSED
    breaker.record(early, Outcome.FAILURE)  # pybreaker would re-open here
    assert breaker.state is BreakerState.CLOSED


def test_a_4xx_neither_counts_nor_uses_up_a_half_open_permit() -> None:
    clock = HandClock()
    breaker = CircuitBreaker("ocr", _config(window_size=1, minimum_calls=1, half_open_permits=2), clock=clock)
    _answer(breaker, Outcome.FAILURE)
    clock.advance(60)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None and second is not None
    assert breaker.try_acquire() is None
    breaker.record(first, Outcome.IGNORED)
    assert breaker.state is BreakerState.HALF_OPEN
    third = breaker.try_acquire()
    assert third is not None
    breaker.record(second, Outcome.SUCCESS)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(third, Outcome.SUCCESS)
    assert breaker.state is BreakerState.CLOSED


def test_the_state_metric_is_one_hot_and_follows_every_change() -> None:
    clock = HandClock()
    registry = CollectorRegistry()
    metrics = OcrClientMetrics(registry)
    breaker = CircuitBreaker("ocr", _config(window_size=1, minimum_calls=1, half_open_permits=1), clock=clock)
    metrics.watch(breaker)

    def shown() -> dict[str, float | None]:
        return {
            state: registry.get_sample_value("resilience4j_circuitbreaker_state", {"name": "ocr", "state": state})
            for state in ("closed", "open", "half_open")
        }

    assert shown() == {"closed": 1, "open": 0, "half_open": 0}
    _answer(breaker, Outcome.FAILURE)
    assert shown() == {"closed": 0, "open": 1, "half_open": 0}
    clock.advance(60)
    permit = breaker.try_acquire()
    assert permit is not None
    assert shown() == {"closed": 0, "open": 0, "half_open": 1}
    breaker.record(permit, Outcome.SUCCESS)
    assert shown() == {"closed": 1, "open": 0, "half_open": 0}


def test_pybreaker_holds_the_state_the_breaker_reports() -> None:
    breaker = CircuitBreaker("ocr", _config(window_size=1, minimum_calls=1), clock=HandClock())
    _answer(breaker, Outcome.FAILURE)
    assert breaker._state.current_state == pybreaker.STATE_OPEN
    snapshot = breaker.snapshot()
    assert (snapshot.state, snapshot.calls_in_window) == (BreakerState.OPEN, 0)


def test_an_open_breaker_refuses_calls_until_its_wait_is_over_though_it_reports_open_until_a_call() -> None:
    clock = HandClock()
    breaker = CircuitBreaker("ocr", _config(window_size=1, minimum_calls=1, half_open_permits=1), clock=clock)
    _answer(breaker, Outcome.FAILURE)
    assert (breaker.state, breaker.refuses_calls()) == (BreakerState.OPEN, True)
    clock.advance(59.9)
    assert breaker.refuses_calls() and breaker.try_acquire() is None
    clock.advance(0.1)
    # Nothing has called since: still OPEN, but the next call would go through as the probe.
    assert (breaker.state, breaker.refuses_calls()) == (BreakerState.OPEN, False)
    assert breaker.try_acquire() is not None
    assert (breaker.state, breaker.refuses_calls()) == (BreakerState.HALF_OPEN, False)
