"""Per-target limits of ``/probe``: a token bucket (rate) and a cap on probes in flight
(concurrency), so a flood of probes cannot keep one monitor busy."""

from __future__ import annotations

import time
from dataclasses import dataclass

from qmp_exporter.web.ratelimit import Clock, TokenBucket

#: Probes a target may have per second, on average.
PROBE_RATE = 1.0
#: Probes a target may have at once after a quiet spell.
PROBE_BURST = 5
#: Probes of one target in flight at once (QEMU serves one client per socket anyway).
MAX_PROBES_PER_TARGET = 1
#: Targets remembered; past this, the buckets that are full again are forgotten.
MAX_TRACKED_TARGETS = 4096


@dataclass(slots=True)
class _Target:
    bucket: TokenBucket
    #: Live probes of the target in flight.
    active: int = 0


class ProbeLimiter:
    """Admits a probe of a target when its bucket has a token and it has fewer than
    ``concurrency`` probes in flight; otherwise says how many seconds to wait."""

    def __init__(
        self,
        rate: float = PROBE_RATE,
        burst: int = PROBE_BURST,
        concurrency: int = MAX_PROBES_PER_TARGET,
        clock: Clock = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.concurrency = concurrency
        self._clock = clock
        self._targets: dict[str, _Target] = {}

    def _target(self, target: str) -> _Target:
        known = self._targets.get(target)
        if known is None:
            if len(self._targets) >= MAX_TRACKED_TARGETS:
                self._forget_idle()
            known = self._targets[target] = _Target(TokenBucket(self.rate, self.burst, self._clock))
        return known

    def _forget_idle(self) -> None:
        """Forget the targets with no probe in flight whose bucket is full again: a new
        bucket for them would be the same."""
        for target, known in list(self._targets.items()):
            if known.active == 0 and known.bucket.tokens >= known.bucket.burst:
                del self._targets[target]

    def admit(self, target: str, *, live: bool) -> tuple[str, int] | None:
        """None when a probe of ``target`` may go ahead (a ``live`` one, which talks to the
        monitor, is then counted in flight until :meth:`done`); else ``(reason,
        retry_after_seconds)`` with reason ``rate_limited`` or ``concurrency_limit``."""
        known = self._target(target)
        if live and known.active >= self.concurrency:
            return "concurrency_limit", 1
        if not known.bucket.take():
            return "rate_limited", known.bucket.retry_after()
        if live:
            known.active += 1
        return None

    def done(self, target: str) -> None:
        """A live probe of ``target`` admitted by :meth:`admit` has ended."""
        known = self._targets.get(target)
        if known is not None and known.active > 0:
            known.active -= 1

    def __len__(self) -> int:
        """Targets remembered."""
        return len(self._targets)
