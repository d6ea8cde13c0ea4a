"""Client + worker against a real redis-server: results, streams, order, errors, timeouts."""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest

from rtq_nb import AsyncClient, Client, Request, RequestFailed, RequestTimeout, Status
from rtq_nb.demo import aecho, fake_answer, fake_llm
from rtq_nb.errors import ConfigurationError, EncodingError, RequestExpired, UnknownQueue
from rtq_nb.protocol.keys import Keys


def test_call_round_trip_and_record(client: Client, start_worker: Any) -> None:
    start_worker(aecho)
    assert client.call({"x": [1, 2]}) == {"x": [1, 2]}
    h = client.submit("hello", priority=5, params={"a": 1})
    assert h.result() == "hello"
    rec = h.record()
    assert rec.status is Status.COMPLETED and rec.result == "hello" and rec.priority == 5
    assert rec.attempts == 1 and rec.worker and rec.params == {"a": 1}
    assert rec.created_ms and rec.started_ms and rec.finished_ms
    assert rec.created_ms <= rec.started_ms <= rec.finished_ms
    assert rec.queue_wait_ms is not None and rec.duration_ms is not None


@pytest.mark.parametrize("kind", ["plain", "async", "generator", "async-generator"])
def test_every_handler_kind_streams_and_returns(
    client: Client, start_worker: Any, kind: str
) -> None:
    def plain(r: Request) -> str:
        return f"plain:{r.input}"

    async def coro(r: Request) -> str:
        return f"async:{r.input}"

    def gen(r: Request) -> Any:
        yield from ["a", "b", "c"]

    async def agen(r: Request) -> Any:
        for t in ["x", "y", "z"]:
            yield t

    handler, whole = {
        "plain": (plain, "plain:q"),
        "async": (coro, "async:q"),
        "generator": (gen, "abc"),
        "async-generator": (agen, "xyz"),
    }[kind]
    start_worker(handler)
    assert client.call("q") == whole
    assert "".join(client.stream("q")) == whole


def _busy_sync(seen: threading.Event) -> Any:
    def busy(r: Request) -> Any:
        yield "first "
        for _ in range(3_000_000):  # about 3 s of yields without a pause (holding the GIL)
            if seen.is_set():
                yield "|saw-first"
                return
            yield "."
        yield "|first-never-arrived"

    return busy


def _busy_async(seen: threading.Event) -> Any:
    pieces = _busy_sync(seen)

    async def busy(r: Request) -> Any:
        for piece in pieces(r):  # yields that never await
            yield piece

    return busy


@pytest.mark.parametrize("make", [_busy_async, _busy_sync], ids=["async", "sync"])
def test_a_generator_that_keeps_the_cpu_busy_sends_its_first_token_alone(
    client: Client, start_worker: Any, raw: Any, prefix: str, make: Any
) -> None:
    """A CPU-bound async generator never gives the loop back by itself; a sync one runs in a
    thread and holds the GIL the loop needs to send. Either way the worker must put the first
    token on the wire, alone, while it keeps generating. The handler spins until it learns
    (through a plain Redis read in this thread) that the first token arrived, and says so in
    its last piece."""
    seen = threading.Event()
    start_worker(make(seen))
    for _ in range(3):
        seen.clear()
        h = client.submit("x", stream=True)
        key = Keys(prefix, client.queue).stream(h.id)
        got = raw.xread({key: "0-0"}, count=1, block=30_000)
        assert got, "no stream entry within 30 s"
        first = got[0][1][0][1]
        seen.set()
        assert first["d"] == "first "  # sent alone, not after the generator ended
        assert "".join(h).endswith("|saw-first")


def test_client_settings_changed_later_apply_to_the_next_submit(
    client: Client, raw: Any, prefix: str
) -> None:
    """Submits are encoded from a cached template; changing the client's public settings
    must still take effect at once."""
    k = Keys(prefix, client.queue)
    first = client.submit("a")
    client.async_client.max_attempts = 7
    client.async_client.retention = 1234
    second = client.submit("a")
    assert raw.hget(k.request(first.id), "max_attempts") == "3"
    assert raw.ttl(k.request(first.id)) > 80_000
    assert raw.hget(k.request(second.id), "max_attempts") == "7"
    assert 1000 < raw.ttl(k.request(second.id)) <= 1234 + 30  # retention + the timeout


def test_stream_order_completeness_and_metadata(client: Client, start_worker: Any) -> None:
    start_worker(fake_llm, flush_interval=0.005)
    expected = fake_answer("tell me", 300)
    chunks = list(client.stream("tell me", params={"tokens": 300, "rate": 2000}))
    assert "".join(chunks) == "".join(expected)
    seqs = [(c.seq, c.pieces) for c in chunks]
    assert seqs[0][0] == 0
    for (s0, n0), (s1, _) in itertools.pairwise(seqs):
        assert s1 == s0 + n0  # contiguous, in order, nothing missing
    assert sum(n for _, n in seqs) == 300
    assert len(chunks) < 300  # coalesced: fewer entries than tokens


def test_tiny_tokens_are_coalesced(client: Client, start_worker: Any) -> None:
    def tokens(r: Request) -> Any:
        for i in range(2000):
            yield f"t{i} "

    start_worker(tokens)
    h = client.submit("x", stream=True)
    text = "".join(h)
    assert text == "".join(f"t{i} " for i in range(2000))
    assert h.record().chunks == 2000
    assert h.async_handle.piece_count == 2000


def test_sentence_granularity(client: Client, start_worker: Any) -> None:
    def words(r: Request) -> Any:
        yield from ["One ", "two. ", "Three", " four! ", "Five"]

    start_worker(words, granularity="sentence")
    assert list(client.stream("x")) == ["One two. ", "Three four! ", "Five"]


def test_failure_is_reported_with_worker_error(client: Client, start_worker: Any) -> None:
    start_worker(fake_llm)
    with pytest.raises(RequestFailed, match="fake model failure at token 3") as ei:
        list(client.stream("x", params={"tokens": 10, "rate": 0, "fail_at": 3}))
    assert "RuntimeError" in ei.value.error

    def boom(r: Request) -> None:
        raise KeyError("nope")

    h = client.submit("y", queue="other")
    start_worker(boom, queue="other")
    with pytest.raises(RequestFailed, match="KeyError"):
        h.result()
    assert h.status() is Status.FAILED


def test_batched_handler_delivers_each_result_separately(client: Client, start_worker: Any) -> None:
    seen: list[int] = []

    def batch(reqs: list[Request]) -> list[Any]:
        seen.append(len(reqs))
        return [r.input * 2 for r in reqs]

    hs = client.submit_many(range(40))  # queued before the worker starts: full batches
    start_worker(batch, batch_size=8, batch_wait=0.05)
    assert [h.result() for h in hs] == [i * 2 for i in range(40)]
    assert max(seen) == 8 and sum(seen) == 40


def test_batched_streaming_handler(client: Client, start_worker: Any) -> None:
    async def batch(reqs: list[Request]) -> Any:
        for step in range(3):
            for i, r in enumerate(reqs):
                yield i, f"{r.input}{step} "

    hs = client.submit_many(["a", "b", "c"], stream=True)
    start_worker(batch, batch_size=4, batch_wait=0.05)
    assert ["".join(h) for h in hs] == ["a0 a1 a2 ", "b0 b1 b2 ", "c0 c1 c2 "]


def test_priority_order_and_fifo_under_load(client: Client, start_worker: Any) -> None:
    """1,500 requests of mixed priorities queued back to back (many per millisecond), then
    served by one worker: pop order must be priority descending, arrival order among equals."""
    import random

    order: list[int] = []
    rng = random.Random(7)
    prios = [rng.choice([-5, 0, 0, 3, 9]) for _ in range(1500)]
    hs = [client.submit(i, priority=p) for i, p in enumerate(prios)]
    start_worker(lambda r: order.append(r.input))
    for h in hs:
        h.result()
    expected = [i for i, _ in sorted(enumerate(prios), key=lambda t: (-t[1], t[0]))]
    assert order == expected


def test_many_clients_many_workers_no_loss_no_duplicates(
    url: str, prefix: str, raw: Any, worker_process: Any
) -> None:
    for _ in range(4):
        worker_process("rtq_nb.demo:aecho", "--concurrency", "2")
    n_clients, per_client = 8, 2000

    async def one(ci: int) -> list[tuple[str, Any]]:
        async with AsyncClient(url, prefix=prefix, timeout=120) as c:
            hs = await c.submit_many([f"{ci}:{i}" for i in range(per_client)])
            return [(h.id, await h.result()) for h in hs]

    async def main() -> list[list[tuple[str, Any]]]:
        return await asyncio.gather(*(one(ci) for ci in range(n_clients)))

    results = asyncio.run(main())
    ids = [rid for rs in results for rid, _ in rs]
    assert len(ids) == len(set(ids)) == n_clients * per_client
    for ci, rs in enumerate(results):
        assert [v for _, v in rs] == [f"{ci}:{i}" for i in range(per_client)]
    k = Keys(prefix, "default")
    assert raw.zcard(k.pending) == 0 and raw.zcard(k.running) == 0
    assert int(raw.hget(k.stats, "completed")) == n_clients * per_client
    # a duplicate delivery would leave a second envelope behind in some result list
    assert not raw.keys(f"{k.base}:res:*")
    sample = ids[::997]
    assert all(raw.hget(k.request(i), "attempts") == "1" for i in sample)


def test_timeout_says_pending_and_recipes_work(client: Client, start_worker: Any) -> None:
    h = client.submit("late", timeout=5)
    with pytest.raises(RequestTimeout) as ei:
        h.result(timeout=0.2)
    e = ei.value
    assert e.status == "pending" and "still pending" in str(e) and e.worker_id is None
    assert "handle.wait" in str(e) and "resubmit" in str(e)
    h2 = h.resubmit()  # recipe 2: new id, priority + 1, old one cancelled
    assert h2.id != h.id and h.status() is Status.CANCELLED
    start_worker(aecho)
    assert h2.result() == "late"
    assert client.get(h2.id).priority == 1


def test_timeout_says_running_on_which_worker(client: Client, start_worker: Any) -> None:
    gate = threading.Event()

    def slow(r: Request) -> str:
        gate.wait(10)
        return "finally"

    w = start_worker(slow)
    h = client.submit("x", timeout=30)
    with pytest.raises(RequestTimeout) as ei:
        h.result(timeout=0.3)
    # the worker may not have popped it within 0.3 s on a loaded machine: accept both, but
    # when running, the error must name the worker
    if ei.value.status == "running":
        assert ei.value.worker_id == w.id and f"running on worker {w.id}" in str(ei.value)
    gate.set()
    assert h.wait(10) == "finally"  # recipe 1: wait longer


def test_deadline_passed_while_pending_is_never_started(client: Client, start_worker: Any) -> None:
    ran: list[Any] = []
    h = client.submit("stale", timeout=0.05)
    with pytest.raises((RequestExpired, RequestTimeout)):
        h.result()
    start_worker(lambda r: ran.append(r.input))
    assert client.call("fresh") is None  # the worker is serving
    assert ran == ["fresh"]
    assert h.status() is Status.EXPIRED
    with pytest.raises(RequestExpired, match=r"never|no worker started"):
        h.result(timeout=1)


def test_cancel_pending(client: Client) -> None:
    h = client.submit("x")
    assert client.pending_count() == 1
    assert h.cancel() is Status.PENDING
    assert client.pending_count() == 0 and h.status() is Status.CANCELLED
    from rtq_nb import RequestCancelled

    with pytest.raises(RequestCancelled):
        h.result()


def test_pending_counts_and_estimated_wait(client: Client, start_worker: Any) -> None:
    client.submit_many(range(3), priority=2)
    client.submit_many(range(5))
    client.submit("neg", priority=-7)
    assert client.pending_count() == 9
    assert client.pending_by_priority() == {2: 3, 0: 5, -7: 1}
    assert client.estimated_wait() == float("inf")  # nobody serves the queue
    w = start_worker(aecho)
    client.call("drain-marker", priority=-1000)
    assert client.pending_count() == 0
    assert client.estimated_wait() == 0.0
    assert [x.id for x in client.workers()] == [w.id]


def test_bad_input_gets_clear_errors_and_loses_nothing(client: Client, raw: Any) -> None:
    with pytest.raises(EncodingError, match="input must be JSON-serialisable"):
        client.submit(object())
    with pytest.raises(EncodingError, match="params"):
        client.submit("x", params=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="priority"):
        client.submit("x", priority=5000)
    with pytest.raises(UnknownQueue, match="unknown queue 'nope'"):
        client.pending_count(queue="nope")
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        client.submit("x", queue="a b")
    h = client.submit("original", request_id="fixed-id")
    with pytest.raises(ConfigurationError, match="already exists"):
        client.submit("other", request_id="fixed-id")
    assert client.get("fixed-id").input == "original"  # nothing overwritten
    assert client.pending_count() == 1
    h.cancel()


def test_malformed_records_fail_precisely_and_worker_keeps_serving(
    client: Client, raw: Any, start_worker: Any, prefix: str
) -> None:
    k = Keys(prefix, "default")
    good1 = client.submit("before")
    garbage = {
        "g-json": {
            "v": "1",
            "id": "g-json",
            "status": "pending",
            "queue": "default",
            "priority": "0",
            "input": "{nope",
            "params": "{}",
            "stream": "0",
        },
        "g-missing": {"status": "pending"},
        "g-version": {
            "v": "99",
            "id": "g-version",
            "status": "pending",
            "queue": "default",
            "priority": "0",
            "input": "1",
            "params": "{}",
            "stream": "0",
        },
        "g-types": {
            "v": "1",
            "id": "g-types",
            "status": "pending",
            "queue": "default",
            "priority": "high",
            "input": "1",
            "params": "{}",
            "stream": "0",
            "deadline_ms": "soon",
        },
    }
    for gid, fields in garbage.items():
        raw.hset(k.request(gid), mapping=fields)
        raw.zadd(k.pending, {gid: 10})
    raw.zadd(k.pending, {"no-record-at-all": 10})
    raw.lpush(k.wake, *["1"] * 5)  # as a submitting client would, so no worker idles on them
    good2 = client.submit("after")
    start_worker(aecho)
    assert good1.result() == "before" and good2.result() == "after"
    for gid, why in [
        ("g-json", "not valid JSON"),
        ("g-missing", "missing field"),
        ("g-version", "unsupported wire version 99"),
        ("g-types", "not an integer"),
    ]:
        assert raw.hget(k.request(gid), "status") == "failed"
        assert why in raw.hget(k.request(gid), "error")
    assert client.call("still serving") == "still serving"


def test_a_fixed_client_id_can_be_reused(url: str, prefix: str) -> None:
    """Two clients (or one restarted) with the same client_id make different request ids."""
    with (
        Client(url, prefix=prefix, client_id="gpu-lab") as a,
        Client(url, prefix=prefix, client_id="gpu-lab") as b,
    ):
        first, second = a.submit("a"), b.submit("b")
        assert first.id != second.id and first.id.startswith("gpu-lab-")
