"""Regressions for what an attack review of the signing layer found (pure: the checks a client
and a worker make, fed what an attacker with Redis access can write)."""

from __future__ import annotations

import time

import pytest

from rtq_nb import Keyring, SealKey, SigningKey
from rtq_nb.client.checks import StreamCheck, checked_envelope
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.encoding import encode_envelope
from rtq_nb.protocol.jobs import JOB_FIELDS
from rtq_nb.protocol.records import Chunk, Status
from rtq_nb.protocol.signing import ResultKind
from rtq_nb.protocol.stream import EntryKind, StreamEntry, decode_entry
from rtq_nb.security import Sealer
from rtq_nb.security.keys import key_texts
from rtq_nb.security.requests import RequestGuard, sign_request
from rtq_nb.security.results import NOT_SEALED, ResultCheck, ResultSigner, seal_json

WK, CK = SigningKey.generate("w1"), SigningKey.generate("c1")
SEAL = Sealer([SealKey.generate("e1")])
SIGNER = ResultSigner(WK, SEAL)
CHECK = ResultCheck(Keyring([WK]), SEAL)


def completed_record(rid: str, text: str) -> dict[str, str]:
    value = SIGNER.value(rid, f'"{text}"')
    return {
        "v": "1", "id": rid, "client": "c", "queue": "q", "priority": "0", "status": "completed",
        "attempts": "1", "input": seal_json(SEAL, rid, "in", f'"{text} prompt"'),
        "result": value, "res_sig": SIGNER.sign(rid, "1", ResultKind.COMPLETED, value, run="ab"),
    }  # fmt: skip


def test_a_record_moved_to_another_request_is_neither_verified_nor_opened() -> None:
    moved = completed_record("B", "secret of B")  # copied, id and all, into A's key
    shown = CHECK.record_fields(moved, "A")
    assert "result" not in shown and "another request's id" in shown["error"]
    assert "secret of B" not in shown["input"]
    genuine = CHECK.record_fields(completed_record("A", "mine"), "A")
    assert genuine["result"] == '"mine"' and genuine["input"] == '"mine prompt"'
    # history rows go through the same check, under the id they were listed by
    from rtq_nb.protocol.history import HISTORY_FIELDS

    values = [moved.get(n) for n in (*HISTORY_FIELDS, "res_sig")]
    row = dict(zip(HISTORY_FIELDS, CHECK.history_values(values, "A"), strict=True))
    assert row["result"] is None and "secret of B" not in (row["input"] or "")


def test_unsigned_statuses_never_show_stored_text() -> None:
    rec = completed_record("A", "x") | {"status": "cancelled", "error": "visit evil.example"}
    shown = CHECK.record_fields(rec, "A")
    assert "evil" not in shown["error"] and "result" not in shown
    plaintext = completed_record("A", "x") | {"input": '"attacker plaintext"'}
    assert CHECK.record_fields(plaintext, "A")["input"] == f'"{NOT_SEALED}"'


def test_malformed_envelopes_and_entries_are_dropped_not_crashes() -> None:
    check = ResultCheck(Keyring([WK]), None)
    bad_error = '{"status":"failed","error":5,"sig":"w1.1.AAAA"}'
    assert checked_envelope(check, "A", bad_error) is None
    assert checked_envelope(check, "A", "[" * 100_000) is None
    entry = decode_entry("1-1", ["k", "e", "n", "\u00b2", "a", "w1.1.AA"])
    assert entry.kind is EntryKind.END and entry.pieces is None
    # a client that encrypts refuses a plaintext result (no worker keys needed for that)
    sealing = ResultCheck(None, SEAL)
    taken = checked_envelope(sealing, "A", encode_envelope(Status.COMPLETED, "forged"))
    assert taken is not None and taken[0] is Status.FAILED and "not encrypted" in str(taken[2])


def test_a_stream_cannot_be_spliced_from_two_runs_of_one_attempt() -> None:
    signer = ResultSigner(WK, None)

    def data(seq: int, text: str, run: str) -> StreamEntry:
        auth = signer.sign("A", "1", ResultKind.DATA, text, seq, 1, run)
        return StreamEntry(f"{seq}-{run}", EntryKind.DATA, Chunk(text, seq, 1), auth=auth)

    follow = StreamCheck(ResultCheck(Keyring([WK]), None), "A", sealed=False)
    assert follow.take(data(0, "run1 ", "r1"), 0, False)[0].kind is EntryKind.DATA
    assert follow.take(data(1, "run2 ", "r2"), 1, True)[0].kind is None  # another run
    assert follow.take(data(1, "run1b", "r1"), 1, True)[0].kind is EntryKind.DATA


def test_a_worker_starts_one_id_at_most_its_signed_attempt_budget() -> None:
    guard = RequestGuard(Keyring([CK]), "q", max_skew=60, max_age=3600)
    now = int(time.time() * 1000)
    values = {
        "v": "1", "id": "A", "queue": "q", "priority": "0", "input": '"x"', "params": "{}",
        "stream": "0", "created_ms": "1", "deadline_ms": "0", "client": "c",
        "timeout_ms": "0", "max_attempts": "2",
        "sig": sign_request(CK, request_id="A", queue="q", client="c", input_json='"x"',
                            params_json="{}", priority=0, timeout_ms=0, max_attempts=2,
                            stream=False, now_ms=now),
    }  # fmt: skip
    payload = ["1", *(values.get(f, "") for f in JOB_FIELDS)]  # "trace": unsigned, empty
    assert guard.check("A", payload) is None and guard.check("A", payload) is None
    assert "attempt budget" in (guard.check("A", payload) or "")
    guard.served("A")
    assert "already served" in (guard.check("A", payload) or "")


def test_several_keys_in_one_value_are_parsed_and_never_echoed(tmp_path: object) -> None:
    keys = [SealKey.generate(f"e{i}").to_text() for i in range(8)]
    keys.append("rtq-ek:aesgcm:e9:" + "/" * 43 + "=")  # a key with slashes in its base64
    assert len(key_texts(",".join(keys))) == 9
    with pytest.raises(ConfigurationError) as err:
        key_texts("not-a-key-secretvalue")
    assert "secretvalue" not in str(err.value)
