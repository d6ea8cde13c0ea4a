"""A Redis Cluster master failover under load: 3 masters with one replica each
(``cluster_servers.Cluster(replicas=1)``, ``cluster-node-timeout`` 1000 ms), a fresh cluster
per test. The master serving a queue's slot is SIGKILLed; its replica is promoted by the
cluster itself (no Sentinel); clients and workers must find the new master on their own.

``test_master_killed_under_load``: call() threads and a submit() thread (``min_replicas=1``)
and a worker (``min_replicas=1``) run while the master dies; some of them were given the
killed node's URL (their seed). Asserted: nothing raises, every call returns its own value,
every submission WAIT confirmed completes with its own value, every record is completed; the
time from the kill to the first call that succeeds after it is printed (``-s``).

``test_loss_with_and_without_wait`` (marked ``failover``: run with ``--run-failover``): a
submit() load only, the replica in sync or lagging (SIGSTOP until the master's output buffer
for it holds over 1 MiB), with and without WAIT: the acknowledged requests missing on the
promoted replica are counted and printed; with WAIT, only requests WAIT reported may be lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rtq_nb import Client, Request, Status, Worker
from rtq_nb.errors import RedisUnavailable, RequestNotFound
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport.cluster import ClusterTransport
from tests.conftest import wait_until
from tests.transport.cluster_servers import SERVER, Cluster

pytestmark = pytest.mark.skipif(not os.path.exists(SERVER), reason=f"needs {SERVER}")

NODE_TIMEOUT = 1000  # ms: cluster-node-timeout (a dead master is failed over within ~2-3 s)
REPLICA_TIMEOUT = 0.2  # s a WAIT may take (while the promoted master has no replica: each one)


@pytest.fixture
def rcluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, n=3, replicas=1, node_timeout=NODE_TIMEOUT)  # fresh: a master dies
    try:
        yield c
    finally:
        c.close()


class Runs:
    """A handler recording when each input ran (thread-safe)."""

    def __init__(self) -> None:
        self.runs: dict[Any, list[float]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Any:
        with self.lock:
            self.runs.setdefault(request.input, []).append(time.monotonic())
        return request.input


@dataclass
class Load:
    """One thread calling (``call``) or submitting (``submit``) distinct inputs until told to
    stop; each acknowledged one is recorded (input, id, unreplicated, start, end)."""

    client: Client
    name: str
    mode: str = "call"
    pace: float = 0.005  # s between two requests
    acked: list[tuple[str, str, bool, float, float]] = field(default_factory=list)
    problems: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def run(self) -> None:
        repl = self.client.async_client.replication  # one thread per client: its delta is ours
        i = 0
        try:
            while not self.stop.is_set():
                x = f"{self.name}-{i}"
                before, t0 = repl.unreplicated, time.monotonic()
                if self.mode == "call":
                    got, rid = self.client.call(x), ""
                    if got != x:
                        raise AssertionError(f"call({x!r}) returned {got!r}")
                else:
                    rid = self.client.submit(x).id
                self.acked.append((x, rid, repl.unreplicated > before, t0, time.monotonic()))
                i += 1
                self.stop.wait(self.pace)  # a steady rate, not a flood (checked one by one)
        except BaseException as exc:  # reported by the test
            self.problems.append(exc)

    def start(self) -> Load:
        self.thread = threading.Thread(target=self.run, name=self.name)
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(60)

    def recovered(self, t_kill: float) -> float:
        """Seconds from the kill to the end of the first request started after it."""
        return min(end - t_kill for _, _, _, start, end in self.acked if start >= t_kill)

    def unreplicated(self) -> set[str]:
        return {a[0] for a in self.acked if a[2]}


def _client(url: str, prefix: str, queue: str, wait: bool) -> Client:
    return Client(
        url, prefix=prefix, queue=queue, timeout=60, min_replicas=1 if wait else 0,
        replica_timeout=REPLICA_TIMEOUT,
    )  # fmt: skip


def test_master_killed_under_load(rcluster: Cluster, prefix: str) -> None:
    c = rcluster
    old = c.masters[0]
    new = c.replica_of(old)
    other = next(p for p in c.masters if p != old)
    q = c.queue_on(old)
    dead_url, live_url = f"redis://127.0.0.1:{old}", f"redis://127.0.0.1:{other}"
    handler = Runs()
    workers = [  # one seeded with the node that dies, one with a node that lives
        Worker(handler, u, queue=q, prefix=prefix, concurrency=4, min_replicas=1,
               replica_timeout=REPLICA_TIMEOUT).start()
        for u in (dead_url, live_url)
    ]  # fmt: skip
    loads = [
        Load(_client(dead_url, prefix, q, True), "call-dead-seed"),
        Load(_client(live_url, prefix, q, True), "call-live-seed"),
        Load(_client(dead_url, prefix, q, True), "submit", mode="submit"),
    ]
    try:
        for load in loads:
            load.start()
        wait_until(
            lambda: all(len(x.acked) >= 150 for x in loads) or any(x.problems for x in loads),
            timeout=30,
            what="a load on every thread",
        )
        t_kill = c.kill(old)
        t_promoted = c.wait_promoted(new)
        c.rejoin(old)  # back as the new master's replica: WAIT succeeds again
        n = [len(x.acked) for x in loads]
        wait_until(
            lambda: (
                all(len(x.acked) >= k + 50 for x, k in zip(loads, n, strict=True))
                or any(x.problems for x in loads)
            ),
            timeout=60,
            what="the load going on after the failover",
        )
        for load in loads:
            load.finish()
        assert not [x.problems for x in loads if x.problems]
        sub = loads[2]
        unrepl = sub.unreplicated()
        checker = loads[1].client
        lost = []
        for x, rid, _, _, _ in sub.acked:
            try:
                assert checker.handle(rid).result(timeout=30) == x
                assert checker.get(rid).status is Status.COMPLETED
            except RequestNotFound:
                lost.append(x)
        assert set(lost) <= unrepl  # WAIT's promise: only what it reported can be lost
        calls = [a for x in loads[:2] for a in x.acked]
        for x, _, _, _, _ in calls:
            assert x in handler.runs, f"{x} never ran"
        twice = sorted(x for x, ts in handler.runs.items() if len(ts) > 1)
        seen = [
            ts[0] - t_kill
            for x, ts in handler.runs.items()
            if any(a[0] == x and a[3] >= t_kill for lo in loads for a in lo.acked)
        ]
        print(
            f"\n[cluster failover] promoted {t_promoted - t_kill:.2f} s after the kill; first "
            f"call after the kill done in {loads[0].recovered(t_kill):.2f} s (client seeded with "
            f"the dead node), {loads[1].recovered(t_kill):.2f} s (live seed); first submit "
            f"{sub.recovered(t_kill):.2f} s; first request submitted after the kill run by a "
            f"worker {min(seen):.2f} s after it; acknowledged {len(calls)} calls, "
            f"{len(sub.acked)} submits ({len(unrepl)} unreplicated, {len(lost)} lost); handler "
            f"ran twice: {len(twice)} {twice[:5]}; worker unreplicated "
            f"{[w.state.unreplicated for w in workers]}"
        )
    finally:
        for load in loads:
            load.finish()
            load.client.close()
        for w in workers:
            w.stop()


def test_a_transport_that_knew_only_the_dead_master_finds_its_replica(
    rcluster: Cluster,
) -> None:
    """Its seed and the one master it used both die: the slot map is asked of the other
    nodes the last map named (the promoted replica among them), not only of the dead one."""
    c = rcluster
    old = c.masters[0]
    new = c.replica_of(old)
    key = f"{{{c.queue_on(old)}}}k"

    async def main() -> tuple[Any, list[Any]]:
        t = ClusterTransport(c.url(c.ports.index(old)))
        try:
            await t.pipeline([("SET", key, "v")])
            assert list(t._nodes) == [("127.0.0.1", old)]  # the only node it talked to
            c.wait_stable()  # the replica has the SET (replication is asynchronous: a failover
            c.kill(old)  # right after a write may lose it, and the GET below would find None)
            c.wait_promoted(new)
            errors: list[Any] = []
            while True:
                try:
                    return (await t.pipeline([("GET", key)]))[0], errors
                except RedisUnavailable as exc:  # the dead node, once: then the map is re-read
                    errors.append(exc)
                    if len(errors) > 3:
                        raise
        finally:
            await t.aclose()

    got, errors = asyncio.run(main())
    assert got == "v" and len(errors) <= 1, errors


def _fill_replica_buffer(c: Cluster, master: int, tag: str) -> None:
    """Write filler (in the queue's slot) until the master's output buffer for its stopped
    replica holds over 1 MiB: from then on its writes exist only in its own memory."""
    r = c.admin[master]
    for i in range(1000):
        r.set(f"{{{tag}}}filler:{i}", "x" * 65536)
        (line,) = r.execute_command("CLIENT", "LIST", "TYPE", "replica").splitlines()
        if int(line.split(" omem=")[1].split()[0]) > 1 << 20:
            return
    raise AssertionError("the master's output buffer for the replica never filled")


@pytest.mark.failover
@pytest.mark.parametrize("lag", [False, True], ids=["replica-in-sync", "replica-lagging"])
@pytest.mark.parametrize("wait", [True, False], ids=["WAIT", "no-WAIT"])
def test_loss_with_and_without_wait(rcluster: Cluster, prefix: str, wait: bool, lag: bool) -> None:
    c = rcluster
    old = c.masters[0]
    new = c.replica_of(old)
    q = c.queue_on(old)
    load = Load(_client(c.url(c.ports.index(old)), prefix, q, wait), "s", mode="submit")
    stopped = False
    try:
        load.start()
        wait_until(lambda: len(load.acked) >= 300 or load.problems, what="a load")
        n_lag = len(load.acked)
        if lag:  # the replica stops reading: the master's writes pile up for it
            os.kill(c.procs[new].pid, signal.SIGSTOP)
            stopped = True
            _fill_replica_buffer(c, old, q)
            n_lag, u_lag = len(load.acked), len(load.unreplicated())
            wait_until(
                lambda: (
                    len(load.unreplicated()) - u_lag >= 3
                    if wait
                    else len(load.acked) >= n_lag + 300
                ),
                what="submissions the replica has not received",
            )
        t_kill = c.kill(old)
        n_kill = len(load.acked)
        if stopped:
            os.kill(c.procs[new].pid, signal.SIGCONT)
            stopped = False
        t_promoted = c.wait_promoted(new)
        if wait:
            c.rejoin(old)
        wait_until(
            lambda: len(load.acked) >= n_kill + 20 or load.problems,
            timeout=60,
            what="submissions after the failover",
        )
        load.finish()
        assert not load.problems, load.problems
        keys = Keys(prefix, q)
        pipe = c.admin[new].pipeline(transaction=False)
        for a in load.acked:
            pipe.exists(keys.request(a[1]))
        present = pipe.execute()
        lost = {a[0] for a, here in zip(load.acked, present, strict=True) if not here}
        unrepl = load.unreplicated()
        print(
            f"\n[cluster WAIT={'on' if wait else 'off'} lag={lag}] promoted "
            f"{t_promoted - t_kill:.2f} s after the kill, first submit after it "
            f"{load.recovered(t_kill):.2f} s; acknowledged {len(load.acked)} ({n_kill} before "
            f"the kill, {n_kill - n_lag} while the replica lagged); lost {len(lost)}; "
            f"unreplicated {len(unrepl)}, lost among them {len(lost & unrepl)}"
        )
        if wait:
            assert lost <= unrepl  # WAIT's promise: only what it reported can be lost
            if not lag:
                assert not lost
        with _client(c.url(c.ports.index(new)), prefix, q, False) as check:
            for a, here in zip(load.acked[-5:], present[-5:], strict=True):
                assert here and check.get(a[1]).status is Status.PENDING
    finally:
        if stopped:
            os.kill(c.procs[new].pid, signal.SIGCONT)
        load.finish()
        load.client.close()
