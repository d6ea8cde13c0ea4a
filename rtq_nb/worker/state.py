"""What a running worker knows: its options (validated once) and its mutable state: the
requests it holds under a lease, counters, and the service-time estimate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.payloads import PayloadStore
from rtq_nb.protocol.defaults import DEFAULT_RETENTION
from rtq_nb.protocol.encoding import check_retention
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Request
from rtq_nb.protocol.shards import Layout, check_shards
from rtq_nb.tracing import JobTrace
from rtq_nb.worker.chunking import ChunkerSpec, make_chunker

__all__ = ["Held", "WorkerOptions", "WorkerState"]


@dataclass(frozen=True)
class WorkerOptions:
    """A worker's settings (see :class:`~rtq_nb.Worker` for what each means)."""

    queue: str = "default"
    prefix: str = "rtq"
    concurrency: int = 1
    batch_size: int = 1
    batch_wait: float = 0.005
    granularity: ChunkerSpec = "token"
    flush_interval: float = 0.02
    lease: float = 6.0
    heartbeat: float = 2.0
    block_timeout: float = 2.0
    retention: float = DEFAULT_RETENTION
    reconnect_timeout: float = 30.0
    min_replicas: int = 0  # WAIT for this many replicas after completions (0: off)
    replica_timeout: float = 1.0
    shards: int | None = None  # a sharded queue's shard count (None: as the queue's config says)
    payloads: PayloadStore | None = None  # large inputs and results by reference (None: inline)
    lease_ms: int = field(init=False)  # derived once: read on every request
    retention_s: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lease_ms", int(self.lease * 1000))
        object.__setattr__(self, "retention_s", check_retention(self.retention))
        for name, val in (("concurrency", self.concurrency), ("batch_size", self.batch_size)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigurationError(f"{name} must be an int >= 1, got {val!r}")
        m = self.min_replicas
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ConfigurationError(f"min_replicas must be an int >= 0, got {m!r}")
        if self.lease <= self.heartbeat:
            raise ConfigurationError(
                f"lease ({self.lease} s) must be longer than heartbeat ({self.heartbeat} s)"
            )
        make_chunker(self.granularity)  # validate now, not at the first request
        if self.shards is not None:
            check_shards(self.shards)

    @property
    def keys(self) -> Keys:
        return Keys(self.prefix, self.queue)


class Held:
    """One popped request, held under its lease token (worker id + attempt, as stored)."""

    __slots__ = (
        "attempt",
        "counter",
        "flushed",
        "id",
        "keys",
        "problem",
        "request",
        "run",
        "sealed",
        "started",
        "stream",
        "trace",
    )

    def __init__(
        self,
        rid: str,
        attempt: str,
        stream: bool,
        request: Request | None,
        problem: str = "",
        counter: str = "",
        keys: Keys | None = None,
    ) -> None:
        self.id = rid
        self.keys = keys  # the keys of the shard it was popped from (set by the fetcher)
        self.attempt = attempt
        self.stream = stream
        self.request = request  # None: malformed or refused (``problem`` says why); never run
        self.problem = problem
        self.counter = counter  # a stats counter its failure also counts ("unauthenticated")
        self.sealed = False  # its input was encrypted: so is its output
        self.run = ""  # this run's random id, signed into its result parts (made when signing)
        self.flushed = 0  # stream writes so far
        self.started = time.monotonic()
        self.trace: JobTrace | None = None  # its spans, when the worker traces


@dataclass
class WorkerState:
    """Mutable state of one run, shared by the worker's parts."""

    id: str = ""
    in_flight: dict[str, Held] = field(default_factory=dict)
    stopping: bool = False
    queue_left: int = 0  # requests still pending at the last pop
    processed: int = 0
    failed: int = 0
    service_ms_ewma: float | None = None
    last_beat_ok: float | None = None  # monotonic time of the last successful heartbeat
    unreplicated: int = 0  # completions WAIT did not confirm on min_replicas replicas
    layout: Layout = field(default_factory=Layout)  # the queue's shards (read at registration)

    def restart(self, worker_id: str) -> None:
        """A new run under ``worker_id``: counters carry over, the rest starts afresh."""
        self.id, self.in_flight, self.stopping, self.queue_left = worker_id, {}, False, 0

    def release(self, batch: list[Held]) -> None:
        """Stop holding (and renewing) these requests."""
        for p in batch:
            if self.in_flight.get(p.id) is p:
                del self.in_flight[p.id]

    def served(self, held: Held, ok: bool, now: float) -> None:
        """Count a delivered request and fold its service time into the estimate."""
        if ok:
            self.processed += 1
        else:
            self.failed += 1
        ms = (now - held.started) * 1000
        ewma = self.service_ms_ewma
        self.service_ms_ewma = ms if ewma is None else 0.9 * ewma + 0.1 * ms

    def health(self, queue: str, ready: bool, heartbeat: float) -> dict[str, Any]:
        """What :meth:`Worker.health <rtq_nb.Worker.health>` reports."""
        age = None if self.last_beat_ok is None else time.monotonic() - self.last_beat_ok
        return {
            "id": self.id,
            "queue": queue,
            "ready": 1.0 if ready and not self.stopping else 0.0,
            "live": 1.0 if age is not None and age < 3 * heartbeat else 0.0,
            "heartbeat_age_seconds": -1.0 if age is None else age,
            "processed": float(self.processed),
            "failed": float(self.failed),
            "in_flight": float(len(self.in_flight)),
            "service_seconds": (self.service_ms_ewma or 0.0) / 1000,
        }
