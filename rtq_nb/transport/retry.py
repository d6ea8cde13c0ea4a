"""One backoff policy for every retry loop: exponential from ``start`` up to ``cap`` seconds,
bounded by a ``timeout`` (seconds from now) or a number of ``tries``, or unbounded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from rtq_nb.errors import RedisUnavailable
from rtq_nb.transport.base import OnHead, Transport
from rtq_nb.transport.resp import Command

__all__ = ["Backoff", "Retrying"]

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
        """Whether the budget is spent (tries used up, or the deadline reached)."""
        if self.tries is not None and self.failures >= self.tries:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    async def retry(self, exc: BaseException, what: str) -> None:
        """Wait before retrying ``what`` after ``exc`` (never past the deadline: the last wait
        is shortened to end on it); raise once the budget is spent."""
        if self.exhausted:
            spent = f"{self.timeout:g} s" if self.timeout is not None else f"{self.tries} tries"
            text = str(exc).rstrip(". ")
            kind = type(exc) if isinstance(exc, RedisUnavailable) else RedisUnavailable
            raise kind(f"{text} ({what}: gave up after {spent} of retries)") from exc
        delay = self.delay
        if self.deadline is not None:
            delay = max(0.0, min(delay, self.deadline - time.monotonic()))
        log.warning("%s: Redis unavailable (%s); retrying in %.2f s", what, exc, delay)
        await asyncio.sleep(delay)
        self.failures += 1
        self.delay = min(self.delay * 2, self.cap)


class Retrying:
    """A :class:`~rtq_nb.transport.base.Transport` for idempotent commands (reads, cancel,
    extend): a dropped connection or a restarting Redis is ridden out for ``timeout``
    seconds, then :class:`RedisUnavailable` says how long it tried."""

    def __init__(self, inner: Transport, timeout: float) -> None:
        self.inner, self.timeout = inner, timeout
        self.url = inner.url

    async def pipeline(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        backoff: Backoff | None = None
        while True:
            try:
                return await self.inner.pipeline(commands, head=head, on_head=on_head)
            except RedisUnavailable as exc:
                backoff = backoff or Backoff(timeout=self.timeout)
                await backoff.retry(exc, "reading")

    async def call(self, *args: Any) -> Any:
        return (await self.pipeline([args]))[0]

    async def aclose(self) -> None:
        await self.inner.aclose()
