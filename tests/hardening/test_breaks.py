"""One regression test per break of issue 10, against a real redis-server. Each failed on the
code before the fix (the break is described above the test)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from rtq_nb import Client, Request, Worker
from rtq_nb.demo import echo
from rtq_nb.errors import (
    ConfigurationError,
    EncodingError,
    MalformedRecord,
    RedisOutOfMemory,
    RedisUnavailable,
    RtqError,
)
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport.embedded import EmbeddedRedis
from tests.conftest import across_restart


def batch_echo(reqs: list[Request]) -> list[Any]:
    return [r.input for r in reqs]


def test_1_one_damaged_record_in_a_popped_batch_fails_alone(
    client: Client, raw: Any, prefix: str, start_worker: Callable[..., Worker], caplog: Any
) -> None:
    """Before: POP raised WRONGTYPE after taking the batch: 7 of 10 good requests lost."""
    k = Keys(prefix, "default")
    handles = client.submit_many(range(10))
    raw.set(k.request("evil"), "x")
    raw.zadd(k.pending, {"evil": 10**15})  # ahead of every good request
    with caplog.at_level(logging.WARNING, logger="rtq_nb.worker"):
        start_worker(batch_echo, batch_size=8, batch_wait=0.05)
        assert [h.result(timeout=15) for h in handles] == list(range(10))
    assert raw.zscore(k.pending, "evil") is None and raw.get(k.request("evil")) == "x"
    assert any("is not a hash: WRONGTYPE" in r.getMessage() for r in caplog.records)


def test_2_non_utf8_ids_are_dropped_once_and_never_break_a_client(
    client: Client, redis_server: EmbeddedRedis, prefix: str, start_worker: Any
) -> None:
    """Before: an unrelated client's result() raised UnicodeDecodeError from its reap, and the
    bad id was re-popped at every lease expiry."""
    k = Keys(prefix, "default")
    rb = redis.Redis(unix_socket_path=redis_server.socket_path)  # bytes, not str
    rb.zadd(k.pending.encode(), {b"\xff\xfe-bad": 10**15})
    rb.zadd(k.running.encode(), {b"\xffexpired": 1})  # a lease that ran out long ago
    assert client.reap() == ([], [])  # the bad running id is dropped, nothing raises
    assert rb.zscore(k.running.encode(), b"\xffexpired") is None
    start_worker(echo)
    assert client.call("fine", timeout=15) == "fine"
    assert rb.zscore(k.pending.encode(), b"\xff\xfe-bad") is None  # popped once, dropped
    rb.close()


def test_3_an_out_of_range_timeout_writes_nothing_and_burns_no_id(
    client: Client, raw: Any, prefix: str
) -> None:
    """Before: timeout=1e17 failed inside SUBMIT after writing the record (no TTL, not
    queued) and the id was burnt."""
    k = Keys(prefix, "default")
    with pytest.raises(EncodingError, match="timeout must be a positive number of seconds"):
        client.submit("x", timeout=1e17, request_id="r-1e17")
    assert not raw.exists(k.request("r-1e17")) and raw.zcard(k.pending) == 0
    h = client.submit("x", timeout=5, request_id="r-1e17")  # the id is still free
    assert raw.zscore(k.pending, h.id) is not None


def test_4_a_wake_key_of_the_wrong_type_refuses_the_submit_whole(
    client: Client, raw: Any, prefix: str
) -> None:
    """Before: submit() raised WRONGTYPE but the request was queued anyway (a retry made a
    duplicate)."""
    k = Keys(prefix, "default")
    raw.set(k.wake, "not a list")
    with pytest.raises(MalformedRecord, match=r"wake holds a string, not a list\. Nothing"):
        client.submit("x", request_id="r-wake")
    assert not raw.exists(k.request("r-wake")) and raw.zcard(k.pending) == 0
    raw.delete(k.wake)
    client.submit("x", request_id="r-wake")  # no duplicate: it was never stored
    assert raw.zcard(k.pending) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": float("inf")}, "timeout must be"),
        ({"timeout": float("nan")}, "timeout must be"),
        ({"input": "lone \udcff surrogate"}, "input must be JSON-serialisable .* valid Unicode"),
        ({"params": {"k": "\ud800"}}, "params must be JSON-serialisable .* valid Unicode"),
        ({"input": "deep"}, "input is nested too deeply"),
    ],
)
def test_5_bad_values_are_encoding_errors_naming_the_argument(
    client: Client, raw: Any, prefix: str, kwargs: dict[str, Any], match: str
) -> None:
    """Before: OverflowError, UnicodeEncodeError, RecursionError escaped."""
    args: dict[str, Any] = {"input": "x", **kwargs}
    if args["input"] == "deep":
        nested: Any = []
        for _ in range(10_000):
            nested = [nested]
        args["input"] = nested
    with pytest.raises(EncodingError, match=match):
        client.submit(args.pop("input"), **args)
    assert raw.zcard(Keys(prefix, "default").pending) == 0


def test_6_the_clients_registry_is_trimmed(url: str, raw: Any, prefix: str) -> None:
    """Before: every client stayed in rtq:{q}:clients forever."""
    k = Keys(prefix, "default")
    raw.zadd(k.clients, {f"gone-{i}": 1_000 for i in range(200)})  # long-expired clients
    with Client(url, prefix=prefix, retention=60) as c:
        c.submit("x")
        assert raw.zrange(k.clients, 0, -1) == [c.client_id]


def test_7_sub_second_retention_is_refused(url: str) -> None:
    """Before: retention=0.5 was truncated to 0 and the caller got RequestNotFound."""
    with pytest.raises(ConfigurationError, match="retention must be a number of seconds"):
        Client(url, retention=0.5)
    with pytest.raises(ConfigurationError, match="retention must be a number of seconds"):
        Worker(echo, url, retention=0.5)


def test_8_every_client_method_rides_out_a_restart(tmp_path: Any, caplog: Any) -> None:
    """Before: status(), record(), cancel(), pending_count(), workers(), stats() raised
    RedisUnavailable at once during a restart."""
    srv = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis").start()
    try:
        with Client(srv.url, prefix="rs", reconnect_timeout=60) as c:
            h = c.submit("x", timeout=600)
            got: dict[str, Any] = {}

            def reads() -> None:
                got["status"] = h.status()
                got["pending"] = c.pending_count()
                got["record"] = h.record().id
                got["stats"] = c.stats()["pending"]
                got["workers"] = c.workers()
                got["cancel"] = h.cancel()

            across_restart(srv, caplog, reads)
            assert got == {
                "status": "pending",
                "pending": 1,
                "record": h.id,
                "stats": 1,
                "workers": [],
                "cancel": "pending",
            }
    finally:
        srv.stop()
        srv.cleanup()


def test_9_smaller_ones(client: Client, url: str) -> None:
    """Before: empty request_id / queue were silently replaced; a wait said it waited 0.0 s."""
    with pytest.raises(ConfigurationError, match="invalid request id ''"):
        client.submit("x", request_id="")
    with pytest.raises(ConfigurationError, match="invalid queue name ''"):
        client.submit("x", queue="")
    h = client.submit("x", timeout=60)
    with pytest.raises(RtqError, match=r"timed out after waiting 0\.[3-9]") as info:
        h.result(timeout=0.3)
    assert "still pending" in str(info.value)
    assert not re.search(r"(?<!\.)\.\.(?!\.)", str(info.value))  # no ".." (an ellipsis is fine)


def test_10_secrets_replicas_and_a_full_redis(tmp_path: Any) -> None:
    """Before: the password was in repr() and errors; a replica gave a bare READONLY; a full
    Redis kept workers from even registering, so the queue could never drain."""
    secret_url = "redis://:hunter2@127.0.0.1:1/0"
    with Client(secret_url, reconnect_timeout=0.1) as c:
        assert "hunter2" not in repr(c) and "hunter2" not in c._repr_html_()
        with pytest.raises(RedisUnavailable) as info:
            c.pending_count()
        assert "hunter2" not in str(info.value) and "***" in str(info.value)

    replica_of = ["--replicaof", "127.0.0.1"]
    with (
        EmbeddedRedis(tcp=True) as primary,
        EmbeddedRedis(extra_args=[*replica_of, str(primary.port)]) as replica,
        Client(replica.url, prefix="ro", reconnect_timeout=0.2) as c,
        pytest.raises(ConfigurationError, match="is a read-only replica"),
    ):
        c.submit("x")

    with EmbeddedRedis() as srv:
        r = redis.Redis(unix_socket_path=srv.socket_path)
        with Client(srv.url, prefix="oom", reconnect_timeout=0.2, timeout=120) as c:
            queued = c.submit_many(range(5))
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory-policy", "noeviction")
            r.config_set("maxmemory", used // 2)  # full: every write that grows it is refused
            with pytest.raises(redis.exceptions.ResponseError, match="maxmemory"):
                r.set("filler", "y")
            with pytest.raises(RedisOutOfMemory, match="is out of memory"):
                c.submit("one more")
            with Worker(echo, srv.url, prefix="oom"):  # starts, and drains the full queue
                assert [h.result(timeout=15) for h in queued] == list(range(5))
        r.close()


def test_a_malformed_hash_record_fails_alone_with_a_precise_reason(
    client: Client, raw: Any, prefix: str, start_worker: Callable[..., Worker]
) -> None:
    """A hash with garbage fields is failed by the worker (never run), its neighbours served."""
    k = Keys(prefix, "default")
    good = client.submit_many(range(3))
    raw.hset(k.request("half"), mapping={"v": "1", "id": "half", "status": "pending"})
    raw.zadd(k.pending, {"half": 10**15})
    seen: list[Any] = []

    def handler(r: Request) -> Any:
        seen.append(r.id)
        return r.input

    start_worker(handler)
    assert [h.result(timeout=15) for h in good] == [0, 1, 2]
    rec = raw.hgetall(k.request("half"))
    assert rec["status"] == "failed" and "missing field" in rec["error"]
    assert "half" not in seen and json.loads(raw.lpop(k.result("half")))["status"] == "failed"
