"""Several OCR service replicas, each behind its own circuit breaker.

One breaker per replica, because replicas fail one at a time (a crashed container, a node
being drained): a shared breaker would count a dead replica's failures against the live
ones and, at one dead replica in two, flap between open and closed while half the calls
could have gone to the healthy one. With one breaker each, a dead replica is skipped
without a network call and the others carry the work; only when every breaker refuses does
the call fail at once.

Spreading: the replica with the fewest calls in flight from this process, ties broken in
turn (round-robin), and a retry prefers a replica that has not failed this call yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from backend.ocr_client.breaker import CircuitBreaker, Outcome, Permit
from backend.ocr_client.config import OcrClientConfig
from backend.ocr_client.errors import OcrUnavailable, Unavailability
from backend.ocr_client.metrics import OcrClientMetrics


@dataclass
class Replica:
    url: str
    breaker: CircuitBreaker
    in_flight: int = 0


@dataclass
class Attempt:
    """One call to one replica; the caller sets ``outcome`` when the answer is not a plain
    success or failure (a 4xx is ``IGNORED``)."""

    replica: Replica
    outcome: Outcome | None = None


class ReplicaSet:
    def __init__(
        self,
        config: OcrClientConfig,
        metrics: OcrClientMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self._turn = 0
        self.replicas: list[Replica] = []
        for url in config.urls:
            name = f"{config.name}@{urlsplit(url).netloc}"
            breaker = CircuitBreaker(name, config.breaker, clock=clock, now=now)
            metrics.watch(breaker)
            self.replicas.append(Replica(url=url.rstrip("/"), breaker=breaker))

    def acquire(self, avoid: set[str]) -> tuple[Replica, Permit]:
        count = len(self.replicas)
        order = sorted(
            range(count),
            key=lambda i: (self.replicas[i].url in avoid, self.replicas[i].in_flight, (i - self._turn) % count),
        )
        self._turn = (self._turn + 1) % count
        for index in order:
            replica = self.replicas[index]
            permit = replica.breaker.try_acquire()
            if permit is not None:
                return replica, permit
            self._metrics.rejected(replica.breaker.name)
        raise OcrUnavailable(
            Unavailability.CIRCUIT_OPEN,
            "The OCR service is unavailable: it failed repeatedly and is given a pause before the next try.",
        )

    @asynccontextmanager
    async def attempt(self, failed_urls: set[str]) -> AsyncIterator[Attempt]:
        """Take a permit from the preferred replica and report how the call went.

        A cancelled call (the caller gave up, the job was cancelled) counts neither way, as
        it says nothing about the service.
        """
        replica, permit = self.acquire(failed_urls)
        attempt = Attempt(replica)
        replica.in_flight += 1
        started = self._clock()
        try:
            yield attempt
        except asyncio.CancelledError:
            attempt.outcome = Outcome.IGNORED
            raise
        except BaseException:
            if attempt.outcome is None:
                attempt.outcome = Outcome.FAILURE
            raise
        finally:
            replica.in_flight -= 1
            outcome = attempt.outcome or Outcome.SUCCESS
            if outcome is Outcome.FAILURE:
                failed_urls.add(replica.url)
            replica.breaker.record(permit, outcome)
            self._metrics.judged(replica.breaker.name, outcome, self._clock() - started)
