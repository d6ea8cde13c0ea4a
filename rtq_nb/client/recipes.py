"""The reference design's three recipes for a request that takes too long (wait longer,
resubmit, cancel), and reading its record: mixed into
:class:`~rtq_nb.client.handle.AsyncRequestHandle`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rtq_nb.client.host import HandleHost
from rtq_nb.protocol.records import RequestRecord, Status

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle

__all__ = ["Recipes"]


class Recipes:
    """What a handle can do about its request beyond waiting for it."""

    _host: HandleHost
    id: str
    queue: str
    input: Any
    params: dict[str, Any] | None
    priority: int
    stream: bool
    timeout: float | None
    deadline: float | None

    async def result(self, timeout: float | None = None) -> Any:
        raise NotImplementedError  # AsyncRequestHandle.result

    async def server_ms(self) -> int:
        """The Redis server's clock (ms since the epoch): what the record's and the chunks'
        times are in (a notebook's live metrics use one clock: rtq_nb.notebook.live_metrics)."""
        return await self._host.server_ms()

    async def wait(self, timeout: float) -> Any:
        """Wait ``timeout`` more seconds, moving the request's deadline so that a queued
        request is still started (recipe 1). Returns the result (streams: the full text)."""
        await self._host.extend(self.id, timeout, queue=self.queue)
        self.deadline = time.monotonic() + timeout
        return await self.result(timeout=timeout)

    async def resubmit(
        self, *, priority: int | None = None, timeout: float | None = None, cancel_old: bool = True
    ) -> AsyncRequestHandle:
        """Send a fresh copy with a new id (recipe 2): by default one priority step higher,
        cancelling this one so no worker wastes time on it."""
        if cancel_old:
            await self.cancel("resubmitted")
        return await self._host.submit(
            self.input,
            priority=self.priority + 1 if priority is None else priority,
            timeout=self.timeout if timeout is None else timeout,
            stream=self.stream,
            params=self.params,
            queue=self.queue,
        )

    async def cancel(self, reason: str = "cancelled by client") -> Status | None:
        """Give up (recipe 3): a pending request leaves the queue, a running one is told to
        stop. Returns the status it had (None when no record exists)."""
        return await self._host.cancel(self.id, reason=reason, queue=self.queue)

    async def record(self) -> RequestRecord:
        """The stored record (status, timestamps, metrics)."""
        return await self._host.get(self.id, queue=self.queue)

    async def status(self) -> Status:
        return (await self.record()).status
