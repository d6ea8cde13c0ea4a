"""Metrics, the autoscaling signal and process-manager friendliness, against a real
redis-server and real ``rtq-nb`` processes; the exposition is parsed by prometheus_client's
own parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until, worker_cmd
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from rtq_nb import Client, Request
from rtq_nb.client.capacity import Load, estimate_load, recommend
from rtq_nb.client.inspect import FinishedSample, QueueSnapshot
from rtq_nb.ops.http import serve
from rtq_nb.ops.metrics import QueueCollector
from rtq_nb.protocol.registry import WorkerInfo


def status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status)


def scrape(url: str) -> dict[str, list[Any]]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def value(samples: list[Any], name: str, **labels: str) -> float:
    for s in samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {name} {labels} in {samples}")


def test_recommendation_on_a_synthetic_load() -> None:
    """120 requests arriving 0.5 s apart (2/s), each served in 1.5 s, 6 pending, target wait
    2 s, 1 slot per worker: 2 x 1.5 = 3 busy slots + 6 x 1.5 / 2 = 4.5 for the backlog: 8."""
    now = 1_000_000_000
    recent = [
        FinishedSample(now - 500 * i, "completed", str(now - 500 * i + 1500), "0", "", "1500")
        for i in range(120)
    ]
    worker = WorkerInfo("w", concurrency=1, service_ms_ewma=9999.0)
    snap = QueueSnapshot("q", now, [(0, 6)], 1, [worker], recent, truncated=False)
    load = estimate_load(snap, 60.0)
    assert load.arrival_rate == pytest.approx(2.0, rel=0.01)
    assert load.service_s == pytest.approx(1.5) and load.pending == 6
    assert recommend(load, 2.0) == 8
    four_slots = Load(2.0, 1.5, 6, slots_per_worker=4, window_s=60)
    assert recommend(four_slots, 2.0) == 2  # 7.5 slots / 4 per worker
    assert recommend(Load(0.0, 1.5, 0, 1, 60), 2.0) == 0  # idle: scale to zero
    with pytest.raises(ValueError, match="target_wait"):
        recommend(load, 0)


def test_exporter_output_parses_and_agrees_with_the_client(
    url: str, prefix: str, start_worker: Any
) -> None:
    gate = threading.Event()

    def handler(r: Request) -> Any:
        if r.input == "hold":
            gate.wait(20)
        if r.input == "boom":
            raise RuntimeError("boom")
        return r.input

    start_worker(handler, queue="m", concurrency=2)
    with Client(url, prefix=prefix, queue="m", timeout=20) as c:
        for i in range(10):
            assert c.call(i) == i
        with pytest.raises(Exception, match="boom"):
            c.call("boom")
        held = [c.submit("hold") for _ in range(2)]  # both slots busy
        queued = [c.submit("x", priority=p) for p in (5, 5, -1)]
        wait_until(lambda: c.stats()["running"] == 2, what="two requests running")
        registry = CollectorRegistry()
        registry.register(QueueCollector(lambda q: c.snapshot(q), lambda: ["m"], target_wait=2.0))
        endpoint = serve(registry, 0, "127.0.0.1")
        try:
            m = scrape(endpoint.url + "/metrics")
            assert value(m["rtq_pending"], "rtq_pending", queue="m", priority="5") == 2
            assert value(m["rtq_pending"], "rtq_pending", queue="m", priority="-1") == 1
            assert value(m["rtq_running"], "rtq_running", queue="m") == 2
            assert value(m["rtq_workers"], "rtq_workers", queue="m") == 1
            assert value(m["rtq_worker_slots"], "rtq_worker_slots", queue="m") == 2
            assert value(m["rtq_requests"], "rtq_requests_total", outcome="completed") == 10
            assert value(m["rtq_requests"], "rtq_requests_total", outcome="failed") == 1
            assert value(m["rtq_finished"], "rtq_finished_total", status="completed") == 10
            h = m["rtq_duration_seconds"]
            assert value(h, "rtq_duration_seconds_count", queue="m") == 10
            assert value(h, "rtq_duration_seconds_bucket", queue="m", le="+Inf") == 10
            assert value(m["rtq_up"], "rtq_up", queue="m") == 1
            published = value(m["rtq_recommended_workers"], "rtq_recommended_workers")
            assert published == c.recommend_workers(target_wait=2.0) >= 1
            # a second scrape observes nothing twice
            again = scrape(endpoint.url + "/metrics")
            assert value(again["rtq_finished"], "rtq_finished_total", status="completed") == 10
            assert status(endpoint.url + "/healthz") == 200
        finally:
            endpoint.close()
            gate.set()
        assert [h.result() for h in held] == ["hold", "hold"]
        assert [h.result() for h in queued] == ["x"] * 3


def test_worker_process_ready_line_ready_file_health_and_exit_codes(
    url: str, prefix: str, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    cmd = worker_cmd(url, prefix, "rtq_nb.demo:aecho", "--queue", "k8s")
    cmd += ["--metrics-port", "0", "--metrics-host", "127.0.0.1", "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the worker is registered
        assert line.startswith("READY worker=") and "queue=k8s" in line
        assert ready.read_text() == line
        metrics_url = line.split("metrics=")[1].strip()
        base = metrics_url.rsplit("/", 1)[0]
        for path in ("/healthz", "/readyz"):
            assert status(base + path) == 200
        with Client(url, prefix=prefix, queue="k8s", timeout=20) as c:
            assert c.call("hi") == "hi"
        m = scrape(metrics_url)
        assert value(m["rtq_worker_processed"], "rtq_worker_processed_total") == 1
        assert value(m["rtq_worker_ready"], "rtq_worker_ready") == 1
        assert value(m["rtq_worker_live"], "rtq_worker_live") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not ready.exists()
        with pytest.raises(urllib.error.URLError):
            status(base + "/healthz")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    # Redis unreachable at start: exit code 3, with the reason
    dead = [sys.executable, "-m", "rtq_nb.cli", "worker", "rtq_nb.demo:aecho"]
    dead += ["--url", "redis://127.0.0.1:1", "--reconnect-timeout", "0.5"]
    done = subprocess.run(dead, capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 3 and "127.0.0.1:1" in done.stderr
    bad = subprocess.run([*dead[:5], "--url", url, "--concurrency", "0"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "concurrency" in bad.stderr


def test_metrics_command_serves_until_sigterm(url: str, prefix: str, start_worker: Any) -> None:
    start_worker(lambda r: r.input, queue="cli")
    with Client(url, prefix=prefix, queue="cli", timeout=20) as c:
        assert c.call(1) == 1
    cmd = [sys.executable, "-m", "rtq_nb.cli", "metrics", "--url", url, "--prefix", prefix]
    cmd += ["--port", "0", "--host", "127.0.0.1", "--target-wait", "3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY metrics=")
        m = scrape(line.split("=", 1)[1].strip())
        assert value(m["rtq_requests"], "rtq_requests_total", queue="cli") == 1
        assert value(m["rtq_recommended_workers"], "rtq_recommended_workers", queue="cli",
                     target_wait="3") >= 1  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
