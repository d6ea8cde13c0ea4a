"""AsyncClient: submit requests, wait for results, iterate streams, inspect queues.

This is the one implementation; :class:`rtq_nb.Client` is a thin synchronous facade over it.
Round trips: ``call()`` = 1 (submit script + BLPOP pipelined), ``stream()`` = 1 to the first
batch of chunks (submit + XREAD pipelined), ``submit_many()`` = 1 for the whole batch.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.errors import ConfigurationError, RedisUnavailable, RequestNotFound, UnknownQueue
from rtq_nb.protocol.keys import Keys, check_id, check_name
from rtq_nb.protocol.records import (
    Chunk,
    RequestRecord,
    Status,
    dumps,
    encode_params,
    record_fields,
    timeout_to_ms,
)
from rtq_nb.protocol.registry import WorkerInfo, parse_workers
from rtq_nb.protocol.scores import PRIORITY_MAX, SEQ_SPAN, check_priority
from rtq_nb.transport.aio import Conn, pairs, resolve_url
from rtq_nb.transport.resp import Command, Hole, Template

log = logging.getLogger("rtq_nb.client")

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETENTION = 24 * 3600.0
CLIENT_HEARTBEAT = 5.0  # seconds between client registry refreshes
DEFAULT_MAX_ATTEMPTS = 3  # attempts before a request whose workers keep dying is dead-lettered
_HOST = socket.gethostname()
WAKE_CAP = 100_000  # wake tokens kept at most per queue (see README, "Wire format")


class _Default:
    def __repr__(self) -> str:
        return "<client default>"


DEFAULT: Any = _Default()


class AsyncClient:
    """Asyncio client of one Redis (and a default queue).

    ``url=None`` uses ``RTQ_REDIS_URL`` / ``REDIS_URL`` or starts the embedded redis-server.
    ``timeout`` is the default per-request timeout in seconds (None = no deadline);
    ``retention`` how long records, results and streams stay in Redis after the fact.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queue: str = "default",
        prefix: str = "rtq",
        timeout: float | None = DEFAULT_TIMEOUT,
        retention: float = DEFAULT_RETENTION,
        client_id: str | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        reap_interval: float = 2.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        self.url = resolve_url(url)
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.reap_interval = reap_interval
        self.reconnect_timeout = reconnect_timeout
        self.prefix = check_name("prefix", prefix)
        self.queue = check_name("queue", queue)
        self.client_id = check_name("client id", client_id or uuid.uuid4().hex[:12])
        timeout_to_ms(timeout)  # validates
        self.timeout = timeout
        if retention <= 0:
            raise ConfigurationError(f"retention must be > 0 seconds, got {retention}")
        self.retention = int(retention)
        self._conn = Conn(self.url)
        self._keys: dict[str, Keys] = {}
        self._announced: set[str] = set()
        self._counter = itertools.count(1)
        self._announced_at: dict[str, float] = {}
        self._templates: dict[tuple[Any, ...], Template] = {}
        self.submitted = 0

    def keys(self, queue: str | None = None) -> Keys:
        q = queue or self.queue
        k = self._keys.get(q)
        if k is None:
            k = self._keys[q] = Keys(self.prefix, q)
        return k

    def _registry_cmds(self, keys: Keys) -> list[tuple[Any, ...]]:
        """Client registry refresh, piggy-backed on a submit at most every few seconds."""
        now_ms = int(time.time() * 1000)
        ck = keys.client(self.client_id)
        return [
            ("ZADD", keys.clients, now_ms, self.client_id),
            (
                "HSET",
                ck,
                "id",
                self.client_id,
                "queue",
                keys.queue,
                "host",
                _HOST,
                "pid",
                os.getpid(),
                "last_seen_ms",
                now_ms,
                "submitted",
                self.submitted,
            ),
            ("EXPIRE", ck, self.retention),
        ]

    # ---- submitting ------------------------------------------------------------------------
    def _submit_template(
        self, keys: Keys, priority: int, timeout_ms: int, params_json: str, stream: bool
    ) -> Template:
        """The submit script command for one request shape, encoded once; the request id
        (hole 0) and the input JSON (hole 1) are spliced in per request."""
        # retention and max_attempts are public attributes: a change takes effect at once
        shape = (
            keys.queue,
            priority,
            timeout_ms,
            params_json,
            stream,
            self.retention,
            self.max_attempts,
        )
        tpl = self._templates.get(shape)
        if tpl is None:
            if len(self._templates) >= 256:
                self._templates.clear()
            rid = Hole(0)
            fields = record_fields(
                client=self.client_id,
                queue=keys.queue,
                input_json=Hole(1),
                params_json=params_json,
                stream=stream,
            )
            tpl = self._templates[shape] = Template(
                Conn.script_cmd(
                    "submit",
                    [Hole(0, keys.request("")), keys.pending, keys.wake, keys.seq, keys.history],
                    [
                        rid,
                        priority,
                        timeout_ms,
                        self.retention,
                        WAKE_CAP,
                        *fields,
                        "max_attempts",
                        self.max_attempts,
                    ],
                )
            )
        return tpl

    def _prepare(
        self,
        input: Any,
        *,
        priority: int,
        timeout: Any,
        stream: bool,
        params: dict[str, Any] | None,
        request_id: str | None,
        queue: str | None,
    ) -> tuple[list[Command], AsyncRequestHandle]:
        keys = self.keys(queue)
        check_priority(priority)
        t = self.timeout if timeout is DEFAULT else timeout
        timeout_ms = timeout_to_ms(t)
        rid = check_id(request_id) if request_id else f"{self.client_id}-{next(self._counter)}"
        tpl = self._submit_template(keys, priority, timeout_ms, encode_params(params), stream)
        cmds: list[Command] = []
        if keys.queue not in self._announced:
            cmds.append(("SADD", keys.queues, keys.queue))
            self._announced.add(keys.queue)
        cmds.append(tpl.fill(rid, dumps(input, "input")))
        self.submitted += 1
        now = time.monotonic()
        if now - self._announced_at.get(keys.queue, -1e9) > CLIENT_HEARTBEAT:
            self._announced_at[keys.queue] = now
            cmds += self._registry_cmds(keys)
        handle = AsyncRequestHandle(
            self,
            keys,
            rid,
            stream=stream,
            timeout=t or None,
            input=input,
            params=params,
            priority=priority,
        )
        return cmds, handle

    async def submit(
        self,
        input: Any,
        *,
        priority: int = 0,
        timeout: float | None = DEFAULT,
        stream: bool = False,
        params: dict[str, Any] | None = None,
        request_id: str | None = None,
        queue: str | None = None,
    ) -> AsyncRequestHandle:
        """Queue one request and return its handle at once (1 round trip).

        ``input`` and ``params`` must be JSON-serialisable; ``priority`` is an int in
        [-1000, 1000] (higher first, FIFO among equals); ``timeout`` in seconds counts from
        now, queueing included (None = no deadline)."""
        cmds, handle = self._prepare(
            input,
            priority=priority,
            timeout=timeout,
            stream=stream,
            params=params,
            request_id=request_id,
            queue=queue,
        )
        await self._submit_batch([(cmds, handle)])
        return handle

    async def submit_many(
        self,
        inputs: Iterable[Any],
        *,
        priority: int = 0,
        timeout: float | None = DEFAULT,
        stream: bool = False,
        params: dict[str, Any] | None = None,
        queue: str | None = None,
        chunk_size: int = 500,
    ) -> list[AsyncRequestHandle]:
        """Queue many requests, pipelined ``chunk_size`` per round trip. Every input is
        encoded before anything is sent, so a bad one leaves the queue untouched."""
        prepared = [
            self._prepare(
                x,
                priority=priority,
                timeout=timeout,
                stream=stream,
                params=params,
                request_id=None,
                queue=queue,
            )
            for x in inputs
        ]
        for i in range(0, len(prepared), chunk_size):
            await self._submit_batch(prepared[i : i + chunk_size])
        return [h for _, h in prepared]

    async def _submit_batch(self, part: list[tuple[list[Command], AsyncRequestHandle]]) -> None:
        """One round trip of submissions, riding out a dropped connection or a Redis restart:
        after a failure, only the requests whose records are missing are sent again."""
        end = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while part:
            try:
                await self._conn.pipeline([c for cs, _ in part for c in cs])
                return
            except RedisUnavailable as exc:
                delay = await self._backoff(exc, end, delay)
                landed = await self._landed([h for _, h in part], end, delay)
                part = [p for p, done in zip(part, landed) if not done]

    def _prepare_kw(
        self, name: str, input: Any, kw: dict[str, Any], *, stream: bool
    ) -> tuple[list[Command], AsyncRequestHandle]:
        """``_prepare`` for the one-shot helpers: submission options come as keywords."""
        cmds, handle = self._prepare(
            input,
            priority=kw.pop("priority", 0),
            timeout=kw.pop("timeout", DEFAULT),
            stream=stream,
            params=kw.pop("params", None),
            request_id=kw.pop("request_id", None),
            queue=kw.pop("queue", None),
        )
        if kw:
            raise TypeError(f"{name}() got unexpected arguments: {', '.join(kw)}")
        return cmds, handle

    async def call(self, input: Any, **kw: Any) -> Any:
        """Submit and wait for the result in one round trip (the common case). Keywords
        are those of :meth:`submit`."""
        cmds, handle = self._prepare_kw("call", input, kw, stream=False)
        return await handle._wait_envelope(handle._remaining(None), cmds)

    async def _resume_call(
        self, handle: AsyncRequestHandle, cmds: list[Command], remaining: float | None
    ) -> Any:
        """Finish a ``call`` whose first attempt failed on the wire: submit only if the
        submission never reached Redis (no duplicates), then wait as usual."""
        landed = await self._landed([handle], time.monotonic() + self.reconnect_timeout, 0.05)
        return await handle._wait_envelope(remaining, [] if landed[0] else cmds)

    async def stream(self, input: Any, **kw: Any) -> AsyncIterator[Chunk]:
        """Submit a streaming request and yield its chunks (text deltas) as they arrive; the
        first batch comes back in the submit's own round trip."""
        async for batch in self.stream_batches(input, **kw):
            for chunk in batch:
                yield chunk

    async def stream_batches(self, input: Any, **kw: Any) -> AsyncIterator[list[Chunk]]:
        """Like :meth:`stream`, one list of chunks per Redis read."""
        cmds, handle = self._prepare_kw("stream", input, kw, stream=True)
        async for batch in handle.batches(_before=cmds):
            yield batch

    def handle(
        self, request_id: str, *, stream: bool = False, queue: str | None = None
    ) -> AsyncRequestHandle:
        """A handle for an existing request id (e.g. to watch a stream from a second viewer)."""
        return AsyncRequestHandle(
            self,
            self.keys(queue),
            check_id(request_id),
            stream=stream,
            timeout=None,
            input=None,
            params=None,
            priority=0,
        )

    async def cancel(
        self, request_id: str, *, reason: str = "cancelled by client", queue: str | None = None
    ) -> Status | None:
        """Cancel by id: pending -> removed from the queue; running -> the worker stops at
        its next chunk. Returns the status the request had (None: no such request)."""
        k = self.keys(queue)
        rid = check_id(request_id)
        prev = await self._conn.script(
            "cancel",
            [k.request(rid), k.pending, k.running, k.result(rid), k.stream(rid)],
            [rid, reason, self.retention],
        )
        return Status(prev) if prev in Status._value2member_map_ else None

    # ---- reading state -------------------------------------------------------------------
    async def _record_or_none(self, keys: Keys, request_id: str) -> RequestRecord | None:
        key = keys.request(request_id)
        fields = await self._conn.call("HGETALL", key)
        if not fields:
            return None
        return RequestRecord.from_redis(fields, key=key)

    async def get(self, request_id: str, *, queue: str | None = None) -> RequestRecord:
        """The stored record of a request; RequestNotFound if none, MalformedRecord if bad."""
        rec = await self._record_or_none(self.keys(queue), check_id(request_id))
        if rec is None:
            raise RequestNotFound(
                f"no request {request_id!r} in queue {self.keys(queue).queue!r} (never "
                "submitted, or its retention TTL ran out)",
                request_id=request_id,
            )
        return rec

    async def _server_ms(self) -> int:
        sec, usec = await self._conn.call("TIME")
        return int(sec) * 1000 + int(usec) // 1000

    async def _ahead_of(self, keys: Keys, score: int | None) -> int:
        if score is None:
            return 0
        return int(await self._conn.call("ZCOUNT", keys.pending, f"({score}", "+inf"))

    async def _check_queue(self, queue: str | None) -> Keys:
        k = self.keys(queue)
        if k.queue in self._announced:
            return k
        if not await self._conn.call("SISMEMBER", k.queues, k.queue):
            known = sorted(await self._conn.call("SMEMBERS", k.queues))
            raise UnknownQueue(
                f"unknown queue {k.queue!r} under prefix {self.prefix!r}: no client or worker "
                f"has used it. Known queues: {', '.join(known) or '(none yet)'}"
            )
        return k

    async def queues(self) -> list[str]:
        """Names of the queues seen under this prefix."""
        return sorted(await self._conn.call("SMEMBERS", self.keys().queues))

    async def pending_count(self, queue: str | None = None) -> int:
        """Requests waiting in the queue (1 round trip)."""
        k = await self._check_queue(queue)
        return int(await self._conn.call("ZCARD", k.pending))

    async def pending_by_priority(self, queue: str | None = None) -> dict[int, int]:
        """{priority: pending count}, highest priority first (1 round trip)."""
        k = await self._check_queue(queue)
        flat = await self._conn.script("pending_by_priority", [k.pending], [])
        return {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Live workers of the queue (registry entries whose heartbeat TTL has not run out)."""
        k = await self._check_queue(queue)
        ids = await self._conn.call("ZRANGE", k.workers, 0, -1)
        if not ids:
            return []
        replies = await self._conn.pipeline([("HGETALL", k.worker(w)) for w in ids])
        return parse_workers(ids, [pairs(r) for r in replies])

    async def estimated_wait(self, priority: int = 0, queue: str | None = None) -> float:
        """Seconds a new request of ``priority`` would wait before a worker starts it:
        requests ahead x recent service time (EWMA) / total worker concurrency."""
        k = await self._check_queue(queue)
        check_priority(priority)
        lo = priority * SEQ_SPAN - (SEQ_SPAN - 1)
        ahead = int(await self._conn.call("ZCOUNT", k.pending, lo, (PRIORITY_MAX + 1) * SEQ_SPAN))
        workers = [w for w in await self.workers(queue) if w.alive]
        slots = sum(max(1, w.concurrency) * max(1, w.batch_size) for w in workers)
        if not slots:
            return float("inf") if ahead else 0.0
        service_ms = sum(w.service_ms_ewma for w in workers) / len(workers)
        return ahead * service_ms / 1000 / slots

    async def stats(self, queue: str | None = None) -> dict[str, float]:
        """Counters of the queue: completed, failed, pending, running."""
        k = await self._check_queue(queue)
        raw, pending, running = await self._conn.pipeline(
            [
                ("HGETALL", k.stats),
                ("ZCARD", k.pending),
                ("ZCARD", k.running),
            ]
        )
        out: dict[str, float] = {}
        for name, val in pairs(raw).items():
            try:
                out[name] = float(val)
            except ValueError:
                log.warning("ignoring malformed stats field %s=%r in %s", name, val, k.stats)
        out.update(pending=int(pending), running=int(running))
        return out

    # ---- reliability ---------------------------------------------------------------------
    async def reap(self, queue: str | None = None) -> tuple[list[str], list[str]]:
        """Requeue requests whose worker stopped renewing its lease (or dead-letter them
        after their ``max_attempts``). Workers do this on every heartbeat; waiting clients
        do it while idle, so no separate daemon is needed. Returns (requeued, dead)."""
        k = self.keys(queue)
        out = await self._conn.script(
            "reap",
            [k.running, k.pending, k.wake, k.dead],
            [k.base, DEFAULT_MAX_ATTEMPTS, 100, self.retention],
        )
        cut = out.index("|")
        if cut or len(out) > 1:
            log.warning(
                "reaped in %r: requeued %s, dead-lettered %s", k.queue, out[:cut], out[cut + 1 :]
            )
        return list(out[:cut]), list(out[cut + 1 :])

    async def dead_letters(self, queue: str | None = None) -> list[RequestRecord]:
        """Dead-lettered requests (ran out of attempts), newest first, with their last error."""
        k = self.keys(queue)
        ids = await self._conn.call("ZREVRANGE", k.dead, 0, -1)
        out = []
        for rid in ids:
            rec = await self._record_or_none(k, rid)
            if rec is not None:
                out.append(rec)
        return out

    async def requeue(self, request_id: str, *, queue: str | None = None) -> bool:
        """Put a dead-lettered request back in the queue (attempts reset). False if it is not
        a dead letter."""
        k = self.keys(queue)
        rid = check_id(request_id)
        done = await self._conn.script(
            "requeue",
            [k.request(rid), k.dead, k.pending, k.wake, k.result(rid), k.stream(rid)],
            [rid],
        )
        return bool(done)

    async def _resilient(
        self,
        cmds: list[Command],
        handle: AsyncRequestHandle,
        *,
        resend: bool,
    ) -> list[Any]:
        """Run a pipeline, riding out a dropped connection or a Redis restart with bounded
        backoff. ``resend``: the pipeline starts with the submission, which is only sent
        again if it never reached Redis (no duplicate requests); once it did, only the last
        command (the blocking read) is sent again."""
        end = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while True:
            try:
                return await self._conn.pipeline(cmds) if cmds else []
            except RedisUnavailable as exc:
                delay = await self._backoff(exc, end, delay)
                if resend and (await self._landed([handle], end, delay))[0]:
                    cmds, resend = cmds[-1:], False

    async def _backoff(self, exc: RedisUnavailable, end: float, delay: float) -> float:
        """Sleep before a retry (raising once ``reconnect_timeout`` is spent); the next delay."""
        if time.monotonic() + delay > end:
            raise RedisUnavailable(
                f"{exc} (gave up after {self.reconnect_timeout:.0f} s of retries)"
            ) from exc
        log.warning("Redis unavailable (%s); retrying in %.2f s", exc, delay)
        await asyncio.sleep(delay)
        return min(delay * 2, 2.0)

    async def _landed(
        self, handles: list[AsyncRequestHandle], end: float, delay: float
    ) -> list[bool]:
        """Did these submissions reach Redis? Asks until Redis answers (or until ``end``)."""
        while True:
            try:
                found = await self._conn.pipeline(
                    [("EXISTS", h.keys.request(h.id)) for h in handles]
                )
                return [bool(x) for x in found]
            except RedisUnavailable as exc:
                delay = await self._backoff(exc, end, delay)

    async def aclose(self) -> None:
        await self._conn.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.url} queue={self.queue!r} id={self.client_id}>"


async def ping(url: str) -> float:
    """Round-trip time of one PING in seconds (raises RedisUnavailable)."""
    conn = Conn(url)
    try:
        t0 = time.perf_counter()
        await conn.call("PING")
        return time.perf_counter() - t0
    finally:
        await conn.aclose()


__all__ = ["DEFAULT", "AsyncClient", "ping"]
