"""Coalesced runs of one piece of async work (the config reload): at most one run in
flight and one queued; every request made while one is queued shares that queued run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Coalescer:
    """Runs ``work`` on :meth:`request`, never two at once. A request while a run is in
    flight queues one more run (which will see everything asked before it starts); a
    request while one is already queued joins it. ``work`` must not raise."""

    def __init__(self, work: Callable[[], Awaitable[bool]]) -> None:
        self._work = work
        self._running: asyncio.Task[bool] | None = None
        self._queued: asyncio.Task[bool] | None = None
        #: Runs started so far (for tests and logs).
        self.runs = 0

    def request(self) -> asyncio.Future[bool]:
        """The run that will answer this request: the queued one, else a new one (started
        now when none is in flight, else queued behind it). Await it for its result."""
        if self._queued is not None:
            return self._queued
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
            return self._running
        self._queued = asyncio.ensure_future(self._after(self._running))
        return self._queued

    async def _run(self) -> bool:
        self.runs += 1
        return await self._work()

    async def _after(self, previous: asyncio.Task[bool]) -> bool:
        # asyncio.wait: the previous run's outcome is not ours, but a cancel of this run is
        await asyncio.wait([previous])
        self._running, self._queued = self._queued, None
        return await self._run()

    async def wait(self) -> None:
        """Until no run is in flight or queued."""
        while True:
            pending = self._queued or self._running
            if pending is None or pending.done():
                return
            await asyncio.wait([pending])  # its outcome is not ours; a cancel of ours is

    def cancel(self) -> None:
        """Cancel the run in flight and the one queued (their awaiters get the cancel)."""
        for task in (self._running, self._queued):
            if task is not None:
                task.cancel()
