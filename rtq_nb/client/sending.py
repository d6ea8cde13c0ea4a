"""Where requests go and how they get there (mixed into :class:`~rtq_nb.AsyncClient`): each
queue's keys and layout (its shards, read once), sending submissions and riding out outages
without sending one twice, and waking workers of a sharded queue."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from rtq_nb.client.durability import Replication
from rtq_nb.client.options import Prepared, SubmitOptions
from rtq_nb.client.stream_lanes import StreamLanes
from rtq_nb.errors import RedisUnavailable
from rtq_nb.payloads import PayloadStore
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.shards import CONFIG_SHARDS, Layout, parse_config
from rtq_nb.transport.base import Transport
from rtq_nb.transport.once import Once
from rtq_nb.transport.resp import Command
from rtq_nb.transport.retry import Backoff

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle

__all__ = ["Sending"]

log = logging.getLogger("rtq_nb.client")


class Sending:
    payloads: PayloadStore | None

    if TYPE_CHECKING:

        def prepare(self, input: Any, *, stream: bool, **o: Unpack[SubmitOptions]) -> Prepared: ...

    conn: Transport
    reads: Transport  # rides out outages within reconnect_timeout
    prefix: str
    queue: str
    reconnect_timeout: float
    replication: Replication
    _keys: dict[str, Keys]
    _layouts: dict[str, Layout]
    _reading: dict[str, Once[Layout]]  # layouts being read (see layout)
    _lanes: StreamLanes | None = None

    def keys(self, queue: str | None = None) -> Keys:
        """The key builder of ``queue`` (default: the client's queue)."""
        q = self.queue if queue is None else queue
        k = self._keys.get(q)
        if k is None:
            k = self._keys[q] = Keys(self.prefix, q)
        return k

    def knows_layout(self, queue: str | None = None) -> bool:
        """Whether ``queue``'s layout has been read (the sync fast path needs it)."""
        return (self.queue if queue is None else queue) in self._layouts

    async def layout(self, queue: str | None = None) -> Layout:
        """``queue``'s layout: its shards (README, Sharded queues), read from its config once
        per client and queue (1 round trip on first use), then cached."""
        q = self.queue if queue is None else queue
        got = self._layouts.get(q)
        if got is None:  # the first callers all wait for one read
            reading = self._reading.get(q)
            if reading is None:
                reading = self._reading[q] = Once()
            got = await reading.run(functools.partial(self._read_layout, q))
        return got

    def end_reads(self) -> None:
        """Closing: end the layout reads in flight."""
        for reading in self._reading.values():
            reading.cancel()

    async def _read_layout(self, q: str) -> Layout:
        k = self.keys(q)
        n = parse_config(await self.reads.call("HGET", k.config, CONFIG_SHARDS), k.config)
        got = self._layouts[q] = Layout(self.prefix, q, n)
        return got

    async def keys_for(self, queue: str | None, request_id: str) -> Keys:
        """The keys of the shard a request of ``queue`` lives in."""
        return (await self.layout(queue)).for_id(request_id)

    async def _prepare(self, input: Any, *, stream: bool, **o: Unpack[SubmitOptions]) -> Prepared:
        """:meth:`prepare`, in a thread when a payload store may upload (the loop never
        blocks on object storage)."""
        if self.payloads is None:
            return self.prepare(input, stream=stream, **o)
        return await asyncio.to_thread(functools.partial(self.prepare, input, stream=stream, **o))

    async def send(self, part: list[Prepared], *, after: bool = True) -> None:
        """Submit prepared requests in one round trip, riding out a dropped connection or a
        Redis restart: after a failure, only the requests whose records are missing are sent
        again. Then
        (``after``) the commands that must follow them (a sharded queue on a cluster: wake
        tokens)."""
        backoff = Backoff(timeout=self.reconnect_timeout)
        then = [c for p in part for c in p.after] if after else []
        while part:
            try:
                cmds = [c for p in part for c in p.commands]
                self.replication.note(cmds, await self._shared(cmds))
                break
            except RedisUnavailable as exc:
                await backoff.retry(exc, "submitting")
                landed = await self._landed([p.handle for p in part], backoff)
                part = [p for p, done in zip(part, landed) if not done]
        if then:
            await self.wake(then)

    async def resend(self, p: Prepared) -> None:
        """Finish a submission whose first attempt failed on the wire (the sync facade's
        calling-thread path): sent again, as :meth:`send` does, only if it never landed."""
        landed = await self._landed([p.handle], Backoff(timeout=self.reconnect_timeout))
        if not landed[0]:
            await self.send([p])

    async def wake(self, tokens: Sequence[Command]) -> None:
        """Push wake tokens; if that fails, workers still find the requests when their
        blocking wait times out (``block_timeout``): logged, not raised."""
        if not tokens:
            return
        try:
            await self.conn.pipeline(tokens)
        except RedisUnavailable as exc:
            log.warning(
                "could not wake workers (%s): they find the requests within their block timeout",
                exc,
            )

    # ---- riding out outages (the handles' side of HandleHost) ---------------------------------
    async def exchange(
        self, cmds: list[Command], handle: AsyncRequestHandle, *, resend: bool, share: bool = False
    ) -> list[Any]:
        """Run a pipeline, riding out a dropped connection or a Redis restart with bounded
        backoff. ``resend``: the pipeline starts with the submission, which is only sent
        again if it never reached Redis (no duplicate requests); once it did, only the last
        command (the read) is sent again. ``share``: no command blocks (``_shared``)."""
        if not cmds:
            return []
        backoff = Backoff(timeout=self.reconnect_timeout)
        while True:
            try:
                replies = await (self._shared(cmds) if share else self.conn.pipeline(cmds))
                if resend:
                    self.replication.note(cmds, replies)
                return replies
            except RedisUnavailable as exc:
                await backoff.retry(exc, f"request {handle.id}")
                if resend and (await self._landed([handle], backoff))[0]:
                    cmds, resend = cmds[-1:], False

    async def _shared(self, cmds: list[Command]) -> list[Any]:
        """A pipeline of commands that never block, on a link shared with others when no
        pooled link is free (``Conn.shared_pipeline``: a burst of submissions takes one
        connection, not one each). With ``WAIT`` for replicas (it blocks), a link of its own."""
        shared = getattr(self.conn, "shared_pipeline", None)  # (none on a cluster)
        if shared is None or self.replication.command is not None:
            return await self.conn.pipeline(cmds)
        return await shared(cmds)  # type: ignore[no-any-return]

    def stream_lanes(self) -> StreamLanes | None:
        """Stream reads after the first share few connections (``stream_lanes``); made on
        first use, none on a Redis Cluster (or before the first round trip told which)."""
        conn = self.conn  # AutoTransport or Conn (Sentinel): with dedicated_link
        one_server = getattr(conn, "cluster", False) is False
        if self._lanes is None and one_server and hasattr(conn, "dedicated_link"):
            self._lanes = StreamLanes(conn)  # type: ignore[arg-type]
        return self._lanes

    async def _landed(self, handles: list[AsyncRequestHandle], backoff: Backoff) -> list[bool]:
        """Did these submissions reach Redis? Asks until Redis answers (within ``backoff``)."""
        while True:
            try:
                found = await self._shared([("EXISTS", h.keys.request(h.id)) for h in handles])
                return [bool(x) for x in found]
            except RedisUnavailable as exc:
                await backoff.retry(exc, "checking what landed")
