"""Optional durability: with ``min_replicas`` the client WAITs for a replica after each
submission and the worker after each batch of completions (real primary and replica); without
a replica in time, the request is still served and the shortfall is counted and logged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import wait_until

from rtq_nb import Client, Worker
from rtq_nb.demo import echo
from rtq_nb.transport.embedded import free_port

SERVER = "/usr/bin/redis-server"


def start(port: int, d: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(d)]
    return subprocess.Popen([*args, *extra], stdout=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL), the replica's link up."""
    d = tmp_path_factory.mktemp("repl")
    p_port, r_port = free_port(), free_port()
    procs = [start(p_port, d, "--dbfilename", "p.rdb")]
    procs.append(start(r_port, d, "--dbfilename", "r.rdb", "--replicaof", "127.0.0.1", str(p_port)))
    replica = redis.Redis(port=r_port, decode_responses=True)
    try:

        def linked() -> bool:
            try:
                return bool(replica.info("replication").get("master_link_status") == "up")
            except redis.ConnectionError:
                return False

        wait_until(linked, what="the replica's link to the primary")
        yield f"redis://127.0.0.1:{p_port}/0", f"redis://127.0.0.1:{r_port}/0"
    finally:
        replica.close()
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def wait_calls(url: str) -> int:
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    finally:
        r.close()


def test_acknowledged_requests_are_on_the_replica(pair: tuple[str, str]) -> None:
    primary, replica_url = pair
    before = wait_calls(primary)
    with (
        Worker(echo, primary, queue="d", min_replicas=1) as w,
        Client(primary, queue="d", timeout=20, min_replicas=1) as c,
    ):
        assert [c.call(i) for i in range(5)] == list(range(5))
        h = c.submit("kept")
        assert h.result() == "kept"
        replica = redis.Redis.from_url(replica_url, decode_responses=True)
        try:  # the record and its outcome reached the replica before the worker went on
            rec = replica.hgetall(c.async_client.keys("d").request(h.id))
            assert rec["status"] == "completed" and rec["result"] == '"kept"'
        finally:
            replica.close()
        assert c.async_client.replication.unreplicated == 0 and w.state.unreplicated == 0
    assert wait_calls(primary) - before >= 12  # one per submission, one per completion


def test_without_a_replica_in_time_requests_are_served_and_the_shortfall_counted(
    pair: tuple[str, str], caplog: Any
) -> None:
    primary, _ = pair
    opts: dict[str, Any] = {"min_replicas": 2, "replica_timeout": 0.05}  # only 1 replica
    with (
        Worker(echo, primary, queue="d2", **opts) as w,
        Client(primary, queue="d2", timeout=20, **opts) as c,
    ):
        assert c.call("still served") == "still served"
        assert c.async_client.replication.unreplicated == 1
        wait_until(lambda: w.state.unreplicated >= 1, what="the worker's count")
    assert "reached 1 of 2 replicas" in caplog.text
