"""OpenTelemetry tracing against a real redis-server and real workers: one trace per request
from the client's span through the queue to the handler's own spans, a hostile ``trace``
field ignored, and nothing imported or written when tracing is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from rtq_nb import Client, Keyring, Request, Security, SigningKey, Worker
from rtq_nb.cli import build_parser
from rtq_nb.demo import aecho
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.keys import Keys
from rtq_nb.tracing import parse_trace, tracing
from tests.conftest import wait_until

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # set by another module of this session
        current.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        return
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture
def traced(url: str, prefix: str) -> Iterator[Client]:
    c = Client(url, prefix=prefix, timeout=30, tracing=True)
    yield c
    c.close()


_test_tracer = trace.get_tracer("tests")


def model_call(request: Request) -> Any:  # a sync handler (runs in the worker's executor)
    with _test_tracer.start_as_current_span("model"):
        return {"echo": request.input}


async def amodel_call(request: Request) -> Any:
    with _test_tracer.start_as_current_span("model"):
        return {"echo": request.input}


def model_stream(request: Request) -> Iterator[str]:  # a sync generator (executor thread)
    with _test_tracer.start_as_current_span("model"):
        yield from ["a", "b", "c"]


def _of(exporter: InMemorySpanExporter, trace_id: int, want: int) -> dict[str, ReadableSpan]:
    """The spans of one trace by name, once ``want`` of them are finished (a worker closes its
    spans when the completion's reply is back: possibly after the client had the result)."""

    def ready() -> dict[str, ReadableSpan] | None:
        got = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        return {s.name: s for s in got} if len(got) >= want else None

    found: dict[str, ReadableSpan] = wait_until(ready, 10, f"{want} spans")
    return found


def _check_chain(by: dict[str, ReadableSpan], app: ReadableSpan, rid: str) -> None:
    sub, wait, run, model, dlv = (
        by[n] for n in ("rtq.submit", "rtq.queue_wait", "rtq.run", "model", "rtq.deliver")
    )

    def parent(s: ReadableSpan) -> int | None:
        return s.parent.span_id if s.parent is not None else None

    assert parent(sub) == app.context.span_id
    assert parent(wait) == sub.context.span_id and parent(run) == sub.context.span_id
    assert parent(model) == run.context.span_id and parent(dlv) == run.context.span_id
    assert sub.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    for s in (sub, wait, run):
        assert s.attributes is not None and s.attributes["messaging.message.id"] == rid
        assert s.attributes["messaging.system"] == "rtq"
    assert run.attributes is not None and dlv.attributes is not None
    assert run.attributes["rtq.outcome"] == "completed" and run.attributes["rtq.attempt"] == 1
    assert dlv.attributes["rtq.delivered"] is True
    assert wait.end_time is not None and run.start_time is not None
    assert wait.end_time <= run.start_time + 1 and run.status.is_ok


@pytest.mark.parametrize("handler", [model_call, amodel_call])
def test_call_is_one_trace_client_queue_worker_model(
    traced: Client, start_worker: Any, spans: InMemorySpanExporter, handler: Any
) -> None:
    w = start_worker(handler, tracing=True)
    with _test_tracer.start_as_current_span("app") as app:
        h = traced.submit("hi")
        assert h.result() == {"echo": "hi"}
        assert traced.call("again") == {"echo": "again"}  # the sync socket fast path
    by = _of(spans, app.get_span_context().trace_id, 11)
    assert sum(1 for s in spans.get_finished_spans() if s.name == "rtq.run") == 2
    app_span = next(s for s in spans.get_finished_spans() if s.name == "app")
    _check_chain(by, app_span, str((by["rtq.submit"].attributes or {})["messaging.message.id"]))
    run = by["rtq.run"]
    assert run.attributes is not None and run.attributes["rtq.worker.id"] == w.id


def test_stream_is_one_trace_with_a_first_chunk_event(
    traced: Client, start_worker: Any, spans: InMemorySpanExporter
) -> None:
    start_worker(model_stream, tracing=True)
    with _test_tracer.start_as_current_span("app") as app:
        assert "".join(traced.stream("go")) == "abc"
    by = _of(spans, app.get_span_context().trace_id, 6)
    app_span = next(s for s in spans.get_finished_spans() if s.name == "app")
    _check_chain(by, app_span, str((by["rtq.submit"].attributes or {})["messaging.message.id"]))
    run = by["rtq.run"]
    assert [e.name for e in run.events] == ["rtq.first_chunk"]
    assert run.attributes is not None and run.attributes["rtq.stream.pieces"] == 3


def test_a_hostile_trace_field_is_ignored_and_neighbours_are_served(
    client: Client, raw: Any, prefix: str, start_worker: Any, spans: InMemorySpanExporter
) -> None:
    """The field is unsigned: garbage must neither fail the request nor attach its spans to
    a trace; a well-formed one (from another tracer) is followed."""
    k = Keys(prefix, "default")
    good_parent = f"00-{'ab' * 16}-{'cd' * 8}-01 vendor=x"
    values = [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # version ff is invalid
        "x" * 5000,
        "\x00\n\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
        f"00-{'ab' * 16}-{'cd' * 8}-01 ,,=bad=,\x7f",  # a good parent, a bad tracestate
        good_parent,
    ]
    handles = [client.submit(i) for i in range(len(values))]
    for h, v in zip(handles, values):
        raw.hset(k.request(h.id), "trace", v)
    start_worker(aecho, tracing=True)
    assert [h.result() for h in handles] == list(range(len(values)))

    def runs() -> dict[str, ReadableSpan] | None:
        got = {
            str((s.attributes or {}).get("messaging.message.id")): s
            for s in spans.get_finished_spans()
            if s.name == "rtq.run"
        }
        return got if len(got) >= len(values) else None

    by_id: dict[str, ReadableSpan] = wait_until(runs, 10, "the run spans")
    for h in handles[:5]:
        assert by_id[h.id].parent is None  # a trace of its own
    for h in handles[5:]:
        s = by_id[h.id]
        assert s.parent is not None and s.parent.span_id == 0xCDCDCDCDCDCDCDCD
        assert s.context.trace_id == int("ab" * 16, 16)
    assert dict(by_id[handles[5].id].context.trace_state) == {}
    assert dict(by_id[handles[6].id].context.trace_state) == {"vendor": "x"}


def test_signed_requests_carry_an_unsigned_trace_field(
    url: str, prefix: str, raw: Any, start_worker: Any, spans: InMemorySpanExporter
) -> None:
    """The trace field is not signed: a signed, traced request verifies, and changing its
    trace field changes only where its spans go."""
    ck, wk = SigningKey.generate("c1"), SigningKey.generate("w1")
    sec = Security(signing_key=ck, trusted=Keyring([wk]))
    with Client(url, prefix=prefix, timeout=30, tracing=True, security=sec) as c:
        h1, h2 = c.submit("one"), c.submit("two")
        raw.hset(Keys(prefix, "default").request(h2.id), "trace", "forged")
        start_worker(aecho, tracing=True, security=Security(signing_key=wk, trusted=Keyring([ck])))
        assert (h1.result(), h2.result()) == ("one", "two")

    def two_runs() -> list[ReadableSpan] | None:
        got = [s for s in spans.get_finished_spans() if s.name == "rtq.run"]
        return got if len(got) >= 2 else None

    wait_until(two_runs, 10, "the run spans")
    finished = spans.get_finished_spans()
    run1 = next(s for s in finished if s.name == "rtq.run" and s.parent is not None)
    sub1 = next(s for s in finished if s.name == "rtq.submit")
    assert run1.parent is not None and run1.parent.span_id == sub1.context.span_id
    assert [s.parent for s in finished if s.name == "rtq.run" and s is not run1] == [None]


def test_parse_trace_is_strict_and_never_raises() -> None:
    good = f"00-{'a' * 32}-{'b' * 16}-01"
    assert parse_trace(good) == (int("a" * 32, 16), int("b" * 16, 16), 1, [])
    assert parse_trace(good + " k=v, t@sys=1 2") == (
        int("a" * 32, 16), int("b" * 16, 16), 1, [("k", "v"), ("t@sys", "1 2")]
    )  # fmt: skip
    assert parse_trace(f"01-{'a' * 32}-{'b' * 16}-01-future") is not None  # a later version
    for bad in (None, 1, b"x", "", good + "-extra", good.upper(), good[:-1], good + "\n"):
        assert parse_trace(bad) is None
    assert parse_trace(good + " " + ",".join(f"k{i}=v" for i in range(40)))[3] == []  # type: ignore[index]


def test_batched_requests_each_get_their_spans(
    traced: Client, start_worker: Any, spans: InMemorySpanExporter
) -> None:
    def batch(reqs: list[Request]) -> list[Any]:
        return [r.input for r in reqs]

    handles = traced.submit_many(["a", "b", "c"])
    start_worker(batch, tracing=True, batch_size=3, batch_wait=0.05)
    assert [h.result() for h in handles] == ["a", "b", "c"]
    subs = {
        (s.attributes or {})["messaging.message.id"]: s
        for s in spans.get_finished_spans()
        if s.name == "rtq.submit"
    }

    def runs() -> list[ReadableSpan] | None:
        got = [s for s in spans.get_finished_spans() if s.name == "rtq.run"]
        return got if len(got) >= 3 else None

    for run in wait_until(runs, 10, "three run spans"):
        sub = subs[(run.attributes or {})["messaging.message.id"]]
        assert run.parent is not None and run.parent.span_id == sub.context.span_id


def test_tracing_switch_and_missing_sdk(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.delenv("RTQ_TRACING", raising=False)
    assert tracing(None) is None and tracing(False) is None and tracing(True) is not None
    monkeypatch.setenv("RTQ_TRACING", "1")
    assert tracing(None) is not None
    with pytest.raises(ConfigurationError, match="tracing must be"):
        tracing("yes")  # type: ignore[arg-type]
    a = build_parser().parse_args(["worker", "m:f", "--tracing"])
    assert a.tracing is True and build_parser().parse_args(["worker", "m:f"]).tracing is None
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(ConfigurationError, match=r"pip install 'rtq-nb\[tracing\]'"):
        Worker(aecho, url, tracing=True)
    with pytest.raises(ConfigurationError, match=r"pip install 'rtq-nb\[tracing\]'"):
        Client(url, tracing=None)  # from RTQ_TRACING=1


# Run with opentelemetry unimportable (as if not installed), noting who tries to import it:
# redis-py (8.x) looks for it on import, rtq_nb must not when tracing is off.
_OFF = """
import json, sys
tried = []
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "opentelemetry":
            return None
        f = sys._getframe(1)
        while f is not None and f.f_code.co_filename.startswith("<frozen"):
            f = f.f_back
        tried.append(f.f_globals.get("__name__", "?") if f is not None else "?")
        raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Absent())
from rtq_nb import Client, Worker
from rtq_nb.demo import aecho, fake_llm
url, prefix = sys.argv[1], sys.argv[2]
c = Client(url, prefix=prefix, timeout=30)
with Worker(aecho, url, prefix=prefix), Worker(fake_llm, url, prefix=prefix, queue="s"):
    assert c.call("x") == "x"
    assert "".join(c.stream("y", queue="s", params={"tokens": 3, "rate": 0}))
    h = c.submit("y")
    assert h.result() == "y"
otel = [m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m]]
print(json.dumps({"id": h.id, "otel": otel, "tried": sorted(set(tried))}))
c.close()
"""


def test_tracing_off_writes_no_field_and_imports_nothing(url: str, prefix: str, raw: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RTQ_TRACING"}
    out = subprocess.run(
        [sys.executable, "-c", _OFF, url, prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["otel"] == []
    assert not [m for m in got["tried"] if m.startswith("rtq_nb")], got["tried"]
    record = raw.hgetall(Keys(prefix, "default").request(got["id"]))
    assert record["status"] == "completed" and "trace" not in record
