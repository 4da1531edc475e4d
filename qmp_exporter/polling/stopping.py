"""Stopping a poller's task within a deadline (issue 23; attack report 3's D5: on Python
3.11 a task could swallow its cancel, and whoever awaited it waited for ever).

A task still running :data:`STOP_DEADLINE` seconds after its cancel is *detached*: cancelled
once more (a cancel swallowed once is rarely swallowed twice), named in the log, its end
logged when it comes; its owner silences it and stops waiting for it."""

from __future__ import annotations

import asyncio
import logging

#: Seconds a stopping poller's task has to end after its cancel.
STOP_DEADLINE = 5.0

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


async def stop_within(
    task: asyncio.Task[None], deadline: float, logger: Logger, name: str
) -> asyncio.Task[None] | None:
    """Cancel ``task`` and wait at most ``deadline`` seconds for it to end (an explicit
    timer, never ``wait_for``; a cancel of the caller raises here). None when it ended (a
    failure it ended with is logged); else ``task``, detached and still running."""
    task.cancel()
    await asyncio.wait((task,), timeout=deadline)
    if task.done():
        _log_failure(task, logger, name)
        return None
    logger.warning(
        "%s: poller still running %gs after it was cancelled: detached (what it publishes "
        "is ignored; it is cancelled again)",
        name,
        deadline,
    )
    task.cancel()
    task.add_done_callback(lambda done: _ended(done, logger, name))
    return task


def _ended(task: asyncio.Task[None], logger: Logger, name: str) -> None:
    _log_failure(task, logger, name)
    logger.info("%s: the detached poller has ended", name)


def _log_failure(task: asyncio.Task[None], logger: Logger, name: str) -> None:
    """Log how an ended task failed, if it did (cancelled is how it should end)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s: poller failed", name, exc_info=task.exception())
