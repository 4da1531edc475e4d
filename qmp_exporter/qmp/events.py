"""QMP events and a bounded queue for them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

#: Events kept for a consumer that does not drain them; older ones are dropped (and counted).
DEFAULT_EVENT_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """One asynchronous event from QEMU."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    #: QEMU's timestamp in seconds since the epoch (``None`` when absent or malformed).
    timestamp: float | None = None

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Event:
        """Build from a decoded ``{"event": ...}`` message, tolerating odd members."""
        data = message.get("data")
        stamp = message.get("timestamp")
        seconds: float | None = None
        if isinstance(stamp, dict):
            sec, usec = stamp.get("seconds"), stamp.get("microseconds", 0)
            if isinstance(sec, int | float) and isinstance(usec, int | float):
                seconds = sec + usec / 1e6
        return cls(str(message["event"]), data if isinstance(data, dict) else {}, seconds)


class EventQueue:
    """A bounded FIFO of events: when full, the oldest is dropped and ``dropped`` counts it."""

    def __init__(self, maxsize: int = DEFAULT_EVENT_QUEUE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[Event] = deque(maxlen=maxsize)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        """Add an event, dropping the oldest when full."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        self._wake()

    def close(self) -> None:
        """End iteration once the queued events are consumed."""
        self._closed = True
        self._wake()

    def get_nowait(self) -> Event | None:
        """The oldest queued event, or ``None``."""
        return self._items.popleft() if self._items else None

    async def get(self) -> Event | None:
        """Wait for the next event; ``None`` once closed and drained."""
        while not self._items:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
