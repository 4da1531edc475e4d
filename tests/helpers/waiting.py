"""Waiting on the event loop for something a test cannot await directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


async def wait_until(
    condition: Callable[[], Any],
    limit: float = 10.0,
    *,
    interval: float = 0.01,
    context: object = None,
) -> Any:
    """Call ``condition`` every ``interval`` seconds, letting the loop run in between, until it
    returns something true, and return that; fail after ``limit`` seconds, the message showing
    ``context`` (its repr then, e.g. a list the test fills) when given.

    For blocking code outside a loop (an exporter process over HTTP) see
    :func:`tests.helpers.exporter.wait_for`.
    """
    deadline = time.monotonic() + limit
    while not (value := condition()):
        if time.monotonic() >= deadline:
            detail = "" if context is None else f"; {context!r}"
            raise AssertionError(f"condition not met within {limit:g}s{detail}")
        await asyncio.sleep(interval)
    return value
