"""``rtq-nb bench --capacity``: Redis CPU and Redis commands per request, from the server's
own counters (``INFO cpu``, ``INFO commandstats``, commands run inside scripts included) over
the measured interval: what decides how many requests one Redis shard carries (README,
"Capacity"). Calls are pipelined (``submit_many``); streams are read by 8 threads at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

from rtq_nb.cli.bench_sides import floor_redis, redis_totals
from rtq_nb.client.sync import Client

__all__ = ["run_capacity", "run_idle_workers"]


def _totals(c: Client) -> tuple[float, int]:
    """(Redis CPU seconds, commands run) so far, from the server's counters."""
    r = floor_redis(c.url)
    try:
        return redis_totals(r)
    finally:
        r.close()


def _blocked(c: Client) -> int:
    """Clients blocked in Redis now (``INFO clients``)."""
    r = floor_redis(c.url)
    try:
        return int(r.info("clients").get("blocked_clients", 0))
    finally:
        r.close()


def _retained(c: Client, records: list[str]) -> float:
    """Redis memory a finished call keeps for its retention, per request (``MEMORY USAGE`` of
    its record, plus its history entry: the history zset's usage over its members). The
    result list is taken by the caller (BLPOP), so nothing else is left behind."""
    from rtq_nb.loop import portal

    reads = c.async_client.reads
    cmds: list[tuple[Any, ...]] = [("MEMORY", "USAGE", k, "SAMPLES", 0) for k in records]
    hist = c.async_client.keys().history
    cmds += [("MEMORY", "USAGE", hist, "SAMPLES", 0), ("ZCARD", hist)]
    got = portal().call(reads.pipeline(cmds))
    per_record = sum(int(x or 0) for x in got[: len(records)]) / max(1, len(records))
    history = int(got[-2] or 0) / max(1, int(got[-1] or 1))
    return round(per_record + history, 1)


def _worker(url: str, handler: str, queue: str, flush_ms: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", handler, "--url", url, "--queue", queue]
    cmd += ["--concurrency", "8", "--flush-ms", str(flush_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith(b"READY"):  # blocks until it serves
        raise RuntimeError(f"the worker for {handler} did not start")
    return proc


def run_capacity(
    url: str, *, calls: int = 3000, streams: int = 48, tokens: int = 100, rate: float = 50.0,
    flush_ms: float = 20.0,
) -> dict[str, Any]:  # fmt: skip
    """Redis CPU (µs) and commands per call and per stream of ``tokens`` at ``rate``."""
    tag = f"cap{int(time.time() * 1000) % 10**8}"
    procs = [
        _worker(url, "rtq_nb.demo:aecho", f"{tag}c", flush_ms),
        _worker(url, "rtq_nb.demo:fake_llm", f"{tag}s", flush_ms),
    ]
    out: dict[str, Any] = {"flush_ms": flush_ms, "tokens": tokens, "rate": rate}
    try:
        with Client(url, queue=f"{tag}c") as c, Client(url, queue=f"{tag}s") as s:
            for h in c.submit_many(["x" * 100] * 200):  # warm-up
                h.result()
            cpu0, n0 = _totals(c)
            handles = c.submit_many(["x" * 100] * calls)
            for h in handles:
                h.result()
            cpu1, n1 = _totals(c)
            out["call"] = {
                "redis_cpu_us": (cpu1 - cpu0) / calls * 1e6,
                "commands": (n1 - n0) / calls,
                "retained_bytes": _retained(
                    c, [h.async_handle.keys.request(h.id) for h in handles[:200]]
                ),
            }
            params = {"tokens": tokens, "rate": rate}

            def read(n: int) -> None:
                for _ in range(n):
                    got = sum(ch.pieces for ch in s.stream("capacity", params=params))
                    assert got == tokens, f"stream delivered {got} of {tokens} tokens"

            readers = [threading.Thread(target=read, args=(streams // 8,)) for _ in range(8)]
            cpu0, n0 = _totals(c)
            for t in readers:
                t.start()
            for t in readers:
                t.join()
            cpu1, n1 = _totals(c)
            done = streams // 8 * 8
            out["stream"] = {
                "redis_cpu_us": (cpu1 - cpu0) / done * 1e6,
                "commands": (n1 - n0) / done,
            }
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
            if p.stdout is not None:
                p.stdout.close()
    return out


def run_idle_workers(url: str, *, idle: int = 1000, calls: int = 300) -> dict[str, Any]:
    """Redis commands and CPU per call while ``idle`` fetchers (one worker process of
    concurrency ``idle``) are blocked on the queue: one submission must wake one of them, not
    all (no thundering herd), so the cost should equal a lone worker's."""
    tag = f"herd{int(time.time() * 1000) % 10**8}"
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", "rtq_nb.demo:aecho", "--url", url]
    cmd += ["--queue", tag, "--concurrency", str(idle)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith(b"READY"):
            raise RuntimeError("the idle workers did not start")
        with Client(url, queue=tag) as c:
            c.call("warm-up")
            end = time.monotonic() + 60
            while _blocked(c) < idle:
                if time.monotonic() > end:
                    raise RuntimeError(f"{idle} fetchers did not all block within 60 s")
                time.sleep(0.05)  # they block as their slots start: nothing to wait on
            cpu0, n0 = _totals(c)
            for _ in range(calls):
                c.call("x" * 100)
            cpu1, n1 = _totals(c)
            blocked = _blocked(c)
        return {
            "idle": idle,
            "calls": calls,
            "commands": (n1 - n0) / calls,
            "redis_cpu_us": (cpu1 - cpu0) / calls * 1e6,
            "blocked_after": blocked,
        }
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
