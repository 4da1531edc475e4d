"""Token buckets: a rate with a burst, alone or one per peer address in a bounded table.

The one implementation of a rate limit: basic auth's bcrypt checks (per peer and global,
:mod:`~qmp_exporter.web.webconfig.checker`) and probes (per target, :mod:`~.probe_limits`)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    """``rate`` tokens a second up to ``burst``; :meth:`take` spends one if there is one."""

    __slots__ = ("_at", "_clock", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now

    @property
    def tokens(self) -> float:
        """The tokens there are now (a fraction of one is not enough to take)."""
        self._refill()
        return self._tokens

    def available(self) -> bool:
        """Whether a token can be taken now."""
        self._refill()
        return self._tokens >= 1

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when there is none."""
        if not self.available():
            return False
        self._tokens -= 1
        return True

    def seconds_to_next(self) -> float:
        """How long until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def retry_after(self) -> int:
        """:meth:`seconds_to_next` as a ``Retry-After`` value: whole seconds, at least 1."""
        return max(1, math.ceil(self.seconds_to_next()))


class PeerBuckets:
    """One :class:`TokenBucket` per peer host, the ``max_peers`` most recently seen kept."""

    def __init__(
        self, rate: float, burst: float, max_peers: int = 4096, clock: Clock = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __call__(self, peer: str) -> TokenBucket:
        """The bucket of ``peer``'s host (``peer`` as :attr:`Request.peer` gives it)."""
        host = peer_host(peer)
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, self._clock)
            while len(self._buckets) > self.max_peers:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(host)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def peer_host(peer: str) -> str:
    """The host part of a peer address as the server gives it: ``host:port``, IPv6 unbracketed."""
    host, sep, port = peer.rpartition(":")
    if not sep or not host or not port.isdigit():
        return peer
    return host.strip("[]")
