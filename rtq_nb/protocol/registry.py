"""Worker and client registry entries (Redis hashes with heartbeats): models and parsing."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

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
