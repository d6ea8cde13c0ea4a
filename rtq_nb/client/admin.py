"""Acting on requests by id: cancel, look up, extend a deadline; and reliability operations:
reap expired leases, list and requeue dead letters (mixed into :class:`~rtq_nb.AsyncClient`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rtq_nb.errors import RequestNotFound
from rtq_nb.protocol import scripts
from rtq_nb.protocol.keys import Keys, check_id
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.transport.base import Transport

__all__ = ["Admin"]

log = logging.getLogger("rtq_nb.client")


class Admin:
    reads: Transport  # rides out outages within reconnect_timeout
    retention: int

    if TYPE_CHECKING:

        def keys(self, queue: str | None = None) -> Keys: ...

        async def find_record(self, keys: Keys, request_id: str) -> RequestRecord | None: ...

    async def cancel(
        self, request_id: str, *, reason: str = "cancelled by client", queue: str | None = None
    ) -> Status | None:
        """Cancel by id: pending -> removed from the queue; running -> the worker stops at
        its next chunk. Returns the status the request had (None: no such request)."""
        cmd = scripts.cancel(
            self.keys(queue), check_id(request_id), reason=reason, retention_s=self.retention
        )
        return scripts.parse_status(await self.reads.call(*cmd))

    async def extend(self, request_id: str, seconds: float, *, queue: str | None = None) -> None:
        """Move a pending or running request's deadline to ``seconds`` from now."""
        cmd = scripts.extend(self.keys(queue), check_id(request_id), extra_ms=int(seconds * 1000))
        await self.reads.call(*cmd)

    async def get(self, request_id: str, *, queue: str | None = None) -> RequestRecord:
        """The stored record of a request; RequestNotFound if none, MalformedRecord if bad."""
        rec = await self.find_record(self.keys(queue), check_id(request_id))
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
        k = self.keys(queue)
        requeued, dead = scripts.parse_reap(
            await self.reads.call(*scripts.reap(k, retention_s=self.retention))
        )
        if requeued or dead:
            log.warning("reaped in %r: requeued %s, dead-lettered %s", k.queue, requeued, dead)
        return requeued, dead

    async def dead_letters(self, queue: str | None = None) -> list[RequestRecord]:
        """Dead-lettered requests (ran out of attempts), newest first, with their last error."""
        k = self.keys(queue)
        ids = await self.reads.call("ZREVRANGE", k.dead, 0, -1)
        out = []
        for rid in ids:
            rec = await self.find_record(k, rid)
            if rec is not None:
                out.append(rec)
        return out

    async def requeue(self, request_id: str, *, queue: str | None = None) -> bool:
        """Put a dead-lettered request back in the queue (attempts reset). False if it is not
        a dead letter."""
        cmd = scripts.requeue(self.keys(queue), check_id(request_id))
        return bool(await self.reads.call(*cmd))
