"""Acting on requests by id: cancel, look up, extend a deadline; and reliability operations:
reap expired leases, list and requeue dead letters (mixed into :class:`~rtq_nb.AsyncClient`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rtq_nb.errors import RequestNotFound
from rtq_nb.protocol import scripts
from rtq_nb.protocol.keys import Keys, check_id
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.protocol.shards import Layout
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command

__all__ = ["Admin"]

log = logging.getLogger("rtq_nb.client")


class Admin:
    reads: Transport  # rides out outages within reconnect_timeout
    retention: int

    if TYPE_CHECKING:

        def keys(self, queue: str | None = None) -> Keys: ...

        async def keys_for(self, queue: str | None, request_id: str) -> Keys: ...

        async def layout(self, queue: str | None = None) -> Layout: ...

        async def wake(self, tokens: Sequence[Command]) -> None: ...

        async def find_record(self, keys: Keys, request_id: str) -> RequestRecord | None: ...

    async def cancel(
        self, request_id: str, *, reason: str = "cancelled by client", queue: str | None = None
    ) -> Status | None:
        """Cancel by id: pending -> removed from the queue; running -> the worker stops at
        its next chunk. Returns the status the request had (None: no such request)."""
        k = await self.keys_for(queue, check_id(request_id))
        cmd = scripts.cancel(k, request_id, reason=reason, retention_s=self.retention)
        return scripts.parse_status(await self.reads.call(*cmd))

    async def extend(self, request_id: str, seconds: float, *, queue: str | None = None) -> None:
        """Move a pending or running request's deadline to ``seconds`` from now."""
        k = await self.keys_for(queue, check_id(request_id))
        cmd = scripts.extend(k, request_id, extra_ms=int(seconds * 1000))
        await self.reads.call(*cmd)

    async def get(self, request_id: str, *, queue: str | None = None) -> RequestRecord:
        """The stored record of a request; RequestNotFound if none, MalformedRecord if bad."""
        rec = await self.find_record(await self.keys_for(queue, check_id(request_id)), request_id)
        if rec is None:
            raise RequestNotFound(
                f"no request {request_id!r} in queue {self.keys(queue).queue!r} (never "
                "submitted, or its retention TTL ran out)",
                request_id=request_id,
            )
        return rec

    async def reap(self, queue: str | None = None) -> tuple[list[str], list[str]]:
        """Requeue requests whose worker stopped renewing its lease (or dead-letter them
        after their ``max_attempts``). Workers do this on every heartbeat, so no daemon is
        needed; this is an operator's tool (the client and monitor ACL roles may not run it:
        see :mod:`rtq_nb.protocol.acl`). Returns (requeued, dead)."""
        layout = await self.layout(queue)
        replies = await self.reads.pipeline(
            [scripts.reap(k, retention_s=self.retention) for k in layout.all]
        )
        requeued: list[str] = []
        dead: list[str] = []
        tokens: list[Command] = []
        for k, reply in zip(layout.all, replies):
            back, gone = scripts.parse_reap(reply)
            requeued += back
            dead += gone
            tokens += layout.wake_after(k, len(back))
        if tokens:
            await self.wake(tokens)
        if requeued or dead:
            log.warning("reaped in %r: requeued %s, dead-lettered %s", queue, requeued, dead)
        return requeued, dead

    async def dead_letters(self, queue: str | None = None) -> list[RequestRecord]:
        """Dead-lettered requests (ran out of attempts), newest first, with their last error."""
        out = []
        for k in (await self.layout(queue)).all:
            for rid in await self.reads.call("ZREVRANGE", k.dead, 0, -1):
                rec = await self.find_record(k, rid)
                if rec is not None:
                    out.append(rec)
        if len(out) > 1:
            out.sort(key=lambda r: r.finished_ms or 0, reverse=True)
        return out

    async def requeue(self, request_id: str, *, queue: str | None = None) -> bool:
        """Put a dead-lettered request back in the queue (attempts reset). False if it is not
        a dead letter."""
        layout = await self.layout(queue)
        k = layout.for_id(check_id(request_id))
        done = bool(await self.reads.call(*scripts.requeue(k, request_id)))
        if done:
            await self.wake(layout.wake_after(k))
        return done
