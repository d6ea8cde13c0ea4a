"""Worker and client registry entries (Redis hashes with heartbeats): the commands that write
them, and their typed views (pure: no I/O).

A worker's entry expires three heartbeats after its last one; the workers zset is trimmed of
members silent for ten heartbeats. A client's entry expires after the client's retention.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from rtq_nb.protocol.keys import Keys

__all__ = [
    "ClientInfo",
    "WorkerInfo",
    "client_refresh",
    "parse_workers",
    "worker_deregister",
    "worker_heartbeat",
    "worker_register",
    "worker_wake",
]

Command = tuple[Any, ...]
STOP_TOKEN = "stop"

log = logging.getLogger("rtq_nb.protocol.registry")


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's registry entry, as last reported by its heartbeat."""

    id: str
    queue: str = ""
    host: str = ""
    pid: int = 0
    status: str = "unknown"
    concurrency: int = 1
    batch_size: int = 1
    in_flight: int = 0
    processed: int = 0
    failed: int = 0
    started_ms: int = 0
    last_seen_ms: int = 0
    heartbeat_s: float = 0.0
    service_ms_ewma: float = 0.0
    alive: bool = True
    error: str | None = None
    raw: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_fields(cls, worker_id: str, f: dict[str, str]) -> WorkerInfo:
        if not f:
            return cls(id=worker_id, status="gone", alive=False)
        try:
            return cls(
                id=worker_id,
                queue=f.get("queue", ""),
                host=f.get("host", ""),
                pid=_int(f.get("pid")),
                status=f.get("status", "unknown"),
                concurrency=_int(f.get("concurrency"), 1),
                batch_size=_int(f.get("batch_size"), 1),
                in_flight=_int(f.get("in_flight")),
                processed=_int(f.get("processed")),
                failed=_int(f.get("failed")),
                started_ms=_int(f.get("started_ms")),
                last_seen_ms=_int(f.get("last_seen_ms")),
                heartbeat_s=float(f.get("heartbeat_s") or 0),
                service_ms_ewma=float(f.get("service_ms_ewma") or 0),
                raw=dict(f),
            )
        except (TypeError, ValueError) as exc:  # never let a bad entry break a view
            return cls(id=worker_id, status="malformed", alive=False, error=str(exc), raw=dict(f))

    def _repr_html_(self) -> str:
        e = html.escape
        return (
            f"<div class='rtq-worker'><b>worker</b> <code>{e(self.id)}</code> on {e(self.host)} "
            f"&middot; {e(self.status)} &middot; {self.in_flight}/{self.concurrency} in flight "
            f"&middot; {self.processed} processed, {self.failed} failed</div>"
        )


def parse_workers(ids: list[str], replies: list[dict[str, str]]) -> list[WorkerInfo]:
    """Registry entries for ``ids`` (a vanished hash means the worker's TTL ran out)."""
    return [
        w
        for w in (WorkerInfo.from_fields(i, r) for i, r in zip(ids, replies))
        if w.alive or w.status == "malformed"
    ]


def _flat(entry: dict[str, Any]) -> list[Any]:
    return [x for kv in entry.items() for x in kv]


def worker_heartbeat(k: Keys, entry: dict[str, Any], heartbeat_s: float) -> list[Command]:
    """Refresh a worker's entry (``entry["id"]`` names it) and trim silent members."""
    wid, now = entry["id"], int(time.time() * 1000)
    return [
        ("HSET", k.worker(wid), *_flat(entry)),
        ("EXPIRE", k.worker(wid), max(2, int(heartbeat_s * 3 + 1))),
        ("ZADD", k.workers, now, wid),
        ("ZREMRANGEBYSCORE", k.workers, "-inf", now - int(heartbeat_s * 10_000)),
    ]


def worker_register(k: Keys, entry: dict[str, Any], heartbeat_s: float) -> list[Command]:
    """Announce the queue, clear stale stop tokens, write the first entry."""
    return [
        ("SADD", k.queues, k.queue),
        ("DEL", k.control(entry["id"])),
        *worker_heartbeat(k, entry, heartbeat_s),
    ]


def worker_deregister(k: Keys, worker_id: str) -> list[Command]:
    return [
        ("DEL", k.worker(worker_id)),
        ("ZREM", k.workers, worker_id),
        ("DEL", k.control(worker_id)),
    ]


def worker_wake(k: Keys, worker_id: str, count: int) -> list[Command]:
    """Stop tokens that wake ``count`` blocked fetches of a worker at once."""
    ctl = k.control(worker_id)
    return [("LPUSH", ctl, *[STOP_TOKEN] * count), ("EXPIRE", ctl, 60)]


def client_refresh(
    k: Keys, client_id: str, *, host: str, pid: int, submitted: int, retention_s: int
) -> list[Command]:
    """A client's registry refresh (piggy-backed on a submit every few seconds)."""
    now = int(time.time() * 1000)
    ck = k.client(client_id)
    return [
        ("ZADD", k.clients, now, client_id),
        (
            "HSET",
            ck,
            "id",
            client_id,
            "queue",
            k.queue,
            "host",
            host,
            "pid",
            pid,
            "last_seen_ms",
            now,
            "submitted",
            submitted,
        ),
        ("EXPIRE", ck, retention_s),
        ("ZREMRANGEBYSCORE", k.clients, "-inf", now - retention_s * 1000),  # hashes expired
    ]


@dataclass(frozen=True)
class ClientInfo:
    """One client seen on a queue (``alive`` False once its registry hash expired)."""

    id: str
    queue: str | None
    host: str | None
    pid: int | None
    submitted: int | None
    last_seen_ms: int | None
    alive: bool

    @classmethod
    def from_fields(cls, client_id: str, score: Any, f: dict[str, str]) -> ClientInfo:
        return cls(
            id=client_id,
            queue=f.get("queue") or None,
            host=f.get("host") or None,
            pid=_int(f.get("pid"), 0) or None,
            submitted=_int(f.get("submitted"), -1) if f.get("submitted") else None,
            last_seen_ms=_int(f.get("last_seen_ms"), 0) or _int(score, 0) or None,
            alive=bool(f),
        )
