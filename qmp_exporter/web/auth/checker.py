"""Basic auth checks for the event loop: cached answers at once, bcrypt bounded and rate-limited.

A cached credential is answered on the loop without waiting for anything. A credential not
yet cached needs bcrypt, which runs in one dedicated worker thread (never more than one core)
with at most :data:`MAX_PENDING` checks in it or waiting for it; each such check takes a token
from its peer's bucket and from a global one. A full worker or an empty bucket refuses the
check at once, so a flood of wrong passwords costs a bounded share of one core and never
delays a scrape whose credentials were checked before.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qmp_exporter.web.auth.basic_auth import Attempt, AuthCache
from qmp_exporter.web.auth.limits import PeerBuckets, TokenBucket

log = logging.getLogger(__name__)

#: bcrypt checks in the worker or waiting for it; more are refused (429) at once.
MAX_PENDING = 4
#: Uncached checks a peer host may start: a second, and in a burst.
PEER_RATE, PEER_BURST = 2.0, 5.0
#: Uncached checks all peers together may start: ~half a core at bcrypt cost 10 (~60 ms each).
GLOBAL_RATE, GLOBAL_BURST = 8.0, 16.0
#: Peer hosts whose buckets are remembered (the least recently seen are forgotten).
MAX_PEERS = 4096


class Outcome(enum.Enum):
    """What a check decided; every outcome but GRANTED is a failure ``reason``."""

    GRANTED = "granted"
    #: No credentials, or not basic auth, or malformed.
    MISSING = "missing"
    #: An unknown user or a wrong password (not told apart, as in the answer).
    WRONG = "wrong"
    #: The peer's or the global bucket of uncached checks is empty.
    RATE_LIMITED = "rate_limited"
    #: The bcrypt worker has :data:`MAX_PENDING` checks already.
    BUSY = "busy"


#: Failure reasons (the label values of the failure counter), in a fixed order.
FAILURE_REASONS = tuple(o.value for o in Outcome if o is not Outcome.GRANTED)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of a check, and for a refusal how many seconds to wait before retrying."""

    outcome: Outcome
    retry_after: int = 0

    @property
    def granted(self) -> bool:
        return self.outcome is Outcome.GRANTED


class BasicAuthChecker:
    """Checks credentials on the event loop; its state is only touched from the loop."""

    def __init__(
        self,
        peer_buckets: PeerBuckets | None = None,
        global_bucket: TokenBucket | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if peer_buckets is None:
            peer_buckets = PeerBuckets(PEER_RATE, PEER_BURST, MAX_PEERS)
        self.peer_buckets = peer_buckets
        self.global_bucket = global_bucket or TokenBucket(GLOBAL_RATE, GLOBAL_BURST)
        self.max_pending = max_pending
        self._worker: ThreadPoolExecutor | None = None
        #: Checks in the worker or waiting for it, by credential digest (shared by duplicates).
        self._pending: dict[bytes, asyncio.Future[bool]] = {}

    @property
    def pending(self) -> int:
        """bcrypt checks in the worker or waiting for it."""
        return len(self._pending)

    async def check(self, attempt: Attempt | None, cache: AuthCache, peer: str) -> Verdict:
        """Check ``attempt`` (:func:`make_attempt`) sent by ``peer``; bcrypt's answer is cached."""
        if attempt is None:
            return Verdict(Outcome.MISSING)
        cached = cache.get(attempt.digest)
        if cached is not None:
            return Verdict(Outcome.GRANTED if cached and attempt.known else Outcome.WRONG)
        future = self._pending.get(attempt.digest)
        if future is None:
            refused = self._admit(peer)
            if refused is not None:
                log.debug("basic auth check from %s refused: %s", peer, refused.outcome.value)
                return refused
            future = self._start(attempt, cache)
        ok = await asyncio.shield(future)
        return Verdict(Outcome.GRANTED if ok else Outcome.WRONG)

    def _admit(self, peer: str) -> Verdict | None:
        """None when a new bcrypt check may start (its tokens taken), else the refusal."""
        if len(self._pending) >= self.max_pending:
            return Verdict(Outcome.BUSY, 1)
        bucket = self.peer_buckets(peer)
        for limit in (bucket, self.global_bucket):
            if not limit.available():
                return Verdict(Outcome.RATE_LIMITED, limit.retry_after())
        bucket.take()
        self.global_bucket.take()
        return None

    def _start(self, attempt: Attempt, cache: AuthCache) -> asyncio.Future[bool]:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        future = asyncio.get_running_loop().run_in_executor(self._worker, attempt.verify)
        self._pending[attempt.digest] = future

        def done(finished: asyncio.Future[bool]) -> None:
            del self._pending[attempt.digest]
            if not finished.cancelled() and finished.exception() is None:
                cache.put(attempt.digest, finished.result())

        future.add_done_callback(done)
        return future

    def close(self) -> None:
        """Stop the worker once its checks are done (a new one starts on the next check)."""
        if self._worker is not None:
            self._worker.shutdown(wait=False)
            self._worker = None
