"""The OpenAI-compatible backend end to end through Redis: a real engine (llama.cpp's
llama-server serving the tiny model, tests/backends/engine.py) for calls, streams, usage,
cancellation seen at the engine, concurrency, an engine restart under load and what the engine
received; the scripted stub for what the engine cannot do (429 with Retry-After, 503 until the
deadline, a stream cut mid-way, a hanging engine)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from rtq_nb import Client, RequestFailed, Status, Usage, Worker
from rtq_nb.backends import OpenAIBackend
from tests.backends.engine import Engine
from tests.backends.proxy import RecordingProxy
from tests.backends.stub import StubServer, drop_after, hang, rate_limited, unavailable
from tests.conftest import wait_until

MSGS = [{"role": "user", "content": "Say something."}]


def test_call_stream_and_usage_from_the_engine(
    engine: Engine, client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(OpenAIBackend(engine.base_url, engine.model), concurrency=4)
    text = client.call("Hello", params={"max_tokens": 16, "temperature": 0})
    assert isinstance(text, str) and text
    s = client.stream(MSGS, params={"max_tokens": 24, "temperature": 0})
    deltas = list(s)
    result = s.final()
    assert len(deltas) >= 2 and result.text == "".join(deltas)
    assert result.usage is not None and result.usage.completion_tokens > 0
    assert result.usage.prompt_tokens > 0 and result.status is Status.COMPLETED
    h = client.submit("Hi", params={"max_tokens": 8})
    h.result()
    rec = client.get(h.id)
    assert rec.usage is not None and 0 < rec.usage.completion_tokens <= 8


def test_cancel_stops_generation_at_the_engine(
    engine: Engine, client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(OpenAIBackend(engine.base_url, engine.model), heartbeat=0.5, lease=2.0)
    engine.wait_idle(10)
    mark = engine.log_mark()
    with client.stream("Go on forever", params={"max_tokens": 3500, "temperature": 1}) as s:
        next(s)  # generating now
        assert engine.busy_slots()
    # leaving the block cancelled the request: the worker closed the HTTP stream
    engine.wait_idle(10)
    rec = wait_until(lambda: r if (r := client.get(s.id)).status.terminal else None, what="end")
    assert rec.status is Status.CANCELLED
    assert "cancel" in engine.log_since(mark).lower() or not engine.busy_slots()


def test_concurrency_fills_the_engines_slots(
    engine: Engine, client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(OpenAIBackend(engine.base_url, engine.model), concurrency=8)
    engine.wait_idle(10)
    streams = [client.stream(f"prompt {i}", params={"max_tokens": 1000}) for i in range(4)]
    engine.wait_busy(4, 20)  # the 4 slots generate at once: one worker, many in flight
    for s in streams:
        assert s.final().usage is not None


def test_priority_params_and_deadline_reach_the_engine(
    engine_proxy: RecordingProxy, client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(OpenAIBackend(engine_proxy.base_url, "tiny-llama", send_priority=True))
    client.call(
        "x", priority=7, timeout=20, params={"max_tokens": 5, "temperature": 0.3, "seed": 9}
    )
    sent = [r for r in engine_proxy.requests if r.path.endswith("/chat/completions")][-1]
    assert 0 < float(sent.headers["x-request-timeout"]) <= 20  # what is left of the deadline
    body = engine_proxy.bodies("/chat/completions")[-1]
    assert body["priority"] == -7 and body["max_tokens"] == 5 and body["seed"] == 9
    assert body["temperature"] == 0.3 and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": "x"}]


def test_engine_restart_under_load_loses_nothing_silently(
    start_engine: Callable[..., Engine], client: Client, start_worker: Callable[..., Worker]
) -> None:
    eng = start_engine()
    start_worker(OpenAIBackend(eng.base_url, eng.model), concurrency=4)
    handles = [client.submit(f"q{i}", params={"max_tokens": 400}, timeout=60) for i in range(12)]
    eng.wait_busy(1, 20)
    eng.restart()  # open streams break; new requests wait for it and go through
    done, failed = 0, 0
    for h in handles:
        try:
            h.result()
            done += 1
        except RequestFailed as exc:
            assert "stream broke off" in str(exc) and eng.base_url in str(exc)
            failed += 1
    assert done + failed == 12 and done > 0  # every request ended, each said how
    statuses = {client.get(h.id).status for h in handles}
    assert statuses <= {Status.COMPLETED, Status.FAILED}


def test_rate_limit_is_retried_after_the_asked_delay(
    stub: StubServer, client: Client, start_worker: Callable[..., Worker]
) -> None:
    stub.script(rate_limited("0.3"))
    start_worker(OpenAIBackend(stub.base_url, stub.model))
    t0 = time.monotonic()
    assert client.call("hi")
    assert time.monotonic() - t0 >= 0.3 and len(stub.completions()) == 2


def test_unavailable_engine_fails_within_the_deadline_naming_it(
    stub: StubServer, client: Client, start_worker: Callable[..., Worker]
) -> None:
    stub.default = unavailable()
    start_worker(OpenAIBackend(stub.base_url, stub.model))
    t0 = time.monotonic()
    with pytest.raises(RequestFailed, match="503") as info:
        client.call("hi", timeout=2)
    assert stub.base_url in str(info.value) and time.monotonic() - t0 < 5
    assert len(stub.completions()) >= 2  # retried meanwhile


def test_a_stream_cut_mid_way_fails_the_request(
    stub: StubServer, client: Client, start_worker: Callable[..., Worker]
) -> None:
    stub.script(drop_after(3))
    start_worker(OpenAIBackend(stub.base_url, stub.model))
    with pytest.raises(RequestFailed, match="stream broke off"):
        client.call("hi", timeout=10)


def test_a_hanging_engine_is_bounded_by_the_deadline(
    stub: StubServer, client: Client, start_worker: Callable[..., Worker]
) -> None:
    stub.script(hang())
    start_worker(OpenAIBackend(stub.base_url, stub.model))
    h = client.submit("hi", timeout=1.5)
    with pytest.raises(Exception):  # noqa: B017 - the request ends, one way or another
        h.result(timeout=10)
    assert client.get(h.id).status in (Status.FAILED, Status.EXPIRED)


def test_cli_worker_without_an_engine_exits_5_or_waits(
    url: str, prefix: str, start_engine: Callable[..., Engine]
) -> None:
    from rtq_nb.transport.embedded import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", "--backend", "openai"]
    cmd += ["--base-url", base, "--model", "tiny-llama", "--url", url, "--prefix", prefix]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 5 and base in done.stderr and "--wait-for-engine" in done.stderr
    waiting = subprocess.Popen(
        [*cmd, "--wait-for-engine", "60"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        start_engine(port=port)
        assert waiting.stdout is not None
        assert waiting.stdout.readline().startswith(b"READY")  # it waited, then served
        with Client(url, prefix=prefix, timeout=30) as c:
            assert c.call("hello", params={"max_tokens": 4})
    finally:
        waiting.terminate()
        waiting.wait(30)
        if waiting.stdout is not None:
            waiting.stdout.close()


def test_usage_type_is_public() -> None:
    assert Usage(2, 3).total_tokens == 5


def test_demo_streams_from_the_engine(engine: Engine, url: str) -> None:
    cmd = [sys.executable, "-m", "rtq_nb.cli", "demo", "--url", url, "--tokens", "24"]
    cmd += ["--base-url", engine.base_url, "--model", engine.model, "--queue", "demo-engine"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()  # the streamed text
    assert "summary: " in done.stderr and "usage " in done.stderr and "tokens" in done.stderr
