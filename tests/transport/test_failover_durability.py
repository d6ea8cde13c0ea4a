"""Does the optional ``WAIT`` (``min_replicas=1``) keep acknowledged requests across a real
failover? One primary, one replica, three sentinels on loopback (``sentinel_servers``), a fresh
deployment per test.

A thread submits requests (``client.submit``) in a loop, no worker serving, and records every
acknowledged id together with whether that submission's ``WAIT`` confirmed it (the client's
``replication.unreplicated`` counter before and after; one submitting thread, so the delta is
that submission's). The primary is then SIGKILLed while the load runs, optionally with the
replica SIGSTOPped first so that it lags (its kernel buffers fill, then the primary's own
output buffer for it), and SIGCONTed right after the kill so the sentinels can promote it.
After the switch, every acknowledged id is looked up on the new primary; a worker
(``min_replicas`` as the client's) then serves them, and each present one must return its own
value, run once. Asserted: with ``WAIT`` every lost request was counted unreplicated (so with
a healthy replica none is lost); without ``WAIT`` the loss is measured and printed (run with
``-s``), never asserted, since whether anything is lost depends on buffers and timing.

The ``WAIT`` variants are marked slow (CI runs them); the ``no-WAIT`` ones, which assert no
loss bound, need ``--run-failover``. The sentinels use ``down-after-milliseconds 2000`` and the
restarted old primary ``replica-priority 0``: see ``rejoin`` (a second failover, to that empty
node, was the rare failure of this test)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import wait_until

from rtq_nb import Client, Worker
from rtq_nb.protocol.keys import Keys
from tests.transport.sentinel_servers import (
    DATA_PASSWORD,
    SERVER,
    Counting,
    Sentinels,
    sentinels,
    wait_for,
)

REPLICA_TIMEOUT = 0.2  # s a submission's WAIT may take (a lagging replica: each one pays it)
# Above Sentinel's fixed 1 s ping/reconnect period: at 1000, a sentinel that switched to the
# new primary could count it down before its first PONG, and fail over again (see rejoin).
DOWN_AFTER_MS = 2000


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Sentinels]:
    yield from sentinels(tmp_path, DOWN_AFTER_MS)  # fresh: the primary is killed


def fill_kernel_buffers(dep: Sentinels, primary: int) -> None:
    """Write filler on the primary until its output buffer for the (stopped) replica holds
    over 1 MiB: the socket buffers between them are full, so whatever the primary writes from
    now on exists only in its memory until the replica reads again. (A few KB there is
    normal: the buffer of the last write is released lazily.)"""
    with dep.node(primary) as r:
        for i in range(1000):
            r.set(f"filler:{i}", "x" * 65536)
            (line,) = r.execute_command("CLIENT", "LIST", "TYPE", "replica").splitlines()
            if int(line.split(" omem=")[1].split()[0]) > 1 << 20:
                return
    raise AssertionError("the primary's output buffer for the replica never filled")


def rejoin(dep: Sentinels, port: int, primary: int) -> None:
    """Restart the killed node on its port as a replica of ``primary``; until it is linked.

    It comes back empty, and stays empty for seconds (a diskless full sync first waits
    ``repl-diskless-sync-delay``, 5 s), so it must never be promoted: ``replica-priority 0``.
    Without it, a sentinel that wrongly finds the new primary down just after the switch
    (stale "down" votes of the first failover make that an instant quorum) fails over to
    this empty node, and every request is lost: the rare failure of this test."""
    dep.procs.append(
        subprocess.Popen(
            [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(dep.dir), "--logfile", f"redis-{port}-again.log",
             "--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD,
             "--replica-priority", "0", "--replicaof", "127.0.0.1", str(primary)],
            cwd=dep.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    )  # fmt: skip
    wait_for(
        "the old primary to rejoin as a replica",
        lambda: dep.node(port).info("replication").get("master_link_status") == "up",
    )


def still_primary(dep: Sentinels, port: int) -> None:
    """No second failover: every sentinel still names ``port`` and it is still a primary
    (what is counted present or lost is read there)."""
    named = [dep.primary_port(i) for i in range(len(dep.sentinel_ports))]
    assert named == [port] * len(named) and dep.role(port) == "master", (
        f"a second failover: the sentinels name {named}, {port} is a {dep.role(port)} "
        f"(see the sentinel logs in {dep.dir})"
    )


@dataclass
class Load:
    """One thread submitting ``0, 1, 2, ...`` until told to stop."""

    client: Client
    acked: list[tuple[int, str, bool, float]] = field(default_factory=list)  # i, id, unrepl, t
    problems: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        repl = self.client.async_client.replication
        i = 0
        try:
            while not self.stop.is_set():
                before = repl.unreplicated
                h = self.client.submit(i)
                self.acked.append((i, h.id, repl.unreplicated > before, time.monotonic()))
                i += 1
        except BaseException as exc:
            self.problems.append(exc)

    def unreplicated(self) -> int:
        return sum(1 for a in self.acked if a[2])


@pytest.mark.parametrize("lag", [False, True], ids=["replica-in-sync", "replica-lagging"])
@pytest.mark.parametrize(
    "wait",
    [  # WAIT's promise is asserted: in CI (~15 s each); without WAIT, only measured
        pytest.param(True, id="WAIT", marks=pytest.mark.slow),
        pytest.param(False, id="no-WAIT", marks=pytest.mark.failover),
    ],
)
def test_acknowledged_requests_across_a_primary_kill(
    dep: Sentinels, prefix: str, wait: bool, lag: bool
) -> None:
    m = 1 if wait else 0
    url = dep.url()
    old = dep.primary_port()
    (new,) = [p for p in dep.data_ports if p != old]
    primary_proc, replica_proc = dep.procs[0], dep.procs[1]  # started in data_ports order
    assert dep.data_ports[0] == old
    client = Client(url, prefix=prefix, timeout=60, min_replicas=m, replica_timeout=REPLICA_TIMEOUT)
    load = Load(client)
    thread = threading.Thread(target=load.run)
    worker: Worker | None = None
    stopped = False
    try:
        sub = client.async_client.conn.endpoint.sentinel  # type: ignore[attr-defined]
        wait_until(lambda: sub.subscriptions == 3, what="the failover events")
        thread.start()
        wait_until(lambda: len(load.acked) >= 300 or load.problems, what="a load")
        n_lag = u_lag = 0
        if lag:  # the replica stops reading: the primary's writes pile up for it
            os.kill(replica_proc.pid, signal.SIGSTOP)
            stopped = True
            fill_kernel_buffers(dep, old)
            n_lag, u_lag = len(load.acked), load.unreplicated()
            wait_until(  # now in the primary's own buffer: no WAIT, many; WAIT, a few timed out
                lambda: (
                    (load.unreplicated() - u_lag >= 3) if wait else len(load.acked) >= n_lag + 300
                ),
                what="submissions the replica has not received",
            )
        with dep.node(old) as r:  # how far the primary's replication stream got
            offset_at_kill = int(r.info("replication")["master_repl_offset"])
        primary_proc.kill()  # SIGKILL: whatever the replica has not received is gone
        primary_proc.wait(10)
        n_at_kill = len(load.acked)
        if stopped:
            os.kill(replica_proc.pid, signal.SIGCONT)
            stopped = False
        dep.wait_switched(new)
        if wait:  # the killed node comes back as a replica, so WAIT can succeed again
            rejoin(dep, old, new)
        wait_until(  # the load resumes on the new primary by itself
            lambda: len(load.acked) >= n_at_kill + 20 or load.problems,
            timeout=30,
            what="submissions after the failover",
        )
        load.stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the load did not stop"
        still_primary(dep, new)
        with dep.node(new) as r:  # where the promoted replica's own history began
            taken_over = int(r.info("replication")["second_repl_offset"]) - 1
        assert not load.problems, load.problems
        keys = Keys(prefix, "default")
        with dep.node(new) as r:
            pipe = r.pipeline(transaction=False)
            for _, rid, _, _ in load.acked:
                pipe.exists(keys.request(rid))
            present = pipe.execute()
        lost = {a[1] for a, here in zip(load.acked, present) if not here}
        unrepl = {a[1] for a in load.acked if a[2]}
        pause = max(b[3] - a[3] for a, b in itertools.pairwise(load.acked[n_lag:]))
        handler = Counting()
        worker = Worker(
            handler, url, prefix=prefix, concurrency=8, min_replicas=m,
            replica_timeout=REPLICA_TIMEOUT,
        ).start()  # fmt: skip
        served = [a for a, here in zip(load.acked, present) if here]
        for i, rid, _, _ in served:
            assert client.handle(rid).result(timeout=30) == i  # its own value
        assert len(handler.runs) == len(served) and set(handler.runs.values()) == {1}
        still_primary(dep, new)
        before_kill = sum(1 for a in load.acked[:n_at_kill] if a[2])
        print(
            f"\n[WAIT={'on' if wait else 'off'} lag={lag}] acknowledged {len(load.acked)} "
            f"({n_at_kill} before the kill, {n_at_kill - n_lag if lag else 0} of them while the "
            f"replica lagged); lost {len(lost)}; unreplicated (client) {len(unrepl)} "
            f"({before_kill} before the kill), lost among them {len(lost & unrepl)}; worker "
            f"unreplicated {worker.state.unreplicated}; longest pause in submissions "
            f"{pause:.2f} s; replication stream at the kill >= {offset_at_kill}, the replica "
            f"had {taken_over} ({max(offset_at_kill - taken_over, 0)} bytes short)"
        )
        assert len(unrepl) == client.async_client.replication.unreplicated
        if wait:
            assert lost <= unrepl  # WAIT's promise: only what it reported can be lost
            if not lag:
                assert not lost
    finally:
        load.stop.set()
        if stopped:
            os.kill(replica_proc.pid, signal.SIGCONT)
        thread.join(30)
        client.close()
        if worker is not None:
            worker.stop()
