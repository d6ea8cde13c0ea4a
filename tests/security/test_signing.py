"""Signed requests and results against a real redis-server: each attack of issue 11, automated.

The attacker holds a Redis password (the ``raw`` redis-py connection) and writes requests
and results by hand, the way the README documents the wire format."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_until

from rtq_nb import Client, Keyring, Request, RequestFailed, Security, SigningKey, views
from rtq_nb.notebook.monitor import render, snapshot_dict
from rtq_nb.notebook.views import run
from rtq_nb.protocol.encoding import encode_envelope
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.scores import encode_score
from rtq_nb.security.requests import sign_request

CLIENT_KEY = SigningKey.generate("c1")
WORKER_KEY = SigningKey.generate("w1")


def client_security(**over: Any) -> Security:
    return Security(**{"signing_key": CLIENT_KEY, "trusted": Keyring([WORKER_KEY]), **over})


def worker_security(**over: Any) -> Security:
    return Security(**{"signing_key": WORKER_KEY, "trusted": Keyring([CLIENT_KEY]), **over})


@pytest.fixture
def signed(url: str, prefix: str) -> Iterator[Client]:
    c = Client(url, prefix=prefix, queue="q", timeout=20, security=client_security())
    yield c
    c.close()


_seq = iter(range(1, 10**9))


def write_request(
    raw: Any,
    k: Keys,
    rid: str,
    *,
    input_json: str = '"attack"',
    sig: str | None = "",
    key: SigningKey | None = None,
    timeout_ms: int = 0,
    now_ms: int | None = None,
    signed_queue: str | None = None,
    signed_input: str | None = None,
) -> None:
    """HSET the record, ZADD pending, LPUSH wake: a request written by hand. With ``key``,
    signed like a client would (``signed_queue`` / ``signed_input`` sign other values)."""
    if key is not None:
        sig = sign_request(
            key,
            request_id=rid,
            queue=signed_queue or k.queue,
            client="evil",
            input_json=signed_input or input_json,
            params_json="{}",
            priority=0,
            timeout_ms=timeout_ms,
            max_attempts=3,
            stream=False,
            now_ms=now_ms,
        )
    fields = {
        "v": "1", "id": rid, "client": "evil", "queue": k.queue, "input": input_json,
        "params": "{}", "stream": "0", "status": "pending", "priority": "0", "attempts": "0",
        "timeout_ms": str(timeout_ms), "max_attempts": "3", "deadline_ms": "0",
        "created_ms": str(int(time.time() * 1000)),
    }  # fmt: skip
    if sig:
        fields["sig"] = sig
    raw.hset(k.request(rid), mapping=fields)
    raw.zadd(k.pending, {rid: encode_score(0, 10**6 + next(_seq))})
    raw.lpush(k.wake, "1")


def outcome(c: Client, rid: str) -> str:
    """What the reader of ``rid`` gets: the result, or the failure text."""
    try:
        return str(c.handle(rid, queue="q").result(timeout=20))
    except RequestFailed as exc:
        return f"failed: {exc.error}"


def test_forged_altered_replayed_unsigned_and_wrong_key_requests_are_never_served(
    signed: Client, raw: Any, prefix: str, start_worker: Any
) -> None:
    ran: list[Any] = []
    start_worker(lambda r: ran.append(r.input) or f"served {r.input}", queue="q",
                 security=worker_security())  # fmt: skip
    k = Keys(prefix, "q")
    other = SigningKey.generate("c1")  # same key id, another key: a forgery
    stranger = SigningKey.generate("x9")
    now = int(time.time() * 1000)
    write_request(raw, k, "unsigned-1")
    write_request(raw, k, "forged-1", key=other)
    write_request(raw, k, "wrongkey-1", key=stranger)
    write_request(raw, k, "altered-1", key=CLIENT_KEY, signed_input='"harmless"')
    write_request(raw, k, "moved-1", key=CLIENT_KEY, signed_queue="elsewhere")
    write_request(raw, k, "old-1", key=CLIENT_KEY, timeout_ms=1000, now_ms=now - 3_600_000)
    write_request(raw, k, "future-1", key=CLIENT_KEY, now_ms=now + 3_600_000)
    write_request(raw, k, "garbage-1", sig="c1.5.!!not-base64!!")
    expected = {
        "unsigned-1": "unsigned request",
        "forged-1": "bad signature for key id 'c1'",
        "wrongkey-1": "unknown key id 'x9'",
        "altered-1": "bad signature",
        "moved-1": "bad signature",
        "old-1": "outside its window",
        "future-1": "in the future",
        "garbage-1": "unreadable signature",
    }
    for rid, why in expected.items():
        got = outcome(signed, rid)
        assert got.startswith("failed: unauthenticated: ") and why in got, (rid, got)
    # a genuine request: served, and the worker kept serving through the attacks
    assert signed.call("genuine", queue="q") == "served genuine"
    # the same genuine request replayed by hand (its record re-created as pending)
    h = signed.submit("once", queue="q")
    assert h.result() == "served once"
    record = raw.hgetall(k.request(h.id))
    raw.delete(k.request(h.id), k.result(h.id))
    record.update(status="pending", attempts="0")
    for name in ("worker", "started_ms", "finished_ms", "result", "res_sig"):
        record.pop(name, None)
    raw.hset(k.request(h.id), mapping=record)
    raw.zadd(k.pending, {h.id: encode_score(0, 10**6 + next(_seq))})
    raw.lpush(k.wake, "1")
    replay = outcome(signed, h.id)
    assert replay.startswith("failed: unauthenticated: replayed"), replay
    assert ran == ["genuine", "once"]  # no attack reached the handler
    stats = signed.stats(queue="q")
    assert stats["unauthenticated"] == len(expected) + 1
    assert signed.get(h.id, queue="q").status is Status.FAILED
    # visible in the views and the monitor
    rows = views.history(signed, queue="q")
    refused = rows[rows["error"].str.startswith("unauthenticated", na=False)]
    assert set(refused["id"]) == {*expected, h.id}
    snap = run(signed, lambda ac: ac.snapshot("q"))
    assert snap.counters["unauthenticated"] == len(expected) + 1
    assert f"{len(expected) + 1} refused (unauthenticated)" in render(snapshot_dict(snap, 60))


def test_forged_results_and_stream_entries_are_never_accepted(
    signed: Client, raw: Any, prefix: str, start_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()

    def handler(r: Request) -> Any:
        gate.wait(20)
        if r.stream:
            return (t for t in ["genuine ", "stream"])
        return {"genuine": r.input}

    start_worker(handler, queue="q", security=worker_security())
    k = Keys(prefix, "q")
    caplog.set_level(logging.WARNING, "rtq_nb.client")
    # whole results: forged envelopes pushed before the worker's, in front of the reader
    h = signed.submit("a", queue="q")
    evil = SigningKey.generate("w1")
    raw.lpush(k.result(h.id), encode_envelope(Status.COMPLETED, {"forged": 1}))
    raw.lpush(
        k.result(h.id),
        encode_envelope(Status.FAILED, None, "your account is suspended, visit evil.example",
                        "w1.1.AAAA"),
    )  # fmt: skip
    raw.lpush(
        k.result(h.id),
        encode_envelope(Status.COMPLETED, {"forged": 2}, sig="w1.1." + "A" * 86),
    )
    # a stream: forged data entries and a forged failure
    s = signed.submit("b", queue="q", stream=True)
    raw.xadd(k.stream(s.id), {"k": "d", "s": "0", "n": "1", "d": "EVIL "})
    raw.xadd(k.stream(s.id), {"k": "d", "s": "0", "n": "1", "d": "EVIL ", "a": "w1.1.AAAA"})
    raw.xadd(k.stream(s.id), {"k": "f", "d": "your account is suspended"})
    raw.xadd(k.stream(s.id), {"k": "e"})
    del evil
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(h.result()))
    reader.start()
    wait_until(lambda: raw.llen(k.result(h.id)) == 0, what="the reader to take the forgeries")
    gate.set()
    reader.join(20)
    assert got == [{"genuine": "a"}]
    chunks = list(s)
    assert "".join(chunks) == "genuine stream"
    assert s.result() == "genuine stream"
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len([m for m in dropped if h.id in m]) == 3, dropped
    assert len([m for m in dropped if s.id in m]) >= 4, dropped
    # call() and the record views go through the same check: a forged stored result is
    # shown as unverified, never as the result
    assert signed.call("c", queue="q") == {"genuine": "c"}
    raw.hset(k.request(h.id), "result", json.dumps({"forged": 3}))
    rec = signed.get(h.id, queue="q")
    assert rec.result is None and "unverified" in (rec.error or "")


def test_signing_off_serves_hand_written_requests_as_documented(
    client: Client, raw: Any, prefix: str, start_worker: Any
) -> None:
    """Without keys nothing changes (and nothing is checked: the README says so)."""
    start_worker(lambda r: f"served {r.input}", security=Security())
    write_request(raw, Keys(prefix, "default"), "handmade-1")
    assert str(client.handle("handmade-1").result(timeout=20)) == "served attack"


def test_hmac_keys_sign_both_ways(url: str, prefix: str, start_worker: Any) -> None:
    shared = SigningKey.generate("h1", "hmac")
    sec = Security(signing_key=shared, trusted=Keyring([shared]))
    start_worker(lambda r: r.input[::-1], queue="q", security=sec)
    with Client(url, prefix=prefix, queue="q", timeout=20, security=sec) as c:
        assert c.call("abc") == "cba"
        assert "".join(c.stream("xyz")) == "zyx"


def test_key_rotation_under_load_loses_and_refuses_nothing(
    url: str, prefix: str, start_worker: Any
) -> None:
    """Rotation: workers trust old and new; clients switch to the new key while requests
    flow; once no request signed with the old key is left, workers retire it."""
    old, new = SigningKey.generate("c-old"), SigningKey.generate("c-new")
    trusted = Keyring([old, new])
    start_worker(lambda r: r.input, queue="q", concurrency=4,
                 security=Security(signing_key=WORKER_KEY, trusted=trusted))  # fmt: skip
    c = Client(url, prefix=prefix, queue="q", timeout=30,
               security=Security(signing_key=old, trusted=Keyring([WORKER_KEY])))  # fmt: skip
    results: list[Any] = []
    errors: list[BaseException] = []
    switched, retired = threading.Event(), threading.Event()

    def load() -> None:
        try:
            for i in range(300):
                if i == 100:
                    c.set_security(Security(signing_key=new, trusted=Keyring([WORKER_KEY])))
                    switched.set()
                if i == 200:
                    retired.wait(20)
                results.append(c.call(i))
        except BaseException as exc:  # reported below
            errors.append(exc)

    t = threading.Thread(target=load)
    t.start()
    assert switched.wait(30)
    # every old-key request submitted so far has been answered by the time the client
    # (one request at a time) has moved past the switch: retire the old key now
    wait_until(lambda: len(results) > 100, what="a request signed with the new key")
    trusted.retire("c-old")
    retired.set()
    t.join(60)
    assert not errors and results == list(range(300))
    assert c.stats()["completed"] == 300 and "unauthenticated" not in c.stats()
    stale_sec = Security(signing_key=old)
    with (
        Client(url, prefix=prefix, queue="q", timeout=20, security=stale_sec) as stale,
        pytest.raises(RequestFailed, match="unknown key id 'c-old'"),
    ):
        stale.call("after retirement")
    c.close()


def test_a_signed_stream_follows_the_retry_after_its_worker_is_killed(
    url: str, prefix: str, tmp_path: Any
) -> None:
    """Reset markers are not signed, so a checking reader tells attempts apart by the attempt
    its entries are signed for: the lost attempt's chunks come with a WorkerLost, then the
    retry streams the whole answer again."""
    import os
    import signal
    import subprocess

    from conftest import worker_cmd

    from rtq_nb.demo import fake_answer
    from rtq_nb.errors import WorkerLost

    env = {
        **os.environ,
        "RTQ_TRUSTED_CLIENT_KEYS": CLIENT_KEY.public().to_text(),
        "RTQ_WORKER_SIGNING_KEY": WORKER_KEY.to_text(),
    }
    cmd = worker_cmd(url, prefix, "rtq_nb.demo:fake_llm", "--queue", "q", "--lease", "2",
                     "--heartbeat", "0.5")  # fmt: skip
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        with Client(url, prefix=prefix, queue="q", timeout=60, security=client_security()) as c:
            wait_until(lambda: len(c.workers()) == 2 if c.queues() else False, what="2 workers")
            expected = "".join(fake_answer("saga", 120))
            h = c.submit("saga", stream=True, params={"tokens": 120, "rate": 40})
            it = iter(h)
            first = [next(it) for _ in range(3)]
            victim = c.get(h.id).worker
            assert victim is not None
            os.kill(int(victim.rsplit("-", 2)[1]), signal.SIGKILL)
            with pytest.raises(WorkerLost) as lost:
                for _ in it:
                    pass
            assert lost.value.chunks[:3] == first
            assert "attempt 1 was lost; attempt 2 began" in str(lost.value)
            assert "".join(h) == expected and h.result() == expected
            assert c.get(h.id).attempts == 2
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
