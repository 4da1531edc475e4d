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

from qmp_exporter.web.ratelimit import PeerBuckets, TokenBucket
from qmp_exporter.web.webconfig.basic_auth import Attempt, AuthCache

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


@dataclass(slots=True)
class _Check:
    """A bcrypt check waiting for the worker or in it."""

    #: Lower goes first: minus the tokens its peer had left, then arrival order.
    rank: tuple[float, int]
    attempt: Attempt
    cache: AuthCache
    #: bcrypt's answer; None when a better-ranked check took its place.
    answer: asyncio.Future[bool | None]


class BasicAuthChecker:
    """Checks credentials on the event loop; its state is only touched from the loop.

    Waiting checks go to the worker best-ranked first: those of the peer with the most tokens
    left, i.e. the one that has tried least. When the worker is full, a new check takes the
    place of the worst-ranked waiting one if it ranks better (that one is refused as busy).
    """

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
        #: Checks waiting for the worker or in it, by credential digest (shared by duplicates).
        self._pending: dict[bytes, _Check] = {}
        self._waiting: list[_Check] = []
        self._running: _Check | None = None
        self._arrivals = 0

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
        queued = self._pending.get(attempt.digest)
        if queued is None:
            admitted = self._admit(peer)
            if isinstance(admitted, Verdict):
                log.debug("basic auth check from %s refused: %s", peer, admitted.outcome.value)
                return admitted
            queued = self._enqueue(admitted, attempt, cache)
        ok = await asyncio.shield(queued.answer)
        if ok is None:
            log.debug("basic auth check from %s refused: %s", peer, Outcome.BUSY.value)
            return Verdict(Outcome.BUSY, 1)
        return Verdict(Outcome.GRANTED if ok else Outcome.WRONG)

    def _admit(self, peer: str) -> Verdict | tuple[float, int]:
        """The rank of a new bcrypt check (its tokens taken, room made), or the refusal."""
        bucket = self.peer_buckets(peer)
        for limit in (bucket, self.global_bucket):
            if not limit.available():
                return Verdict(Outcome.RATE_LIMITED, limit.retry_after())
        self._arrivals += 1
        rank = (-(bucket.tokens - 1), self._arrivals)
        if len(self._pending) >= self.max_pending:
            worst = max(self._waiting, key=lambda queued: queued.rank[0], default=None)
            if worst is None or worst.rank[0] <= rank[0]:
                return Verdict(Outcome.BUSY, 1)
            self._waiting.remove(worst)
            del self._pending[worst.attempt.digest]
            worst.answer.set_result(None)
        bucket.take()
        self.global_bucket.take()
        return rank

    def _enqueue(self, rank: tuple[float, int], attempt: Attempt, cache: AuthCache) -> _Check:
        queued = _Check(rank, attempt, cache, asyncio.get_running_loop().create_future())
        self._pending[attempt.digest] = queued
        self._waiting.append(queued)
        self._run_next()
        return queued

    def _run_next(self) -> None:
        if self._running is not None or not self._waiting:
            return
        queued = min(self._waiting, key=lambda waiting: waiting.rank)
        self._waiting.remove(queued)
        self._running = queued
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        running = asyncio.get_running_loop().run_in_executor(self._worker, queued.attempt.verify)
        running.add_done_callback(self._finished)

    def _finished(self, running: asyncio.Future[bool]) -> None:
        queued, self._running = self._running, None
        assert queued is not None
        del self._pending[queued.attempt.digest]
        if running.cancelled():
            queued.answer.cancel()
        elif (error := running.exception()) is not None:
            queued.answer.set_exception(error)
        else:
            queued.cache.put(queued.attempt.digest, running.result())
            queued.answer.set_result(running.result())
        self._run_next()

    def close(self) -> None:
        """Stop the worker once its check is done (a new one starts on the next check)."""
        if self._worker is not None:
            self._worker.shutdown(wait=False)
            self._worker = None
