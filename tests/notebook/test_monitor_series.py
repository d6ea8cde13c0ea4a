"""The queue monitor's series, alerts and SVG charts: pure, on a fake server clock."""

from __future__ import annotations

import re

import pytest

from rtq_nb.client import FinishedSample, QueueSnapshot
from rtq_nb.notebook._charts import chart
from rtq_nb.notebook._series import MonitorSeries, alerts, fmt_span, stalled, summarize
from rtq_nb.notebook.monitor import charts, render, snapshot_dict
from rtq_nb.protocol.registry import WorkerInfo

T0 = 1_700_000_000_000


def done(fin_ms: int, wait: int, dur: int, status: str = "completed") -> FinishedSample:
    return FinishedSample(fin_ms - dur - wait, status, str(fin_ms), str(wait), "5", str(dur))


def worker(
    wid: str = "w1", in_flight: int = 0, seen: int = T0, status: str = "", hb: float = 1.0
) -> WorkerInfo:
    st = status or ("busy" if in_flight else "idle")
    return WorkerInfo(
        id=wid, status=st, concurrency=2, in_flight=in_flight, last_seen_ms=seen, heartbeat_s=hb
    )


def snap(
    now: int,
    *,
    pending: list[tuple[int, int]] | None = None,
    running: int = 0,
    workers: list[WorkerInfo] | None = None,
    recent: list[FinishedSample] | None = None,
    finished: int = 0,
    dead: int = 0,
) -> QueueSnapshot:
    return QueueSnapshot(
        queue="q",
        now_ms=now,
        pending=pending or [],
        running=running,
        workers=workers or [],
        recent=recent or [],
        truncated=False,
        counters={"completed": finished, "failed": 0},
        dead=dead,
    )


def test_fmt_span_is_human() -> None:
    assert [fmt_span(s) for s in (60, 90, 300, 150, 7200)] == [
        "60 s",
        "90 s",
        "5 min",
        "150 s",
        "2 h",
    ]
    assert summarize(T0, [], 60, False)["label"] == "last 60 s"


def test_series_points_throughput_percentiles_and_workers() -> None:
    s = MonitorSeries(maxlen=3, window_s=60)
    recent = [done(T0 - 1000 * i, wait=10 * i, dur=100 * i) for i in range(1, 11)]
    p1 = s.add(snap(T0, pending=[(5, 2), (0, 1)], recent=recent, finished=10))
    assert p1.pending_total == 3 and p1.pending == {5: 2, 0: 1}
    assert p1.throughput == pytest.approx(10 / 60)  # first point: from the recent sample
    assert p1.wait_p50 == pytest.approx(55) and p1.duration_p50 == pytest.approx(550)
    assert p1.wait_p95 is not None and p1.wait_p95 > p1.wait_p50
    p2 = s.add(
        snap(
            T0 + 2000,
            running=3,
            workers=[worker("a", 2), worker("b", 1), worker("c", 0)],
            finished=16,
        )
    )
    assert p2.throughput == pytest.approx(3.0)  # (16 - 10) finished in 2 s
    assert (p2.busy, p2.idle, p2.in_flight, p2.running) == (2, 1, 3, 3)
    assert p2.wait_p50 is None  # nothing finished within the window at T0 + 2 s in the sample
    s.add(snap(T0 + 4000, finished=16))
    s.add(snap(T0 + 6000, finished=20))
    assert len(s.points) == 3  # the ring buffer keeps the last maxlen
    assert s.times() == [-4.0, -2.0, 0.0]
    assert s.column("throughput") == [3.0, 1.5, 1.0]  # over the last 5 s of points
    assert s.priorities() == []


def test_series_restarts_when_the_clock_goes_back_or_counters_reset() -> None:
    s = MonitorSeries(window_s=60)
    s.add(snap(T0, finished=50))
    p = s.add(snap(T0 + 1000, finished=2))  # counters reset (FLUSHDB): fall back to sample
    assert p.throughput == 0.0
    s.add(snap(T0 - 5000))
    assert len(s.points) == 1
    with pytest.raises(ValueError):
        MonitorSeries(maxlen=1)


def test_alerts_stalled_dead_growing_old_pending_no_worker() -> None:
    s = MonitorSeries(window_s=60)
    s.add(snap(T0, dead=1))
    now = T0 + 10_000
    busy_silent = worker("slow", in_flight=1, seen=now - 4000, hb=1.0)
    idle_silent = worker("idle", in_flight=0, seen=now - 9000, hb=1.0)
    fresh = worker("ok", in_flight=2, seen=now - 500, hb=1.0)
    assert stalled(busy_silent, now) and not stalled(idle_silent, now)
    assert not stalled(fresh, now)
    cur = snap(now, pending=[(0, 4)], workers=[busy_silent, idle_silent, fresh], dead=3)
    s.add(cur)
    texts = [a.text for a in alerts(cur, s, now - 45_000, max_pending_age_s=30)]
    assert len(texts) == 3, texts
    assert texts[0].startswith("worker slow stalled")
    assert "dead letters growing: +2 in the last 60 s (3 in total)" in texts[1]
    assert "oldest pending request waiting 45 s" in texts[2]
    assert not alerts(cur, s, now - 5_000, max_pending_age_s=30)[2:]  # young enough
    gone = snap(now + 1000, pending=[(0, 4)], workers=[idle_silent, fresh], dead=3)
    s.add(gone)  # "slow" left the registry while busy; "idle" and "ok" stay
    texts = [a.text for a in alerts(gone, s, None)]
    assert texts[0].startswith("worker slow vanished while busy with 1 request(s)"), texts
    later = snap(now + 120_000, pending=[(0, 4)], dead=3)
    s.add(later)  # no growth within the last 60 s; pending with no worker
    assert [a.text for a in alerts(later, s, None)] == ["4 pending and no live worker"]


def test_chart_svg_changes_with_values_and_escapes() -> None:
    a = chart("t <x>", [-2.0, -1.0, 0.0], [("p<50>", [1.0, 2.0, 3.0]), ("b", [None, 1, 1])])
    b = chart("t <x>", [-2.0, -1.0, 0.0], [("p<50>", [1.0, 2.0, 9.0]), ("b", [None, 1, 1])])
    assert a != b and "<svg" in a and "<polyline" in a
    assert "t &lt;x&gt;" in a and "p&lt;50&gt; <b>3</b>" in a and "<x>" not in a
    stacked = chart("s", [-1.0, 0.0], [("x", [1.0, 2.0]), ("y", [1.0, 1.0])], stacked=True)
    assert stacked.count("<polygon") == 2 and "max 3" in stacked
    one = chart("one", [0.0], [("x", [4.0])])
    assert "<circle" in one
    empty = chart("none", [], [("x", [])])
    assert "<svg" in empty and "—" in empty


def test_render_counts_from_one_snapshot_with_labels() -> None:
    s = MonitorSeries(window_s=60)
    cur = snap(T0, pending=[(5, 2)], running=8, workers=[worker("w", 1, seen=T0)])
    view = snapshot_dict(cur, 300, s)
    page = render(view)
    text = re.sub(r"<style>.*?</style>|<[^>]+>", "", page, flags=re.S)
    assert "8 running" in text and "1 in flight on 1 worker(s) (1 busy, 0 idle)" in text
    assert "running = requests leased by workers now" in text  # the difference is explained
    assert "last 60 s" in text and "last 5 min" in text and "1 min 0 s" not in text
    for title in ("pending by priority", "throughput", "queue wait", "duration", "workers"):
        assert title in text
    assert charts(s).count("<svg") == 5
    same = render(snapshot_dict(snap(T0 + 1000, running=1, workers=[worker("w", 1)]), 60, s))
    assert "leased by workers now" not in same
