"""Pins wire format v1 (documented in README, "Wire format"). A change here is a protocol
change: bump WIRE_VERSION and the README together."""

from __future__ import annotations

import json
from typing import Any

from rtq_nb import Client
from rtq_nb.demo import aecho, fake_llm
from rtq_nb.protocol.encoding import encode_envelope
from rtq_nb.protocol.jobs import JOB_FIELDS
from rtq_nb.protocol.keys import WIRE_VERSION, Keys
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.scores import SEQ_SPAN

RECORD_FIELDS_AFTER_COMPLETION = {
    "max_attempts",
    "v",
    "id",
    "client",
    "queue",
    "priority",
    "score",
    "input",
    "params",
    "stream",
    "status",
    "created_ms",
    "deadline_ms",
    "started_ms",
    "finished_ms",
    "worker",
    "attempts",
    "timeout_ms",
    "result",
    "queue_wait_ms",
    "ttfc_ms",
    "duration_ms",
    "chunks",
}


def test_wire_version_and_key_layout() -> None:
    assert WIRE_VERSION == 1
    k = Keys("rtq", "default")
    assert (k.pending, k.running, k.wake, k.seq, k.history, k.unsuccessful, k.dead, k.stats) == (
        "rtq:{default}:pending",
        "rtq:{default}:running",
        "rtq:{default}:wake",
        "rtq:{default}:seq",
        "rtq:{default}:history",
        "rtq:{default}:unsuccessful",
        "rtq:{default}:dead",
        "rtq:{default}:stats",
    )
    assert (k.request("r"), k.result("r"), k.stream("r")) == (
        "rtq:{default}:req:r",
        "rtq:{default}:res:r",
        "rtq:{default}:stream:r",
    )
    assert (k.workers, k.worker("w"), k.clients, k.client("c"), k.queues, k.control("w")) == (
        "rtq:{default}:workers",
        "rtq:{default}:worker:w",
        "rtq:{default}:clients",
        "rtq:{default}:client:c",
        "rtq:queues",
        "rtq:{default}:ctl:w",
    )
    assert SEQ_SPAN == 2**40
    assert JOB_FIELDS == (
        "v",
        "id",
        "queue",
        "priority",
        "input",
        "params",
        "stream",
        "created_ms",
        "deadline_ms",
        "client",
        "timeout_ms",
        "max_attempts",
        "sig",
        "trace",
    )


def test_canonical_signed_bytes_are_pinned() -> None:
    """What a request and a result part are signed over: changing it breaks every signature
    in flight, so it is wire format."""
    from rtq_nb.protocol.encoding import ENVELOPE_SIG
    from rtq_nb.protocol.signing import (
        ResultKind,
        format_auth,
        parse_auth,
        request_message,
        result_message,
    )

    assert request_message(
        request_id="c-s-1", queue="q", client="c", input_json='"hé"', params_json="{}",
        priority=2, timeout_ms=5000, max_attempts=3, stream="1", signed_ms=1700000000000,
        kid="k1",
    ) == (
        b"rtq-request-v1\n5:c-s-1,1:q,1:c,5:\"h\xc3\xa9\",2:{},1:2,4:5000,1:3,1:1,"
        b"13:1700000000000,2:k1,"
    )  # fmt: skip
    assert result_message("c-s-1", "2", ResultKind.DATA, 4, 3, "abc", "9f") == (
        b"rtq-result-v1\n5:c-s-1,1:2,2:9f,1:d,1:4,1:3,3:abc,"
    )
    assert [k.value for k in ResultKind] == ["c", "f", "d", "e"]
    assert format_auth("k1", 2, b"\xff\x00") == "k1.2._wA"
    assert parse_auth("k1.2._wA") == ("k1", "2", b"\xff\x00", "")
    assert format_auth("k1", 2, b"\xff\x00", "9f") == "k1.2._wA.9f"
    assert parse_auth("k1.2._wA.9f") == ("k1", "2", b"\xff\x00", "9f")
    assert parse_auth("k1.\u00b2._wA") is None and parse_auth("k1.2._wA.a-b") is None
    assert parse_auth("k.1") is None and parse_auth("k1.x.AA") is None
    assert parse_auth("k1.1.+/AA") is None  # standard base64, not base64url
    assert ENVELOPE_SIG == ',"sig":"'


def test_records_results_and_streams_on_the_wire(
    client: Client, raw: Any, prefix: str, start_worker: Any
) -> None:
    k = Keys(prefix, "default")
    h = client.submit({"q": 1}, priority=3, params={"t": 0.5}, timeout=9)
    pending = raw.hgetall(k.request(h.id))
    assert pending["status"] == "pending" and pending["v"] == "1" and pending["attempts"] == "0"
    assert json.loads(pending["input"]) == {"q": 1} and json.loads(pending["params"]) == {"t": 0.5}
    assert int(pending["deadline_ms"]) - int(pending["created_ms"]) == 9000
    score = raw.zscore(k.pending, h.id)
    assert score == int(pending["score"]) and score == 3 * 2**40 - int(raw.get(k.seq))
    assert raw.llen(k.wake) == 1 and raw.zscore(k.history, h.id) == int(pending["created_ms"])
    assert 0 < raw.ttl(k.request(h.id)) <= client.async_client.retention + 9

    start_worker(aecho)
    assert h.result() == {"q": 1}
    done = raw.hgetall(k.request(h.id))
    assert (
        set(done) == RECORD_FIELDS_AFTER_COMPLETION | {"error"}
        or set(done) == RECORD_FIELDS_AFTER_COMPLETION
    )
    assert done["status"] == "completed" and json.loads(done["result"]) == {"q": 1}
    assert 0 < raw.ttl(k.request(h.id)) <= client.async_client.retention
    assert not raw.exists(k.result(h.id))  # consumed by the client's BLPOP
    assert raw.zcard(k.running) == 0 and raw.hget(k.stats, "completed") == "1"

    # the result envelope, seen by a raw BLPOP on a request nobody waits for
    h2 = client.submit("env")
    _, env = raw.blpop([k.result(h2.id)], 10)
    assert json.loads(env) == {"status": "completed", "result": "env"}
    assert env == encode_envelope(Status.COMPLETED, "env")  # the script's bytes = Python's
    assert raw.ttl(k.request(h2.id)) > 0


def test_stream_entries_on_the_wire(
    client: Client, raw: Any, prefix: str, start_worker: Any
) -> None:
    k = Keys(prefix, "default")
    start_worker(fake_llm)
    h = client.submit("p", stream=True, params={"tokens": 6, "rate": 0})
    text = h.result()
    entries = raw.xrange(k.stream(h.id))
    data = [f for _, f in entries if f["k"] == "d"]
    assert set(data[0]) == {"k", "s", "n", "d"}
    assert "".join(f["d"] for f in data) == text
    assert sum(int(f["n"]) for f in data) == 6 and data[0]["s"] == "0"
    assert entries[-1][1] == {"k": "e"}  # end marker
    assert 0 < raw.ttl(k.stream(h.id)) <= client.async_client.retention
    rec = raw.hgetall(k.request(h.id))
    assert rec["chunks"] == "6" and rec["stream"] == "1" and int(rec["first_chunk_ms"]) > 0


def test_registries(client: Client, raw: Any, prefix: str, start_worker: Any) -> None:
    k = Keys(prefix, "default")
    w = start_worker(aecho, concurrency=3)
    client.call(1)
    entry = raw.hgetall(k.worker(w.id))
    for f in (
        "id",
        "queue",
        "host",
        "pid",
        "status",
        "concurrency",
        "in_flight",
        "processed",
        "failed",
        "last_seen_ms",
        "heartbeat_s",
        "started_ms",
    ):
        assert f in entry, f
    assert entry["concurrency"] == "3" and 0 < raw.ttl(k.worker(w.id)) <= 7
    assert raw.zscore(k.workers, w.id) is not None
    assert raw.sismember(k.queues, "default")
    c = raw.hgetall(k.client(client.client_id))
    assert c["id"] == client.client_id and int(c["submitted"]) >= 1
    assert raw.zscore(k.clients, client.client_id) is not None
