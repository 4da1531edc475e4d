"""Per-target limits of ``/probe``: a token bucket (rate) and a cap on probes in flight
(concurrency), so a flood of probes cannot keep one monitor busy."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Probes a target may have per second, on average.
PROBE_RATE = 1.0
#: Probes a target may have at once after a quiet spell.
PROBE_BURST = 5
#: Probes of one target in flight at once (QEMU serves one client per socket anyway).
MAX_PROBES_PER_TARGET = 1
#: Targets remembered; past this, the buckets that are full again are forgotten.
MAX_TRACKED_TARGETS = 4096


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    active: int = 0


class ProbeLimiter:
    """Admits a probe of a target when its bucket has a token and it has fewer than
    ``concurrency`` probes in flight; otherwise says how many seconds to wait."""

    def __init__(
        self,
        rate: float = PROBE_RATE,
        burst: int = PROBE_BURST,
        concurrency: int = MAX_PROBES_PER_TARGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.concurrency = concurrency
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, target: str, now: float) -> _Bucket:
        bucket = self._buckets.get(target)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_TARGETS:
                self._forget_idle(now)
            bucket = self._buckets[target] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        return bucket

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for target, bucket in list(self._buckets.items()):
            if bucket.active == 0 and now - bucket.updated >= full_after:
                del self._buckets[target]

    def admit(self, target: str, *, live: bool) -> tuple[str, int] | None:
        """None when a probe of ``target`` may go ahead (a ``live`` one, which talks to the
        monitor, is then counted in flight until :meth:`done`); else ``(reason,
        retry_after_seconds)`` with reason ``rate_limited`` or ``concurrency_limit``."""
        now = self._clock()
        bucket = self._bucket(target, now)
        if live and bucket.active >= self.concurrency:
            return "concurrency_limit", 1
        if bucket.tokens < 1:
            return "rate_limited", max(1, math.ceil((1 - bucket.tokens) / self.rate))
        bucket.tokens -= 1
        if live:
            bucket.active += 1
        return None

    def done(self, target: str) -> None:
        """A live probe of ``target`` admitted by :meth:`admit` has ended."""
        bucket = self._buckets.get(target)
        if bucket is not None and bucket.active > 0:
            bucket.active -= 1
