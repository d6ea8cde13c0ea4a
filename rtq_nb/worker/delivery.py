"""Delivering outcomes: stream writes (APPEND) and completions (COMPLETE), with the next fetch
pipelined behind the completions, so a busy worker pays one round trip per request."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rtq_nb.errors import EncodingError, RtqError
from rtq_nb.protocol import scripts
from rtq_nb.protocol.encoding import dumps, encode_envelope
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.signing import ResultKind
from rtq_nb.protocol.stream import LeaseResult
from rtq_nb.security.requests import RequestGuard
from rtq_nb.security.results import ResultSigner, new_run
from rtq_nb.transport.base import Transport
from rtq_nb.transport.blocking import SyncConn
from rtq_nb.transport.resp import Command
from rtq_nb.transport.retry import Backoff
from rtq_nb.worker.chunking import ChunkData
from rtq_nb.worker.fetch import Fetcher
from rtq_nb.worker.invoke import Outcome
from rtq_nb.worker.payloads import store_results
from rtq_nb.worker.state import Held, WorkerOptions, WorkerState
from rtq_nb.worker.streaming import SendFn, SendNowFn

__all__ = ["Delivery"]

log = logging.getLogger("rtq_nb.worker")


class Delivery:
    def __init__(
        self,
        conn: Transport,
        opts: WorkerOptions,
        state: WorkerState,
        fetcher: Fetcher,
        signer: ResultSigner | None = None,
    ) -> None:
        self.conn, self.opts, self.state, self.fetcher = conn, opts, state, fetcher
        self.keys = opts.keys
        self.signer = signer  # signs (and seals) result parts; None: neither
        self._wait: Command | None = None
        if opts.min_replicas:
            self._wait = ("WAIT", opts.min_replicas, max(1, int(opts.replica_timeout * 1000)))
        self.guard: RequestGuard | None = fetcher.guard
        self._sync: SyncConn | None = None  # for generators' threads (sender_now)
        self._sync_lock = threading.Lock()
        self._sync_closed = False

    # ---- streams ---------------------------------------------------------------------------
    def _append(self, p: Held, chunks: list[ChunkData]) -> Command:
        first = p.flushed == 0
        p.flushed += 1
        if first and p.trace is not None:
            p.trace.first_chunk()
        sg = self.signer
        if sg is None:
            quads = [(seq, n, text, "") for seq, n, text in chunks]
        else:
            run = self._run(p)
            quads = []
            for seq, n, text in chunks:
                stored = sg.chunk(p.id, seq, n, text) if p.sealed else text
                sig = sg.sign(p.id, p.attempt, ResultKind.DATA, stored, seq, n, run)
                quads.append((seq, n, stored, sig))
        return scripts.append(
            p.keys or self.keys,
            p.id,
            worker_id=self.state.id,
            attempt=p.attempt,
            retention_s=self.opts.retention_s,
            first=first,
            chunks=quads,
        )

    @staticmethod
    def _run(p: Held) -> str:
        """This run's random id (made at its first signed part)."""
        if not p.run:
            p.run = new_run()
        return p.run

    def sender_now(self, p: Held) -> SendNowFn | None:
        """A blocking write of ``p``'s stream for a sync generator's thread (its first piece
        goes out without a hop to the loop and back), on a synchronous connection made on
        first use; None on a Redis Cluster (the loop writes everything there)."""
        if getattr(self.conn, "cluster", False) is not False:
            return None

        def send_now(chunks: list[ChunkData]) -> LeaseResult:
            flushed = p.flushed
            try:
                return LeaseResult.of(self._sync_conn().pipeline([self._append(p, chunks)])[0])
            except BaseException:
                p.flushed = flushed  # not written (or not known to be): the loop sends it
                raise

        return send_now

    def _sync_conn(self) -> SyncConn:
        with self._sync_lock:
            if self._sync_closed:  # the worker stopped: a late generator thread uses the loop
                raise RtqError("the worker's synchronous connection is closed")
            if self._sync is None:
                self._sync = SyncConn(self.conn.url)
            return self._sync

    def close(self) -> None:
        """Close the synchronous connection, if one was made; no new one is made after."""
        with self._sync_lock:
            self._sync_closed, conn = True, self._sync
        if conn is not None:
            conn.close()

    def sender(self, p: Held) -> SendFn:
        """The write callback of ``p``'s stream writer."""

        async def send(chunks: list[ChunkData]) -> LeaseResult:
            return LeaseResult.of((await self.conn.pipeline([self._append(p, chunks)]))[0])

        return send

    # ---- completions -----------------------------------------------------------------------
    def _complete(self, p: Held, o: Outcome) -> list[Command]:
        cmds: list[Command] = []
        if o.tail and o.lease is LeaseResult.OK:
            cmds.append(self._append(p, o.tail))
        status, error = o.status, o.error
        if status is Status.CANCELLED:
            return cmds  # the cancel script already told the client
        sg, sig, end_sig = self.signer, "", ""
        try:
            if status is Status.COMPLETED:
                value, envelope = o.stored or dumps(o.value, "handler result"), ""  # wrapped
                if sg is not None:
                    run, n = self._run(p), o.pieces
                    value = sg.value(p.id, value) if p.sealed and not o.stored else value
                    sig = sg.sign(p.id, p.attempt, ResultKind.COMPLETED, value, run=run)
                    if p.stream:
                        end_sig = sg.sign(p.id, p.attempt, ResultKind.END, "", n, n, run)
        except EncodingError as exc:
            status, error = Status.FAILED, f"EncodingError: handler result: {exc}"
        if status is not Status.COMPLETED:
            value = error or ""
            if sg is not None:
                sig = sg.sign(p.id, p.attempt, ResultKind.FAILED, value, run=self._run(p))
            envelope = encode_envelope(status, None, value, sig)
        cmds.append(
            scripts.complete(
                p.keys or self.keys,
                p.id,
                worker_id=self.state.id,
                attempt=p.attempt,
                status=status,
                value=value,
                envelope=envelope,
                stream=p.stream,
                retention_s=self.opts.retention_s,
                pieces=o.pieces,
                sig=sig,
                end_sig=end_sig,
                counter=o.counter,
                usage=p.request.usage if p.request is not None else None,
            )
        )
        return cmds

    async def deliver(
        self, batch: list[Held], outcomes: list[Outcome], *, fetch: bool = True
    ) -> list[Held]:
        """Complete every request of the batch and fetch the next ones, in one round trip:
        while the queue is busy a plain POP follows the completions; when it was empty at
        the last pop, the blocking fetch does (``BLPOP wake`` + ``POP``). The completions
        are settled as soon as their replies arrive, before the fetch returns. Requests stop
        being held (and renewed) only once delivered. Returns the next batch."""
        cmds: list[Command] = []
        completes: list[tuple[int, Outcome, Held]] = []
        if self.opts.payloads is not None:  # large results by reference (once: retries skip)
            await store_results(batch, outcomes, self.opts, self.fetcher.sealer)
        for p, o in zip(batch, outcomes):
            cmds += self._complete(p, o)
            if o.status is not Status.CANCELLED:
                completes.append((len(cmds) - 1, o, p))
            if p.trace is not None:
                p.trace.delivering()
        if completes and self._wait is not None:  # durable once replicated
            cmds.append(self._wait)
        settled = False

        def settle(replies: list[Any]) -> None:
            nonlocal settled
            settled = True
            self._settle(batch, completes, replies)

        if not fetch or self.state.stopping:
            settle(await self.conn.pipeline(cmds) if cmds else [])
            return []
        sharded = self.state.layout.sharded
        busy = self.state.queue_left > 0
        head = len(cmds)
        if sharded:  # the sharded fetch's first step rides along when it does not block
            if not self.fetcher.shards.busy:  # (a cluster settles a split pipeline at its end)
                settle(await self.conn.pipeline(cmds) if cmds else [])
                try:
                    return await self.fetcher.fetch()
                except RtqError as exc:
                    log.warning("worker %s: fetching failed (%s)", self.state.id, exc)
                    return []
            cmds += self.fetcher.shards.first(self.opts.block_timeout)
        else:
            cmds.append(self.fetcher.next_cmd() if busy else self.fetcher.blocking_cmd())
        if head == 0:
            settle([])
        try:
            replies = await self.conn.pipeline(cmds, head=head, on_head=settle)
            if sharded:
                return await self.fetcher.gather(await self.fetcher.shards.finish(replies[head:]))
        except RtqError as exc:
            if not settled:
                raise  # nothing was delivered: the caller retries the delivery
            log.warning("worker %s: fetching the next request failed (%s)", self.state.id, exc)
            return []
        got = self.fetcher.accept(replies[-1])
        return got if busy else await self.fetcher.gather(got)

    async def deliver_retrying(self, batch: list[Held], outcomes: list[Outcome]) -> list[Held]:
        """:meth:`deliver`, riding out Redis outages of any length (outcomes are kept)."""
        backoff = None  # made on the first failure: most deliveries succeed at once
        while True:
            try:
                return await self.deliver(batch, outcomes)
            except RtqError as exc:  # Redis away or restarting: keep the outcomes, retry
                backoff = backoff or Backoff()
                await backoff.retry(exc, f"worker {self.state.id}: delivery")
            except Exception:
                log.exception(
                    "worker %s: cannot deliver; leases will expire and requeue", self.state.id
                )
                self.state.release(batch)
                for p, o in zip(batch, outcomes):
                    if p.trace is not None:
                        p.trace.finish(o.status.value, o.error, False)
                return []

    def _settle(
        self, batch: list[Held], completes: list[tuple[int, Outcome, Held]], replies: list[Any]
    ) -> None:
        """Account for delivered completions (counters, service-time estimate)."""
        self.state.release(batch)
        if completes and self._wait is not None:
            acked = replies[completes[-1][0] + 1]
            if isinstance(acked, int) and acked < self.opts.min_replicas:
                self.state.unreplicated += 1
                log.warning("completions reached %d of %d replicas", acked, self.opts.min_replicas)
        now = time.monotonic()
        for i, o, p in completes:
            if p.trace is not None:
                p.trace.finish(o.status.value, o.error, replies[i] == LeaseResult.OK, o.pieces)
            if replies[i] != LeaseResult.OK:
                log.info("request %s: completion discarded (lease lost or cancelled)", p.id)
                continue
            self.state.served(p, o.status is Status.COMPLETED, now)
            if self.guard is not None:
                self.guard.served(p.id)  # a replay of it is refused
        for p in batch:  # traced and not finished above: cancelled (the cancel told the client)
            if p.trace is not None:
                p.trace.finish(Status.CANCELLED.value, None, True)
