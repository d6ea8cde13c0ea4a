"""Least-privilege Redis roles against a real Redis 7: users made from the ``ACL SETUSER`` lines
of :mod:`rtq_nb.protocol.acl` (and of the ``rtq-nb acl`` command) run real clients, workers and
monitors; what a role may do works end to end, what it may not is refused with AccessDenied,
and Redis's ACL LOG shows no refusal on the paths a role is meant to use."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from rtq_nb import (
    AccessDenied,
    AsyncClient,
    Client,
    Request,
    RequestCancelled,
    RequestFailed,
    Status,
    Worker,
)
from rtq_nb import views as pd_views
from rtq_nb.demo import echo, fake_answer, fake_llm
from rtq_nb.errors import RtqError
from rtq_nb.loop import portal
from rtq_nb.notebook.monitor import snapshot_dict
from rtq_nb.protocol import acl, registry, scripts
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.scores import SEQ_SPAN
from rtq_nb.transport.embedded import EmbeddedRedis
from tests.conftest import wait_until
from tests.security.acl_server import SERVER, AclServer, User, acl_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    yield from acl_server(tmp_path_factory.mktemp("acl"))


class Gate:
    """An echo handler whose ``"slow"`` requests wait for the test's go-ahead and whose
    ``"boom"`` requests fail; streaming requests get their input's words as pieces."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, req: Request) -> Any:
        if req.input == "slow":
            self.started.set()
            if not self.release.wait(30):
                raise TimeoutError("the test never released the slow request")
        if req.input == "boom":
            raise ValueError("boom")
        if req.stream:
            return (w + " " for w in str(req.input).split())
        return req.input

    def reset(self) -> None:
        self.started.clear()
        self.release.clear()


def raw(c: Client, *cmd: Any) -> Any:
    """One command on the client's own connection (its user, its handshake)."""
    return portal().call(c.async_client.reads.call(*cmd))


def refused(user: User, fn: Any, *args: Any, **kw: Any) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert "rtq-nb acl --queue" in msg and "--role client|worker|monitor" in msg
    assert user.password not in msg and user.name in msg  # the URL, password masked
    return info.value


# ---- client (restricted to its client id) with a worker under the worker role -------------
def test_client_role_round_trips_and_is_kept_to_its_own_requests(srv: AclServer) -> None:
    q = "jobs"
    k = Keys("rtq", q)
    worker = srv.user("worker", queue=q)
    alice = srv.user("client", queue=q, client_id="alice")
    bob = srv.user("client", queue=q, client_id="bob")
    srv.admin.acl_log_reset()
    gate = Gate()
    with (
        Worker(gate, worker.url, queue=q, heartbeat=0.2, lease=1.0) as w,
        Client(alice.url, queue=q, client_id="alice", reap_interval=0.2, timeout=30) as c,
        Client(bob.url, queue=q, client_id="bob", timeout=30) as b,
    ):
        assert c.call({"hi": 1}) == {"hi": 1}  # the sync socket
        assert c.submit([1, 2]).result() == [1, 2]  # the asyncio link
        assert "".join(c.stream("a b c")) == "a b c "

        # a wait much longer than reap_interval: slices re-read the record, run no script
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(c.call, "slow")
            assert gate.started.wait(15)
            base = srv.calls("hgetall")  # one record read per 0.2 s slice
            wait_until(lambda: srv.calls("hgetall") >= base + 3, what="3 wait slices")
            gate.release.set()
            assert waiting.result(30) == "slow"
        assert not srv.denials(alice), srv.denials(alice)

        # its own requests: cancel (pending and running), record, result; read APIs
        gate.reset()
        running = c.submit("slow")
        assert gate.started.wait(15)
        queued = c.submit("queued", priority=5)
        theirs = b.submit("bob's", priority=-3)
        assert c.pending_count() == 2 and c.pending_by_priority() == {5: 1, -3: 1}
        assert c.estimated_wait(priority=5) >= 0 and [x.id for x in c.workers()] == [w.id]
        assert c.stats()["pending"] == 2 and q in c.queues()
        assert queued.cancel() is Status.PENDING and queued.status() is Status.CANCELLED
        assert srv.admin.zscore(k.unsuccessful, queued.id)  # CANCEL as the client role lists it
        rec = c.get(running.id)
        assert rec.status is Status.RUNNING and rec.worker == w.id and rec.client == "alice"

        # refused: popping, completing, renewing a lease, reaping, the workers' keys
        refused(alice, raw, c, "ZPOPMAX", k.pending)
        refused(alice, raw, c, "BZPOPMAX", k.pending, 1)
        pop = scripts.POP.cmd([k.pending, k.running, k.wake], [k.base, "thief", 60_000, 9, 0, 60])
        refused(alice, raw, c, *pop)
        lease = [rec.worker, str(rec.attempts)]
        out = [k.request(running.id), k.result(running.id), k.stream(running.id)]
        done = [running.id, "completed", "result", '"forged"', "", "0", 60, 0]
        refused(alice, raw, c, *scripts.COMPLETE.cmd([*out, k.running, k.stats], lease + done))
        renew = scripts.renew(k, str(rec.worker), lease_ms=600_000, held=[(running.id, lease[1])])
        refused(alice, raw, c, *renew)
        refused(alice, c.reap)
        refused(alice, raw, c, "ZADD", k.running, 1, "fake-lease")
        refused(alice, raw, c, "HSET", k.stats, "completed", 10**6)
        assert raw(c, "HGETALL", k.worker(w.id))  # the workers' registry: read only
        refused(alice, raw, c, "DEL", k.worker(w.id))

        # refused: another client's request (its record, result, cancel) and foreign ids
        refused(alice, c.get, theirs.id)
        refused(alice, c.cancel, theirs.id)
        refused(alice, c.handle(theirs.id).result, timeout=0.5)
        refused(alice, c.submit, "x", request_id="mallory-1")
        assert c.submit("mine", request_id="alice-custom-1").id == "alice-custom-1"
        assert b.get(theirs.id).status is Status.PENDING  # untouched

        assert running.cancel() is Status.RUNNING
        gate.release.set()
        with pytest.raises(RequestCancelled):
            running.result()
        with pytest.raises(RequestFailed, match="boom"):
            c.call("boom")  # failed by the worker role's COMPLETE: listed as unsuccessful
        assert len(srv.admin.zrange(k.unsuccessful, 0, -1)) == 3
        assert theirs.result() == "bob's" and c.handle("alice-custom-1").result() == "mine"

        async def via_async() -> str:  # the AsyncClient under the same user
            async with AsyncClient(alice.url, queue=q, client_id="alice", timeout=30) as ac:
                h = await ac.submit("x y z", stream=True)
                await ac.extend(h.id, 60)  # EXTEND: its own record
                text = "".join([str(chunk) async for chunk in h])
                return text + str(await ac.call("async"))

        assert asyncio.run(via_async()) == "x y z async"
    assert not srv.denials(worker), srv.denials(worker)  # heartbeats, reaps, stop: all allowed
    assert not srv.denials(bob), srv.denials(bob)


# ---- worker --------------------------------------------------------------------------------
def test_worker_role_requeues_a_killed_workers_request_and_streams(srv: AclServer) -> None:
    q = "gpu"
    worker = srv.user("worker", queue=q)
    client = srv.user("client", queue=q)  # any client id
    srv.admin.acl_log_reset()
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", "rtq_nb.demo:fake_llm", "--url"]
    cmd += [worker.url, "--queue", q, "--lease", "1", "--heartbeat", "0.3"]
    victim = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    with Client(client.url, queue=q, timeout=60, reap_interval=0.2) as c:
        try:
            h = c.submit("question", params={"tokens": 8, "rate": 4})  # 2 s of work
            rec = wait_until(lambda: (r := c.get(h.id)).status is Status.RUNNING and r, 30)
            victim.kill()  # SIGKILL: no hand-back, its lease just runs out
        finally:
            if victim.poll() is None:
                victim.kill()
            victim.wait(10)
        with Worker(fake_llm, worker.url, queue=q, heartbeat=0.2, lease=1.0) as w:
            assert h.result() == "".join(fake_answer("question", 8))  # reaped by w's heartbeat
            done = c.get(h.id)
            assert done.attempts == 2 and done.worker == w.id != rec.worker
            stream = c.stream("story", params={"tokens": 6, "rate": 0})
            assert "".join(stream) == "".join(fake_answer("story", 6))
            assert c.stats()["completed"] == 2
    assert not srv.denials(worker), srv.denials(worker)
    assert not srv.denials(client), srv.denials(client)


# ---- monitor -------------------------------------------------------------------------------
PRIORITIES = {1000: 1, 500: 2, 3: 1, 0: 2, -999: 1}  # spread over many more than 64 bands


def _populate(srv: AclServer, q: str) -> dict[str, str]:
    """Completed, failed, streamed, cancelled, dead-lettered and pending requests, and a
    registered worker, written as the default user; no process writes afterwards."""
    k = Keys("rtq", q)
    with Client(srv.admin_url, queue=q, timeout=30) as c:
        with Worker(Gate(), srv.admin_url, queue=q):
            ids = {"done": c.submit("done").id, "stream": c.submit("s t", stream=True).id}
            assert c.handle(ids["done"]).result() == "done"
            assert c.handle(ids["stream"], stream=True).result() == "s t "
            ids["failed"] = c.submit("boom").id
            with pytest.raises(RequestFailed, match="boom"):
                c.handle(ids["failed"]).result()
        ids["cancelled"] = c.submit("never").id
        c.cancel(ids["cancelled"])
        for prio, n in PRIORITIES.items():
            c.submit_many([prio] * n, priority=prio)
    srv.admin.zadd(k.dead, {ids["done"]: 1})  # a dead letter (its record is a real one)
    entry = {"id": "w-frozen", "queue": q, "host": "h", "pid": 1, "status": "idle"}
    for cmd in registry.worker_heartbeat(k, entry, 2.0):
        if cmd[0] != "EXPIRE":  # no TTL: the data must not change while the monitor reads
            srv.admin.execute_command(*cmd)
    return ids


def test_monitor_role_reads_everything_and_writes_nothing(srv: AclServer) -> None:
    q = "dash"
    k = Keys("rtq", q)
    ids = _populate(srv, q)
    monitor = srv.user("monitor", queue=q)
    srv.admin.acl_log_reset()
    before = srv.digest()
    with Client(monitor.url, queue=q) as m:
        assert q in m.queues() and m.pending_count() == sum(PRIORITIES.values())
        assert m.pending_by_priority() == PRIORITIES
        snap = portal().call(m.async_client.snapshot())
        assert dict(snap.pending) == PRIORITIES and list(dict(snap.pending)) == list(PRIORITIES)
        assert [w.id for w in snap.workers] == ["w-frozen"] and snap.running == 0
        assert {s.status for s in snap.recent} >= {"completed", "cancelled", "pending"}
        assert snapshot_dict(snap, 60)["queue"] == q
        assert [w.id for w in m.workers()] == ["w-frozen"] and m.estimated_wait() >= 0
        assert m.stats()["completed"] >= 2 and m.stats()["pending"] == sum(PRIORITIES.values())
        assert m.get(ids["done"]).result == "done"
        assert m.get(ids["failed"]).status is Status.FAILED
        assert [r.id for r in m.dead_letters()] == [ids["done"]]
        history = pd_views.history(m)
        assert set(ids.values()) <= set(history["id"]) and len(history) == 11
        unsuccessful = pd_views.history(m, status=["failed", "cancelled"])  # read from the index
        assert set(unsuccessful["id"]) == {ids["failed"], ids["cancelled"]}
        assert list(pd_views.workers(m)["id"]) == ["w-frozen"] and len(pd_views.clients(m)) == 1
        assert dict(zip(*pd_views.pending(m).to_dict("list").values())) == PRIORITIES
        assert len(pd_views.pending(m, by_priority=False)) == sum(PRIORITIES.values())
        assert m.handle(ids["stream"], stream=True).result() == "s t "  # a second viewer

        refused(monitor, m.submit, "x")
        refused(monitor, m.call, "x")
        refused(monitor, m.cancel, ids["cancelled"])
        refused(monitor, m.reap)
        refused(monitor, m.requeue, ids["done"])
        refused(monitor, m.handle(ids["done"]).result, timeout=0.5)  # BLPOP pops: a write
        refused(monitor, raw, m, "SET", k.stats, "x")
        refused(monitor, raw, m, "HSET", k.request(ids["done"]), "status", "pending")
        refused(monitor, raw, m, *scripts.extend(k, ids["done"], extra_ms=1000))
    assert srv.digest() == before  # not one byte, type or TTL changed
    assert {e["reason"] for e in srv.denials(monitor)} <= {"command", "key"}


def test_pending_by_priority_terminates_on_scores_no_submission_makes(srv: AclServer) -> None:
    q = "odd"
    k = Keys("rtq", q)
    with Client(srv.admin_url, queue=q) as c:
        c.submit_many(["a", "b"], priority=2)
        srv.admin.zadd(k.pending, {"on-a-boundary": SEQ_SPAN, "fraction": 0.5, "low": -5e15})
        counts = c.pending_by_priority()
        assert counts[2] == 2 and sum(counts.values()) == 3  # the boundary is no band's
        with pytest.raises(RtqError, match="finite"):
            srv.admin.zadd(k.pending, {"inf": float("inf")})
            c.pending_by_priority()


# ---- the rtq-nb acl command ----------------------------------------------------------------
ACL_CMD = [sys.executable, "-m", "rtq_nb.cli", "acl"]


def _rules(user: Any) -> Any:
    """ACL GETUSER's reply with every list sorted (the server's order is not the lines')."""
    if isinstance(user, dict):
        return {k: _rules(v) for k, v in user.items()}
    if isinstance(user, list):
        return sorted((_rules(x) for x in user), key=repr)
    if isinstance(user, str) and " " in user:
        return sorted(user.split())  # "+get +set" in a selector's reply
    return user


def test_cli_lines_work_in_redis_cli_and_in_an_acl_file(srv: AclServer, tmp_path: Path) -> None:
    q = "cli"
    env = {**os.environ, "RTQ_TEST_ACL_PW": "s3cret-for-carol"}
    out = {}
    for role, extra in (("client", ["--client-id", "carol"]), ("worker", [])):
        run = subprocess.run(
            [*ACL_CMD, "--queue", q, "--role", role, *extra, "--password-env", "RTQ_TEST_ACL_PW"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "s3cret" not in run.stdout + run.stderr and len(run.stdout.splitlines()) == 1
        out[role] = run.stdout
    lines = "".join(out.values())
    if shutil.which("redis-cli"):  # what the help says to do
        cli = ["redis-cli", "-s", srv.srv.socket_path]
        applied = subprocess.run(cli, input=lines, capture_output=True, text=True, check=True)
        assert applied.stdout.split() == ["OK", "OK"], applied.stdout + applied.stderr
    else:
        import shlex

        srv.apply([shlex.split(line) for line in lines.splitlines()])
    pw = "s3cret-for-carol"
    carol = srv.url(acl.user_name("client", q, "carol"), pw, db=1)  # SELECT 1 in the handshake
    with (
        Worker(echo, srv.url(acl.user_name("worker", q), pw, db=1), queue=q),
        Client(carol, queue=q, client_id="carol", timeout=30) as c,
    ):
        assert c.call("via the cli") == "via the cli"
        assert "".join(c.stream("p q")) == "p q"  # a plain value for a stream: one chunk
        with pytest.raises(AccessDenied):
            c.submit("x", request_id="dave-1")

    # the same rules in an ACL file (`user` for `ACL SETUSER`) make the same users
    acl_file = tmp_path / "users.acl"
    acl_file.write_text(
        "user default on nopass ~* &* +@all\n" + lines.replace("ACL SETUSER ", "user ")
    )
    with EmbeddedRedis(binary=SERVER, data_dir=tmp_path, extra_args=["--aclfile", str(acl_file)]):
        other = redis.Redis(unix_socket_path=str(tmp_path / "redis.sock"), decode_responses=True)
        for name in (acl.user_name("client", q, "carol"), acl.user_name("worker", q)):
            assert _rules(other.acl_getuser(name)) == _rules(srv.admin.acl_getuser(name))
        other.close()

    missing = subprocess.run(
        [*ACL_CMD, "--queue", q, "--role", "monitor", "--password-env", "RTQ_TEST_ACL_UNSET"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "RTQ_TEST_ACL_UNSET"},
    )
    assert missing.returncode == 2 and "RTQ_TEST_ACL_UNSET is not set" in missing.stderr


def test_roles_of_a_sharded_queue(srv: AclServer) -> None:
    """``shards=3``: the three roles work on every shard (client, worker, monitor), and the
    ACL LOG shows no refusal on their paths."""
    q = "wide"
    client = srv.user("client", queue=q, shards=3)
    worker = srv.user("worker", queue=q, shards=3)
    monitor = srv.user("monitor", queue=q, shards=3)
    srv.admin.acl_log_reset()
    w = Worker(echo, worker.url, queue=q, shards=3, heartbeat=0.5, lease=2).start()
    try:
        with Client(client.url, queue=q, timeout=30) as c:
            assert [c.call(i) for i in range(30)] == list(range(30))
            assert "".join(c.stream("a b c")) == "a b c"
        with Client(monitor.url, queue=q) as m:
            assert m.stats()["completed"] == 31 and m.pending_count() == 0
            assert len(pd_views.history(m)) == 31
    finally:
        w.stop()
    per_shard = [srv.admin.zcard(Keys("rtq", q, i).history) for i in range(3)]
    assert all(per_shard) and sum(per_shard) == 31, per_shard
    for user in (client, worker, monitor):
        assert srv.denials(user) == [], user.name
