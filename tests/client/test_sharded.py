"""Sharded queues on one real redis-server: the layout, where requests go, global priority
across shards, token accounting, aggregated views, damaged data. (On a real 3-master
cluster: tests/transport/test_sharded_cluster.py.)"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

import rtq_nb.views
from rtq_nb import Client, Worker
from rtq_nb.demo import echo, fake_llm
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.scores import encode_score
from rtq_nb.protocol.shards import Head, Layout, choose, parse_config, parse_peek, shard_of
from tests.conftest import wait_until

SHARDS = 3


class Recorder:
    """A handler that records the order requests start in (one at a time)."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, request: Any) -> Any:
        with self.lock:
            self.order.append(int(request.params["p"]))
        return request.input


# ---- the pure parts -------------------------------------------------------------------------
def test_shard_of_is_stable_and_spreads() -> None:
    ids = [f"c-{i}" for i in range(3000)]
    counts = [0] * SHARDS
    for rid in ids:
        counts[shard_of(rid, SHARDS)] += 1
        assert shard_of(rid, SHARDS) == shard_of(rid, SHARDS)
        assert shard_of(rid, 1) == 0
    assert min(counts) > 800, counts  # about 1000 each
    layout = Layout("p", "q", SHARDS)
    assert [k.base for k in layout.all] == ["p:{q}", "p:{q~1}", "p:{q~2}"]
    assert layout.all[2].workers == layout.home.workers == "p:{q}:workers"
    assert layout.all[2].wake == "p:{q~2}:wake" and layout.home.wake == "p:{q}:wake"
    assert layout.wake_after(layout.all[1], 2) == [("LPUSH", "p:{q}:wake", "1", "1")]
    assert layout.wake_after(layout.home, 2) == []  # shard 0's scripts push their own


def test_choose_takes_the_best_head_with_a_floor() -> None:
    s = [encode_score(5, 10), encode_score(9, 3), encode_score(5, 1)]
    heads = [Head(i, float(x), 4) for i, x in enumerate(s)]
    c = choose(heads)
    assert c is not None and c.shard == 1 and c.floor == encode_score(5, (1 << 40) - 1)
    assert choose([Head(0, None, 0), Head(1, None, 0)]) is None
    only = choose([Head(0, None, 0), Head(1, float(encode_score(0, 1)), 1)])
    assert only is not None and only.shard == 1 and only.floor is None
    # equal heads: weighted by backlog (a shard with 0 weight never wins against 1000)
    rng = random.Random(7)
    tie = [Head(0, float(encode_score(3, 1)), 1000), Head(1, float(encode_score(3, 1)), 1)]
    picks = [choose(tie, rng) for _ in range(200)]
    assert sum(1 for p in picks if p is not None and p.shard == 0) > 180
    # damaged replies: never crash, never a phantom best
    heads = parse_peek([["x", "inf"], 1, "garbage", "?", ["y", "not a number"], 2])
    assert heads[0].score is not None and heads[1].score is None and heads[2].score is None


def test_config_values() -> None:
    assert parse_config(None, "k") == 1 and parse_config("4", "k") == 4
    for bad in ("0", "-1", "x", "99999"):
        with pytest.raises(ConfigurationError, match="rtq-nb queue"):
            parse_config(bad, "k")


# ---- on a real server -----------------------------------------------------------------------
def test_calls_streams_and_views_over_three_shards(
    client: Client, start_worker: Callable[..., Worker], raw: Any, prefix: str
) -> None:
    start_worker(fake_llm, shards=SHARDS, concurrency=4)
    layout = Layout(prefix, "default", SHARDS)
    assert wait_until(lambda: raw.hget(layout.home.config, "shards")) == str(SHARDS)
    assert [client.call(f"q{i}") for i in range(2)]
    text = "".join(client.stream("hello", params={"tokens": 5, "rate": 0}))
    assert text
    handles = client.submit_many([f"m{i}" for i in range(60)])
    results = [h.result(timeout=30) for h in handles]
    assert len(results) == 60
    per_shard = [raw.zcard(k.history) for k in layout.all]
    assert all(n > 5 for n in per_shard) and sum(per_shard) == 63, per_shard
    # every request sits in the shard its id names
    for h in handles:
        assert raw.exists(layout.for_id(h.id).request(h.id))
    # a fresh client finds any request by id alone
    other = Client(client.async_client.url, prefix=prefix)
    try:
        assert other.get(handles[7].id).status.value == "completed"
        assert other.handle(handles[9].id).result(timeout=5) == results[9]
        stats = other.stats()
        assert stats["completed"] == 63 and stats["pending"] == 0
        snap = other.snapshot()
        assert snap.counters.get("completed") == 63 and len(snap.recent) == 63
        assert len(snap.workers) == 1
        df = rtq_nb.views.history(other, limit=1000)
        assert len(df) == 63
    finally:
        other.close()


def test_backlog_is_served_in_global_priority_order(
    client: Client, start_worker: Callable[..., Worker], raw: Any, prefix: str, url: str
) -> None:
    # a worker records the layout, then stops: the backlog piles up across the shards
    w = Worker(echo, url, prefix=prefix, shards=SHARDS).start()
    w.stop()
    rng = random.Random(3)
    prios = [rng.randint(-5, 5) for _ in range(90)]
    handles = [client.submit(f"r{i}", priority=p, params={"p": p}) for i, p in enumerate(prios)]
    layout = Layout(prefix, "default", SHARDS)
    assert all(raw.zcard(k.pending) > 10 for k in layout.all)
    assert client.pending_count() == 90
    assert client.pending_by_priority() == {
        p: prios.count(p) for p in sorted(set(prios), reverse=True)
    }
    rec = Recorder()
    start_worker(rec, shards=SHARDS)
    for h in handles:
        h.result(timeout=30)
    assert rec.order == sorted(prios, reverse=True)  # no inversion at all
    # token accounting: every token was used (none left to wake workers for nothing)
    assert raw.llen(layout.home.wake) == 0


def test_concurrent_workers_and_clients_lose_and_duplicate_nothing(
    url: str, prefix: str, start_worker: Callable[..., Worker], raw: Any
) -> None:
    runs: dict[str, int] = {}
    lock = threading.Lock()

    def count(request: Any) -> Any:
        with lock:
            runs[request.id] = runs.get(request.id, 0) + 1
        return request.input

    for _ in range(3):
        start_worker(count, shards=SHARDS, concurrency=2)
    done: list[str] = []

    def client_thread(n: int) -> None:
        with Client(url, prefix=prefix, timeout=30) as c:
            for i in range(40):
                assert c.call(f"{n}-{i}", priority=i % 3) == f"{n}-{i}"
                done.append(f"{n}-{i}")

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(done) == 160 and len(runs) == 160 and set(runs.values()) == {1}
    layout = Layout(prefix, "default", SHARDS)
    assert sum(raw.zcard(k.pending) + raw.zcard(k.running) for k in layout.all) == 0


def test_a_worker_with_other_shards_is_refused(
    client: Client, url: str, prefix: str, raw: Any
) -> None:
    raw.hset(Keys(prefix, "default").config, "shards", 2)
    w = Worker(echo, url, prefix=prefix, shards=3)
    with pytest.raises(ConfigurationError, match="has 2 shard"):
        asyncio.run(w.run())


def test_damaged_data_in_one_shard_fails_alone(
    client: Client, start_worker: Callable[..., Worker], raw: Any, prefix: str
) -> None:
    layout = Layout(prefix, "default", SHARDS)
    raw.hset(layout.home.config, "shards", SHARDS)
    # garbage at the head of shard 1: an id with no record, at the highest score there is
    raw.zadd(layout.all[1].pending, {"ghost": "+inf", "bad id!": encode_score(7, 1)})
    raw.lpush(layout.home.wake, "1", "1")
    start_worker(echo, shards=SHARDS)
    assert [client.call(i) for i in range(12)] == list(range(12))
    assert wait_until(lambda: raw.zcard(layout.all[1].pending) == 0, what="garbage dropped")


def test_a_garbage_layout_is_a_clear_error(client: Client, raw: Any, prefix: str) -> None:
    raw.hset(Keys(prefix, "default").config, "shards", "many")
    with pytest.raises(ConfigurationError, match="not a shard count"):
        client.call("x")
    assert raw.zcard(Keys(prefix, "default").pending) == 0  # nothing half-submitted
