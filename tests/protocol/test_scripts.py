"""The script builders and reply parsers, and the Lua sources' constants: no Redis."""

from __future__ import annotations

import re

import pytest

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol import script_source, scripts
from rtq_nb.protocol.encoding import EXPIRED_ENVELOPE, encode_envelope
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.scripts import Hole, PopKind
from rtq_nb.protocol.stream import LeaseResult

K = Keys("rtq", "q")
LUA_WORDS = {"KEYS", "ARGV"}


@pytest.mark.parametrize("script", scripts.ALL, ids=lambda s: s.name)
def test_every_constant_a_script_uses_comes_from_python(script: scripts.Script) -> None:
    """An upper-case name in a script body is one of scripts.CONSTANTS, declared in its
    prelude with the Python value: Lua cannot drift from Python."""
    body = script.source.split("\n")
    line = re.compile(r"^local (\w+) = (.*)$")
    prelude = {m.group(1): m.group(2) for m in map(line.match, body) if m}
    code = re.sub(r"--[^\n]*|'(?:[^'\\]|\\.)*'", "", script.source)  # no comments, strings
    used = set(re.findall(r"\b[A-Z][A-Z_]{2,}\b", code)) - LUA_WORDS
    for name in used:
        assert name in scripts.CONSTANTS, f"{script.name} uses {name}, not a Python constant"
        assert name in prelude, f"{script.name} uses {name} without declaring it"
    assert ("local now" in script.source) == bool(re.search(r"\bnow\b", script.source))


def test_constants_render_the_python_values() -> None:
    src = scripts.POP.source
    assert "local SEQ_SPAN" not in src  # only what a script uses
    assert "local REQ = ':req:'" in src and "local POP_RUN = 'run'" in src
    assert "local JOB_FIELDS = {'v', 'id', 'queue'," in src
    assert (
        encode_envelope(Status.EXPIRED, None, "deadline passed while pending") == EXPIRED_ENVELOPE
    )
    assert "local SEQ_SPAN = 1099511627776" in scripts.SUBMIT.source
    assert "local LEASE_CANCELLED = -1" in scripts.APPEND.source
    assert scripts.render("return 'it''s'") == "return 'it''s'"  # nothing used, nothing added
    assert script_source._lua("a'b\\c") == "'a\\'b\\\\c'"


def test_each_script_has_its_own_sha_and_evalsha_command() -> None:
    shas = {s.sha for s in scripts.ALL}
    assert len(shas) == len(scripts.ALL)
    cmd = scripts.extend(K, "r1", extra_ms=5000)
    assert cmd == ("EVALSHA", scripts.EXTEND.sha, 1, K.request("r1"), 5000)


def test_submit_keys_args_and_template_holes() -> None:
    cmd = scripts.submit(
        K, "r1", priority=3, timeout_ms=9000, retention_s=60, wake_cap=10, fields=["v", "1"]
    )
    assert cmd[2:] == (5, K.request("r1"), K.pending, K.wake, K.seq, K.history,
                       "r1", 3, 9000, 60, 10, "v", "1")  # fmt: skip
    tpl = scripts.submit(K, Hole(0), priority=0, timeout_ms=0, retention_s=1, wake_cap=1, fields=[])
    record, rid = tpl[3], tpl[8]
    assert isinstance(record, Hole) and record.prefix == K.request("").encode()
    assert isinstance(rid, Hole) and rid.index == 0


def test_complete_maps_status_to_field() -> None:
    ok = scripts.complete(
        K, "r", worker_id="w", attempt="2", status=Status.COMPLETED, value="[1]", envelope="",
        stream=False, retention_s=9, pieces=0,
    )  # fmt: skip
    assert ok[2:10] == (7, K.request("r"), K.result("r"), K.stream("r"), K.running, K.stats,
                        K.history, K.unsuccessful)  # fmt: skip
    assert ok[10:] == ("w", "2", "r", "completed", "result", "[1]", "", "0", 9, 0, "", "", "")
    bad = scripts.complete(
        K, "r", worker_id="w", attempt="2", status=Status.FAILED, value="boom", envelope="{}",
        stream=True, retention_s=9, pieces=4, sig="k.2.S", end_sig="", counter="unauthenticated",
    )  # fmt: skip
    assert bad[10:] == ("w", "2", "r", "failed", "error", "boom", "{}", "1", 9, 4, "k.2.S", "",
                       "unauthenticated")  # fmt: skip


def test_append_flattens_chunks() -> None:
    cmd = scripts.append(
        K, "r", worker_id="w", attempt="1", retention_s=5, first=True, chunks=[(0, 2, "ab", "")]
    )
    assert cmd[2:] == (2, K.request("r"), K.stream("r"), "w", "1", 5, "1", 0, 2, "ab", "")


def test_parse_pop() -> None:
    reply = ["a", "run", ["1", "v"], "b", "gone", "", "c", "skip", "expired", "d", "odd", "", 7]
    popped, left = scripts.parse_pop(reply)
    assert left == 7
    assert [(p.id, p.kind) for p in popped] == [
        ("a", PopKind.RUN), ("b", PopKind.GONE), ("c", PopKind.SKIP), ("d", PopKind.SKIP),
    ]  # fmt: skip
    assert popped[0].payload == ["1", "v"]
    assert scripts.parse_pop([0]) == ([], 0)
    for bad in (None, [], ["a", "run"], "x"):
        with pytest.raises(MalformedRecord, match="POP reply"):
            scripts.parse_pop(bad)


def test_parse_reap_renew_status_and_counts() -> None:
    assert scripts.parse_reap(["a", "b", "|", "c"]) == (["a", "b"], ["c"])
    assert scripts.parse_reap(["|"]) == ([], [])
    with pytest.raises(MalformedRecord):
        scripts.parse_reap(["a"])
    assert scripts.parse_renew([1, 0, -1, "x"]) == [
        LeaseResult.OK, LeaseResult.LOST, LeaseResult.CANCELLED, LeaseResult.LOST,
    ]  # fmt: skip
    assert scripts.parse_status("running") is Status.RUNNING
    assert scripts.parse_status("") is None and scripts.parse_status("bogus") is None
    assert scripts.duplicate_id("RTQ_DUPLICATE request id already exists: x") == (
        "request id already exists: x"
    )
    assert scripts.duplicate_id("ERR other") is None


def test_reap_and_pop_name_the_queue_base_for_keys_built_in_lua() -> None:
    pop = scripts.pop(K, "w", lease_ms=6000, count=4, consumed=1, retention_s=9)
    assert pop[2:7] == (4, K.pending, K.running, K.wake, K.unsuccessful) and pop[7] == K.base
    assert K.request("x") == K.base + scripts.CONSTANTS["REQ"] + "x"  # type: ignore[operator]
    assert K.stream("x") == K.base + scripts.CONSTANTS["STREAM"] + "x"  # type: ignore[operator]
    assert K.result("x") == K.base + scripts.CONSTANTS["RES"] + "x"  # type: ignore[operator]
