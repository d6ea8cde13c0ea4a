"""QueueMonitor's dashboard against a real redis-server and a real worker: the charts change
under load, and the header's counts agree with the workers' rows of the same refresh."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable

from rtq_nb import Client, Worker, demo
from rtq_nb.notebook import QueueMonitor
from tests.conftest import wait_until


def _text(page: str) -> str:
    return re.sub(r"<style>.*?</style>|<[^>]+>", "", page, flags=re.S)


def _svgs(page: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", page, flags=re.S)


def test_dashboard_charts_change_under_load_and_counts_agree(
    client: Client, start_worker: Callable[..., Worker]
) -> None:
    w = start_worker(demo.fake_llm, concurrency=2)
    mon = QueueMonitor(client, interval=0.2)
    first = mon.refresh()
    page1 = mon.body_widget.value
    handles = client.submit_many(["x"] * 16, params={"tokens": 10, "rate": 50})  # ~0.2 s each
    time.sleep(0.6)
    loaded = mon.refresh()
    page2 = mon.body_widget.value
    for h in handles:
        h.result(timeout=60)
    time.sleep(0.3)
    after = mon.refresh()
    page3 = mon.body_widget.value

    assert len(mon.series.points) == 3 and mon.refresh_count == 3
    assert len(_svgs(page1)) == len(_svgs(page2)) == 5
    assert _svgs(page1) != _svgs(page2) != _svgs(page3)  # redrawn with new values
    assert first["pending_total"] == 0 and loaded["pending_total"] > 0
    assert after["pending_total"] == 0
    assert loaded["point"].pending_total == loaded["pending_total"]
    assert after["point"].finished - first["point"].finished == 16
    assert max(p.throughput or 0 for p in mon.series.points) > 0
    assert after["point"].duration_p50 is not None and after["point"].wait_p95 is not None

    for view, page in ((loaded, page2), (after, page3)):
        (info,) = view["workers"]
        assert info.id == w.id
        text = _text(page)
        # header and worker row come from the same snapshot
        assert f"{view['running']} running" in text
        assert f"{info.in_flight} in flight on 1 worker(s)" in text
        assert f"{info.in_flight} / 2" in text
        assert view["in_flight"] == info.in_flight
        assert (view["busy"], view["idle"]) == ((1, 0) if info.in_flight else (0, 1))
        if view["running"] != view["in_flight"]:
            assert "running = requests leased by workers now" in text
        assert "last 60 s" in text and "last 5 min" in text
        assert not [a for a in view["alerts"] if "stalled" in a.text]


def test_dashboard_alerts_on_old_pending_without_workers(client: Client) -> None:
    client.submit("waiting", priority=-2)
    mon = QueueMonitor(client, max_pending_age_s=0.05)
    time.sleep(0.2)
    view = mon.refresh()
    texts = [a.text for a in view["alerts"]]
    assert any(t.startswith("oldest pending request waiting") for t in texts), texts
    assert "1 pending and no live worker" in texts
    assert view["oldest_pending_ms"] is not None
    assert "rtq-alert-warning" in mon.body_widget.value


def test_dashboard_alerts_when_a_busy_worker_is_killed(
    client: Client, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    proc = worker_process("rtq_nb.demo:fake_llm", "--heartbeat", "0.5")
    client.submit("long", params={"tokens": 200, "rate": 10})  # ~20 s of work
    mon = QueueMonitor(client, interval=0.2)

    def busy() -> bool:
        view = mon.refresh()
        return view["busy"] == 1 and view["running"] == 1

    wait_until(busy, timeout=30, what="the worker reports its request in flight")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    def vanished() -> list[str]:
        texts = [a.text for a in mon.refresh()["alerts"]]
        return [t for t in texts if "vanished while busy with 1 request(s)" in t]

    assert wait_until(vanished, timeout=30, what="the vanished-while-busy alert")
    view = mon.last
    assert view is not None and view["workers"] == [] and view["running"] == 1
    assert "rtq-alert-error" in mon.body_widget.value
