"""Shared fixtures: one real redis-server per test session, a fresh key prefix per test."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtq_nb import Client, Worker
from rtq_nb.loop import portal
from rtq_nb.transport.embedded import EmbeddedRedis


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption(
        "--run-failover",
        action="store_true",
        help="also run the failover measurements (marked failover; not in CI: see the README)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not (config.getoption("--run-failover") or os.environ.get("RTQ_RUN_FAILOVER") == "1"):
        failover = pytest.mark.skip(reason="failover stress test: run with --run-failover")
        for item in items:
            if "failover" in item.keywords:
                item.add_marker(failover)
    if config.getoption("--run-slow") or os.environ.get("RTQ_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (CI does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tcp=True) as srv:
        yield srv


@pytest.fixture(scope="session")
def url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(url: str, prefix: str) -> Iterator[Client]:
    c = Client(url, prefix=prefix, timeout=30)
    yield c
    c.close()


@pytest.fixture
def raw(redis_server: EmbeddedRedis) -> Iterator[Any]:
    """A plain redis-py client (for inspecting and corrupting data)."""
    import redis

    r = redis.Redis(unix_socket_path=redis_server.socket_path, decode_responses=True)
    yield r
    r.close()


@pytest.fixture
def start_worker(url: str, prefix: str) -> Iterator[Callable[..., Worker]]:
    """Start in-process workers (on rtq_nb's loop thread); all are stopped at teardown."""
    started: list[Worker] = []

    def start(handler: Any, **kw: Any) -> Worker:
        kw.setdefault("prefix", prefix)
        w = Worker(handler, url, **kw).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def worker_cmd(url: str, prefix: str, handler: str, *args: str) -> list[str]:
    """The command line of an ``rtq-nb worker`` process on ``url`` under ``prefix``."""
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", handler, "--url", url]
    return [*cmd, "--prefix", prefix, *args]


@pytest.fixture
def worker_process(url: str, prefix: str) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``rtq-nb worker`` processes (real separate processes); all end at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(handler: str, *args: str, queue: str = "default") -> subprocess.Popen[bytes]:
        p = subprocess.Popen(worker_cmd(url, prefix, handler, "--queue", queue, *args))
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts (workers to SIGKILL, ...): killed and reaped at teardown."""
    ps: list[subprocess.Popen[bytes]] = []
    yield ps
    for p in ps:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def wait_until(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``cond`` until truthy (for conditions we cannot block on, like a process's
    registry entry appearing); fails the test with ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Background:
    """``work()`` running in a thread; :meth:`result` joins it and returns what it returned
    (or raises what it raised)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._box: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._box["value"] = work()
        except BaseException as exc:  # handed to result()
            self._box["error"] = exc

    def result(self, timeout: float = 60.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the background work did not end within {timeout} s"
        if "error" in self._box:
            raise self._box["error"]
        return self._box["value"]


def across_restart(srv: EmbeddedRedis, caplog: Any, work: Callable[[], Any]) -> Any:
    """Stop ``srv``, run ``work`` in a thread, start ``srv`` again once rtq_nb has logged that
    Redis is unavailable (the work failed once and backs off); returns what ``work`` returned."""
    srv.stop()
    running = Background(work)
    wait_until(
        lambda: any("Redis unavailable" in r.getMessage() for r in caplog.records),
        what="the work to fail once and back off",
    )
    srv.start()
    return running.result(90)


@pytest.fixture
def loop_held() -> Iterator[Callable[[], None]]:
    """Hold rtq_nb's loop thread (a callback that waits on a gate); released at teardown."""
    gate, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        gate.wait(60)

    def start() -> None:
        portal().loop.call_soon_threadsafe(hold)
        assert holding.wait(10)

    yield start
    gate.set()
