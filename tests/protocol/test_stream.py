"""Stream entries and lease results: decoding never raises, kinds map to outcomes."""

from __future__ import annotations

from rtq_nb.protocol.records import Status
from rtq_nb.protocol.stream import OUTCOMES, EntryKind, LeaseResult, decode_entry


def test_data_entry_becomes_a_chunk() -> None:
    e = decode_entry("1-0", ["k", "d", "s", "4", "n", "2", "d", "hi"])
    assert e.kind is EntryKind.DATA and e.outcome is None
    assert e.chunk == "hi" and e.chunk is not None
    assert (e.chunk.seq, e.chunk.pieces, e.chunk.entry_id) == (4, 2, "1-0")


def test_markers_carry_outcome_and_detail() -> None:
    for kind, status in OUTCOMES.items():
        e = decode_entry("2-0", ["k", kind.value, "d", "why"])
        assert e.kind is kind and e.outcome is status and e.detail == "why"
    assert decode_entry("3-0", ["k", "e"]).outcome is Status.COMPLETED
    reset = decode_entry("4-0", ["k", "r", "d", "worker lost"])
    assert reset.kind is EntryKind.RESET and reset.outcome is None and reset.detail == "worker lost"


def test_malformed_entries_are_reported_not_raised() -> None:
    assert decode_entry("1-0", ["k", "z"]).problem.startswith("unknown entry kind")
    assert decode_entry("1-0", []).kind is None
    bad = decode_entry("1-0", ["k", "d", "s", "x", "n", "1", "d", "t"])
    assert bad.kind is None and "malformed data entry" in bad.problem


def test_lease_result_of_anything() -> None:
    assert [LeaseResult.of(x) for x in (1, "1", 0, -1, "-1", None, "x", 9)] == [
        LeaseResult.OK, LeaseResult.OK, LeaseResult.LOST, LeaseResult.CANCELLED,
        LeaseResult.CANCELLED, LeaseResult.LOST, LeaseResult.LOST, LeaseResult.LOST,
    ]  # fmt: skip
