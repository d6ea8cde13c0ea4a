"""``rtq-nb bench --cluster``: one queue on a single Redis, on a 3-master Redis Cluster, and a
queue sharded over the cluster's masters (1 and 3 shards), measured in the same run: round
trip (1 client, sequential calls), throughput (pipelined submissions, 2 worker processes of
concurrency 8 per shard) and Redis CPU per request summed over every node (``INFO cpu``).
The servers are private ones started here (the cluster is made with ``CLUSTER ADDSLOTS`` and
``CLUSTER MEET``, no redis-cli needed). On a small machine the masters, workers and client
share the cores, so throughput does not scale with shards here: Redis CPU per request is
what projects to real hosts (README, Capacity)."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from rtq_nb.cli.bench_sides import redis_totals
from rtq_nb.client.core import AsyncClient
from rtq_nb.transport.embedded import EmbeddedRedis, free_port

__all__ = ["format_cluster", "run_cluster_bench"]

SLOTS = 16384


def _bus_free(port: int) -> bool:
    """Whether the cluster bus port (``port`` + 10000) can be bound."""
    import socket

    if port + 10000 > 65535:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port + 10000))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def private_cluster(masters: int = 3) -> Iterator[list[EmbeddedRedis]]:
    """``masters`` private redis-server processes made into one cluster (slots split evenly)."""
    import redis

    nodes: list[EmbeddedRedis] = []
    try:
        while len(nodes) < masters:
            port = free_port()
            if not _bus_free(port):
                continue
            args = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            nodes.append(EmbeddedRedis(tcp=True, port=port, extra_args=args).start())
        admins: list[Any] = [redis.Redis(host="127.0.0.1", port=n.port) for n in nodes]
        per = SLOTS // masters
        for i, r in enumerate(admins):
            hi = SLOTS - 1 if i == masters - 1 else (i + 1) * per - 1
            r.execute_command("CLUSTER", "ADDSLOTS", *range(i * per, hi + 1))
        for n in nodes[1:]:
            admins[0].execute_command("CLUSTER", "MEET", "127.0.0.1", n.port)
        end = time.monotonic() + 60
        while not all(_ready(r, masters) for r in admins):
            if time.monotonic() > end:
                raise RuntimeError("the private cluster did not become ready in 60 s")
            time.sleep(0.05)  # the cluster bus gossips on its own schedule: nothing to block on
        for r in admins:
            r.close()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def _ready(r: Any, masters: int) -> bool:
    info = r.execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and f"cluster_known_nodes:{masters}" in text


def _cpu(urls: list[str]) -> float:
    """Redis CPU seconds so far, summed over the servers."""
    import redis

    total = 0.0
    for u in urls:
        r = redis.Redis.from_url(u)
        total += redis_totals(r)[0]
        r.close()
    return total


def _workers(url: str, queue: str, shards: int, count: int) -> list[subprocess.Popen[bytes]]:
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", "rtq_nb.demo:aecho", "--url", url]
    cmd += ["--queue", queue, "--concurrency", "8", "--shards", str(shards)]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    for p in procs:
        assert p.stdout is not None
        if not p.stdout.readline().startswith(b"READY"):  # blocks until it serves
            raise RuntimeError("a bench worker did not start")
    return procs


async def _measure(url: str, queue: str, calls: int, burst: int) -> tuple[float, float]:
    """(p50 round trip s of sequential calls, requests/s of pipelined submissions)."""
    async with AsyncClient(url, queue=queue) as c:
        for _ in range(50):  # warm-up: connections, scripts, layout
            await c.call("x" * 100)
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await c.call("x" * 100)
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        handles = await c.submit_many(["x" * 100] * burst)
        await asyncio.gather(*(h.result() for h in handles))
        return statistics.median(lat), burst / (time.perf_counter() - t0)


def _row(name: str, url: str, nodes: list[str], shards: int, quick: bool) -> dict[str, Any]:
    queue = f"bc{shards}x{int(time.time() * 1000) % 10**7}"
    procs = _workers(url, queue, shards, 2 * shards)
    try:
        calls, burst = (150, 1500) if quick else (500, 6000)
        cpu0 = _cpu(nodes)
        rt, rps = asyncio.run(_measure(url, queue, calls, burst))
        cpu = (_cpu(nodes) - cpu0) / (calls + 50 + burst)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
            if p.stdout is not None:
                p.stdout.close()
    return {"name": name, "shards": shards, "rt_p50": rt, "rps": rps, "redis_cpu_us": cpu * 1e6}


def run_cluster_bench(*, quick: bool = False) -> dict[str, Any]:
    """Rows for a single Redis (plain and 3 shards) and a 3-master cluster (1 and 3 shards)."""
    rows = []
    with EmbeddedRedis(tcp=True) as single, private_cluster(3) as nodes:
        urls = [n.tcp_url for n in nodes]
        plan = [
            ("single Redis, 1 queue", single.tcp_url, [single.tcp_url], 1),
            ("cluster, 1 queue (1 master)", urls[0], urls, 1),
            ("single Redis, 3 shards", single.tcp_url, [single.tcp_url], 3),
            ("cluster, 3 shards (3 masters)", urls[0], urls, 3),
        ]
        for name, url, nodes_, shards in plan:
            rows.append(_row(name, url, nodes_, shards, quick))
    base = rows[0]
    for r in rows:
        r["rt_ratio"] = r["rt_p50"] / base["rt_p50"]
        r["rps_ratio"] = r["rps"] / base["rps"]
    return {"rows": rows}


def format_cluster(result: dict[str, Any]) -> str:
    lines = [
        "cluster and sharded queues (ratios to a single Redis, same run; 2 workers per shard)",
        f"{'':32} {'round trip p50':>16} {'throughput':>16} {'Redis CPU/req':>14}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['name']:32} {r['rt_p50'] * 1e6:8.0f} us x{r['rt_ratio']:4.2f} "
            f"{r['rps']:8.0f}/s x{r['rps_ratio']:4.2f} {r['redis_cpu_us']:11.0f} us"
        )
    return "\n".join(lines)
