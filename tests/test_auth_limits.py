"""Basic auth under load: cached answers never wait for bcrypt, bcrypt is bounded, tries limited."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from qmp_exporter.web.http.server import Request
from qmp_exporter.web.ratelimit import PeerBuckets, TokenBucket, peer_host
from qmp_exporter.web.webconfig import basic_auth
from qmp_exporter.web.webconfig.basic_auth import AuthCache
from qmp_exporter.web.webconfig.checker import BasicAuthChecker, Outcome, Verdict
from qmp_exporter.web.webconfig.guard import auth_failure_counter, make_guard
from qmp_exporter.web.webconfig.settings import WebConfig, load_web_config

PASSWORD = b"s3cret"
HASH = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(4)).decode()


def basic(user: str, password: bytes) -> str:
    return "Basic " + base64.b64encode(user.encode() + b":" + password).decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedBcrypt:
    """The real bcrypt, whose ``checkpw`` waits for ``gate`` and records how many run at once."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0
        self.order: list[bytes] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()
        self.hashpw = bcrypt.hashpw
        self.gensalt = bcrypt.gensalt

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        with self._lock:
            self.calls += 1
            self.order.append(password)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            assert self.gate.wait(10), "the test never opened the gate"
            return bcrypt.checkpw(password, hashed)
        finally:
            with self._lock:
                self.running -= 1


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> GatedBcrypt:
    fake = GatedBcrypt()
    monkeypatch.setattr(basic_auth, "import_bcrypt", lambda: fake)
    return fake


def config_with(tmp_path: Path, **users: str) -> WebConfig:
    lines = "".join(f"  {user}: '{hashed}'\n" for user, hashed in users.items())
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n" + lines)
    return load_web_config(path)


def unlimited() -> BasicAuthChecker:
    return BasicAuthChecker(PeerBuckets(1e9, 1e9), TokenBucket(1e9, 1e9))


# --- token buckets -------------------------------------------------------------------------


def test_token_bucket_burst_rate_and_retry_after() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, 3.0, clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_to_next() == pytest.approx(0.5)
    assert bucket.retry_after() == 1
    clock.now += 0.5
    assert bucket.take()
    assert not bucket.take()
    clock.now += 100
    assert [bucket.take() for _ in range(4)] == [True, True, True, False], "capped at the burst"
    assert TokenBucket(0.1, 1.0, clock).retry_after() == 1
    slow = TokenBucket(0.1, 1.0, clock)
    slow.take()
    assert slow.retry_after() == 10


def test_peer_buckets_are_per_host_and_bounded() -> None:
    clock = Clock()
    buckets = PeerBuckets(1.0, 1.0, max_peers=3, clock=clock)
    assert buckets("127.0.0.2:4000").take()
    assert not buckets("127.0.0.2:4001").take(), "another port of the same host shares a bucket"
    assert buckets("127.0.0.1:4000").take()
    assert buckets("::1:5000").take()
    assert not buckets("::1:5001").take()
    for host in range(10):
        buckets(f"10.0.0.{host}:1")
    assert len(buckets) == 3
    assert peer_host("::1:5000") == "::1"
    assert peer_host("[::1]:5000") == "::1"
    assert peer_host("192.0.2.1:80") == "192.0.2.1"


# --- caches ----------------------------------------------------------------------------------


def test_failures_cannot_evict_a_success() -> None:
    cache = AuthCache(size=10, successes=2)
    cache.put(b"right", True)
    for index in range(1000):
        cache.put(b"wrong%d" % index, False)
    assert cache.get(b"right") is True
    assert len(cache) == 11
    cache.put(b"a", True)
    cache.put(b"b", True)
    assert cache.get(b"right") is None, "successes have their own bound"


# --- the checker -----------------------------------------------------------------------------


def test_a_cached_credential_is_answered_while_bcrypt_is_busy(
    tmp_path: Path, gated: GatedBcrypt
) -> None:
    config = config_with(tmp_path, prometheus=HASH)
    checker = unlimited()

    async def scenario() -> None:
        gated.gate.set()
        first = await checker.check(
            config.basic_auth_attempt(basic("prometheus", PASSWORD)), config.auth_cache, "a:1"
        )
        assert first.outcome is Outcome.GRANTED
        gated.gate.clear()
        stuck = [
            asyncio.create_task(
                checker.check(
                    config.basic_auth_attempt(basic("prometheus", b"w%d" % i)),
                    config.auth_cache,
                    "b:1",
                )
            )
            for i in range(3)
        ]
        await asyncio.sleep(0.05)
        assert checker.pending == 3
        # The worker is blocked: a cached answer must not wait for it.
        again = await asyncio.wait_for(
            checker.check(
                config.basic_auth_attempt(basic("prometheus", PASSWORD)), config.auth_cache, "a:1"
            ),
            1.0,
        )
        assert again.granted
        gated.gate.set()
        assert [(await t).outcome for t in stuck] == [Outcome.WRONG] * 3

    asyncio.run(scenario())
    checker.close()
    assert gated.calls == 4
    assert gated.most_at_once == 1, "bcrypt never runs twice at once"


def test_a_full_worker_refuses_at_once_and_duplicates_share_a_check(
    tmp_path: Path, gated: GatedBcrypt
) -> None:
    config = config_with(tmp_path, prometheus=HASH)
    checker = BasicAuthChecker(PeerBuckets(1e9, 1e9), TokenBucket(1e9, 1e9), max_pending=2)

    async def attempt(password: bytes) -> Verdict:
        return await checker.check(
            config.basic_auth_attempt(basic("prometheus", password)), config.auth_cache, "p:1"
        )

    async def scenario() -> None:
        tasks = [asyncio.create_task(attempt(p)) for p in (b"one", b"two", b"one", b"two")]
        await asyncio.sleep(0.05)
        assert checker.pending == 2
        refused = await asyncio.wait_for(attempt(b"three"), 1.0)
        assert refused.outcome is Outcome.BUSY
        assert refused.retry_after == 1
        gated.gate.set()
        assert [(await t).outcome for t in tasks] == [Outcome.WRONG] * 4
        assert checker.pending == 0
        # Their answers are cached now: no new bcrypt check, no limit.
        assert (await attempt(b"one")).outcome is Outcome.WRONG

    asyncio.run(scenario())
    checker.close()
    assert gated.calls == 2, "the same credential in flight twice costs one check"


def test_the_peer_that_tried_least_goes_first_and_may_take_a_waiting_place(
    tmp_path: Path, gated: GatedBcrypt
) -> None:
    config = config_with(tmp_path, prometheus=HASH, grafana=HASH)
    clock = Clock()
    checker = BasicAuthChecker(
        PeerBuckets(1.0, 10.0, clock=clock), TokenBucket(1e9, 1e9, clock), max_pending=3
    )

    def attempt(user: str, password: bytes, peer: str) -> asyncio.Task[Verdict]:
        offered = config.basic_auth_attempt(basic(user, password))
        return asyncio.create_task(checker.check(offered, config.auth_cache, peer))

    async def scenario() -> None:
        flood = [attempt("prometheus", b"w%d" % i, "10.0.0.66:1") for i in range(3)]
        await asyncio.sleep(0.05)
        assert checker.pending == 3  # w0 in the worker, w1 and w2 waiting
        fresh = attempt("grafana", PASSWORD, "10.0.0.1:1")
        await asyncio.sleep(0.05)
        assert checker.pending == 3
        assert flood[2].done() and flood[2].result() == Verdict(Outcome.BUSY, 1)
        gated.gate.set()
        assert (await fresh).granted
        assert [(await t).outcome for t in flood[:2]] == [Outcome.WRONG] * 2

    asyncio.run(scenario())
    checker.close()
    assert gated.order == [b"w0", PASSWORD, b"w1"], "the fresh peer's check ran next"


def test_uncached_checks_are_limited_per_peer_and_globally(tmp_path: Path) -> None:
    config = config_with(tmp_path, prometheus=HASH)
    clock = Clock()
    checker = BasicAuthChecker(PeerBuckets(1.0, 3.0, clock=clock), TokenBucket(1.0, 5.0, clock))

    async def outcome(password: bytes, peer: str) -> tuple[Outcome, int]:
        attempt = config.basic_auth_attempt(basic("prometheus", password))
        verdict = await checker.check(attempt, config.auth_cache, peer)
        return verdict.outcome, verdict.retry_after

    async def scenario() -> None:
        wrong = [await outcome(b"w%d" % i, "10.0.0.1:1") for i in range(4)]
        assert wrong == [(Outcome.WRONG, 0)] * 3 + [(Outcome.RATE_LIMITED, 1)]
        # A cached answer needs no token: the same wrong password is still answered 401.
        assert await outcome(b"w0", "10.0.0.1:2") == (Outcome.WRONG, 0)
        # Another peer has its own bucket, until the global one (5) runs out.
        assert await outcome(PASSWORD, "10.0.0.2:1") == (Outcome.GRANTED, 0)
        assert await outcome(b"x", "10.0.0.2:1") == (Outcome.WRONG, 0)
        assert await outcome(b"y", "10.0.0.3:1") == (Outcome.RATE_LIMITED, 1)
        # The right password, cached, is granted to the peer that ran out.
        assert await outcome(PASSWORD, "10.0.0.1:3") == (Outcome.GRANTED, 0)
        clock.now += 1.0
        assert await outcome(b"y", "10.0.0.3:1") == (Outcome.WRONG, 0)

    asyncio.run(scenario())
    checker.close()


# --- the guard -------------------------------------------------------------------------------


class FixedWatcher:
    def __init__(self, config: WebConfig) -> None:
        self.config = config

    def current(self) -> WebConfig:
        return self.config


def request(authorization: str | None, peer: str = "10.0.0.9:1") -> Request:
    headers = {"authorization": authorization} if authorization is not None else {}
    return Request("GET", "/metrics", "/metrics", {}, headers, peer=peer)


def test_guard_answers_401_429_and_counts_every_refusal(tmp_path: Path) -> None:
    config = config_with(tmp_path, prometheus=HASH)
    registry = CollectorRegistry()
    failures = auth_failure_counter(registry)
    clock = Clock()
    checker = BasicAuthChecker(PeerBuckets(1.0, 2.0, clock=clock), TokenBucket(1e9, 1e9, clock))
    guard = make_guard(FixedWatcher(config), failures, checker)  # type: ignore[arg-type]

    def count(reason: str) -> float:
        value = registry.get_sample_value("qmp_exporter_auth_failures_total", {"reason": reason})
        assert value is not None
        return value

    assert {r: count(r) for r in ("missing", "wrong", "rate_limited", "busy", "client_cert")} == {
        "missing": 0,
        "wrong": 0,
        "rate_limited": 0,
        "busy": 0,
        "client_cert": 0,
    }

    async def scenario() -> None:
        assert await guard(request(basic("prometheus", PASSWORD))) is None
        missing = await guard(request(None))
        assert missing is not None and missing.status == 401
        assert missing.headers["WWW-Authenticate"] == "Basic"
        wrong = await guard(request(basic("nobody", PASSWORD)))
        assert wrong is not None and wrong.status == 401
        limited = await guard(request(basic("prometheus", b"guess")))
        assert limited is not None and limited.status == 429
        assert limited.headers["Retry-After"] == "1"
        assert await guard(request(basic("prometheus", PASSWORD))) is None, "cached: no token"

    asyncio.run(scenario())
    checker.close()
    assert (count("missing"), count("wrong"), count("rate_limited")) == (1, 1, 1)


def test_unknown_and_known_users_take_as_long_through_the_guard(tmp_path: Path) -> None:
    cost10 = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(10)).decode()
    config = config_with(tmp_path, prometheus=cost10)
    checker = unlimited()
    guard = make_guard(FixedWatcher(config), checker=checker)  # type: ignore[arg-type]

    async def seconds(user: str, attempt: int) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        denied = await guard(request(basic(user, b"wrong%d" % attempt)))
        assert denied is not None and denied.status == 401
        return loop.time() - start

    async def scenario() -> tuple[float, float]:
        known = min([await seconds("prometheus", i) for i in range(3)])
        unknown = min([await seconds("nobody", i) for i in range(3)])
        return known, unknown

    known, unknown = asyncio.run(scenario())
    checker.close()
    # Both pay a cost-10 bcrypt check (tens of ms); a skipped check would be ~1000x faster.
    assert unknown > known / 3 and known > unknown / 3, (known, unknown)
