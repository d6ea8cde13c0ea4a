"""Worker: pulls requests by priority, runs a handler, delivers results or streams.

A composition of small parts sharing one :class:`~rtq_nb.worker.state.WorkerState`:
:class:`~rtq_nb.worker.leases.Leases` (registry, heartbeat, renewal, reaping, hand-back),
:class:`~rtq_nb.worker.fetch.Fetcher` (block on the queue, pop, gather batches),
:mod:`~rtq_nb.worker.invoke` (call the handler) and
:class:`~rtq_nb.worker.delivery.Delivery` (stream writes, completions with the next fetch
pipelined). Round trips per request: 1, plus one per stream flush. No polling.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

from rtq_nb.errors import ConfigurationError, RtqError
from rtq_nb.loop import portal
from rtq_nb.payloads import PayloadStore, payload_store
from rtq_nb.protocol.defaults import DEFAULT_RETENTION
from rtq_nb.protocol.keys import Keys, check_name
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.reprs import card
from rtq_nb.security.requests import RequestGuard
from rtq_nb.security.results import ResultSigner
from rtq_nb.security.settings import Security, coerce_security
from rtq_nb.tracing import tracing as make_tracing
from rtq_nb.transport import connect, resolve_url
from rtq_nb.transport.retry import Backoff
from rtq_nb.worker import invoke
from rtq_nb.worker.chunking import ChunkerSpec
from rtq_nb.worker.delivery import Delivery
from rtq_nb.worker.fetch import Fetcher
from rtq_nb.worker.leases import HOST, Leases
from rtq_nb.worker.payloads import admit_inputs
from rtq_nb.worker.state import Held, WorkerOptions, WorkerState
from rtq_nb.worker.streaming import StreamWriter
from rtq_nb.worker.threads import HandlerThreads

__all__ = ["Handler", "Worker"]

log = logging.getLogger("rtq_nb.worker")

Handler = Callable[..., Any]


class Worker:
    """Serves one queue with ``handler``.

    ``concurrency``: requests (or batches) processed at once by this process.
    ``batch_size`` > 1: the handler receives ``list[Request]`` gathered for up to
    ``batch_wait`` seconds. ``granularity``: ``"token"``, ``"sentence"``, ``"fixed:N"`` or a
    chunker. ``flush_interval``: stream pieces produced within this many seconds share one
    Redis write (the first piece always goes out at once). ``lease``: seconds a popped request
    stays assigned to this worker without a heartbeat renewing it. ``reconnect_timeout``: s
    to keep trying to register (once running, it rides out outages of any length).
    ``security``: a :class:`~rtq_nb.Security` (trusted client keys: then only signed requests
    run; a signing key; encryption keys); default from ``RTQ_*`` (README, Security).
    ``min_replicas``: after each batch of completions, ``WAIT`` until that many replicas
    have them (at most ``replica_timeout`` s), so a delivered result survives a failover.
    ``shards``: a sharded queue's shard count (None: as recorded in Redis). ``tracing``:
    OpenTelemetry spans per request (:mod:`rtq_nb.tracing`; ``RTQ_TRACING``). ``payloads``:
    large values by reference (a PayloadStore, a URL; ``RTQ_PAYLOAD_URL``; README)."""

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
        security: Security | None = None,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        shards: int | None = None,
        tracing: bool | None = None,
        payloads: PayloadStore | str | None = None,
    ) -> None:
        if not callable(handler):
            raise ConfigurationError(f"handler must be callable, got {handler!r}")
        self.opts = WorkerOptions(
            queue=queue,
            prefix=prefix,
            concurrency=concurrency,
            batch_size=batch_size,
            batch_wait=batch_wait,
            granularity=granularity,
            flush_interval=flush_interval,
            lease=lease,
            heartbeat=heartbeat,
            block_timeout=block_timeout,
            retention=retention,
            reconnect_timeout=reconnect_timeout,
            min_replicas=min_replicas,
            replica_timeout=replica_timeout,
            shards=shards,
            payloads=payload_store(payloads),  # None: every value inline
        )
        self.handler = handler
        self.security = coerce_security(security, "worker")
        self.tracer = make_tracing(tracing)  # None: off (opentelemetry is not imported)
        self.url = resolve_url(url)
        self.keys: Keys = self.opts.keys
        self.host = HOST
        self._base_id = check_name("worker id", worker_id) if worker_id else None
        self.state = WorkerState()
        self._runs = 0
        self._ready = threading.Event()
        self._future: concurrent.futures.Future[None] | None = None
        self._stopped_evt: asyncio.Event | None = None
        self._leases: Leases | None = None
        self._slots: list[asyncio.Task[None]] = []
        self._task: asyncio.Task[None] | None = None

    # ---- what the registry shows ------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.state.id

    @property
    def concurrency(self) -> int:
        return self.opts.concurrency

    @property
    def processed(self) -> int:
        return self.state.processed

    @property
    def failed(self) -> int:
        return self.state.failed

    @property
    def service_ms_ewma(self) -> float | None:
        return self.state.service_ms_ewma

    def health(self) -> dict[str, Any]:
        """``ready`` (registered, fetching, not stopping), ``live`` (a heartbeat succeeded
        within 3 intervals) and counters, for process managers (no I/O)."""
        evt = self._stopped_evt
        ready = self._ready.is_set() and evt is not None and not evt.is_set()
        return self.state.health(self.keys.queue, ready, self.opts.heartbeat)

    # ---- lifecycle --------------------------------------------------------------------------
    def _new_id(self) -> str:
        if self._base_id:
            return self._base_id if self._runs == 1 else f"{self._base_id}-{self._runs}"
        return f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def run(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until :meth:`astop` / :meth:`stop` is called; then finish in-flight work and
        deregister. ``on_ready`` is called once registered, before the first fetch."""
        self._runs += 1
        self.state.restart(self._new_id())
        self._stopped_evt = asyncio.Event()
        conn = connect(self.url)
        leases = self._leases = Leases(conn, self.opts, self.state)
        sec = self.security
        guard = (
            None
            if sec.trusted is None
            else RequestGuard(
                sec.trusted, self.keys.queue, max_skew=sec.max_skew, max_age=sec.max_age
            )
        )
        signer = (
            None
            if not (sec.signing_key or sec.sealer)
            else ResultSigner(sec.signing_key, sec.sealer)
        )
        fetcher = Fetcher(conn, self.opts, self.state, guard, sec.sealer, self.tracer)
        delivery = Delivery(conn, self.opts, self.state, fetcher, signer)
        executor = HandlerThreads(self.opts.concurrency, name=f"rtq-{self.id}")
        beat: asyncio.Task[None] | None = None
        try:
            await leases.register()
            self._ready.set()
            if on_ready is not None:
                on_ready()
            log.info("worker %s serving queue %r on %s", self.id, self.keys.queue, conn)
            beat = asyncio.create_task(leases.keep_alive())
            self._slots = [
                asyncio.create_task(self._slot(fetcher, delivery, executor))
                for _ in range(self.opts.concurrency)
            ]
            await asyncio.gather(*self._slots, return_exceptions=True)
        finally:
            if beat:
                leases.stop_beating()
                beat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beat
            executor.shutdown(wait=False)
            delivery.close()
            try:
                await leases.deregister()
            except RtqError as exc:
                log.warning("worker %s could not deregister: %s", self.id, exc)
            await conn.aclose()
            self._stopped_evt.set()
            n = (self.state.processed, self.state.failed)
            log.info("worker %s stopped (%d processed, %d failed)", self.id, *n)

    async def astop(self, drain_timeout: float | None = None) -> None:
        """Stop taking work, finish what is in flight, deregister; returns when done.

        With ``drain_timeout``, requests still running after that many seconds are handed
        back to the queue (their attempt is not counted) and their handlers are cancelled."""
        self.state.stopping = True
        if self._leases is not None and self.id:
            await self._leases.wake(self.opts.concurrency)
        if self._stopped_evt is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped_evt.wait()), drain_timeout)
        except asyncio.TimeoutError:
            if self._leases is not None:
                await self._leases.hand_back()
            for t in self._slots:
                t.cancel()
            await self._stopped_evt.wait()

    def start(self, timeout: float = 30.0) -> Worker:
        """Run in the background (rtq_nb's loop thread): for scripts and notebook cells.
        Returns once the worker is registered and taking requests."""
        if self.running:
            raise RtqError(f"worker {self.id} is already running; call stop() first")
        self._ready.clear()
        future = self._future = portal().submit(self.run())
        future.add_done_callback(lambda _: self._ready.set())  # start-up errors too
        if not self._ready.wait(timeout):
            raise RtqError(f"worker did not start within {timeout} s")
        if future.done():
            future.result()  # raises the start-up error
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
        task = self._task = asyncio.create_task(self.run())
        while not self._ready.is_set():
            if task.done():
                await task
            await asyncio.sleep(0.001)  # registration takes one round trip
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()
        if self._task is not None:
            await self._task

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the work loop ----------------------------------------------------------------------
    async def _slot(self, fetcher: Fetcher, delivery: Delivery, executor: HandlerThreads) -> None:
        """Fetch, process, deliver. A handler runs once per pop: after a connection error
        only the delivery is retried (COMPLETE is guarded by the lease, so a repeat is
        harmless). Nothing here lets an exception end the worker."""
        batch: list[Held] = []
        backoff = Backoff(cap=5.0)
        while True:
            if not batch:
                if self.state.stopping:
                    return
                try:
                    batch = await fetcher.fetch()
                    backoff.reset()
                except RtqError as exc:
                    await backoff.retry(exc, f"worker {self.id}: fetching")
                    continue
                except Exception:
                    log.exception("worker %s: unexpected error while fetching", self.id)
                    await backoff.retry(RtqError("unexpected error"), f"worker {self.id}")
                    continue
                if not batch:
                    continue
            runnable, bad = batch, await admit_inputs(batch, self.opts.payloads, fetcher.sealer)
            if bad:  # malformed: fail, never run
                runnable = [p for p in batch if p.request is not None]
            try:
                outcomes = await self._process(runnable, delivery, executor) if runnable else []
            except Exception as exc:  # an adapter bug, not a handler error: fail the batch
                log.exception("worker %s: unexpected error while processing", self.id)
                outcomes = [
                    invoke.Outcome(Status.FAILED, error=invoke.describe(exc)) for _ in runnable
                ]
            if bad:
                runnable = [*runnable, *bad]
                outcomes += [
                    invoke.Outcome(Status.FAILED, error=p.problem, counter=p.counter) for p in bad
                ]
            batch = await delivery.deliver_retrying(runnable, outcomes)

    async def _process(
        self, batch: list[Held], delivery: Delivery, executor: HandlerThreads
    ) -> list[invoke.Outcome]:
        o = self.opts
        writers = []
        for p in batch:
            assert p.request is not None
            send, now = (delivery.sender(p), delivery.sender_now(p)) if p.stream else (None, None)
            writers.append(StreamWriter(p.request, send, o.granularity, o.flush_interval, now))
        if o.batch_size > 1:  # each request has its spans; none is current (one handler call)
            return await invoke.run_batch(self.handler, writers, executor)
        return [await invoke.run_single(self.handler, writers[0], executor, batch[0].trace)]

    def __repr__(self) -> str:
        return _worker_repr(self)

    def _repr_html_(self) -> str:
        return _worker_repr(self, rich=True)


def _worker_repr(w: Worker, rich: bool = False) -> str:
    busy = w._stopped_evt is not None and not w._stopped_evt.is_set()
    state = "running" if w.running or busy else "stopped"
    ident, n = w.id or "(not started)", w.concurrency
    if not rich:
        return (
            f"<Worker {ident} queue={w.keys.queue!r} concurrency={n} {state} "
            f"processed={w.processed}>"
        )
    details = [
        f"queue {w.keys.queue}",
        f"{len(w.state.in_flight)}/{n} in flight",
        f"{w.processed} processed",
        f"{w.failed} failed",
    ]
    return card("rtq-worker", "rtq worker", ident, state, details)
