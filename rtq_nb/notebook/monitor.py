"""QueueMonitor: a live dashboard of one queue. Charts over time (pending by priority,
throughput, queue wait and duration p50/p95, workers busy and idle) drawn as inline SVG, styled
tables (pending by priority, workers, recent windows) and alerts (stalled workers, dead letters
growing, an old pending request). Every number of one refresh comes from one snapshot on the
Redis server's clock. The refresh loop runs on rtq_nb's loop thread, so the kernel stays free;
a Stop button (or ``stop()``) ends it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import threading
from datetime import datetime, timezone
from typing import Any

import ipywidgets as widgets

from rtq_nb.client import AsyncClient, Client, QueueSnapshot
from rtq_nb.errors import RtqError
from rtq_nb.loop import portal
from rtq_nb.notebook._charts import chart
from rtq_nb.notebook._display import ShowOnce
from rtq_nb.notebook._series import (
    Alert,
    MonitorSeries,
    alerts,
    fmt_span,
    stalled,
    summarize,
)
from rtq_nb.notebook._throttle import fmt_ms
from rtq_nb.notebook.views import arun, run

SAMPLE = 2000  # most recent history records read per refresh for throughput and latency
PEEK = 100  # pending requests read per refresh (in the order workers take them) for the oldest

PERF_HEAD = ["window", "completed", "failed", "completed/s", "queue wait p50 / p95"]
PERF_HEAD += ["TTFT p50", "duration p50 / p95"]

STYLE = """<style>
.rtq-dash{font-family:var(--jp-ui-font-family,sans-serif);font-size:12px;
 color:var(--jp-ui-font-color1,#222)}
.rtq-dash .rtq-head{margin:2px 0 6px}.rtq-dash .rtq-head b{font-size:14px}
.rtq-dash .rtq-note{color:var(--jp-ui-font-color2,#666);font-size:11px;margin:0 0 6px}
.rtq-dash .rtq-alerts{margin:4px 0}.rtq-dash .rtq-alert{padding:3px 8px;margin:2px 0;
 border-radius:3px;border-left:4px solid}
.rtq-dash .rtq-alert-error{border-color:#e15759;background:rgba(225,87,89,.12)}
.rtq-dash .rtq-alert-warning{border-color:#f28e2b;background:rgba(242,142,43,.12)}
.rtq-dash .rtq-ok{color:#59a14f}
.rtq-dash .rtq-charts{display:flex;flex-wrap:wrap;gap:8px}
.rtq-dash .rtq-chart{border:1px solid var(--jp-border-color2,#ddd);border-radius:4px;
 padding:4px 6px;background:var(--jp-layout-color1,#fff)}
.rtq-dash .rtq-chart-title{font-weight:600;font-size:11px}
.rtq-dash .rtq-legend{font-size:11px}.rtq-dash .rtq-key{margin-right:8px;white-space:nowrap}
.rtq-dash .rtq-key i{display:inline-block;width:9px;height:9px;margin-right:3px;
 border-radius:2px}
.rtq-dash h4{margin:10px 0 4px;font-size:12px}
.rtq-dash .rtq-table{border-collapse:collapse;font-size:inherit;font-variant-numeric:tabular-nums}
.rtq-dash .rtq-table th,.rtq-dash .rtq-table td{padding:2px 10px;text-align:right;
 border-bottom:1px solid var(--jp-border-color2,#e0e0e0)}
.rtq-dash .rtq-table th{background:var(--jp-layout-color2,#f3f3f3);font-weight:600}
.rtq-dash .rtq-table th:first-child,.rtq-dash .rtq-table td:first-child{text-align:left}
.rtq-dash .rtq-table tr:hover td{background:var(--jp-layout-color2,#f7f7f7)}
.rtq-dash .rtq-bar{display:inline-block;height:8px;background:#4e79a7;border-radius:2px;
 vertical-align:middle;margin-left:6px}
.rtq-dash .rtq-st{padding:0 6px;border-radius:8px;font-size:11px}
.rtq-dash .rtq-st-busy{background:rgba(78,121,167,.2)}
.rtq-dash .rtq-st-idle{background:rgba(89,161,79,.2)}
.rtq-dash .rtq-st-stalled,.rtq-dash .rtq-st-stopping{background:rgba(225,87,89,.25)}
</style>"""


def snapshot_dict(
    snap: QueueSnapshot,
    window_s: float,
    series: MonitorSeries | None = None,
    oldest_pending_ms: int | None = None,
    max_pending_age_s: float = 30.0,
) -> dict[str, Any]:
    """Everything one refresh shows, from one :class:`QueueSnapshot` (pure but for appending
    the snapshot's point to ``series``; a fresh series of one point if None)."""
    if series is None:
        series = MonitorSeries(window_s=min(60.0, window_s))
    point = series.add(snap)
    windows = sorted({min(60.0, window_s), float(window_s)})
    return {
        "queue": snap.queue,
        "now_ms": snap.now_ms,
        "pending": snap.pending,
        "pending_total": snap.pending_total,
        "running": snap.running,
        "in_flight": point.in_flight,
        "busy": point.busy,
        "idle": point.idle,
        "workers": snap.workers,
        "dead": snap.dead,
        "oldest_pending_ms": oldest_pending_ms,
        "windows": [summarize(snap.now_ms, snap.recent, w, snap.truncated) for w in windows],
        "unauthenticated": snap.counters.get("unauthenticated", 0),
        "alerts": alerts(snap, series, oldest_pending_ms, max_pending_age_s=max_pending_age_s),
        "series": series,
        "point": point,
    }


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p class='rtq-empty'><i>{html.escape(empty)}</i></p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='rtq-table'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _bar(value: int, top: int) -> str:
    width = 0 if top <= 0 else max(1, round(80 * value / top))
    return f"<span class='rtq-bar' style='width:{width}px'></span>"


def _ms(v: float) -> str:
    return fmt_ms(v)


def charts(series: MonitorSeries) -> str:
    """The dashboard's charts of ``series`` (inline SVG)."""
    t = series.times()
    prios = series.priorities()
    pending = [(f"priority {p}", series.pending_of(p)) for p in prios[:6]]
    if len(prios) > 6:
        rest = [sum(pt.pending.get(p, 0) for p in prios[6:]) for pt in series.points]
        pending.append(("lower", [float(x) for x in rest]))
    if not pending:
        pending = [("pending", [0.0] * len(t))]
    win = fmt_span(series.window_s)
    return (
        "<div class='rtq-charts'>"
        + "".join(
            [
                chart("pending by priority", t, pending, stacked=True),
                chart(
                    f"throughput (finished/s over {fmt_span(series.rate_s)})",
                    t,
                    [("finished/s", series.column("throughput"))],
                    fmt=lambda v: f"{v:.1f}",
                ),
                chart(
                    f"queue wait (last {win})",
                    t,
                    [("p50", series.column("wait_p50")), ("p95", series.column("wait_p95"))],
                    fmt=_ms,
                ),
                chart(
                    f"duration (last {win})",
                    t,
                    [
                        ("p50", series.column("duration_p50")),
                        ("p95", series.column("duration_p95")),
                    ],
                    fmt=_ms,
                ),
                chart(
                    "workers",
                    t,
                    [("busy", series.column("busy")), ("idle", series.column("idle"))],
                    stacked=True,
                    colors=("#4e79a7", "#59a14f"),
                ),
            ]
        )
        + "</div>"
    )


def _alerts(items: list[Alert]) -> str:
    if not items:
        return "<div class='rtq-alerts'><span class='rtq-ok'>&#10003; no alerts</span></div>"
    return (
        "<div class='rtq-alerts'>"
        + "".join(
            f"<div class='rtq-alert rtq-alert-{a.level} rtq-alarm'>{html.escape(a.text)}</div>"
            for a in items
        )
        + "</div>"
    )


def render(snap: dict[str, Any]) -> str:
    """HTML of one refresh (every value from Redis is escaped)."""
    e = html.escape
    now = snap["now_ms"]
    series: MonitorSeries = snap["series"]
    top = max((c for _, c in snap["pending"]), default=0)
    pending = _table(
        ["priority", "pending"],
        [[str(p), f"{c}{_bar(c, top)}"] for p, c in snap["pending"]],
        "no pending requests",
    )
    rows = []
    for w in snap["workers"]:
        status = "stalled" if stalled(w, now) else w.status
        seen = f"{max(0, now - w.last_seen_ms) / 1000:.1f} s ago" if w.last_seen_ms else "—"
        rows.append(
            [
                f"<code>{e(w.id)}</code>",
                e(w.host),
                f"<span class='rtq-st rtq-st-{e(status)}'>{e(status)}</span>",
                f"{w.in_flight} / {w.concurrency}{_bar(w.in_flight, w.concurrency)}",
                str(w.processed),
                str(w.failed),
                seen,
            ]
        )
    head = ["worker", "host", "status", "in flight / concurrency", "processed", "failed"]
    workers = _table([*head, "last heartbeat"], rows, "no live workers")
    perf = _table(
        PERF_HEAD,
        [
            [
                e(s["label"]),
                str(s["completed"]),
                str(s["failed"]),
                f"{s['throughput']:.2f}",
                f"{fmt_ms(s['p50_queue_wait_ms'])} / {fmt_ms(s['p95_queue_wait_ms'])}",
                fmt_ms(s["p50_ttft_ms"]),
                f"{fmt_ms(s['p50_duration_ms'])} / {fmt_ms(s['p95_duration_ms'])}",
            ]
            for s in snap["windows"]
        ],
        "no history yet",
    )
    at = datetime.fromtimestamp(now / 1000, tz=timezone.utc).strftime("%H:%M:%S UTC")
    running, in_flight = snap["running"], snap["in_flight"]
    beat = max((w.heartbeat_s for w in snap["workers"]), default=0.0)
    every = f" (every {beat:g} s)" if beat else ""
    note = (
        ""
        if running == in_flight
        else "<p class='rtq-note'>running = requests leased by workers now; in flight = what "
        f"the workers reported at their last heartbeat{every}, so the two differ until the "
        "next heartbeats (or while a dead worker's leases wait to be requeued)</p>"
    )
    return (
        f"{STYLE}<div class='rtq-dash rtq-monitor-body'><p class='rtq-head'>queue "
        f"<code>{e(snap['queue'])}</code> &middot; <b>{snap['pending_total']}</b> pending "
        f"&middot; <b>{running}</b> running &middot; <b>{in_flight}</b> in flight on "
        f"{len(snap['workers'])} worker(s) ({snap['busy']} busy, {snap['idle']} idle) "
        f"&middot; {snap['dead']} dead &middot; updated {at}</p>{note}"
        f"{_alerts(snap['alerts'])}{charts(series)}"
        f"<h4>Pending by priority</h4>{pending}<h4>Workers</h4>{workers}"
        f"<h4>Throughput and latency</h4>{perf}</div>"
    )


class QueueMonitor(ShowOnce, widgets.VBox):  # type: ignore[misc]
    """Live dashboard of a queue. ``start()`` refreshes every ``interval`` seconds on rtq_nb's
    loop thread (never blocking the kernel) and shows the monitor if it has not been shown;
    ``stop()`` or the Stop button ends it; ``refresh()`` does one refresh now and returns the
    snapshot (a dict). The charts keep the last ``history`` refreshes; their percentiles cover
    the last minute; the table covers the last minute and ``window_s``. An alert is raised when
    the oldest pending request (of the next ``PEEK`` workers take) waits over
    ``max_pending_age_s``."""

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        interval: float = 1.0,
        window_s: float = 300,
        queue: str | None = None,
        history: int = 120,
        max_pending_age_s: float = 30.0,
    ) -> None:
        if not interval > 0 or not window_s > 0:
            raise ValueError("interval and window_s must be > 0 seconds")
        self.client, self.interval, self.window_s, self.queue = client, interval, window_s, queue
        self.max_pending_age_s = max_pending_age_s
        self.series = MonitorSeries(maxlen=history, window_s=min(60.0, window_s))
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
        self._series_lock = threading.Lock()
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

    async def _go(self, ac: AsyncClient) -> tuple[QueueSnapshot, int | None]:
        snap = await ac.snapshot(self.queue, sample=SAMPLE)
        oldest = None
        if snap.pending_total:
            _, peek = await ac.pending_requests(self.queue, limit=PEEK)
            oldest = min((r.created_ms for r in peek if r.created_ms), default=None)
        return snap, oldest

    def _show(self, got: tuple[QueueSnapshot, int | None]) -> dict[str, Any]:
        snap, oldest = got
        with self._series_lock:
            view = snapshot_dict(snap, self.window_s, self.series, oldest, self.max_pending_age_s)
            self.last = view
            self._body.value = render(view)
            self.refresh_count += 1
        return view

    def refresh(self) -> dict[str, Any]:
        """One refresh, synchronously; returns the snapshot."""
        return self._show(run(self.client, self._go))

    async def _loop(self, gen: int) -> None:
        while gen == self._gen:
            try:
                got = await arun(self.client, self._go)
            except RtqError as exc:
                state = f"<span class='rtq-error'>{html.escape(str(exc)[:300])}</span>"
            else:
                self._show(got)
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


__all__ = ["QueueMonitor", "charts", "render", "snapshot_dict", "summarize"]
