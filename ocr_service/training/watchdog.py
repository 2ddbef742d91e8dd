"""The watchdog of a trainer process: a trainer that stops reporting for too long is stalled.

The trainer reports a heartbeat at least every few seconds while batches run (and one line
per epoch); a hang inside kraken (e.g. #764, a huge page) stops those reports. The clock is
injected so that tests need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Watchdog:
    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        self._last = self._clock()

    @property
    def silent_for(self) -> float:
        return self._clock() - self._last

    def stalled(self) -> bool:
        return self.silent_for > self.timeout_s
