"""QueueMonitor: an auto-refreshing view of one queue (pending by priority, workers, throughput
and latency over recent minutes). The refresh loop runs on rtq_nb's loop thread, so the kernel
stays free; a Stop button (or ``stop()``) ends it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import statistics
import threading
from datetime import datetime, timezone
from typing import Any

import ipywidgets as widgets

from rtq_nb.client import AsyncClient, Client, FinishedSample, QueueSnapshot
from rtq_nb.errors import RtqError
from rtq_nb.loop import portal
from rtq_nb.notebook._display import ShowOnce
from rtq_nb.notebook._throttle import fmt_ms
from rtq_nb.notebook.views import arun, run
from rtq_nb.protocol.history import lenient_int

SAMPLE = 2000  # most recent history records read per refresh for throughput and latency


def _pct(values: list[int], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarize(
    now_ms: int, sample: list[FinishedSample], window_s: float, truncated: bool
) -> dict[str, Any]:
    """Throughput and latency of requests that finished within the last ``window_s`` seconds
    (pure; ``truncated``: the sample may not reach back that far)."""
    start = now_ms - int(window_s * 1000)
    if truncated and sample:
        start = max(start, min(s.created_ms for s in sample))
    span_s = max(0.001, (now_ms - start) / 1000)
    completed, failed = 0, 0
    waits: list[int] = []
    ttfts: list[int] = []
    durations: list[int] = []
    for s in sample:
        status, wait, ttft, duration = s.status, s.queue_wait_ms, s.ttft_ms, s.duration_ms
        fin = lenient_int(s.finished_ms)
        if fin is None or fin < start:
            continue
        if status == "completed":
            completed += 1
            for target, value in ((waits, wait), (ttfts, ttft), (durations, duration)):
                v = lenient_int(value)
                if v is not None:
                    target.append(v)
        elif status == "failed":
            failed += 1
    return {
        "window_s": window_s,
        "span_s": span_s,
        "completed": completed,
        "failed": failed,
        "throughput": completed / span_s,
        "p50_queue_wait_ms": _pct(waits, 50),
        "p50_ttft_ms": _pct(ttfts, 50),
        "p50_duration_ms": _pct(durations, 50),
        "p95_duration_ms": _pct(durations, 95),
    }


def snapshot_dict(snap: QueueSnapshot, window_s: float) -> dict[str, Any]:
    """Everything the monitor shows, from the client's :class:`QueueSnapshot` (pure)."""
    windows = sorted({min(60.0, window_s), float(window_s)})
    return {
        "queue": snap.queue,
        "now_ms": snap.now_ms,
        "pending": snap.pending,
        "pending_total": snap.pending_total,
        "running": snap.running,
        "workers": snap.workers,
        "windows": [summarize(snap.now_ms, snap.recent, w, snap.truncated) for w in windows],
        "unauthenticated": snap.counters.get("unauthenticated", 0),
    }


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p class='rtq-empty'><i>{html.escape(empty)}</i></p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='rtq-table'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render(snap: dict[str, Any]) -> str:
    """HTML of a snapshot (every value from Redis is escaped)."""
    e = html.escape
    now = snap["now_ms"]
    pending = _table(
        ["priority", "pending"],
        [[str(p), str(c)] for p, c in snap["pending"]],
        "no pending requests",
    )
    workers = _table(
        [
            "worker",
            "host",
            "status",
            "concurrency",
            "in flight",
            "processed",
            "failed",
            "last heartbeat",
        ],
        [
            [
                f"<code>{e(w.id)}</code>",
                e(w.host),
                e(w.status),
                str(w.concurrency),
                str(w.in_flight),
                str(w.processed),
                str(w.failed),
                f"{max(0, now - w.last_seen_ms) / 1000:.1f} s ago" if w.last_seen_ms else "—",
            ]
            for w in snap["workers"]
        ],
        "no live workers",
    )
    perf = _table(
        [
            "window",
            "completed",
            "failed",
            "completed/s",
            "p50 queue wait",
            "p50 TTFT",
            "p50 duration",
            "p95 duration",
        ],
        [
            [
                f"last {fmt_ms(s['window_s'] * 1000)}",
                str(s["completed"]),
                str(s["failed"]),
                f"{s['throughput']:.2f}",
                fmt_ms(s["p50_queue_wait_ms"]),
                fmt_ms(s["p50_ttft_ms"]),
                fmt_ms(s["p50_duration_ms"]),
                fmt_ms(s["p95_duration_ms"]),
            ]
            for s in snap["windows"]
        ],
        "no history yet",
    )
    at = datetime.fromtimestamp(now / 1000, tz=timezone.utc).strftime("%H:%M:%S UTC")
    refused = snap.get("unauthenticated", 0)
    alarm = (
        f" &middot; <b class='rtq-alarm' style='color:#b00020'>{refused} refused "
        "(unauthenticated)</b>"
        if refused
        else ""
    )
    return (
        f"<div class='rtq-monitor-body'><p>queue <code>{e(snap['queue'])}</code> &middot; "
        f"<b>{snap['pending_total']}</b> pending &middot; <b>{snap['running']}</b> running "
        f"&middot; {len(snap['workers'])} worker(s){alarm} &middot; updated {at}</p>"
        f"<h4>Pending by priority</h4>{pending}<h4>Workers</h4>{workers}"
        f"<h4>Throughput and latency</h4>{perf}</div>"
    )


class QueueMonitor(ShowOnce, widgets.VBox):  # type: ignore[misc]
    """Auto-refreshing view of a queue. ``start()`` refreshes every ``interval`` seconds on
    rtq_nb's loop thread (never blocking the kernel) and shows the monitor if it has not been
    shown; ``stop()`` or the Stop button ends it; ``refresh()`` does one refresh now and returns
    the snapshot (a dict). Throughput and latency cover the last minute and ``window_s``."""

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        interval: float = 1.0,
        window_s: float = 300,
        queue: str | None = None,
    ) -> None:
        if not interval > 0 or not window_s > 0:
            raise ValueError("interval and window_s must be > 0 seconds")
        self.client, self.interval, self.window_s, self.queue = client, interval, window_s, queue
        self._body = widgets.HTML("<i>not started: call start() or refresh()</i>")
        self._state = widgets.HTML("stopped")
        self._button = widgets.Button(
            description="Stop", icon="stop", disabled=True, layout=widgets.Layout(width="auto")
        )
        self._button.on_click(lambda _b: self.stop())
        self.stop_button, self.body_widget = self._button, self._body
        super().__init__([widgets.HBox([self._state, self._button]), self._body])
        self.add_class("rtq-monitor")
        self._future: concurrent.futures.Future[None] | None = None
        self._lock = threading.Lock()
        self.refresh_count = 0
        self._gen = 0
        self.last: dict[str, Any] | None = None

    @property
    def status_text(self) -> str:
        """The state line: "stopped", "refreshing every 1 s" or the last error."""
        return str(self._state.value)

    @property
    def running(self) -> bool:
        return self._future is not None and not self._future.done()

    async def _go(self, ac: AsyncClient) -> dict[str, Any]:
        return snapshot_dict(await ac.snapshot(self.queue, sample=SAMPLE), self.window_s)

    def _show(self, snap: dict[str, Any]) -> None:
        self.last = snap
        self._body.value = render(snap)
        self.refresh_count += 1

    def refresh(self) -> dict[str, Any]:
        """One refresh, synchronously; returns the snapshot."""
        snap = run(self.client, self._go)
        self._show(snap)
        return snap

    async def _loop(self, gen: int) -> None:
        while gen == self._gen:
            try:
                snap = await arun(self.client, self._go)
            except RtqError as exc:
                state = f"<span class='rtq-error'>{html.escape(str(exc)[:300])}</span>"
            else:
                self._show(snap)
                state = f"refreshing every {self.interval:g} s"
            if gen == self._gen:  # stop() may have run meanwhile: leave its "stopped"
                self._state.value = state
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start auto-refreshing (idempotent); returns at once."""
        with self._lock:
            if self.running:
                return
            self._gen += 1
            self._future = portal().submit(self._loop(self._gen))
        with self._button.hold_sync():
            self._button.disabled = False
        self._state.value = f"refreshing every {self.interval:g} s"
        if not self.shown:
            self.show()

    def stop(self) -> None:
        """Stop auto-refreshing; returns at once (the last view stays)."""
        with self._lock:
            fut, self._future = self._future, None
            self._gen += 1
        if fut is not None:
            fut.cancel()
        self._button.disabled = True
        self._state.value = "stopped"


__all__ = ["QueueMonitor", "render", "snapshot_dict", "summarize"]
