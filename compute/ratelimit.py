"""A token bucket that keeps one process's calls under a rate (AWS Batch SubmitJob: ~50/s/account).

The clock and the sleep are injectable so tests prove the rate with a fake clock, not by sleeping.
One bucket per process: on Lambda, the dispatcher's reserved concurrency times this rate is what
the account sees, which is why both are stack parameters.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting as long as needed; returns the seconds waited."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            delay = (1 - self.tokens) / self.rate
            self.sleep(delay)
            # The token that accrued while sleeping is this caller's: none is left over. (Not a
            # re-check loop: a clock that cannot represent a tiny advance would spin forever.)
            self.tokens = 0.0
            self.updated = max(self.clock(), now + delay)
            return delay
