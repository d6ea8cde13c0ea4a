"""Worker: pulls requests by priority, runs a handler, delivers results or streams.

Round trips per request: 1, plus one per stream flush. The completion of one request and
the fetch of the next are pipelined: a plain POP while the queue is busy, or, when it was
empty, a block on the queue's wake list with the POP right behind it (``BLPOP wake`` +
``POP``: Redis runs the pop as soon as the block returns). No polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rtq_nb.client.core import DEFAULT_MAX_ATTEMPTS, DEFAULT_RETENTION
from rtq_nb.errors import (
    ConfigurationError,
    EncodingError,
    MalformedRecord,
    RedisUnavailable,
    RtqError,
)
from rtq_nb.loop import portal
from rtq_nb.protocol.keys import Keys, check_name
from rtq_nb.protocol.records import Request, Status, dumps, encode_envelope, parse_job
from rtq_nb.protocol.scripts import JOB_FIELDS
from rtq_nb.transport.aio import Conn, resolve_url
from rtq_nb.transport.resp import Command, Packed, pack
from rtq_nb.worker import invoke as _invoke
from rtq_nb.worker.chunking import ChunkerSpec, Entry, make_chunker

log = logging.getLogger("rtq_nb.worker")

Handler = Callable[..., Any]


class _Popped:
    """One popped request with its lease token (worker id + attempt, as stored)."""

    __slots__ = ("attempt", "flushed", "id", "request", "started", "stream")

    def __init__(self, rid: str, attempt: str, stream: bool, request: Request | None) -> None:
        self.id = rid
        self.attempt = attempt
        self.stream = stream
        self.request = request
        self.flushed = 0
        self.started = time.monotonic()


class Worker:
    """Serves one queue with ``handler``.

    ``concurrency``: requests (or batches) processed at once by this process.
    ``batch_size`` > 1: the handler receives ``list[Request]`` gathered for up to
    ``batch_wait`` seconds. ``granularity``: ``"token"``, ``"sentence"``, ``"fixed:N"`` or a
    chunker. ``flush_interval``: stream pieces produced within this many seconds share one
    Redis write (the first piece always goes out at once). ``lease``: seconds a popped request
    stays assigned to this worker without a heartbeat renewing it. ``reconnect_timeout``:
    how long a worker that starts while Redis is unreachable (or restarting) keeps trying to
    register before giving up; once running, it rides out outages of any length.
    """

    def __init__(
        self,
        handler: Handler,
        url: str | None = None,
        *,
        queue: str = "default",
        prefix: str = "rtq",
        concurrency: int = 1,
        batch_size: int = 1,
        batch_wait: float = 0.005,
        granularity: ChunkerSpec = "token",
        flush_interval: float = 0.02,
        lease: float = 6.0,
        heartbeat: float = 2.0,
        block_timeout: float = 2.0,
        retention: float = DEFAULT_RETENTION,
        worker_id: str | None = None,
        reconnect_timeout: float = 30.0,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError(f"handler must be callable, got {handler!r}")
        for name, val, lo in (("concurrency", concurrency, 1), ("batch_size", batch_size, 1)):
            if not isinstance(val, int) or val < lo:
                raise ConfigurationError(f"{name} must be an int >= {lo}, got {val!r}")
        if lease <= heartbeat:
            raise ConfigurationError(
                f"lease ({lease} s) must be longer than heartbeat ({heartbeat} s)"
            )
        make_chunker(granularity)  # validate now, not at the first request
        self.handler = handler
        self.url = resolve_url(url)
        self.keys = Keys(prefix, queue)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.granularity = granularity
        self.flush_interval = flush_interval
        self.lease_ms = int(lease * 1000)
        self.heartbeat = heartbeat
        self.block_timeout = block_timeout
        self.retention = int(retention)
        self.reconnect_timeout = reconnect_timeout
        self._base_id = check_name("worker id", worker_id) if worker_id else None
        self.id = ""
        self.host = socket.gethostname()
        self.processed = 0
        self.failed = 0
        self.service_ms_ewma: float | None = None
        self._in_flight: dict[str, _Popped] = {}
        self._stopping = False
        self._runs = 0
        self._ready = threading.Event()
        self._future: Any = None
        self._stopped_evt: asyncio.Event | None = None
        self._conn: Conn | None = None
        self._slots: list[asyncio.Task[None]] = []
        self._queue_left = 0  # pending requests left at the last pop
        self._fetch_cmd: Packed | None = None  # constant commands, packed once per run
        self._pop_next_cmd: Packed | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Serve until :meth:`astop` / :meth:`stop` is called; then finish in-flight work and
        deregister."""
        self._runs += 1
        self.id = self._base_id or f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        if self._runs > 1 and self._base_id:
            self.id = f"{self._base_id}-{self._runs}"
        self._stopping = False
        self._fetch_cmd = self._pop_next_cmd = None
        self._stopped_evt = asyncio.Event()
        self._conn = Conn(self.url, max_connections=None)
        executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"rtq-{self.id}")
        beat: asyncio.Task[None] | None = None
        try:
            await self._register()
            self._ready.set()
            log.info("worker %s serving queue %r on %s", self.id, self.keys.queue, self.url)
            beat = asyncio.create_task(self._heartbeat_loop())
            self._slots = [
                asyncio.create_task(self._slot(executor)) for _ in range(self.concurrency)
            ]
            await asyncio.gather(*self._slots, return_exceptions=True)
        finally:
            if beat:
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            executor.shutdown(wait=False)
            try:
                await self._deregister()
            except RtqError as exc:
                log.warning("worker %s could not deregister: %s", self.id, exc)
            await self._conn.aclose()
            self._stopped_evt.set()
            log.info(
                "worker %s stopped (%d processed, %d failed)", self.id, self.processed, self.failed
            )

    async def astop(self, drain_timeout: float | None = None) -> None:
        """Stop taking work, finish what is in flight, deregister; returns when done.

        With ``drain_timeout``, requests still running after that many seconds are handed
        back to the queue (their attempt is not counted) and their handlers are cancelled."""
        self._stopping = True
        if self._conn is not None and self.id:
            ctl = self.keys.control(self.id)
            try:
                await self._conn.pipeline(
                    [
                        ("LPUSH", ctl, *["stop"] * self.concurrency),
                        ("EXPIRE", ctl, 60),
                    ]
                )
            except RtqError as exc:
                log.warning("could not wake worker %s fetches: %s", self.id, exc)
        if self._stopped_evt is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped_evt.wait()), drain_timeout)
        except asyncio.TimeoutError:
            await self._hand_back()
            await self._stopped_evt.wait()

    async def _hand_back(self) -> None:
        assert self._conn
        k = self.keys
        held = list(self._in_flight.values())
        cmds = [
            Conn.script_cmd(
                "handback",
                [k.request(p.id), k.running, k.pending, k.wake, k.stream(p.id)],
                [self.id, p.attempt, p.id],
            )
            for p in held
        ]
        if cmds:
            done = await self._conn.pipeline(cmds)
            log.warning("worker %s handed back %d request(s) on stop", self.id, sum(done))
        for p in held:
            if p.request is not None:
                p.request.cancelled = True
        for t in self._slots:
            t.cancel()

    def start(self, timeout: float = 30.0) -> Worker:
        """Run in the background (rtq_nb's loop thread): for scripts and notebook cells.
        Returns once the worker is registered and taking requests."""
        if self.running:
            raise RtqError(f"worker {self.id} is already running; call stop() first")
        self._ready.clear()
        self._future = portal().submit(self.run())
        self._future.add_done_callback(lambda _: self._ready.set())  # start-up errors too
        if not self._ready.wait(timeout):
            raise RtqError(f"worker did not start within {timeout} s")
        if self._future.done():
            self._future.result()  # raises the start-up error
        return self

    def stop(self, timeout: float | None = 60.0, drain_timeout: float | None = None) -> None:
        """Stop a worker started with :meth:`start` (graceful: in-flight work finishes, or
        is handed back to the queue after ``drain_timeout`` seconds)."""
        if self._future is None:
            return
        portal().call(self.astop(drain_timeout), timeout)
        self._future.result(timeout)
        self._future = None

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    async def __aenter__(self) -> Worker:
        self._task = asyncio.create_task(self.run())
        while not self._ready.is_set():
            if self._task.done():
                await self._task
            await asyncio.sleep(0.001)  # registration takes one round trip
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
        await self._task

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- registry ---------------------------------------------------------------------------
    def _registry_fields(self, status: str) -> list[Any]:
        return [
            "id",
            self.id,
            "queue",
            self.keys.queue,
            "host",
            self.host,
            "pid",
            os.getpid(),
            "status",
            status,
            "concurrency",
            self.concurrency,
            "batch_size",
            self.batch_size,
            "in_flight",
            len(self._in_flight),
            "heartbeat_s",
            self.heartbeat,
            "last_seen_ms",
            int(time.time() * 1000),
            "processed",
            self.processed,
            "failed",
            self.failed,
            "service_ms_ewma",
            round(self.service_ms_ewma or 0.0, 3),
        ]

    def _beat_cmds(self, status: str) -> list[tuple[Any, ...]]:
        k, now = self.keys, int(time.time() * 1000)
        ttl = max(2, int(self.heartbeat * 3 + 1))
        return [
            ("HSET", k.worker(self.id), *self._registry_fields(status)),
            ("EXPIRE", k.worker(self.id), ttl),
            ("ZADD", k.workers, now, self.id),
            ("ZREMRANGEBYSCORE", k.workers, "-inf", now - int(self.heartbeat * 10_000)),
        ]

    async def _register(self) -> None:
        """Register, retrying with backoff for up to ``reconnect_timeout`` seconds."""
        end = time.monotonic() + self.reconnect_timeout
        delay = 0.05
        while True:
            try:
                return await self._register_once()
            except RedisUnavailable as exc:
                if time.monotonic() + delay > end:
                    raise
                log.warning("worker %s cannot register yet (%s); retrying", self.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _register_once(self) -> None:
        assert self._conn
        await self._conn.ensure()
        k = self.keys
        await self._conn.pipeline(
            [
                ("SADD", k.queues, k.queue),
                ("DEL", k.control(self.id)),
                ("HSET", k.worker(self.id), "started_ms", int(time.time() * 1000)),
                *self._beat_cmds("idle"),
            ]
        )

    async def _deregister(self) -> None:
        assert self._conn
        k = self.keys
        await self._conn.pipeline(
            [
                ("DEL", k.worker(self.id)),
                ("ZREM", k.workers, self.id),
                ("DEL", k.control(self.id)),
            ]
        )

    async def _heartbeat_loop(self) -> None:
        assert self._conn
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self._heartbeat()
            except RtqError as exc:
                log.warning("worker %s heartbeat failed: %s", self.id, exc)

    async def _heartbeat(self) -> None:
        """Registry refresh, lease renewal, cancellation check of in-flight requests, and a
        reap of requests whose (other) workers died: one round trip."""
        assert self._conn
        k = self.keys
        status = "stopping" if self._stopping else ("busy" if self._in_flight else "idle")
        cmds = self._beat_cmds(status)
        held = list(self._in_flight.values())
        if held:
            pairs_ = [x for p in held for x in (p.id, p.attempt)]
            cmds.append(
                Conn.script_cmd("renew", [k.running], [k.base, self.lease_ms, self.id, *pairs_])
            )
        cmds.append(
            Conn.script_cmd(
                "reap",
                [k.running, k.pending, k.wake, k.dead],
                [k.base, DEFAULT_MAX_ATTEMPTS, 100, self.retention],
            )
        )
        replies = await self._conn.pipeline(cmds)
        codes = replies[-2] if held else []
        for p, code in zip(held, codes):
            if code != 1 and p.request is not None and not p.request.cancelled:
                why = "was cancelled" if code == -1 else "lease was lost (taken over)"
                log.info("request %s %s: stopping its generation", p.id, why)
                p.request.cancelled = True
        reaped = replies[-1]
        cut = reaped.index("|")
        if len(reaped) > 1:
            log.warning(
                "worker %s reaped: requeued %s, dead-lettered %s",
                self.id,
                reaped[:cut],
                reaped[cut + 1 :],
            )

    # ---- the work loop --------------------------------------------------------------------
    def _pop_cmd(self, count: int, consumed: int) -> tuple[Any, ...]:
        k = self.keys
        return Conn.script_cmd(
            "pop",
            [k.pending, k.running, k.wake],
            [k.base, self.id, self.lease_ms, count, consumed, self.retention],
        )

    async def _slot(self, executor: ThreadPoolExecutor) -> None:
        """Fetch, process, deliver. A handler runs once per pop: after a connection error
        only the delivery is retried (COMPLETE is guarded by the lease, so a repeat is
        harmless). Nothing here lets an exception end the worker."""
        assert self._conn
        batch: list[_Popped] = []
        backoff = 0.05
        while True:
            if not batch:
                if self._stopping:
                    return
                try:
                    batch = await self._fetch()
                    backoff = 0.05
                except RtqError as exc:
                    log.warning("worker %s: %s; retrying in %.2f s", self.id, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                except Exception:
                    log.exception("worker %s: unexpected error while fetching", self.id)
                    await asyncio.sleep(backoff)
                    continue
                if not batch:
                    continue
            try:
                outcomes = await self._process(batch, executor)
            except Exception as exc:  # an adapter bug, not a handler error: fail the batch
                log.exception("worker %s: unexpected error while processing", self.id)
                outcomes = [
                    _invoke.Outcome(Status.FAILED, error=_invoke.describe(exc)) for _ in batch
                ]
            batch = await self._deliver_retrying(batch, outcomes)

    async def _deliver_retrying(
        self, batch: list[_Popped], outcomes: list[_invoke.Outcome], *, fetch: bool = True
    ) -> list[_Popped]:
        delay = 0.05
        while True:
            try:
                return await self._deliver(batch, outcomes, fetch=fetch)
            except RtqError as exc:  # Redis away or restarting: keep the outcomes, retry
                log.warning(
                    "worker %s: delivery failed (%s); retrying in %.2f s", self.id, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:
                log.exception("worker %s: cannot deliver; leases will expire and requeue", self.id)
                self._release(batch)
                return []

    def _release(self, batch: list[_Popped]) -> None:
        for p in batch:
            if self._in_flight.get(p.id) is p:
                del self._in_flight[p.id]

    def _blocking_fetch_cmd(self) -> Packed:
        """BLPOP on this worker's control list and the queue's wake list, then POP: the
        pop runs inside Redis as soon as the BLPOP returns (no second round trip)."""
        if self._fetch_cmd is None:
            k = self.keys
            self._fetch_cmd = pack(
                [
                    ("BLPOP", k.control(self.id), k.wake, self.block_timeout),
                    self._pop_cmd(self.batch_size, 1),
                ]
            )
        return self._fetch_cmd

    async def _fetch(self) -> list[_Popped]:
        """Block until work arrives (or a stop token / the block timeout), popping in the same
        round trip; then, when batching, gather more for up to ``batch_wait``."""
        assert self._conn
        replies = await self._conn.pipeline([self._blocking_fetch_cmd()])
        return await self._gather(await self._accept(replies[-1]))

    async def _gather(self, got: list[_Popped]) -> list[_Popped]:
        """Batching: wait up to ``batch_wait`` for more requests to fill the batch."""
        assert self._conn
        k = self.keys
        if self.batch_size > 1 and got and len(got) < self.batch_size and self.batch_wait > 0:
            end = time.monotonic() + self.batch_wait
            while len(got) < self.batch_size and not self._stopping:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    replies = await self._conn.pipeline(
                        [
                            ("BLPOP", k.control(self.id), k.wake, max(left, 0.001)),
                            self._pop_cmd(self.batch_size - len(got), 1),
                        ]
                    )
                    got += await self._accept(replies[-1])
                except RtqError as exc:  # keep what was already popped: it is ours to run
                    log.warning("worker %s: gathering a batch failed (%s)", self.id, exc)
                    break
        return got

    async def _accept(self, flat: list[Any]) -> list[_Popped]:
        """Parse POP's reply; malformed records fail right here (nothing else is touched)."""
        out: list[_Popped] = []
        self._queue_left = int(flat[-1]) if flat else 0
        for i in range(0, len(flat) - 1, 3):
            rid, kind, payload = flat[i], flat[i + 1], flat[i + 2]
            if kind == "gone":
                log.warning("dropped queued id %r: it has no record (TTL ran out or garbage)", rid)
                continue
            if kind != "run":
                log.debug("skipped queued id %r (status %s)", rid, payload)
                continue
            try:
                attempt, request = parse_job(rid, payload, JOB_FIELDS)
            except (MalformedRecord, ValueError, TypeError) as exc:
                attempt = payload[0] if isinstance(payload, list) and payload else ""
                stream = isinstance(payload, list) and len(payload) > 7 and payload[7] == "1"
                p = _Popped(rid, str(attempt), stream, None)
                self._in_flight[rid] = p
                log.warning("failing malformed request %r: %s", rid, exc)
                bad = _invoke.Outcome(Status.FAILED, error=f"MalformedRecord: {exc}")
                await self._deliver_retrying([p], [bad], fetch=False)
                continue
            p = _Popped(rid, attempt, request.stream, request)
            self._in_flight[rid] = p
            out.append(p)
        return out

    async def _process(
        self, batch: list[_Popped], executor: ThreadPoolExecutor
    ) -> list[_invoke.Outcome]:
        writers = [self._writer(p) for p in batch]
        if self.batch_size > 1:
            return await _invoke.run_batch(self.handler, writers, executor)
        return [await _invoke.run_single(self.handler, writers[0], executor)]

    def _writer(self, p: _Popped) -> _invoke.StreamWriter:
        assert p.request is not None
        send = self._sender(p) if p.stream else None
        return _invoke.StreamWriter(p.request, send, self.granularity, self.flush_interval)

    def _append_cmd(self, p: _Popped, entries: list[Entry]) -> tuple[Any, ...]:
        first = "1" if p.flushed == 0 else "0"
        p.flushed += 1
        triples = [x for e in entries for x in (e.seq, e.count, e.text)]
        return Conn.script_cmd(
            "append",
            [self.keys.request(p.id), self.keys.stream(p.id)],
            [self.id, p.attempt, self.retention, first, *triples],
        )

    def _sender(self, p: _Popped) -> Callable[[list[Entry]], Any]:
        async def send(entries: list[Entry]) -> int:
            assert self._conn
            return int((await self._conn.pipeline([self._append_cmd(p, entries)]))[0])

        return send

    def _complete_cmds(self, p: _Popped, o: _invoke.Outcome) -> list[Command]:
        k = self.keys
        cmds: list[Command] = []
        if o.tail and o.stopped == 1:
            cmds.append(self._append_cmd(p, o.tail))
        status, value, error = o.status, o.value, o.error
        if status is Status.CANCELLED:
            return cmds  # the cancel script already told the client
        try:
            if status is Status.COMPLETED:
                field, text, envelope = "result", _json(value), ""  # the script wraps it
            else:
                field, text = "error", error or ""
                envelope = encode_envelope(status, None, error)
        except EncodingError as exc:
            status, error = Status.FAILED, f"EncodingError: handler result: {exc}"
            envelope, field, text = encode_envelope(status, None, error), "error", error
        cmds.append(
            Conn.script_cmd(
                "complete",
                [k.request(p.id), k.result(p.id), k.stream(p.id), k.running, k.stats],
                [
                    self.id,
                    p.attempt,
                    p.id,
                    status.value,
                    field,
                    text,
                    envelope,
                    "1" if p.stream else "0",
                    self.retention,
                    o.pieces,
                ],
            )
        )
        return cmds

    async def _deliver(
        self, batch: list[_Popped], outcomes: list[_invoke.Outcome], *, fetch: bool = True
    ) -> list[_Popped]:
        """Complete every request of the batch and fetch the next one, in one round trip:
        while the queue is busy a plain POP follows the completions; when it was empty at
        the last pop, the blocking fetch does (``BLPOP wake`` + ``POP``). The completions
        are settled as soon as their replies arrive, before the fetch returns. Requests leave
        ``_in_flight`` (and so stop being renewed) only once delivered."""
        assert self._conn
        cmds: list[Command] = []
        completes: list[tuple[int, _invoke.Outcome, _Popped]] = []
        for p, o in zip(batch, outcomes):
            cmds += self._complete_cmds(p, o)
            if o.status is not Status.CANCELLED:
                completes.append((len(cmds) - 1, o, p))
        settled = False

        def settle(replies: list[Any]) -> None:
            nonlocal settled
            settled = True
            self._settle(batch, completes, replies)

        if not fetch or self._stopping:
            settle(await self._conn.pipeline(cmds) if cmds else [])
            return []
        busy = self._queue_left > 0
        if busy:
            if self._pop_next_cmd is None:
                self._pop_next_cmd = pack([self._pop_cmd(self.batch_size, 0)])
            cmds.append(self._pop_next_cmd)
        else:
            cmds.append(self._blocking_fetch_cmd())
        head = len(cmds) - 1
        if head == 0:
            settle([])
        try:
            replies = await self._conn.pipeline(cmds, head=head, on_head=settle)
        except RtqError as exc:
            if not settled:
                raise  # nothing was delivered: the caller retries the delivery
            log.warning("worker %s: fetching the next request failed (%s)", self.id, exc)
            return []
        got = await self._accept(replies[-1])
        return got if busy else await self._gather(got)

    def _settle(
        self,
        batch: list[_Popped],
        completes: list[tuple[int, _invoke.Outcome, _Popped]],
        replies: list[Any],
    ) -> None:
        """Account for delivered completions (counters, service-time estimate)."""
        self._release(batch)
        now = time.monotonic()
        for i, o, p in completes:
            if replies[i] != 1:
                log.info("request %s: completion discarded (lease lost or cancelled)", p.id)
                continue
            if o.status is Status.COMPLETED:
                self.processed += 1
            else:
                self.failed += 1
            ms = (now - p.started) * 1000
            ewma = self.service_ms_ewma
            self.service_ms_ewma = ms if ewma is None else 0.9 * ewma + 0.1 * ms

    def __repr__(self) -> str:
        state = (
            "running"
            if self.running or (self._stopped_evt and not self._stopped_evt.is_set())
            else "stopped"
        )
        return (
            f"<Worker {self.id or '(not started)'} queue={self.keys.queue!r} "
            f"concurrency={self.concurrency} {state} processed={self.processed}>"
        )

    def _repr_html_(self) -> str:
        import html

        body = html.escape(repr(self))
        return f"<div class='rtq-worker'><b>rtq worker</b> <code>{body}</code></div>"


def _json(value: Any) -> str:
    return dumps(value, "handler result")
