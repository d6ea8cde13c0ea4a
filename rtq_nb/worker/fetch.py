"""Fetching work: block on the queue's wake list with POP right behind it (Redis runs the pop
as soon as the block returns: no second round trip, no polling), and, when batching, gather
more requests for up to ``batch_wait``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from rtq_nb.errors import MalformedRecord, RtqError
from rtq_nb.protocol import scripts
from rtq_nb.protocol.defaults import MIN_BLOCK
from rtq_nb.protocol.jobs import JOB_INDEX, parse_job
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.scripts import PopKind
from rtq_nb.security.requests import RequestGuard
from rtq_nb.security.results import sealed_token
from rtq_nb.security.sealing import Sealer, Unsealable
from rtq_nb.tracing import Tracing
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command, Packed, pack
from rtq_nb.worker.sharded import ShardedFetch
from rtq_nb.worker.state import Held, WorkerOptions, WorkerState

__all__ = ["Fetcher"]

_STREAM = JOB_INDEX["stream"]
_TRACE = JOB_INDEX["trace"]
_UNAUTH = "unauthenticated"  # the stats counter (and error prefix) of a refused request

log = logging.getLogger("rtq_nb.worker")


class Fetcher:
    def __init__(
        self,
        conn: Transport,
        opts: WorkerOptions,
        state: WorkerState,
        guard: RequestGuard | None = None,
        sealer: Sealer | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.conn, self.opts, self.state = conn, opts, state
        self.keys = opts.keys
        self.guard, self.sealer, self.tracing = guard, sealer, tracing
        self._blocking: Packed | None = None  # constant commands, packed once per run
        self._next: Packed | None = None
        self.taken = 0  # ids the last accepted POP took off the queue (every kind)
        self.shards = ShardedFetch(self)  # a sharded queue's fetch (state.layout.sharded)

    def _pop(self, count: int, consumed: int) -> Command:
        o = self.opts
        return scripts.pop(
            self.keys,
            self.state.id,
            lease_ms=o.lease_ms,
            count=count,
            consumed=consumed,
            retention_s=o.retention_s,
        )

    def _block(self, seconds: float) -> Command:
        return ("BLPOP", self.keys.control(self.state.id), self.keys.wake, seconds)

    def blocking_cmd(self) -> Packed:
        """BLPOP on this worker's control list and the queue's wake list, then POP."""
        if self._blocking is None:
            self._blocking = pack(
                [self._block(self.opts.block_timeout), self._pop(self.opts.batch_size, 1)]
            )
        return self._blocking

    def next_cmd(self) -> Packed:
        """A plain POP (the queue is busy: no need to block)."""
        if self._next is None:
            self._next = pack([self._pop(self.opts.batch_size, 0)])
        return self._next

    async def fetch(self) -> list[Held]:
        """Block until work arrives (or a stop token / the block timeout), popping in the same
        round trip; then, when batching, gather more."""
        if self.state.layout.sharded:
            return await self.gather(await self.shards.fetch(self.opts.block_timeout))
        replies = await self.conn.pipeline([self.blocking_cmd()])
        return await self.gather(self.accept(replies[-1]))

    async def gather(self, got: list[Held]) -> list[Held]:
        """Batching: wait up to ``batch_wait`` for more requests to fill the batch."""
        o = self.opts
        if o.batch_size <= 1 or not got or len(got) >= o.batch_size or o.batch_wait <= 0:
            return got
        if self.state.layout.sharded:
            return await self.shards.gather(got)
        end = time.monotonic() + o.batch_wait
        while len(got) < o.batch_size and not self.state.stopping:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                cmds = [self._block(max(left, MIN_BLOCK)), self._pop(o.batch_size - len(got), 1)]
                got += self.accept((await self.conn.pipeline(cmds))[-1])
            except RtqError as exc:  # keep what was already popped: it is ours to run
                log.warning("worker %s: gathering a batch failed (%s)", self.state.id, exc)
                break
        return got

    def accept(self, reply: Any, keys: Keys | None = None) -> list[Held]:
        """POP's reply (on ``keys``' shard; default: the queue's) as held requests. With a
        keyring, each request's signature is checked first: a refused one is held with its
        ``problem`` and counter ``unauthenticated`` (it fails, never running). A malformed
        record is held with its ``problem`` too (it fails alone); ids with no record or not
        pending are skipped."""
        popped, self.state.queue_left = scripts.parse_pop(reply)
        self.taken = len(popped)
        keys = keys or self.keys
        out: list[Held] = []
        for p in popped:
            if p.kind == PopKind.GONE:
                log.warning("dropped queued id %r: it has no record (TTL ran out or garbage)", p.id)
                continue
            if p.kind == PopKind.BAD:
                log.warning("dropped queued id %r: %s", p.id, p.payload)
                continue
            if p.kind != PopKind.RUN:
                log.debug("skipped queued id %r (status %s)", p.id, p.payload)
                continue
            held = self._admit(p.id, p.payload)
            held.keys = keys
            if self.tracing is not None and held.request is not None:
                self._trace(held, p.payload)
            self.state.in_flight[held.id] = held
            out.append(held)
        return out

    def _trace(self, held: Held, payload: list[str]) -> None:
        """Tracing: the request's queue wait (ended now) and its run span (opened now)."""
        assert self.tracing is not None and held.request is not None
        held.trace = self.tracing.job(
            request_id=held.id,
            queue=self.keys.queue,
            attempt=held.attempt,
            created_ms=held.request.created_ms,
            field=payload[_TRACE],
            worker_id=self.state.id,
        )

    def _admit(self, rid: str, popped: Any) -> Held:
        """Check (signature), parse and open (encrypted input) one leased request."""
        payload = popped if isinstance(popped, list) else []
        attempt = str(payload[0] if payload else "")
        stream = len(payload) > _STREAM and payload[_STREAM] == "1"
        if self.guard is not None:
            why = self.guard.check(rid, payload)
            if why is not None:
                log.warning("refusing request %r: unauthenticated: %s", rid, why)
                return Held(rid, attempt, stream, None, f"unauthenticated: {why}", _UNAUTH)
        try:
            attempt, request = parse_job(rid, payload)
        except (MalformedRecord, ValueError, TypeError) as exc:
            log.warning("failing malformed request %r: %s", rid, exc)
            return Held(rid, attempt, stream, None, f"MalformedRecord: {exc}")
        held = Held(rid, attempt, request.stream, request)
        token = sealed_token(request.input)
        if token is not None:
            if self.sealer is None:
                held.request, held.problem = (
                    None,
                    (
                        "the input is encrypted and this worker holds no encryption key "
                        "(set RTQ_ENCRYPTION_KEYS or --encryption-keys)"
                    ),
                )
                return held
            try:
                request.input = json.loads(self.sealer.open(token, f"{rid}|in"))
            except (Unsealable, ValueError) as exc:
                held.request, held.problem = None, f"cannot open the encrypted input: {exc}"
                return held
            held.sealed = True
        return held
