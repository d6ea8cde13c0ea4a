"""The wire format's pure parts, no Redis: keys, scores, records, encoding, job parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtq_nb.errors import ConfigurationError, EncodingError, MalformedRecord
from rtq_nb.protocol.encoding import (
    decode_envelope,
    dumps,
    encode_envelope,
    signed_completed,
    timeout_to_ms,
)
from rtq_nb.protocol.jobs import JOB_FIELDS, parse_job
from rtq_nb.protocol.keys import Keys, check_id
from rtq_nb.protocol.records import Chunk, RequestRecord, Status
from rtq_nb.protocol.scores import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    SEQ_SPAN,
    check_priority,
    decode_priority,
    encode_score,
    priority_bounds,
)

priorities = st.integers(PRIORITY_MIN, PRIORITY_MAX)
seqs = st.integers(1, SEQ_SPAN - 1)


@given(
    st.lists(
        st.tuples(priorities, st.integers(1, 10**6)),
        min_size=2,
        max_size=200,
        unique_by=lambda t: t[1],
    )
)
def test_pop_order_is_priority_then_fifo(reqs: list[tuple[int, int]]) -> None:
    """Sorting by score descending (ZPOPMAX order) = priority descending, then arrival."""
    by_score = sorted(reqs, key=lambda r: encode_score(r[0], r[1]), reverse=True)
    expected = sorted(reqs, key=lambda r: (-r[0], r[1]))
    assert by_score == expected


@given(priorities, seqs)
def test_score_is_exact_as_double_and_decodes(priority: int, seq: int) -> None:
    score = encode_score(priority, seq)
    assert float(score) == score  # exact in a double, as Redis stores it
    assert decode_priority(float(score)) == priority
    lo, hi = priority_bounds(priority)
    assert lo <= score <= hi


@given(priorities, seqs, seqs)
def test_neighbouring_seqs_never_collide(priority: int, a: int, b: int) -> None:
    if a != b:
        assert float(encode_score(priority, a)) != float(encode_score(priority, b))


@pytest.mark.parametrize("bad", [1001, -1001, 1.5, True, "3", None])
def test_priority_validation_names_the_problem(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        check_priority(bad)  # type: ignore[arg-type]


def test_keys_share_one_hash_tag_per_queue() -> None:
    k = Keys("rtq", "gpu")
    names = [
        k.pending,
        k.running,
        k.wake,
        k.seq,
        k.history,
        k.stats,
        k.workers,
        k.clients,
        k.request("a"),
        k.result("a"),
        k.stream("a"),
        k.worker("w"),
        k.client("c"),
    ]
    assert all(n.startswith("rtq:{gpu}:") for n in names)
    with pytest.raises(ConfigurationError):
        Keys("rtq", "bad{queue}")
    with pytest.raises(ConfigurationError):
        check_id("has space")


def test_dumps_rejects_non_json_with_advice() -> None:
    with pytest.raises(EncodingError, match="input must be JSON-serialisable"):
        dumps({1, 2}, "input")
    with pytest.raises(EncodingError):
        dumps(float("nan"), "input")
    with pytest.raises(EncodingError, match="timeout"):
        timeout_to_ms(-1)


def test_envelopes_round_trip() -> None:
    assert decode_envelope(encode_envelope(Status.COMPLETED, {"a": [1]})) == (
        Status.COMPLETED,
        {"a": [1]},
        None,
        "",
    )
    assert decode_envelope(encode_envelope(Status.FAILED, error="boom")) == (
        Status.FAILED,
        None,
        "boom",
        "",
    )
    signed = encode_envelope(Status.COMPLETED, {"a": 'x,"sig":"'}, sig="k.2.AAA")
    assert decode_envelope(signed)[3] == "k.2.AAA"
    assert signed_completed(signed) == ('{"a":"x,\\"sig\\":\\""}', "k.2.AAA")
    assert signed_completed(encode_envelope(Status.COMPLETED, 1)) is None
    assert decode_envelope(encode_envelope(Status.FAILED, error="e", sig="k.1.B"))[2:] == (
        "e",
        "k.1.B",
    )
    with pytest.raises(MalformedRecord):
        decode_envelope("{not json")


def _job(**over: str) -> list[str]:
    base = {
        "v": "1",
        "id": "r1",
        "queue": "q",
        "priority": "3",
        "input": '"hi"',
        "params": "{}",
        "stream": "1",
        "created_ms": "5",
        "deadline_ms": "0",
        "client": "c",
        "timeout_ms": "0",
        "max_attempts": "3",
        "sig": "",
        "trace": "",
    }
    base.update(over)
    return ["1", *(base[f] for f in JOB_FIELDS)]


def test_parse_job_ok() -> None:
    attempt, req = parse_job("r1", _job())
    assert attempt == "1" and req.input == "hi" and req.stream and req.priority == 3
    assert req.deadline_ms is None


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"params": '{"t": [1, 2]}', "input": '{"a": null}'},
        {"stream": "0", "priority": "-7", "deadline_ms": "123", "created_ms": ""},
        {"params": "[1]"},
        {"input": "{bad"},
        {"v": "9"},
        {"priority": ""},
        {"created_ms": "x"},
        {"queue": ""},
    ],
)
def test_parse_job_fast_path_agrees_with_the_checked_path(over: dict[str, str]) -> None:
    """parse_job reads POP's reply by position when it can; it must accept, reject and
    build exactly what the field-by-field check does."""
    from rtq_nb.protocol.jobs import _parse_job_checked

    payload = _job(**over)
    try:
        want: object = _parse_job_checked("r1", payload)
    except MalformedRecord as exc:
        want = type(exc)
    try:
        got: object = parse_job("r1", payload)
    except MalformedRecord as exc:
        got = type(exc)
    assert got == want


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        ({"input": "{bad"}, "'input' is not valid JSON"),
        ({"input": ""}, "missing field 'input'"),
        ({"params": "[1]"}, "'params' must be a JSON object"),
        ({"v": "9"}, "unsupported wire version 9"),
        ({"priority": "high"}, "'priority' is not an integer"),
        ({"stream": "yes"}, "'stream' must be"),
        ({"id": "other"}, "does not match"),
    ],
)
def test_parse_job_rejects_garbage_precisely(over: dict[str, str], msg: str) -> None:
    with pytest.raises(MalformedRecord, match=msg):
        parse_job("r1", _job(**over))


def test_record_from_redis_malformed() -> None:
    with pytest.raises(MalformedRecord, match="status"):
        RequestRecord.from_redis(
            {"v": "1", "id": "x", "client": "c", "queue": "q", "priority": "0", "status": "weird"}
        )
    with pytest.raises(MalformedRecord, match="result"):
        RequestRecord.from_redis(
            {
                "v": "1",
                "id": "x",
                "client": "c",
                "queue": "q",
                "priority": "0",
                "status": "completed",
                "result": "{",
            }
        )


def test_chunk_is_a_str_with_metadata() -> None:
    c = Chunk("abc", seq=4, pieces=2, entry_id="1700000000123-0")
    assert c == "abc" and c.upper() == "ABC" and c.seq == 4 and c.pieces == 2 and c.count("b") == 1
    assert c.timestamp_ms == 1700000000123
    assert json.dumps(c) == '"abc"'
