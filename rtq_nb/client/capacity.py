"""How many workers a queue needs: load estimated from a queue snapshot, and the
recommendation (Little's law), the number the metrics exporter publishes for autoscalers.

With λ the arrival rate (requests/s over the window, from the history's creation times),
S the mean service time (s, from the durations of requests completed in the window, else the
live workers' estimates), P the requests pending now, T the target queue wait (s) and c the
slots of one worker (concurrency x batch size)::

    busy slots   = λ · S            (Little's law: requests in service = arrival rate x time)
    backlog      = P · S / T        (slots that clear what is queued within T)
    workers      = ceil((λ·S + P·S/T) / c)

so a steady load gets enough slots to keep up, and a backlog is worked off within the target
wait. Nothing arriving and nothing pending recommends 0 (scale to zero; let the autoscaler's
minimum decide). Pure: no I/O.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.history import lenient_int

if TYPE_CHECKING:
    from rtq_nb.client.inspect import QueueSnapshot

__all__ = ["Capacity", "Load", "estimate_load", "recommend"]


@dataclass(frozen=True)
class Load:
    """What a recommendation is computed from."""

    arrival_rate: float  # requests/s over the window
    service_s: float  # mean service time, s
    pending: int
    slots_per_worker: int
    window_s: float  # the span the rate was measured over (shorter when the sample is)

    @property
    def offered_slots(self) -> float:
        """λ·S: slots busy in steady state (Erlangs)."""
        return self.arrival_rate * self.service_s


def estimate_load(snap: QueueSnapshot, window_s: float = 60.0) -> Load:
    """The load of a queue from its snapshot (its sample of recent requests and its live
    workers)."""
    if not window_s > 0:
        raise ConfigurationError(f"window must be a positive number of seconds, got {window_s!r}")
    start = snap.now_ms - int(window_s * 1000)
    created = [s.created_ms for s in snap.recent if s.created_ms >= start]
    span_s = window_s
    if snap.truncated and created and len(created) == len(snap.recent):
        span_s = max(0.001, (snap.now_ms - min(created)) / 1000)  # the sample is shorter
    durations = [
        d
        for s in snap.recent
        if s.status == "completed"
        and (lenient_int(s.finished_ms) or 0) >= start
        and (d := lenient_int(s.duration_ms)) is not None
    ]
    alive = [w for w in snap.workers if w.alive]
    if durations:
        service_s = statistics.fmean(durations) / 1000
    elif alive:
        service_s = statistics.fmean(w.service_ms_ewma for w in alive) / 1000
    else:
        service_s = 0.0
    slots = [max(1, w.concurrency) * max(1, w.batch_size) for w in alive]
    return Load(
        arrival_rate=len(created) / span_s,
        service_s=service_s,
        pending=snap.pending_total,
        slots_per_worker=int(statistics.median(slots)) if slots else 1,
        window_s=span_s,
    )


def recommend(load: Load, target_wait: float) -> int:
    """Workers needed to keep up and to bring the queue wait under ``target_wait`` seconds."""
    if not target_wait > 0 or math.isinf(target_wait):
        raise ConfigurationError(
            f"target_wait must be a positive number of seconds, got {target_wait!r}"
        )
    if load.pending == 0 and load.arrival_rate == 0:
        return 0
    service = load.service_s
    if service <= 0:  # nothing measured yet: at least one worker to learn from
        return 1
    slots = load.offered_slots + load.pending * service / target_wait
    return max(1, math.ceil(slots / max(1, load.slots_per_worker) - 1e-9))


class Capacity:
    """``load()`` and ``recommend_workers()`` (mixed into :class:`~rtq_nb.AsyncClient`)."""

    if TYPE_CHECKING:

        async def snapshot(
            self, queue: str | None = None, *, sample: int = 2000
        ) -> QueueSnapshot: ...

    async def load(
        self, queue: str | None = None, *, window: float = 60.0, sample: int = 2000
    ) -> Load:
        """Arrival rate, service time, pending and slots per worker of ``queue`` (2 round
        trips of plain reads: a monitor role may call it)."""
        return estimate_load(await self.snapshot(queue, sample=sample), window)

    async def recommend_workers(
        self,
        target_wait: float = 5.0,
        queue: str | None = None,
        *,
        window: float = 60.0,
        sample: int = 2000,
    ) -> int:
        """Workers needed to keep up with ``queue`` and keep its wait under ``target_wait``
        seconds (Little's law; see :mod:`rtq_nb.client.capacity`). ``rtq-nb metrics``
        publishes the same number as ``rtq_recommended_workers``."""
        return recommend(await self.load(queue, window=window, sample=sample), target_wait)
