"""Prometheus metrics of queues (``rtq-nb metrics``) and of one worker (``rtq-nb worker
--metrics-port``): an adapter over the public client and worker APIs, read on each scrape.

Queue metrics (labels ``queue``; ``priority`` on pending) come from one
:meth:`~rtq_nb.AsyncClient.snapshot` per queue per scrape (2 round trips of plain reads: a
monitor ACL user may run the exporter). Histograms of queue wait, duration and time to first
token observe each finished request once, from the snapshot's sample of the most recent
requests (``sample`` per scrape: at higher rates, scrape more often or raise it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from rtq_nb.client.capacity import estimate_load, recommend
from rtq_nb.client.inspect import QueueSnapshot
from rtq_nb.protocol.history import lenient_int

__all__ = ["BUCKETS", "QueueCollector", "WorkerCollector"]

log = logging.getLogger("rtq_nb.ops")

# seconds: from a fast echo (sub-ms) to a long generation (minutes)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_TIMINGS = (
    ("queue_wait", "queue_wait_ms", "Time from submission to a worker starting it"),
    ("duration", "duration_ms", "Time a worker spent on it (start to result)"),
    ("ttft", "ttft_ms", "Time from submission to its first streamed chunk"),
)
REMEMBERED = 200_000  # finished request ids already observed (bounded)


class _Histogram:
    """Cumulative bucket counts and sum of observed values (seconds)."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        i = next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
        self.counts[i] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out


class QueueCollector(Collector):
    """Metrics of ``queues`` read through ``snapshot(queue)`` (e.g. ``Client.snapshot``)."""

    def __init__(
        self,
        snapshot: Callable[[str], QueueSnapshot],
        queues: Callable[[], Sequence[str]],
        *,
        target_wait: float = 5.0,
        window: float = 60.0,
    ) -> None:
        self._snapshot, self._queues = snapshot, queues
        self.target_wait, self.window = target_wait, window
        self._hists: dict[tuple[str, str], _Histogram] = {}
        self._finished: dict[tuple[str, str], int] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()

    def collect(self) -> Iterator[Any]:
        g = {
            "pending": GaugeMetricFamily(
                "rtq_pending", "Requests waiting, by priority", labels=["queue", "priority"]
            ),
            "running": GaugeMetricFamily("rtq_running", "Requests leased", labels=["queue"]),
            "workers": GaugeMetricFamily("rtq_workers", "Live workers", labels=["queue"]),
            "slots": GaugeMetricFamily(
                "rtq_worker_slots", "Requests live workers can run at once", labels=["queue"]
            ),
            "rate": GaugeMetricFamily(
                "rtq_arrival_rate", "Requests submitted per second (window)", labels=["queue"]
            ),
            "service": GaugeMetricFamily(
                "rtq_service_seconds", "Mean service time (window)", labels=["queue"]
            ),
            "recommended": GaugeMetricFamily(
                "rtq_recommended_workers",
                "Workers to keep up and keep the queue wait under target_wait (Little's law)",
                labels=["queue", "target_wait"],
            ),
            "dead": GaugeMetricFamily("rtq_dead_letters", "Dead-lettered", labels=["queue"]),
        }
        counters = CounterMetricFamily(
            "rtq_requests",
            "Requests ended, by outcome, as counted by the workers (all time)",
            labels=["queue", "outcome"],
        )
        finished = CounterMetricFamily(
            "rtq_finished",
            "Finished requests this exporter observed, by status",
            labels=["queue", "status"],
        )
        up = GaugeMetricFamily(
            "rtq_up", "1 when the last read of the queue worked", labels=["queue"]
        )
        for q in self._queues():
            try:
                snap = self._snapshot(q)
            except Exception as exc:  # Redis away: say so, keep serving the rest
                log.warning("metrics: cannot read queue %r: %s", q, exc)
                up.add_metric([q], 0)
                continue
            up.add_metric([q], 1)
            self._queue(q, snap, g, counters)
        for (q, status), n in sorted(self._finished.items()):
            finished.add_metric([q, status], n)
        yield from g.values()
        yield counters
        yield finished
        yield up
        for name, _, doc in _TIMINGS:
            h = HistogramMetricFamily(f"rtq_{name}_seconds", doc, labels=["queue"])
            for (q, metric), hist in sorted(self._hists.items()):
                if metric == name:
                    h.add_metric([q], hist.buckets(), hist.sum)
            yield h

    def _queue(
        self,
        q: str,
        snap: QueueSnapshot,
        g: dict[str, GaugeMetricFamily],
        counters: CounterMetricFamily,
    ) -> None:
        for prio, n in snap.pending:
            g["pending"].add_metric([q, str(prio)], n)
        g["running"].add_metric([q], snap.running)
        alive = [w for w in snap.workers if w.alive]
        g["workers"].add_metric([q], len(alive))
        g["slots"].add_metric([q], sum(max(1, w.concurrency) * max(1, w.batch_size) for w in alive))
        load = estimate_load(snap, self.window)
        g["rate"].add_metric([q], load.arrival_rate)
        g["service"].add_metric([q], load.service_s)
        g["recommended"].add_metric([q, f"{self.target_wait:g}"], recommend(load, self.target_wait))
        g["dead"].add_metric([q], snap.dead)
        for name, value in sorted(snap.counters.items()):
            counters.add_metric([q, name], value)
        self._observe(q, snap)

    def _observe(self, q: str, snap: QueueSnapshot) -> None:
        for s in reversed(snap.recent):  # oldest first
            if s.status in (None, "pending", "running") or not s.id:
                continue
            key = f"{q}\x00{s.id}"
            if key in self._seen:
                continue
            self._seen[key] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            self._finished[(q, s.status)] = self._finished.get((q, s.status), 0) + 1
            if s.status != "completed":
                continue
            for name, field, _ in _TIMINGS:
                ms = lenient_int(getattr(s, field))
                if ms is not None and ms >= 0:
                    self._hists.setdefault((q, name), _Histogram()).observe(ms / 1000)


class WorkerCollector(Collector):
    """One worker process's own counters and health (``rtq-nb worker --metrics-port``)."""

    def __init__(self, state: Callable[[], dict[str, float]]) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        s = self._state()
        labels = ["worker", "queue"]
        ids = [str(s.get("id", "")), str(s.get("queue", ""))]
        for name, doc, kind in (
            ("processed", "Requests this worker completed", "counter"),
            ("failed", "Requests this worker failed", "counter"),
            ("in_flight", "Requests this worker holds now", "gauge"),
            ("service_seconds", "This worker's service time estimate (EWMA)", "gauge"),
            ("ready", "1 when registered and fetching", "gauge"),
            ("live", "1 when its heartbeats succeed", "gauge"),
            ("heartbeat_age_seconds", "Seconds since its last successful heartbeat", "gauge"),
        ):
            family: Any = (
                CounterMetricFamily(f"rtq_worker_{name}", doc, labels=labels)
                if kind == "counter"
                else GaugeMetricFamily(f"rtq_worker_{name}", doc, labels=labels)
            )
            family.add_metric(ids, float(s.get(name, 0.0)))
            yield family
