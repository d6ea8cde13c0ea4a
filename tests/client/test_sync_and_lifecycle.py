"""The sync facade in every context (script, running loop, threads, a real Jupyter kernel)
and in-process worker start / stop / start."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import isolated_jupyter_env, run_notebook, write_notebook

from rtq_nb import Client, Request, Worker
from rtq_nb.demo import aecho, fake_llm


def test_sync_call_inside_a_running_event_loop(client: Client, start_worker: Any) -> None:
    start_worker(aecho)

    async def inside() -> Any:
        # what a Jupyter cell does: a sync call while this thread's loop is running
        assert asyncio.get_running_loop().is_running()
        return client.call("from-inside-a-loop"), "".join(client.stream("s"))

    assert asyncio.run(inside()) == ("from-inside-a-loop", "s")


def test_sync_calls_from_many_threads(client: Client, start_worker: Any) -> None:
    start_worker(aecho, concurrency=4)
    out: dict[int, list[Any]] = {}

    def run(t: int) -> None:
        out[t] = [client.call(f"{t}-{i}") for i in range(50)]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert out == {t: [f"{t}-{i}" for i in range(50)] for t in range(6)}


def test_sync_call_from_rtq_loop_thread_is_refused_clearly(
    client: Client, start_worker: Any
) -> None:
    async def bad(r: Request) -> Any:  # an async handler (runs on rtq_nb's loop) using sync API
        return client.call("nested")

    start_worker(bad)
    from rtq_nb import RequestFailed

    with pytest.raises(RequestFailed, match="use the async API"):
        client.call("x", timeout=10)


def test_worker_start_stop_start_in_process(client: Client, url: str, prefix: str) -> None:
    w = Worker(aecho, url, prefix=prefix)
    for round_ in range(3):
        w.start()
        assert w.running and [x.id for x in client.workers()] == [w.id]
        assert client.call(round_) == round_
        w.stop()
        assert not w.running and client.workers() == []
    assert w.processed == 3


def test_stop_finishes_in_flight_work(client: Client, url: str, prefix: str) -> None:
    started = threading.Event()

    async def slowish(r: Request) -> Any:
        started.set()
        await asyncio.sleep(0.3)  # simulated model time
        return "done"

    w = Worker(slowish, url, prefix=prefix).start()
    h = client.submit("x")
    assert started.wait(10)
    w.stop()  # graceful: waits for the in-flight request
    assert h.result(timeout=5) == "done"


def test_context_manager_worker(client: Client, url: str, prefix: str) -> None:
    with Worker(fake_llm, url, prefix=prefix):
        assert client.call("p", params={"tokens": 3, "rate": 0}).count(" ") == 2


NB_CELLS = [
    """import os
from rtq_nb import Client, AsyncClient, Worker
from rtq_nb.demo import fake_llm
url, prefix = os.environ["RTQ_TEST_URL"], os.environ["RTQ_TEST_PREFIX"]
w = Worker(fake_llm, url, prefix=prefix).start()
c = Client(url, prefix=prefix)""",
    # sync API inside a cell: the kernel's own loop is running
    """sync_text = c.call("hi", params={"tokens": 5, "rate": 0})
streamed = "".join(c.stream("hi", params={"tokens": 5, "rate": 0}))
assert sync_text == streamed and len(streamed.split()) == 5
print("SYNC-OK", repr(streamed))""",
    # async API with top-level await
    """ac = AsyncClient(url, prefix=prefix)
parts = [chunk async for chunk in ac.stream("hi", params={"tokens": 5, "rate": 0})]
assert "".join(parts) == streamed
print("ASYNC-OK", await ac.call("hi", params={"tokens": 5, "rate": 0}) == streamed)
await ac.aclose()""",
    """w.stop(); w.start(); assert c.call("again", params={"tokens": 2, "rate": 0}); w.stop()
print("RESTART-OK")""",
]


def test_real_jupyter_kernel_runs_sync_and_async_api(tmp_path: Path, url: str, prefix: str) -> None:
    env = isolated_jupyter_env(tmp_path)
    env.update(RTQ_TEST_URL=url, RTQ_TEST_PREFIX=prefix)
    nb = write_notebook(tmp_path / "api.ipynb", NB_CELLS)
    run = run_notebook(nb, env=env, cwd=tmp_path, timeout=120, record_comm=False)
    outputs = "".join(
        o.get("text", "") for cell in run.notebook.cells for o in cell.get("outputs", [])
    )
    assert "SYNC-OK" in outputs and "ASYNC-OK True" in outputs and "RESTART-OK" in outputs


def test_sync_call_slow_paths_continue_in_the_async_core(
    url: str, prefix: str, start_worker: Any
) -> None:
    """Client.call's first wait slice runs on a sync connection; a longer wait, a timeout
    and the diagnosis continue in the async core, with the same outcome. A call whose
    deadline passes while nobody serves it is expired (it will never start), and says how
    long it waited in all."""
    from rtq_nb import RequestExpired

    with Client(url, prefix=prefix, reap_interval=0.2) as c:
        with pytest.raises(RequestExpired, match="deadline passed while it was queued"):
            c.call("nobody serves", timeout=0.5)  # several slices, then the diagnosis
        gate = threading.Event()

        def slow(r: Request) -> Any:
            gate.wait(10)
            return r.input

        start_worker(slow)
        threading.Timer(0.6, gate.set).start()  # answers after a few wait slices
        assert c.call("late answer", timeout=10) == "late answer"
