"""The sync facade reads streams on the calling thread (``rtq_nb.client.sync_reads``): the
submission and every read of the common case go through the client's blocking connection, so a
stream flows while rtq_nb's loop thread is busy; what is not the common case (a deadline, a
dropped connection) continues in the async core where the read left off."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from rtq_nb import Client, Status
from rtq_nb.demo import fake_answer
from rtq_nb.errors import RequestCancelled, RequestExpired, RequestTimeout
from rtq_nb.transport.embedded import EmbeddedRedis
from tests.conftest import Background, across_restart, wait_until, worker_cmd


def test_streams_flow_while_the_loop_thread_is_held(
    client: Client,
    worker_process: Callable[..., subprocess.Popen[bytes]],
    loop_held: Callable[[], None],
) -> None:
    worker_process("rtq_nb.demo:fake_llm")
    assert client.call("warm-up", timeout=30) is not None  # the layout is read: no more hops
    expected = "".join(fake_answer("tale", 30))
    loop_held()  # from here on, anything that needs the loop thread would hang
    with client.stream("tale", params={"tokens": 30, "rate": 0}) as s:
        deltas = list(s)
    assert "".join(deltas) == expected == s.text and deltas[0].seq == 0
    h = client.submit("saga", stream=True, params={"tokens": 20, "rate": 0})
    assert "".join(h) == "".join(fake_answer("saga", 20)) and h.done
    whole = client.submit("ode", params={"tokens": 5, "rate": 0})  # a whole result
    assert (
        whole.result() == "".join(fake_answer("ode", 5)) == client.call("ode", params={"tokens": 5})
    )


def test_a_deadline_continues_in_the_async_core(client: Client) -> None:
    """No worker: the reads run out the request's 0.6 s, then the async core reads the record
    (still pending, its deadline passed: no worker will start it)."""
    s = client.stream("nobody serves this", timeout=0.6)
    with pytest.raises(RequestExpired, match="deadline passed while it was queued"):
        list(s)
    assert s.text == ""
    h = client.submit("nobody serves this either", timeout=0.6)
    with pytest.raises(RequestExpired, match="deadline passed while it was queued"):
        h.result()


def test_a_stream_read_rides_out_a_redis_restart(tmp_path: Any, caplog: Any) -> None:
    srv = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis").start()
    worker = subprocess.Popen(worker_cmd(srv.url, "rs", "rtq_nb.demo:fake_llm"))
    try:
        with Client(srv.url, prefix="rs", reconnect_timeout=60, timeout=120) as c:
            wait_until(lambda: c.queues() and c.workers(), what="a worker registered")
            expected = "".join(fake_answer("long", 120))
            s = c.stream("long", params={"tokens": 120, "rate": 40})
            got: list[str] = [next(s) for _ in range(3)]
            rest = across_restart(srv, caplog, lambda: "".join(s))  # fails, falls back, backs off
            assert "".join(got) + rest == expected == s.text
    finally:
        worker.kill()
        worker.wait(10)
        srv.stop()
        srv.cleanup()


def test_cancel_from_another_thread_ends_the_reader_with_request_cancelled(
    client: Client, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    worker_process("rtq_nb.demo:fake_llm")
    s = client.stream("slow", params={"tokens": 400, "rate": 20}, timeout=60)
    first = next(s)  # the reader is running: now another thread cancels
    reader = Background(lambda: "".join(s))
    wait_until(lambda: len(s.text) > len(first), what="the reader to get more chunks")
    s.cancel()
    with pytest.raises(RequestCancelled):
        reader.result(30)
    assert client.get(s.id).status is Status.CANCELLED


def test_a_timed_out_stream_says_how_long_it_waited(
    client: Client, worker_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """The calling thread reads until the deadline; the async core's timeout counts that."""
    worker_process("rtq_nb.demo:fake_llm")
    s = client.stream("slow", params={"tokens": 400, "rate": 20}, timeout=1.5)
    with pytest.raises(RequestTimeout) as err:
        list(s)
    assert err.value.waited is not None and err.value.waited >= 1.2, err.value.waited
    assert err.value.status == "running" and s.text  # it had started streaming
