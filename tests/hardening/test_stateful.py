"""A stateful property test against a real redis-server: submits, pops, completions, cancels,
lease expiries, worker kills and raw-Redis garbage, interleaved by Hypothesis, with the
invariants checked after every step:

- every exception the library raises is an RtqError;
- every well-formed request ends exactly once (one delivered completion at most), and none is
  lost: until it ends it is in exactly one of pending / running, with a record that agrees;
- damaged data (wrong types, non-UTF-8 ids, missing fields, huge values) fails alone: pops keep
  working and never take a good request with them; a refused call writes nothing;
- no request key (record, result list, stream) lives without a TTL.

Workers are driven through the protocol layer (the same scripts, builders and parsers the
worker uses), so a "kill" is a lease that runs out and a reap. The default suite runs a bounded
number of examples; CI's slow run (RTQ_RUN_SLOW=1) runs more."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from rtq_nb import Client
from rtq_nb.errors import MalformedRecord, RtqError
from rtq_nb.protocol import scripts
from rtq_nb.protocol.encoding import dumps
from rtq_nb.protocol.jobs import parse_job
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.scripts import PopKind
from rtq_nb.protocol.stream import LeaseResult
from rtq_nb.transport.blocking import SyncConn
from rtq_nb.transport.embedded import EmbeddedRedis

SLOW = os.environ.get("RTQ_RUN_SLOW") == "1"
EXAMPLES, STEPS = (200, 80) if SLOW else (25, 40)
STATS = {"examples": 0, "steps": 0}
RETENTION = 3600
LEASE_MS = 60_000


@dataclass
class Req:
    id: str
    status: str = "pending"  # pending, running, completed, failed, cancelled
    worker: str = ""
    attempt: int = 0
    completions: int = 0
    broken_output: bool = False  # its result list was given another type


_server: EmbeddedRedis | None = None


def server() -> EmbeddedRedis:
    global _server
    if _server is None:
        _server = EmbeddedRedis().start()
    return _server


def expect_rtq(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a library function; anything it raises must be an RtqError."""
    try:
        return fn(*args, **kwargs)
    except RtqError:
        raise
    except Exception as exc:  # pragma: no cover - this is the failure the test looks for
        raise AssertionError(f"{fn} raised a non-RtqError: {exc!r}") from exc


class Queue(RuleBasedStateMachine):
    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        STATS["examples"] += 1
        srv = server()
        self.prefix = f"f{uuid.uuid4().hex[:8]}"
        self.k = Keys(self.prefix, "default")
        self.client = Client(srv.url, prefix=self.prefix, retention=RETENTION, timeout=3600)
        self.conn = SyncConn(srv.url)
        self.raw = redis.Redis(unix_socket_path=srv.socket_path)
        self.reqs: dict[str, Req] = {}
        self.garbage: set[bytes] = set()  # keys the attacker wrote (no TTL expected)

    def teardown(self) -> None:
        self.client.close()
        self.conn.close()
        self.raw.close()

    # ---- clients ----------------------------------------------------------------------------
    @rule(value=st.one_of(st.integers(), st.text(max_size=20)), priority=st.integers(-3, 3))
    def submit(self, value: Any, priority: int) -> None:
        h = expect_rtq(self.client.submit, value, priority=priority)
        self.reqs[h.id] = Req(h.id)

    @rule(
        bad=st.sampled_from(
            [
                {"input": "\udcff"},
                {"input": "x", "timeout": float("inf")},
                {"input": "x", "timeout": 1e17},
                {"input": "x", "params": {"p": "\ud800"}},
                {"input": "x", "priority": 5000},
                {"input": "x", "request_id": ""},
            ]
        )
    )
    def submit_bad(self, bad: dict[str, Any]) -> None:
        before = self.raw.zcard(self.k.pending)
        args = dict(bad)
        with pytest.raises(RtqError):
            expect_rtq(self.client.submit, args.pop("input"), **args)
        assert self.raw.zcard(self.k.pending) == before  # nothing written

    @rule(data=st.data())
    @precondition(lambda self: any(r.status in ("pending", "running") for r in self.reqs.values()))
    def cancel(self, data: st.DataObject) -> None:
        live = sorted(i for i, r in self.reqs.items() if r.status in ("pending", "running"))
        rid = data.draw(st.sampled_from(live))
        prev = expect_rtq(self.client.cancel, rid)
        assert prev == self.reqs[rid].status
        self.reqs[rid].status = "cancelled"

    # ---- workers ----------------------------------------------------------------------------
    @rule(target=workers)
    def new_worker(self) -> str:
        return f"w{uuid.uuid4().hex[:6]}"

    def _ids(self, status: str) -> list[str]:
        return sorted(i for i, r in self.reqs.items() if r.status == status)

    def _run(self, cmd: Any) -> Any:
        return expect_rtq(self.conn.pipeline, [cmd])[0]

    @rule(worker=workers, count=st.integers(1, 4))
    def pop(self, worker: str, count: int) -> None:
        cmd = scripts.pop(
            self.k, worker, lease_ms=LEASE_MS, count=count, consumed=0, retention_s=RETENTION
        )
        popped, _ = scripts.parse_pop(self._run(cmd))
        for p in popped:
            req = self.reqs.get(p.id)
            if req is None:  # the attacker's: dropped, or failed without running
                if p.kind == PopKind.RUN:
                    with pytest.raises(MalformedRecord):
                        parse_job(p.id, p.payload)
                    self._complete(p.id, worker, str(p.payload[0]), Status.FAILED)
                continue
            assert req.status in ("pending", "cancelled"), (p, req)
            if req.status == "cancelled":
                assert p.kind == PopKind.SKIP
                continue
            assert p.kind == PopKind.RUN, p
            attempt, request = parse_job(p.id, p.payload)
            assert request.id == p.id and int(attempt) == req.attempt + 1
            req.status, req.worker, req.attempt = "running", worker, int(attempt)

    def _complete(self, rid: str, worker: str, attempt: str, status: Status) -> LeaseResult:
        value, envelope = (dumps("ok", "r"), "") if status is Status.COMPLETED else ("boom", "")
        if status is not Status.COMPLETED:
            envelope = '{"status":"failed","error":"boom"}'
        cmd = scripts.complete(
            self.k,
            rid,
            worker_id=worker,
            attempt=attempt,
            status=status,
            value=value,
            envelope=envelope,
            stream=False,
            retention_s=RETENTION,
            pieces=0,
        )
        return LeaseResult.of(self._run(cmd))

    @rule(data=st.data(), ok=st.booleans())
    @precondition(lambda self: any(r.status == "running" for r in self.reqs.values()))
    def complete(self, data: st.DataObject, ok: bool) -> None:
        rid = data.draw(
            st.sampled_from(sorted(i for i, r in self.reqs.items() if r.status == "running"))
        )
        req = self.reqs[rid]
        got = self._complete(
            rid, req.worker, str(req.attempt), Status.COMPLETED if ok else Status.FAILED
        )
        assert got is LeaseResult.OK
        req.completions += 1
        req.status = "failed" if (req.broken_output or not ok) else "completed"
        again = self._complete(rid, req.worker, str(req.attempt), Status.COMPLETED)
        assert again is LeaseResult.LOST  # a duplicate completion is discarded

    @rule(worker=consumes(workers))
    def kill_worker(self, worker: str) -> None:
        """The worker dies: its leases run out; a reap requeues or dead-letters its requests;
        a late completion from it is discarded."""
        held = [r for r in self.reqs.values() if r.status == "running" and r.worker == worker]
        for r in held:
            self.raw.zadd(self.k.running, {r.id: 1}, xx=True)  # lease long expired
        requeued, dead = expect_rtq(self.client.reap)
        for r in held:
            assert (r.id in requeued) != (r.id in dead)
            r.status = "pending" if r.id in requeued else "failed"
            late = self._complete(r.id, worker, str(r.attempt), Status.COMPLETED)
            assert late is not LeaseResult.OK

    # ---- the attacker -----------------------------------------------------------------------
    @rule(
        kind=st.sampled_from(["wrong_type", "non_utf8", "missing_fields", "huge", "running_junk"]),
        score=st.integers(-(10**15), 10**15),
    )
    def garbage(self, kind: str, score: int) -> None:
        gid = f"evil-{uuid.uuid4().hex[:6]}"
        rec = self.k.request(gid).encode()
        if kind == "wrong_type":
            self.raw.set(rec, b"x")
            self.garbage.add(rec)
        elif kind == "missing_fields":
            self.raw.hset(rec, mapping={"v": "1", "id": gid, "status": "pending"})
            self.raw.expire(rec, RETENTION)
        elif kind == "huge":
            self.raw.hset(
                rec, mapping={"v": "1", "id": gid, "status": "pending", "input": "[" * 100_000}
            )
            self.raw.expire(rec, RETENTION)
        if kind == "non_utf8":
            self.raw.zadd(self.k.pending, {b"\xff\xfe" + os.urandom(4): score})
        elif kind == "running_junk":
            self.raw.zadd(self.k.running, {b"\xff" + os.urandom(3): 1})
        else:
            self.raw.zadd(self.k.pending, {gid: score})

    @rule(data=st.data())
    @precondition(lambda self: any(r.status == "pending" for r in self.reqs.values()))
    def break_an_output_key(self, data: st.DataObject) -> None:
        """A good request's result list gets another type: its completion fails it, with the
        reason, in its record (nothing else is written)."""
        rid = data.draw(
            st.sampled_from(sorted(i for i, r in self.reqs.items() if r.status == "pending"))
        )
        key = self.k.result(rid).encode()
        self.raw.set(key, b"junk")
        self.garbage.add(key)
        self.reqs[rid].broken_output = True

    @rule(key=st.sampled_from(["pending", "wake", "history", "seq"]))
    def corrupt_a_queue_key_for_one_call(self, key: str) -> None:
        """A queue key SUBMIT touches, of another type (or a counter that is not a number),
        makes a submit refuse whole, writing nothing."""
        name = getattr(self.k, key)
        saved = self.raw.dump(name)
        self.raw.delete(name)
        self.raw.set(name, b"not what you think" if key != "seq" else b"NaN")
        try:
            with pytest.raises(MalformedRecord):
                expect_rtq(self.client.submit, "refused", request_id=f"refused-{key}")
            assert not self.raw.exists(self.k.request(f"refused-{key}"))
        finally:
            self.raw.delete(name)
            if saved is not None:
                self.raw.restore(name, 0, saved)

    @rule(worker=workers)
    def corrupt_running_for_one_pop(self, worker: str) -> None:
        """A running key of another type makes POP refuse before taking anything."""
        saved = self.raw.dump(self.k.running)
        self.raw.delete(self.k.running)
        self.raw.set(self.k.running, b"junk")
        before = self.raw.zcard(self.k.pending)
        try:
            cmd = scripts.pop(self.k, worker, lease_ms=1, count=4, consumed=0, retention_s=9)
            with pytest.raises(MalformedRecord, match="running holds a string, not a zset"):
                self._run(cmd)
            assert self.raw.zcard(self.k.pending) == before
        finally:
            self.raw.delete(self.k.running)
            if saved is not None:
                self.raw.restore(self.k.running, 0, saved)

    # ---- invariants -------------------------------------------------------------------------
    @invariant()
    def each_request_is_where_its_state_says(self) -> None:
        STATS["steps"] += 1
        for rid, req in self.reqs.items():
            rec = {k.decode(): v.decode() for k, v in self.raw.hgetall(self.k.request(rid)).items()}
            in_pending = self.raw.zscore(self.k.pending, rid) is not None
            in_running = self.raw.zscore(self.k.running, rid) is not None
            assert rec, f"{rid} lost its record"
            assert rec["status"] == req.status, (rid, rec["status"], req)
            assert in_pending == (req.status == "pending"), (rid, req)
            assert in_running == (req.status == "running"), (rid, req)
            assert req.completions <= 1
            if req.status == "running":
                assert (rec["worker"], rec["attempts"]) == (req.worker, str(req.attempt))
            if req.broken_output and req.status == "failed" and req.completions:
                assert "cannot deliver" in rec["error"]

    @invariant()
    def every_failed_or_cancelled_request_is_in_the_unsuccessful_history(self) -> None:
        listed = {m.decode() for m in self.raw.zrange(self.k.unsuccessful, 0, -1)}
        ended = {i for i, r in self.reqs.items() if r.status in ("failed", "cancelled")}
        assert ended <= listed, ended - listed

    @invariant()
    def no_key_without_a_ttl_but_the_documented_ones(self) -> None:
        k = self.k
        documented = {
            getattr(k, n).encode()
            for n in (
                "pending",
                "running",
                "wake",
                "seq",
                "history",
                "unsuccessful",
                "dead",
                "stats",
            )
        } | {k.workers.encode(), k.clients.encode(), k.queues.encode()}
        for key in self.raw.scan_iter(match=f"{self.prefix}:*".encode(), count=1000):
            if key in documented or key in self.garbage:
                continue
            assert self.raw.ttl(key) > 0, f"{key!r} has no TTL"


Queue.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestQueueStateMachine = Queue.TestCase


@pytest.fixture(autouse=True, scope="module")
def _report_and_stop_server() -> Any:
    yield
    print(f"\nstateful fuzz: {STATS['examples']} examples, {STATS['steps']} steps checked")
    if _server is not None:
        _server.stop()
        _server.cleanup()
