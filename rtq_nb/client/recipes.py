"""The reference design's three recipes for a request that takes too long (wait longer,
resubmit, cancel), and reading its record: mixed into
:class:`~rtq_nb.client.handle.AsyncRequestHandle`."""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from rtq_nb.client.host import HandleHost
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.protocol.reprs import card

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
    _outcome: Status | None
    seen: Status | None = None  # the newest status read from its record or set by cancel()
    waited_out = False  # a wait for it timed out (it was still pending / running then)

    @property
    def text(self) -> str:
        raise NotImplementedError  # AsyncRequestHandle.text

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
        had = await self._host.cancel(self.id, reason=reason, queue=self.queue)
        if had is not None:
            self.seen = had if had.terminal else Status.CANCELLED
        return had

    async def record(self) -> RequestRecord:
        """The stored record (status, timestamps, metrics)."""
        rec = await self._host.get(self.id, queue=self.queue)
        self.seen = rec.status
        return rec

    async def status(self) -> Status:
        return (await self.record()).status

    # ---- reprs: the truest status known without I/O ---------------------------------------
    @property
    def state(self) -> str:
        """Its outcome once this handle saw it end (completed, failed, cancelled, expired);
        else the newest status read (``record()``, ``status()``, ``cancel()``, a wait that
        timed out: "running, wait timed out"); else "submitted". No I/O."""
        if self._outcome is not None:
            return self._outcome.value
        if self.seen is None:
            return "timeout" if self.waited_out else "submitted"
        return self.seen.value + (", wait timed out" if self.waited_out else "")

    def __repr__(self) -> str:
        kind = "stream" if self.stream else "request"
        return f"<{type(self).__name__} {kind} {self.id} queue={self.queue!r} {self.state}>"

    def _repr_html_(self) -> str:
        preview = html.escape(self.text[-300:]) if self.stream else ""
        pre = "<pre style='white-space:pre-wrap;margin:4px 0 0'>{}</pre>"
        return card(
            "rtq-handle",
            "rtq stream" if self.stream else "rtq request",
            self.id,
            self.state,
            [f"queue {self.queue}", f"priority {self.priority}"],
            pre.format(preview) if preview else "",
        )
