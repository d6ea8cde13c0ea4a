"""Single flight: one task for every caller that asks while it runs (a burst's first callers
all wait for one script load, one cluster detection, one layout read, not one each)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Once", "mark_seen"]

T = TypeVar("T")


class Once(Generic[T]):
    """``await once.run(make)``: the running task's result, or a new task of ``make()`` when
    none runs on this loop (none yet, the last one ended, failed or was cancelled, or it
    belongs to another loop). The task outlives a caller who leaves (its other callers still
    wait) but not the last one: as when each caller ran it alone, a caller's timeout or
    cancellation ends the work (and a link it held is closed, not left half-read)."""

    __slots__ = ("_task", "_waiting")

    def __init__(self) -> None:
        self._task: asyncio.Future[T] | None = None
        self._waiting = 0

    async def run(self, make: Callable[[], Awaitable[T]]) -> T:
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            task = self._task = asyncio.ensure_future(make())
            task.add_done_callback(mark_seen)
            self._waiting = 0
        self._waiting += 1
        try:
            return await asyncio.shield(task)
        finally:
            if self._task is task:
                self._waiting -= 1
                if not self._waiting and not task.done():
                    task.cancel()  # the last caller left

    def cancel(self) -> None:
        """End the running task, if any (its owner is closing)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()


def mark_seen(done: asyncio.Future[T]) -> None:
    """Mark a shared task's error as retrieved: its callers got it, and none may be left to."""
    if not done.cancelled():
        done.exception()
