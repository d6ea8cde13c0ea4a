"""A real 3-master Redis Cluster on loopback for tests (Debian's redis-server 7.0, created with
``redis-cli --cluster create``), optionally with one replica per master, and the operations the
tests need (resharding one slot; SIGKILLing a master, waiting for its replica's promotion,
restarting the killed node so it rejoins as a replica).

Every wait is on a condition the servers report (``cluster_state:ok``, an agreed slot map,
``INFO replication``), polled, never a bare sleep.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import redis

from rtq_nb.transport.embedded import free_port
from rtq_nb.transport.slots import key_slot
from tests.transport.polling import wait_for

__all__ = ["CLI", "SERVER", "Cluster", "cluster", "wait_for"]

SERVER = "/usr/bin/redis-server"  # Debian's 7.0 (CI installs it)
CLI = "/usr/bin/redis-cli"


def _port() -> int:
    """A free port (the cluster bus gets its own, given with --cluster-port)."""
    return free_port()


class Cluster:
    """The running cluster: ports, URLs, one admin connection per node, slot moves."""

    def __init__(self, d: Path, n: int = 3, replicas: int = 0, node_timeout: int = 5000) -> None:
        """``n`` masters, each with ``replicas`` replicas; ``node_timeout``: the
        ``cluster-node-timeout`` in ms (how long a master must be unreachable before its
        replica may take over)."""
        self.dir = d
        self.replicas = replicas
        self.node_timeout = node_timeout
        self.ports = [_port() for _ in range(n * (1 + replicas))]
        self.bus = {p: _port() for p in self.ports}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.admin: dict[int, redis.Redis] = {}
        for port in self.ports:
            self.start_node(port)
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def start_node(self, port: int) -> None:
        """Start (or restart, with its ``nodes.conf``) the node on ``port``."""
        conf = self.dir / f"nodes-{port}.conf"
        self.procs[port] = subprocess.Popen(
            [SERVER, "--port", str(port), "--cluster-port", str(self.bus[port]),
             "--bind", "127.0.0.1", "--save", "", "--logfile", f"redis-{port}.log",
             "--appendonly", "no", "--cluster-enabled", "yes",
             "--cluster-config-file", str(conf),
             "--cluster-node-timeout", str(self.node_timeout), "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.admin[port] = redis.Redis(port=port, decode_responses=True)

    @property
    def live(self) -> list[int]:
        """The ports of the nodes running (not killed)."""
        return [p for p in self.ports if self.procs[p].poll() is None]

    def _create(self) -> None:
        for p, r in self.admin.items():
            wait_for(f"node {p} up", r.ping)
        subprocess.run(
            [CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_stable()

    def url(self, i: int = 0) -> str:
        return f"redis://127.0.0.1:{self.ports[i]}"

    def slot_map(self, port: int | None = None) -> list[tuple[int, int, int]]:
        """(start, end, master port) as ``port`` (default: the first live node) sees it."""
        r = self.admin[self.live[0] if port is None else port]
        return sorted((s[0], s[1], int(s[2][1])) for s in r.execute_command("CLUSTER", "SLOTS"))

    @property
    def masters(self) -> list[int]:
        """The ports of the masters serving slots (as the first live node sees it)."""
        return sorted({p for _, _, p in self.slot_map()})

    def replica_of(self, master: int) -> int:
        """The port of ``master``'s (first) replica, as the master reports it."""
        role = self.admin[master].execute_command("ROLE")
        assert role[0] == "master" and role[2], role
        return int(role[2][0][1])

    def _in_sync(self, master: int, targets: dict[int, int]) -> bool:
        """Each of ``master``'s replicas is online and has acknowledged the master's stream up
        to where it was when first asked (``targets``: under load it never stands still)."""
        info = self.admin[master].info("replication")
        if info.get("connected_slaves", 0) < self.replicas:
            return False
        target = targets.setdefault(master, int(info["master_repl_offset"]))
        for i in range(self.replicas):
            rep = info[f"slave{i}"]
            if rep["state"] != "online" or int(rep["offset"]) < target:
                return False
        return True

    def wait_stable(self, timeout: float = 30.0) -> None:
        """Every live node says ``cluster_state:ok`` and reports the same slot map (all
        slots served); with replicas, each master has its replicas online and in sync."""

        targets: dict[int, int] = {}

        def ok() -> bool:
            live = self.live
            if not all(
                "cluster_state:ok" in self.admin[p].execute_command("CLUSTER", "INFO") for p in live
            ):
                return False
            maps = [self.slot_map(p) for p in live]
            if not (
                all(m == maps[0] for m in maps) and sum(e - s + 1 for s, e, _ in maps[0]) == 16384
            ):
                return False
            return all(self._in_sync(m, targets) for m in {p for _, _, p in maps[0]})

        wait_for("cluster_state:ok, one slot map on every node, replicas in sync", ok, timeout)

    # ---- failover ---------------------------------------------------------------------------
    def kill(self, port: int) -> float:
        """SIGKILL the node on ``port``; returns the ``time.monotonic()`` of the kill."""
        proc = self.procs[port]
        proc.kill()
        t = time.monotonic()
        proc.wait(10)
        self.admin[port].close()
        return t

    def wait_promoted(self, replica: int, timeout: float = 30.0) -> float:
        """Until ``replica`` is a master serving slots on every live node's map and the
        cluster is ok again; returns the ``time.monotonic()`` it was first seen so."""

        def promoted() -> bool:
            live = self.live
            if self.admin[replica].execute_command("ROLE")[0] != "master":
                return False
            for p in live:
                if "cluster_state:ok" not in self.admin[p].execute_command("CLUSTER", "INFO"):
                    return False
                if replica not in {q for _, _, q in self.slot_map(p)}:
                    return False
            return True

        wait_for(f"node {replica} promoted on every live node", promoted, timeout)
        return time.monotonic()

    def rejoin(self, port: int, timeout: float = 30.0) -> None:
        """Restart the killed node on ``port`` (same ``nodes.conf``): it comes back as a
        replica of the node promoted in its place; until every master's replicas are in sync."""
        self.start_node(port)
        wait_for(f"node {port} up", self.admin[port].ping)
        self.wait_stable(timeout)

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for start, end, port in self.slot_map():
            if start <= slot <= end:
                return port
        raise AssertionError(f"slot {slot} not served")

    def queue_on(self, port: int, avoid: Iterable[str] = ()) -> str:
        """A queue name whose hash tag's slot is served by ``port`` (not one of ``avoid``)."""
        ranges = [(a, b) for a, b, p in self.slot_map() if p == port]
        for i in range(100000):
            name = f"q{i}"
            slot = key_slot(name)
            if name not in avoid and any(a <= slot <= b for a, b in ranges):
                return name
        raise AssertionError("no queue name found")

    def node_id(self, port: int) -> str:
        return str(self.admin[port].execute_command("CLUSTER", "MYID"))

    def move_slot(
        self, slot: int, dst: int, on_migrating: Callable[[], None] = lambda: None
    ) -> int:
        """Reshard ``slot`` to the node on port ``dst`` the way ``redis-cli --cluster reshard``
        does (IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE), with every key of the slot in one
        MIGRATE; ``on_migrating`` runs between MIGRATING and MIGRATE. Returns the keys moved."""
        src = self.owner(slot)
        s, d = self.admin[src], self.admin[dst]
        d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(src))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(dst))
        on_migrating()
        moved = 0
        while True:
            keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
            if not keys:
                break
            s.execute_command("MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        for r in (d, s, *(self.admin[p] for p in self.masters if p not in (src, dst))):
            r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.node_id(dst))
        self.wait_stable()
        return moved

    def close(self) -> None:
        for r in self.admin.values():
            r.close()
        for p in self.procs.values():
            p.kill()
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()
