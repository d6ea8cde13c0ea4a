"""Redis Cluster: a real 3-master cluster (tests/transport/cluster_servers.py); queues whose
slots live on different masters, a worker killed mid-request, a slot resharded under load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import uuid
from typing import Any

import pytest

import rtq_nb.views
from rtq_nb import AsyncClient, Client, Status, Worker
from rtq_nb.demo import echo, fake_answer, fake_llm, sleepy
from rtq_nb.errors import UnknownQueue
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport import connect
from rtq_nb.transport.auto import AutoTransport
from rtq_nb.transport.cluster import ClusterTransport
from rtq_nb.transport.resp import pack
from rtq_nb.transport.slots import command_key, key_slot, split_packed
from tests.conftest import wait_until, worker_cmd
from tests.transport.cluster_servers import SERVER, Cluster, cluster

__all__ = ["cluster"]

pytestmark = pytest.mark.skipif(not os.path.exists(SERVER), reason=f"needs {SERVER}")


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def queues(cluster: Cluster) -> list[str]:
    """One queue per master (by its hash tag's slot)."""
    names: list[str] = []
    for port in cluster.ports:
        names.append(cluster.queue_on(port, names))
    return names


def test_slots_match_redis(cluster: Cluster) -> None:
    r = cluster.admin[cluster.ports[0]]
    for key in ("rtq:queues", "rtq:{default}:pending", "a{}b", "{x}{y}", "x{", "foo"):
        assert key_slot(key) == r.execute_command("CLUSTER", "KEYSLOT", key)
    evalsha = ("EVALSHA", "0" * 40, 2, "rtq:{a}:pending", "k2", "arg")
    assert command_key(evalsha) == "rtq:{a}:pending"
    assert command_key(("XREAD", "COUNT", 5, "STREAMS", "s1", "0")) == "s1"
    assert command_key(("TIME",)) is None and command_key(("EVALSHA", "x", 0)) is None
    packed = pack([("SADD", "k", "v"), ("BLPOP", "w", 1)])
    assert [a for _, a in split_packed(packed)] == [[b"SADD", b"k", b"v"], [b"BLPOP", b"w", b"1"]]


def test_connect_detects_a_cluster_node(cluster: Cluster, url: str) -> None:
    async def kinds() -> tuple[Any, Any, Any]:
        found = []
        for u in (cluster.url(1), url, cluster.url(2).replace("redis://", "redis+cluster://")):
            t = connect(u)
            await t.call("PING")
            found.append(t.cluster if isinstance(t, AutoTransport) else type(t))
            await t.aclose()
        return found[0], found[1], found[2]

    assert asyncio.run(kinds()) == (True, False, ClusterTransport)


def _workers(client: Client, queue: str) -> int:
    try:
        return len(client.workers(queue=queue))
    except UnknownQueue:
        return 0


def test_queues_on_every_master_serve_everything(
    cluster: Cluster, queues: list[str], prefix: str
) -> None:
    workers = [
        Worker(fake_llm, cluster.url(i), queue=q, prefix=prefix).start()
        for i, q in enumerate(queues)
    ]
    idle = cluster.queue_on(cluster.ports[0], queues)  # no worker: requests stay pending
    try:
        with Client(cluster.url(2), prefix=prefix, timeout=30) as c:
            for q in queues:
                expected = "".join(fake_answer(f"hi {q}", 5))
                assert c.call(f"hi {q}", queue=q, params={"tokens": 5, "rate": 0}) == expected
                assert c.call(f"hi {q}", queue=q, params={"tokens": 5, "rate": 0}) == expected
                got = "".join(c.stream(f"s {q}", queue=q, params={"tokens": 8, "rate": 0}))
                assert got == "".join(fake_answer(f"s {q}", 8))
                hs = c.submit_many([f"m{i}" for i in range(20)], queue=q, params={"tokens": 2})
                assert [h.result() for h in hs] == [
                    "".join(fake_answer(f"m{i}", 2)) for i in range(20)
                ]
                assert c.workers(queue=q)[0].queue == q
                snap = c.snapshot(queue=q)
                assert snap.queue == q
            pending = [c.submit(i, queue=idle, timeout=60) for i in range(3)]
            assert c.pending_count(queue=idle) == 3
            pending[0].cancel()
            assert c.get(pending[0].id, queue=idle).status is Status.CANCELLED
            assert c.pending_count(queue=idle) == 2
            rows = rtq_nb.views.history(c, queue=[*queues, idle])
            assert len(rows) == len(queues) * 23 + 3
            assert set(rows["queue"]) == {*queues, idle}
        # the keys really are spread: each queue's pending zset lives on its own master
        for q, port in zip(queues, cluster.ports, strict=True):
            k = Keys(prefix, q)
            assert cluster.admin[port].exists(k.history) == 1
            assert cluster.admin[port].execute_command("CLUSTER", "KEYSLOT", k.history) == key_slot(
                q
            )
    finally:
        for w in workers:
            w.stop()


def test_async_client_on_a_cluster(cluster: Cluster, queues: list[str], prefix: str) -> None:
    workers = [Worker(echo, cluster.url(0), queue=q, prefix=prefix).start() for q in queues]

    async def main() -> list[Any]:
        async with AsyncClient(cluster.url(1), prefix=prefix, timeout=30) as c:
            return list(await asyncio.gather(*(c.call(q, queue=q) for q in queues * 5)))

    try:
        assert asyncio.run(main()) == queues * 5
    finally:
        for w in workers:
            w.stop()


def _pid(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[1])


def test_killed_worker_request_completes_once_elsewhere(
    cluster: Cluster, queues: list[str], prefix: str, procs: list[Any]
) -> None:
    q = queues[1]
    cmd = worker_cmd(cluster.url(0), prefix, "rtq_nb.demo:fake_llm", "--queue", q)
    procs += [subprocess.Popen(cmd, stderr=subprocess.DEVNULL) for _ in range(2)]
    with Client(cluster.url(2), prefix=prefix, queue=q) as c:
        wait_until(lambda: _workers(c, q) == 2, what="2 workers registered")
        h = c.submit("question", params={"tokens": 40, "rate": 20}, timeout=60)  # ~2 s of work

        def running() -> str | None:
            rec = c.get(h.id)
            return rec.worker if rec.status is Status.RUNNING else None

        victim = wait_until(running, what="request running")
        os.kill(_pid(victim), signal.SIGKILL)
        assert h.result() == "".join(fake_answer("question", 40))
        rec = h.record()
        assert rec.status is Status.COMPLETED and rec.attempts == 2 and rec.worker != victim
        assert c.stats(queue=q)["completed"] == 1  # exactly once


def test_resharding_a_busy_queue_loses_and_duplicates_nothing(
    cluster: Cluster, queues: list[str], prefix: str
) -> None:
    q = queues[0]
    slot = key_slot(q)
    src = cluster.owner(slot)
    dst = next(p for p in cluster.ports if p != src)
    workers = [
        Worker(sleepy, cluster.url(2), queue=q, prefix=prefix, concurrency=4).start()
        for _ in range(2)
    ]
    results: dict[str, list[Any]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def load(n: int) -> None:
        try:
            with Client(cluster.url(1), prefix=prefix, queue=q, timeout=60) as c:
                i = 0
                while not stop.is_set() or i < 30:
                    x = f"{n}-{i}"
                    results.setdefault(x, []).append(c.call(x, params={"delay": 0.01}))
                    h = c.submit(x + "s", params={"delay": 0.01})
                    results.setdefault(x + "s", []).append(h.result())
                    i += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        with Client(cluster.url(0), prefix=prefix, queue=q) as c:
            wait_until(lambda: c.stats().get("completed", 0) >= 40, what="load running")
            moved = cluster.move_slot(slot, dst)
            assert moved > 0 and cluster.owner(slot) == dst
            done = c.stats().get("completed", 0)
            wait_until(
                lambda: c.stats().get("completed", 0) >= done + 40, what="served after the move"
            )
            stop.set()
            for t in threads:
                t.join(120)
            assert not errors, errors
            assert all(v == [k] for k, v in results.items())
            assert c.stats().get("completed", 0) == len(results)  # each request completed once
            assert c.pending_count() == 0
    finally:
        stop.set()
        for w in workers:
            w.stop()
