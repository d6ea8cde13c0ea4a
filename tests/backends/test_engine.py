"""The backend tests' infrastructure works: the real engine (llama-server with the tiny model)
streams chat completions with usage, serves 4 streams at once, stops generating when the client
disconnects (seen from the server side: /slots, /metrics, its log), restarts on the same port;
the recording proxy records what the engine got and passes disconnects on; the stub produces
the failures the engine cannot (429 + Retry-After, 503, a dropped stream, a slow stream)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.backends.engine import Engine, engine_required
from tests.backends.httpio import sse_data
from tests.backends.proxy import BodyEnd, RecordingProxy
from tests.backends.stub import Drop, Reply, StubServer, drop_after, hang, rate_limited, slow
from tests.backends.stub import unavailable as unavailable_503

# long enough that the 4 streams overlap on a busy machine (one stream alone runs at about
# 5,000 tokens/s; 4 in parallel at about 450 tokens/s each)
N_PARALLEL_TOKENS = 1000
MESSAGES = [{"role": "user", "content": "Say hello to the redis queue worker."}]


def chat_body(model: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def read_stream(lines: Iterator[str], stop_after: int | None = None) -> dict[str, Any]:
    """Collect a chat stream from ``response.iter_lines()``: content deltas, finish_reason,
    usage, whether [DONE] came; stop after ``stop_after`` content deltas (the iterator can then
    be read on)."""
    out: dict[str, Any] = {"deltas": [], "finish": None, "usage": None, "done": False}
    for data in sse_data(lines):
        if data == "[DONE]":
            out["done"] = True
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        for ch in chunk.get("choices", []):
            if ch["delta"].get("content"):
                out["deltas"].append(ch["delta"]["content"])
            out["finish"] = ch.get("finish_reason") or out["finish"]
        if stop_after is not None and len(out["deltas"]) >= stop_after:
            break
    return out


# -- the real engine ---------------------------------------------------------------------------


def test_stream_chat_completion_with_usage(engine: Engine) -> None:
    with (
        httpx.Client(base_url=engine.base_url, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=chat_body(engine.model, 32)) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        got = read_stream(resp.iter_lines())
    assert got["done"]
    assert len(got["deltas"]) == 32  # the tiny model never samples EOS: always max_tokens
    assert "".join(got["deltas"]).isascii()
    assert got["finish"] == "length"
    usage = got["usage"]
    assert usage["completion_tokens"] == 32
    assert usage["prompt_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + 32
    models = httpx.get(f"{engine.base_url}/models", timeout=10).json()
    assert engine.model in [m["id"] for m in models["data"]]


def test_four_streams_are_served_in_parallel(engine: Engine) -> None:
    engine.wait_idle()
    before = engine.metrics()
    results: list[dict[str, Any]] = [{} for _ in range(4)]
    barrier = threading.Barrier(4)

    def run(i: int) -> None:
        try:
            with httpx.Client(base_url=engine.base_url, timeout=60) as http:
                barrier.wait(10)  # the 4 requests leave together
                body = chat_body(engine.model, N_PARALLEL_TOKENS, seed=i)
                with http.stream("POST", "/chat/completions", json=body) as resp:
                    results[i] = read_stream(resp.iter_lines())
        except Exception as exc:  # reported below, never a hang
            results[i] = {"error": repr(exc)}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    busy = engine.wait_busy(4, timeout=30)  # the server's own view: 4 slots generating at once
    for t in threads:
        t.join(60)
    assert sorted(busy) == [0, 1, 2, 3]
    for r in results:
        assert "error" not in r, r
        assert r["usage"]["completion_tokens"] == N_PARALLEL_TOKENS
    after = engine.metrics()
    predicted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    assert predicted == 4 * N_PARALLEL_TOKENS
    assert engine.busy_slots() == []


def test_client_disconnect_stops_generation(engine: Engine) -> None:
    engine.wait_idle()
    mark = engine.log_mark()
    before = engine.metrics()["tokens_predicted_total"]
    with (
        httpx.Client(base_url=engine.base_url, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=chat_body(engine.model, 3500)) as resp,
    ):
        # keep the iterator referenced: a dropped httpx iter_* generator closes the response
        lines = resp.iter_lines()
        assert len(read_stream(lines, stop_after=5)["deltas"]) == 5
        assert engine.busy_slots(), "the long generation should still be running"
    # leaving the block closed the connection mid-stream: the server must stop generating
    took = engine.wait_idle(timeout=10)
    assert took < 5
    predicted = engine.metrics()["tokens_predicted_total"] - before
    assert predicted < 3500, f"{predicted} tokens: the generation ran to the end"
    assert "cancel task" in engine.log_since(mark)


def test_engine_restart_on_the_same_port(start_engine: Callable[..., Engine]) -> None:
    eng = start_engine(n_parallel=1)
    port, pid = eng.port, eng.pid
    with (
        httpx.Client(base_url=eng.base_url, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=chat_body(eng.model, 3500)) as resp,
    ):
        lines = resp.iter_lines()
        assert len(read_stream(lines, stop_after=3)["deltas"]) == 3
        ready = eng.restart()  # SIGKILL mid-stream, then the same port again
        with pytest.raises(httpx.RemoteProtocolError):  # the open stream breaks off
            read_stream(lines)
    assert eng.port == port and eng.pid != pid and eng.starts == 2
    assert ready < 30
    assert eng.health() == 200 and eng.busy_slots() == []
    body = chat_body(eng.model, 4, stream=False)
    r = httpx.post(f"{eng.base_url}/chat/completions", json=body, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    eng.kill()
    assert eng.health() == 0 and not eng.running


# -- the recording proxy -----------------------------------------------------------------------


def test_proxy_records_the_body_and_streams_through(
    engine: Engine, engine_proxy: RecordingProxy
) -> None:
    body = chat_body(engine.model, 8, priority=7, temperature=0)
    headers = {"Authorization": "Bearer sk-test", "X-Request-Id": "req-1"}
    with (
        httpx.Client(base_url=engine_proxy.base_url, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers.get("transfer-encoding") == "chunked"
        got = read_stream(resp.iter_lines())
    assert got["done"] and got["usage"]["completion_tokens"] == 8
    (rec,) = engine_proxy.wait_requests(1)
    assert (rec.method, rec.path) == ("POST", "/v1/chat/completions")
    assert rec.json == body
    assert rec.headers["authorization"] == "Bearer sk-test"
    assert rec.headers["x-request-id"] == "req-1"
    assert rec.wait_done() == "complete" and rec.status == 200
    plain = chat_body(engine.model, 3, stream=False)
    r = httpx.post(f"{engine_proxy.base_url}/chat/completions", json=plain, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert engine_proxy.bodies("/chat/completions") == [body, plain]
    assert engine_proxy.requests[1].wait_done() == "complete"


def test_proxy_body_end_follows_the_framing() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    )
    end = BodyEnd()
    done = [end.feed(chunked[i : i + 1]) for i in range(len(chunked))]  # byte by byte
    assert done[-1] and not any(done[:-1]) and end.status == 200
    sized = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 4\r\n\r\nbusy"
    end = BodyEnd()
    assert not end.feed(sized[:-2]) and end.feed(sized[-2:]) and end.status == 429


def test_proxy_passes_a_client_disconnect_to_the_engine(
    engine: Engine, engine_proxy: RecordingProxy
) -> None:
    engine.wait_idle()
    mark = engine.log_mark()
    with (
        httpx.Client(base_url=engine_proxy.base_url, timeout=30) as http,
        http.stream("POST", "/chat/completions", json=chat_body(engine.model, 3500)) as resp,
    ):
        lines = resp.iter_lines()
        assert len(read_stream(lines, stop_after=5)["deltas"]) == 5
        assert engine.busy_slots(), "the long generation should still be running"
    (rec,) = engine_proxy.wait_requests(1)
    assert rec.wait_done() == "client_closed"
    engine.wait_idle(timeout=10)
    assert "cancel task" in engine.log_since(mark)


def test_missing_engine_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("RTQ_REQUIRE_ENGINE", raising=False)
    assert not engine_required()
    monkeypatch.setenv("CI", "true")
    assert engine_required()
    monkeypatch.setenv("CI", "0")
    monkeypatch.setenv("RTQ_REQUIRE_ENGINE", "1")
    assert engine_required()


# -- the stub ----------------------------------------------------------------------------------


def test_stub_normal_reply_streamed_and_not(stub: StubServer) -> None:
    with httpx.Client(base_url=stub.base_url, timeout=10) as http:
        with http.stream("POST", "/chat/completions", json=chat_body(stub.model, 99)) as resp:
            got = read_stream(resp.iter_lines())
        r = http.post("/chat/completions", json=chat_body(stub.model, 99, stream=False))
        t = http.post("/completions", json={"model": "m", "prompt": "hi"})
    assert got["done"] and "".join(got["deltas"]) == "Hello from the stub."
    assert got["finish"] == "stop" and got["usage"]["completion_tokens"] == 5
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the stub."
    assert t.json()["choices"][0]["text"] == "Hello from the stub."
    assert [x.json["max_tokens"] for x in stub.completions()[:2]] == [99, 99]


def test_stub_rate_limit_and_unavailable(stub: StubServer) -> None:
    stub.script(rate_limited("1"), unavailable_503())
    with httpx.Client(base_url=stub.base_url, timeout=10) as http:
        r1 = http.post("/chat/completions", json=chat_body(stub.model, 4))
        r2 = http.post("/chat/completions", json=chat_body(stub.model, 4))
        r3 = http.post("/chat/completions", json=chat_body(stub.model, 4, stream=False))
    assert r1.status_code == 429 and r1.headers["retry-after"] == "1"
    assert r1.json()["error"]["type"] == "rate_limit_error"
    assert r2.status_code == 503
    assert r3.status_code == 200  # the script is used up: the default reply
    assert [x.status for x in stub.completions()] == [429, 503, 200]


def test_stub_drops_the_connection_mid_stream(stub: StubServer) -> None:
    stub.script(drop_after(3), Drop(before_headers=True))
    with httpx.Client(base_url=stub.base_url, timeout=10) as http:
        with http.stream("POST", "/chat/completions", json=chat_body(stub.model, 9)) as resp:
            assert resp.status_code == 200
            deltas: list[str] = []
            with pytest.raises(httpx.RemoteProtocolError):  # incomplete chunked body
                for data in sse_data(resp.iter_lines()):
                    deltas.extend(c["delta"]["content"] for c in json.loads(data)["choices"])
        assert deltas == [" t0", " t1", " t2"]
        with pytest.raises(httpx.RemoteProtocolError):  # closed before any response byte
            http.post("/chat/completions", json=chat_body(stub.model, 9))
    assert [x.outcome for x in stub.completions()] == ["dropped", "dropped"]


def test_stub_slow_stream_and_hang(stub: StubServer) -> None:
    stub.script(slow(5, 0.05), slow(100, 0.05), hang())
    with httpx.Client(base_url=stub.base_url, timeout=10) as http:
        t0 = time.monotonic()
        with http.stream("POST", "/chat/completions", json=chat_body(stub.model, 5)) as resp:
            got = read_stream(resp.iter_lines())
        assert len(got["deltas"]) == 5 and got["finish"] == "length"
        assert time.monotonic() - t0 >= 0.25
        with http.stream("POST", "/chat/completions", json=chat_body(stub.model, 5)) as resp:
            lines = resp.iter_lines()
            assert len(read_stream(lines, stop_after=2)["deltas"]) == 2
        with pytest.raises(httpx.ReadTimeout):
            http.post("/chat/completions", json=chat_body(stub.model, 5), timeout=0.3)
    recs = stub.wait_requests(3)
    assert [r.wait_done() for r in recs] == ["complete", "client_closed", "client_closed"]
    assert isinstance(stub.default, Reply)
