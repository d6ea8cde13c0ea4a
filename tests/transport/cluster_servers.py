"""A real 3-master Redis Cluster on loopback for tests (Debian's redis-server 7.0, created with
``redis-cli --cluster create``), and the slot operations the tests need (resharding one slot).

Every wait is on a condition the servers report (``cluster_state:ok``, an agreed slot map),
polled, never a bare sleep.
"""

from __future__ import annotations

import contextlib
import subprocess
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

    def __init__(self, d: Path, n: int = 3) -> None:
        self.dir = d
        self.ports = [_port() for _ in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            conf = d / f"nodes-{port}.conf"
            self.procs.append(
                subprocess.Popen(
                    [SERVER, "--port", str(port), "--cluster-port", str(_port()),
                     "--bind", "127.0.0.1", "--save", "", "--logfile", f"redis-{port}.log",
                     "--appendonly", "no", "--cluster-enabled", "yes",
                     "--cluster-config-file", str(conf), "--cluster-node-timeout", "5000",
                     "--dir", str(d)],
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
        self.admin = {p: redis.Redis(port=p, decode_responses=True) for p in self.ports}
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        for p, r in self.admin.items():
            wait_for(f"node {p} up", r.ping)
        subprocess.run(
            [CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.wait_stable()

    def url(self, i: int = 0) -> str:
        return f"redis://127.0.0.1:{self.ports[i]}"

    def slot_map(self, port: int) -> list[tuple[int, int, int]]:
        return sorted((s[0], s[1], int(s[2][1])) for s in self.admin[port].execute_command(
            "CLUSTER", "SLOTS"))  # fmt: skip

    def wait_stable(self) -> None:
        """All nodes say ``cluster_state:ok`` and report the same slot map."""

        def ok() -> bool:
            if not all(
                "cluster_state:ok" in r.execute_command("CLUSTER", "INFO")
                for r in self.admin.values()
            ):
                return False
            maps = [self.slot_map(p) for p in self.ports]
            return (
                all(m == maps[0] for m in maps) and sum(e - s + 1 for s, e, _ in maps[0]) == 16384
            )

        wait_for("cluster_state:ok and one slot map on every node", ok)

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for start, end, port in self.slot_map(self.ports[0]):
            if start <= slot <= end:
                return port
        raise AssertionError(f"slot {slot} not served")

    def queue_on(self, port: int, avoid: Iterable[str] = ()) -> str:
        """A queue name whose hash tag's slot is served by ``port`` (not one of ``avoid``)."""
        ranges = [(a, b) for a, b, p in self.slot_map(self.ports[0]) if p == port]
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
        for r in (d, s, *(self.admin[p] for p in self.ports if p not in (src, dst))):
            r.execute_command("CLUSTER", "SETSLOT", slot, "NODE", self.node_id(dst))
        self.wait_stable()
        return moved

    def close(self) -> None:
        for r in self.admin.values():
            r.close()
        for p in self.procs:
            p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield c
    finally:
        c.close()
