"""The parts of ``rtq-nb bench --scale`` (:mod:`rtq_nb.cli.bench_scale`) past the queue itself:
many streams read at once, history views over many records, Redis memory per retained
request."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

from rtq_nb.cli.bench_sides import PAYLOAD, floor_redis, redis_totals
from rtq_nb.client.core import AsyncClient
from rtq_nb.client.sync import Client
from rtq_nb.loop import portal
from rtq_nb.protocol import scripts
from rtq_nb.protocol.encoding import dumps
from rtq_nb.protocol.records import Status

__all__ = ["complete", "history_cost", "retained_cost", "stream_cost"]

WORKER_SLOTS = 200  # the streaming worker's concurrency (at most)
RATE = 50.0  # tokens/s of each stream


def _worker(url: str, queue: str, concurrency: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rtq_nb.cli", "worker", "rtq_nb.demo:fake_llm", "--url", url]
    cmd += ["--queue", queue, "--concurrency", str(concurrency), "--flush-ms", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith(b"READY"):
        raise RuntimeError("the streaming worker did not start")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)
    if proc.stdout is not None:
        proc.stdout.close()


class _PeakClients(threading.Thread):
    """Samples ``INFO clients`` every 50 ms: the most connections Redis saw at once."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.r, self.peak, self.done = floor_redis(url), 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, int(self.r.info("clients")["connected_clients"]))

    def stop(self) -> int:
        self.done.set()
        self.join()
        self.r.close()
        return self.peak


async def _read_all(ac: AsyncClient, n: int, tokens: int) -> tuple[int, int]:
    """Open ``n`` streams at once and read them all; (chunks, tokens) delivered."""
    params = {"tokens": tokens, "rate": RATE}
    streams = [ac.stream("s", params=params) for _ in range(n)]

    async def read(s: Any) -> tuple[int, int]:
        chunks = pieces = 0
        while (batch := await s.next_batch()) is not None:
            chunks += len(batch)
            pieces += sum(c.pieces for c in batch)
        return chunks, pieces

    got = await asyncio.gather(*(read(s) for s in streams))
    return sum(c for c, _ in got), sum(p for _, p in got)


class _Retries(logging.Handler):
    """Counts the client's "Redis unavailable ... retrying" warnings (a refused connect)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "retrying" in record.getMessage()


def _xreads(r: Any) -> int:
    return int(r.info("commandstats").get("cmdstat_xread", {}).get("calls", 0))


def _streams_once(url: str, ac: AsyncClient, n: int, tokens: int) -> dict[str, Any]:
    proc = _worker(url, ac.queue, min(n, WORKER_SLOTS))
    r = floor_redis(url)
    retries = _Retries()
    logging.getLogger("rtq_nb").addHandler(retries)
    try:
        portal().call(_read_all(ac, 2, tokens))  # warm-up
        peak = _PeakClients(url)
        peak.start()
        x0, retries.count = _xreads(r), 0
        cpu0, n0 = redis_totals(r)
        c0, t0 = time.process_time(), time.perf_counter()
        chunks, pieces = portal().call(_read_all(ac, n, tokens))
        c1, t1 = time.process_time(), time.perf_counter()
        cpu1, n1 = redis_totals(r)
        x1 = _xreads(r)
        conns = peak.stop()
    finally:
        logging.getLogger("rtq_nb").removeHandler(retries)
        _stop(proc)
        r.close()
    assert pieces == n * tokens, f"{n} streams delivered {pieces} of {n * tokens} tokens"
    return {
        "streams": n,
        "chunks": chunks,
        "wall_s": t1 - t0,
        "redis_cpu_us": (cpu1 - cpu0) / chunks * 1e6,
        "commands": (n1 - n0) / chunks,
        "client_cpu_us": (c1 - c0) / chunks * 1e6,
        "xreads": (x1 - x0) / chunks,
        "connections": conns,
        "connect_retries": retries.count,
    }


def stream_cost(url: str, ac: AsyncClient, small: int, big: int, tokens: int) -> dict[str, Any]:
    """Per chunk delivered: Redis CPU and commands, the reading client's CPU, with ``small``
    and then ``big`` streams opened and read at once (a worker of up to ``WORKER_SLOTS``
    slots serves them in turn; the others' readers wait, blocked in XREAD)."""
    s = _streams_once(url, ac, small, tokens)
    b = _streams_once(url, ac, big, tokens)
    return {
        "small": s,
        "big": b,
        "ratio": {
            "redis_cpu": b["redis_cpu_us"] / max(1e-12, s["redis_cpu_us"]),
            "commands": b["commands"] / max(1e-12, s["commands"]),
            "client_cpu": b["client_cpu_us"] / max(1e-12, s["client_cpu_us"]),
        },
    }


# ---- history ---------------------------------------------------------------------------------
async def _finished_record(ac: AsyncClient) -> dict[str, str]:
    """One request run through the real scripts (submit, POP, COMPLETE): its record."""
    p = ac.prepare(PAYLOAD, stream=False)
    await ac.send([p])
    cmd = scripts.pop(ac.keys(), "bench-w", lease_ms=600_000, count=10, consumed=0,
                      retention_s=ac.retention)  # fmt: skip
    popped = scripts.parse_pop(await ac.conn.call(*cmd))[0]
    for job in popped:
        await ac.conn.call(*complete(ac, job.id, str(job.payload[0])))
    await p.handle.result()
    flat = await ac.conn.call("HGETALL", ac.keys().request(p.handle.id))
    return dict(zip(flat[::2], flat[1::2], strict=True))


def complete(ac: AsyncClient, rid: str, attempt: str) -> Any:
    return scripts.complete(
        ac.keys(), rid, worker_id="bench-w", attempt=attempt, status=Status.COMPLETED,
        value=dumps(PAYLOAD, "result"), envelope="", stream=False, retention_s=ac.retention,
        pieces=0,
    )  # fmt: skip


async def _clone(ac: AsyncClient, rec: dict[str, str], start: int, stop: int) -> None:
    """Finished records ``h-<i>`` for i in [start, stop): copies of ``rec`` (its own id and
    creation time), each with its history entry, 3 commands per record, pipelined."""
    k = ac.keys()
    created = int(rec["created_ms"])
    cmds: list[Any] = []
    for i in range(start, stop):
        rid = f"h-{i}"
        rec["id"], rec["created_ms"] = rid, str(created + i)
        key = k.request(rid)
        cmds += [("HSET", key, *[x for kv in rec.items() for x in kv]),
                 ("EXPIRE", key, ac.retention), ("ZADD", k.history, created + i, rid)]  # fmt: skip
        if len(cmds) >= 6000:
            await ac.conn.pipeline(cmds)
            cmds = []
    if cmds:
        await ac.conn.pipeline(cmds)


def _measured(fn: Any) -> tuple[float, float, Any]:
    """(seconds, peak MB of Python memory, result) of ``fn()``."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        got = fn()
        return time.perf_counter() - t, tracemalloc.get_traced_memory()[1] / 1e6, got
    finally:
        tracemalloc.stop()


def history_cost(url: str, ac: AsyncClient, small: int, big: int) -> dict[str, Any]:
    """``rtq_nb.views.history`` (from ``rtq_nb.notebook.views``: the CLI layer does not import
    ``rtq_nb.views``) over ``small`` then ``big`` finished records: the newest 1,000 rows, and
    a status filter that reads every record (``running``: few or none match), one that reads
    the unsuccessful history (``failed``: none), and ``stats()``."""
    from rtq_nb.notebook.views import history

    rec = portal().call(_finished_record(ac))
    out: dict[str, Any] = {}
    c = Client(url, queue=ac.queue)
    try:
        history(c, limit=10)  # warm-up: pandas imported, the layout read
        done = 0
        for label, n in (("small", small), ("big", big)):
            t0 = time.perf_counter()
            portal().call(_clone(ac, rec, done, n))
            write_s, done = time.perf_counter() - t0, n
            s1, m1, df = _measured(lambda: history(c, limit=1000))
            s2, m2, df2 = _measured(lambda: history(c, status="running", limit=1000))
            s3, _, _ = _measured(c.stats)
            s4, _, df4 = _measured(lambda: history(c, status="failed", limit=1000))
            # (a few running records of the streams part may match: fewer than the limit, so the
            # scan still reads every record)
            assert len(df) == min(1000, n) and len(df2) < 1000 and len(df4) == 0, (len(df2),)
            out[label] = {
                "records": n, "limit": 1000, "write_per_s": (n - (0 if label == "small"
                                                                 else small)) / write_s,
                "newest_s": s1, "newest_peak_mb": m1, "scan_s": s2, "scan_peak_mb": m2,
                "stats_s": s3, "unsuccessful_s": s4,
            }  # fmt: skip
    finally:
        c.close()
    b, s = out["big"], out["small"]
    ratios = ("newest_s", "newest_peak_mb", "scan_s", "unsuccessful_s")
    out["ratio"] = {k: b[k] / max(1e-9, s[k]) for k in ratios}
    return out


# ---- memory per retained request -------------------------------------------------------------
def retained_cost(url: str, ac: AsyncClient, n: int, private: bool) -> dict[str, Any]:
    """Redis memory per finished call of a 100-byte input and result (``used_memory`` over
    ``n`` calls; ``MEMORY USAGE`` of one record and result; the history zset per member), and
    the record's biggest fields."""
    r = floor_redis(url)
    k = ac.keys()
    try:
        used0 = int(r.info("memory")["used_memory"])
        batch = [ac.prepare(PAYLOAD, stream=False) for _ in range(n)]

        async def run() -> list[str]:
            ids: list[str] = []
            for i in range(0, n, 500):
                await ac.send(batch[i : i + 500])
                replies = await ac.conn.pipeline(
                    [
                        scripts.pop(
                            k,
                            "bench-w",
                            lease_ms=600_000,
                            count=500,
                            consumed=0,
                            retention_s=ac.retention,
                        )
                    ]
                )
                jobs = scripts.parse_pop(replies[0])[0]
                await ac.conn.pipeline([complete(ac, j.id, str(j.payload[0])) for j in jobs])
                ids += [j.id for j in jobs]
            return ids

        ids = portal().call(run())
        used1 = int(r.info("memory")["used_memory"])
        rid = ids[-1]
        rec_b = r.memory_usage(k.request(rid), samples=0) or 0
        res_b = r.memory_usage(k.result(rid), samples=0) or 0
        hist_b = (r.memory_usage(k.history, samples=0) or 0) / max(1, r.zcard(k.history))
        pipe = r.pipeline(transaction=False)
        for x in ids:
            pipe.lpop(k.result(x))  # what the client's BLPOP takes
        pipe.execute()
        used2 = int(r.info("memory")["used_memory"])
        rec = r.hgetall(k.request(rid))
        sizes = sorted(((f, len(f) + len(v)) for f, v in rec.items()), key=lambda x: -x[1])
        cfg = r.config_get("hash-max-*")
        listpack = _as_listpack(r, k.request(rid), cfg) if private else None
        return {
            "calls": n,
            "per_request_bytes": (used2 - used0) / n,
            "with_unread_result_bytes": (used1 - used0) / n,
            "record_bytes": rec_b,
            "result_bytes": res_b,
            "history_bytes": hist_b,
            "encoding": r.object("encoding", k.request(rid)),
            "fields": len(rec),
            "field_bytes": sum(s for _, s in sizes),
            "biggest": sizes[:10],
            "listpack_limits": cfg,
            "record_as_listpack_bytes": listpack,
        }
    finally:
        r.close()


def _as_listpack(r: Any, key: str, cfg: dict[str, str]) -> int:
    """``MEMORY USAGE`` of a copy of the record written while the server keeps hashes of
    values up to 1 KB as listpacks (``hash-max-listpack-value``; restored after): what the
    record would take if its 100-byte input and result did not make it a hashtable."""
    name = next((n for n in cfg if n.endswith("-value")), "hash-max-listpack-value")
    limit = cfg.get(name, "64")  # Redis < 7 calls it hash-max-ziplist-value
    copy = key + ":listpack-probe"
    try:
        r.config_set(name, 1024)
        r.hset(copy, mapping=r.hgetall(key))
        return int(r.memory_usage(copy, samples=0) or 0)
    finally:
        r.delete(copy)
        r.config_set(name, limit)
