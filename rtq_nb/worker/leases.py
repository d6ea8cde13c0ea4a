"""A worker's presence and its leases: registration, the heartbeat (registry refresh, lease
renewal, cancellation check, reaping of dead workers' requests: one round trip), handing
requests back on a forced stop, and deregistration."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from rtq_nb.errors import ConfigurationError, RedisOutOfMemory, RedisUnavailable, RtqError
from rtq_nb.protocol import registry, scripts
from rtq_nb.protocol.shards import CONFIG_SHARDS, Layout, parse_config
from rtq_nb.protocol.stream import LeaseResult
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command
from rtq_nb.transport.retry import Backoff
from rtq_nb.worker.state import Held, WorkerOptions, WorkerState

__all__ = ["Leases"]

log = logging.getLogger("rtq_nb.worker")
HOST = socket.gethostname()


class Leases:
    def __init__(self, conn: Transport, opts: WorkerOptions, state: WorkerState) -> None:
        self.conn, self.opts, self.state = conn, opts, state
        self.keys = opts.keys
        self._stop: asyncio.Event | None = None

    def _entry(self, status: str) -> dict[str, Any]:
        s, o = self.state, self.opts
        return {
            "id": s.id,
            "queue": self.keys.queue,
            "host": HOST,
            "pid": os.getpid(),
            "status": status,
            "concurrency": o.concurrency,
            "batch_size": o.batch_size,
            "in_flight": len(s.in_flight),
            "heartbeat_s": o.heartbeat,
            "last_seen_ms": int(time.time() * 1000),
            "processed": s.processed,
            "failed": s.failed,
            "service_ms_ewma": round(s.service_ms_ewma or 0.0, 3),
        }

    async def register(self) -> None:
        """Register and learn the queue's layout (its shards; a worker given ``shards``
        records them when the queue has none yet, and refuses to serve a queue sharded
        otherwise), retrying with backoff for up to ``reconnect_timeout`` seconds."""
        backoff = Backoff(timeout=self.opts.reconnect_timeout)
        entry = {**self._entry("idle"), "started_ms": int(time.time() * 1000)}
        k, want = self.keys, self.opts.shards
        while True:
            try:
                cmds = registry.worker_register(k, entry, self.opts.heartbeat)
                if want is not None:
                    cmds.append(("HSETNX", k.config, CONFIG_SHARDS, want))
                cmds.append(("HGET", k.config, CONFIG_SHARDS))
                shards = parse_config((await self.conn.pipeline(cmds))[-1], k.config)
                if want is not None and shards != want:
                    raise ConfigurationError(
                        f"queue {k.queue!r} has {shards} shard(s) ({k.config}) but this worker "
                        f"was started with shards={want}: start it with shards={shards} (or "
                        "leave shards unset to follow the queue)"
                    )
                self.state.layout = Layout(k.prefix, k.queue, shards)
                if shards > 1:
                    log.info("worker %s: queue %r has %d shards", self.state.id, k.queue, shards)
                self.state.last_beat_ok = time.monotonic()
                return
            except RedisOutOfMemory as exc:  # serve anyway: draining is what frees memory
                log.warning("worker %s starts unregistered: %s", self.state.id, exc)
                return
            except RedisUnavailable as exc:
                await backoff.retry(exc, f"worker {self.state.id}: registering")

    async def deregister(self) -> None:
        await self.conn.pipeline(registry.worker_deregister(self.keys, self.state.id))

    async def wake(self, count: int) -> None:
        """Wake this worker's blocked fetches at once (a stop)."""
        try:
            await self.conn.pipeline(registry.worker_wake(self.keys, self.state.id, count))
        except RtqError as exc:
            log.warning("could not wake worker %s fetches: %s", self.state.id, exc)

    async def keep_alive(self) -> None:
        """The heartbeat loop, until :meth:`stop_beating` (or a cancel). A flag, not only a
        cancel: on Python < 3.12 ``asyncio.wait_for`` (connecting) can swallow a cancel that
        races with its result, and the loop would beat on forever."""
        self._stop = asyncio.Event()
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                await asyncio.wait({stopped}, timeout=self.opts.heartbeat)
                if self._stop.is_set():
                    return
                try:
                    await self.beat()
                    self.state.last_beat_ok = time.monotonic()
                except RtqError as exc:
                    log.warning("worker %s heartbeat failed: %s", self.state.id, exc)
        finally:
            stopped.cancel()

    def stop_beating(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def beat(self) -> None:
        """Registry refresh, lease renewal, cancellation check of in-flight requests, and a
        reap of requests whose (other) workers died: one round trip."""
        s, layout = self.state, self.state.layout
        status = "stopping" if s.stopping else ("busy" if s.in_flight else "idle")
        cmds = registry.worker_heartbeat(self.keys, self._entry(status), self.opts.heartbeat)
        groups: dict[int, list[Held]] = {}  # held requests by shard (one RENEW each)
        for p in s.in_flight.values():
            groups.setdefault(p.keys.shard if p.keys else 0, []).append(p)
        renews = len(cmds)
        for shard, held in groups.items():
            pairs = [(p.id, p.attempt) for p in held]
            k = layout.all[shard] if shard < layout.shards else self.keys
            cmds.append(scripts.renew(k, s.id, lease_ms=self.opts.lease_ms, held=pairs))
        reaps = len(cmds)
        cmds += [scripts.reap(k, retention_s=self.opts.retention_s) for k in layout.all]
        replies = await self.conn.pipeline(cmds)
        for i, held in enumerate(groups.values()):
            for p, code in zip(held, scripts.parse_renew(replies[renews + i])):
                if code is not LeaseResult.OK and p.request is not None and not p.request.cancelled:
                    why = "was cancelled" if code is LeaseResult.CANCELLED else "lease was lost"
                    log.info("request %s %s: stopping its generation", p.id, why)
                    p.request.cancelled = True
        wake: list[Command] = []
        for k, reply in zip(layout.all, replies[reaps:]):
            requeued, dead = scripts.parse_reap(reply)
            if requeued or dead:
                log.warning("worker %s reaped: requeued %s, dead-lettered %s", s.id, requeued, dead)
            wake += layout.wake_after(k, len(requeued))
        if wake:
            await self.conn.pipeline(wake)

    async def hand_back(self) -> None:
        """Return every held request to the queue (its attempt is not counted) and tell the
        handlers to stop."""
        held = list(self.state.in_flight.values())
        cmds = [
            scripts.handback(p.keys or self.keys, p.id, worker_id=self.state.id, attempt=p.attempt)
            for p in held
        ]
        if cmds:
            done = await self.conn.pipeline(cmds)
            log.warning("worker %s handed back %d request(s) on stop", self.state.id, sum(done))
            wake = [
                c
                for p, ok in zip(held, done)
                if ok
                for c in self.state.layout.wake_after(p.keys or self.keys)
            ]
            if wake:
                await self.conn.pipeline(wake)
        for p in held:
            if p.request is not None:
                p.request.cancelled = True
