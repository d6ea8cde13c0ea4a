"""One backoff policy for every retry loop: exponential from ``start`` up to ``cap`` seconds,
bounded by a ``timeout`` (seconds from now) or a number of ``tries``, or unbounded."""

from __future__ import annotations

import asyncio
import logging
import time

from rtq_nb.errors import RedisUnavailable

__all__ = ["Backoff"]

log = logging.getLogger("rtq_nb.transport")


class Backoff:
    """``await backoff.retry(exc, what)`` sleeps before the next attempt, or raises
    :class:`RedisUnavailable` (chained to ``exc``) once the budget is spent."""

    def __init__(
        self,
        *,
        start: float = 0.05,
        cap: float = 2.0,
        timeout: float | None = None,
        tries: int | None = None,
    ) -> None:
        self.start, self.cap, self.timeout, self.tries = start, cap, timeout, tries
        self.delay = start
        self.failures = 0
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def reset(self) -> None:
        """After a success: the next failure starts from the shortest delay again."""
        self.delay, self.failures = self.start, 0

    @property
    def exhausted(self) -> bool:
        """Whether waiting once more would break the budget."""
        if self.tries is not None and self.failures >= self.tries:
            return True
        return self.deadline is not None and time.monotonic() + self.delay > self.deadline

    async def retry(self, exc: BaseException, what: str) -> None:
        """Wait before retrying ``what`` after ``exc``; raise once the budget is spent."""
        if self.exhausted:
            spent = f"{self.timeout:.0f} s" if self.timeout is not None else f"{self.tries} tries"
            raise RedisUnavailable(f"{exc} ({what}: gave up after {spent} of retries)") from exc
        log.warning("%s: Redis unavailable (%s); retrying in %.2f s", what, exc, self.delay)
        await asyncio.sleep(self.delay)
        self.failures += 1
        self.delay = min(self.delay * 2, self.cap)
