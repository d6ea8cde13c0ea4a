"""The queue monitor's numbers over time and its alerts (pure logic: no I/O, no ipywidgets).

:class:`MonitorSeries` keeps a bounded history of :class:`Point` s, one per refresh, each
computed from one :class:`~rtq_nb.client.QueueSnapshot` on the Redis server's clock: pending
by priority, requests running (leased) and in flight (as workers last reported), workers busy
and idle, throughput from the queue's finished counters, and queue-wait and duration
percentiles of the requests that finished within the last ``window_s`` seconds.
:func:`alerts` flags stalled workers, growing dead letters and an old pending request.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rtq_nb.client import FinishedSample, QueueSnapshot
from rtq_nb.protocol.history import lenient_int
from rtq_nb.protocol.registry import WorkerInfo

__all__ = [
    "Alert",
    "MonitorSeries",
    "Point",
    "alerts",
    "fmt_span",
    "percentile",
    "stalled",
    "summarize",
]

FINISHED = ("completed", "failed")  # the queue's counters whose sum is requests finished
STALL_BEATS = 3  # a busy worker silent for this many heartbeat intervals is stalled


def percentile(values: list[int], q: float) -> float | None:
    """The ``q``-th percentile (inclusive method); None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def fmt_span(seconds: float) -> str:
    """A window's length for a label: '60 s', '90 s', '5 min', '1.5 h'."""
    if seconds < 120 or seconds % 60:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


def summarize(
    now_ms: int, sample: list[FinishedSample], window_s: float, truncated: bool
) -> dict[str, Any]:
    """Throughput and latency of requests that finished within the last ``window_s`` seconds
    (``truncated``: the sample may not reach back that far; the span is then shortened)."""
    start = now_ms - int(window_s * 1000)
    if truncated and sample:
        start = max(start, min(s.created_ms for s in sample))
    span_s = max(0.001, (now_ms - start) / 1000)
    completed, failed = 0, 0
    waits: list[int] = []
    ttfts: list[int] = []
    durations: list[int] = []
    for s in sample:
        fin = lenient_int(s.finished_ms)
        if fin is None or fin < start:
            continue
        if s.status == "completed":
            completed += 1
            for target, value in ((waits, s.queue_wait_ms), (ttfts, s.ttft_ms)):
                if (v := lenient_int(value)) is not None:
                    target.append(v)
            if (v := lenient_int(s.duration_ms)) is not None:
                durations.append(v)
        elif s.status == "failed":
            failed += 1
    return {
        "window_s": window_s,
        "label": f"last {fmt_span(window_s)}",
        "span_s": span_s,
        "completed": completed,
        "failed": failed,
        "throughput": completed / span_s,
        "p50_queue_wait_ms": percentile(waits, 50),
        "p95_queue_wait_ms": percentile(waits, 95),
        "p50_ttft_ms": percentile(ttfts, 50),
        "p50_duration_ms": percentile(durations, 50),
        "p95_duration_ms": percentile(durations, 95),
    }


@dataclass(frozen=True)
class Point:
    """One refresh's numbers, all from one snapshot (``t_ms``: the server's clock)."""

    t_ms: int
    pending: dict[int, int]  # priority -> count
    running: int  # requests leased by workers (the running set)
    in_flight: int  # the workers' own count at their last heartbeat
    busy: int  # workers with in_flight > 0
    idle: int
    finished: int  # completed + failed, all time (the queue's counters)
    throughput: float | None  # finished per second over the last rate_s seconds
    wait_p50: float | None
    wait_p95: float | None
    duration_p50: float | None
    duration_p95: float | None
    dead: int
    workers: dict[str, int] = field(default_factory=dict)  # live worker id -> in flight

    @property
    def pending_total(self) -> int:
        return sum(self.pending.values())


@dataclass
class MonitorSeries:
    """The last ``maxlen`` points (a ring buffer); ``window_s``: the percentiles' window;
    ``rate_s``: throughput is the finished counters' growth over the points of the last
    ``rate_s`` seconds (at least the previous point's), so short refresh intervals do not
    turn whole requests into a saw-tooth."""

    maxlen: int = 120
    window_s: float = 60.0
    rate_s: float = 5.0
    points: deque[Point] = field(init=False)

    def __post_init__(self) -> None:
        if self.maxlen < 2 or not self.window_s > 0:
            raise ValueError("maxlen must be >= 2 and window_s > 0")
        self.points = deque(maxlen=self.maxlen)

    @property
    def last(self) -> Point | None:
        return self.points[-1] if self.points else None

    def add(self, snap: QueueSnapshot) -> Point:
        """Append the point of ``snap`` and return it."""
        prev = self.last
        if prev is not None and snap.now_ms <= prev.t_ms:
            self.points.clear()  # the clock went back (another server?): start over
            prev = None
        finished = sum(snap.counters.get(name, 0) for name in FINISHED)
        summary = summarize(snap.now_ms, snap.recent, self.window_s, snap.truncated)
        since = snap.now_ms - int(self.rate_s * 1000)
        base = next((p for p in self.points if p.t_ms >= since), prev)
        if base is None or finished < base.finished:
            throughput = (summary["completed"] + summary["failed"]) / summary["span_s"]
        else:
            throughput = (finished - base.finished) * 1000 / (snap.now_ms - base.t_ms)
        busy = sum(1 for w in snap.workers if w.in_flight > 0)
        point = Point(
            t_ms=snap.now_ms,
            pending=dict(snap.pending),
            running=snap.running,
            in_flight=sum(w.in_flight for w in snap.workers),
            busy=busy,
            idle=len(snap.workers) - busy,
            finished=finished,
            throughput=throughput,
            wait_p50=summary["p50_queue_wait_ms"],
            wait_p95=summary["p95_queue_wait_ms"],
            duration_p50=summary["p50_duration_ms"],
            duration_p95=summary["p95_duration_ms"],
            dead=snap.dead,
            workers={w.id: w.in_flight for w in snap.workers},
        )
        self.points.append(point)
        return point

    def times(self) -> list[float]:
        """Each point's time in seconds relative to the last one (<= 0)."""
        end = self.points[-1].t_ms if self.points else 0
        return [(p.t_ms - end) / 1000 for p in self.points]

    def column(self, name: str) -> list[float | None]:
        """One attribute of every point, oldest first."""
        return [getattr(p, name) for p in self.points]

    def priorities(self) -> list[int]:
        """Every priority pending in some point, highest first."""
        return sorted({p for pt in self.points for p in pt.pending}, reverse=True)

    def pending_of(self, priority: int) -> list[float | None]:
        return [float(pt.pending.get(priority, 0)) for pt in self.points]

    def vanished(self) -> dict[str, int]:
        """Workers seen within the last ``window_s`` seconds of points but not in the last
        one (their registry entry expired: stopped, crashed or stalled for 3 heartbeats), with
        their in flight when last seen."""
        if not self.points:
            return {}
        last = self.points[-1]
        since = last.t_ms - int(self.window_s * 1000)
        seen: dict[str, int] = {}
        for p in self.points:
            if p.t_ms >= since and p is not last:
                seen.update(p.workers)
        return {w: n for w, n in seen.items() if w not in last.workers}

    def dead_growth(self) -> int:
        """Dead letters added within the last ``window_s`` seconds of points."""
        if not self.points:
            return 0
        last = self.points[-1]
        since = last.t_ms - int(self.window_s * 1000)
        first = next((p for p in self.points if p.t_ms >= since), last)
        return max(0, last.dead - first.dead)


def stalled(w: WorkerInfo, now_ms: int) -> bool:
    """A busy worker whose last heartbeat is older than ``STALL_BEATS`` intervals."""
    busy = w.status == "busy" or w.in_flight > 0
    late = now_ms - w.last_seen_ms > STALL_BEATS * w.heartbeat_s * 1000
    return busy and w.heartbeat_s > 0 and w.last_seen_ms > 0 and late


@dataclass(frozen=True)
class Alert:
    level: str  # "warning" or "error"
    text: str


def alerts(
    snap: QueueSnapshot,
    series: MonitorSeries,
    oldest_pending_ms: int | None,
    *,
    max_pending_age_s: float = 30.0,
) -> list[Alert]:
    """What needs attention now: busy workers silent for ``STALL_BEATS`` heartbeats or gone
    from the registry while busy, dead letters growing (both within the series' window), the
    oldest pending request (its created_ms) waiting longer than ``max_pending_age_s``,
    pending work with no live worker, refused connections."""
    out: list[Alert] = []
    now = snap.now_ms
    for w in snap.workers:
        silent_ms = now - w.last_seen_ms
        if stalled(w, now):
            out.append(
                Alert(
                    "error",
                    f"worker {w.id} stalled: busy with {w.in_flight} request(s), no heartbeat "
                    f"for {silent_ms / 1000:.0f} s (every {w.heartbeat_s:g} s expected)",
                )
            )
    for wid, held in series.vanished().items():
        if held:
            out.append(
                Alert(
                    "error",
                    f"worker {wid} vanished while busy with {held} request(s): no heartbeat "
                    "(crashed or stalled); its requests are retried when their leases expire",
                )
            )
    grown = series.dead_growth()
    if grown:
        out.append(
            Alert(
                "error",
                f"dead letters growing: +{grown} in the last {fmt_span(series.window_s)} "
                f"({snap.dead} in total)",
            )
        )
    if oldest_pending_ms is not None and now - oldest_pending_ms > max_pending_age_s * 1000:
        out.append(
            Alert(
                "warning",
                f"oldest pending request waiting {(now - oldest_pending_ms) / 1000:.0f} s "
                f"(threshold {max_pending_age_s:g} s)",
            )
        )
    if snap.pending_total and not snap.workers:
        out.append(Alert("warning", f"{snap.pending_total} pending and no live worker"))
    refused = snap.counters.get("unauthenticated", 0)
    if refused:
        out.append(
            Alert(
                "error", f"{refused} refused (unauthenticated): clients without valid credentials"
            )
        )
    return out
