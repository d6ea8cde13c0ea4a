"""The two sides ``rtq-nb bench`` measures, as functions run in child processes: the raw
redis-py floor (the reference design's round trip, nothing more) and rtq_nb."""

from __future__ import annotations

import importlib
import json
import time
import uuid
from typing import Any

__all__ = [
    "PAYLOAD",
    "floor_call",
    "floor_client",
    "floor_redis",
    "floor_stream",
    "floor_worker",
    "redis_totals",
    "rtq_client",
    "rtq_stream",
    "rtq_worker",
    "serve_rounds",
]

PAYLOAD = "x" * 100


# ---- the floor ------------------------------------------------------------------------------
def floor_redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)


def redis_totals(r: Any) -> tuple[float, int]:
    """(Redis CPU seconds, commands run, scripts' inner commands included) so far, from the
    server's own counters (``INFO cpu``, ``INFO commandstats``) via a redis-py client ``r``."""
    cpu = r.info("cpu")
    calls = sum(int(v.get("calls", 0)) for v in r.info("commandstats").values())
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls


def floor_worker(url: str, ns: str, stop_key: str) -> None:
    r = floor_redis(url)
    r.lpush(f"{ns}:ready", "1")
    while True:
        got = r.bzpopmax([f"{ns}:pending", stop_key], 0)
        if got[0] == stop_key:
            return
        rid = got[1]
        if rid.startswith("s:"):  # streaming: one push per token
            for i in range(int(rid.split(":")[2])):
                r.lpush(f"{ns}:stream:{rid}", json.dumps({"last": False, "chunk": f"t{i} "}))
            r.lpush(f"{ns}:stream:{rid}", json.dumps({"last": True, "chunk": ""}))
        else:
            r.lpush(f"{ns}:res:{rid}", PAYLOAD)


def floor_call(r: Any, ns: str, rid: str) -> str:
    p = r.pipeline(transaction=False)
    p.hset(f"{ns}:req:{rid}", mapping={"id": rid, "input": PAYLOAD, "status": "pending"})
    p.zadd(f"{ns}:pending", {rid: 0})
    p.execute()
    return str(r.blpop([f"{ns}:res:{rid}"], 30)[1])


def floor_client(url: str, ns: str, conn: Any) -> None:
    r = floor_redis(url)
    cid, i = uuid.uuid4().hex[:8], 0

    def call() -> None:
        nonlocal i
        i += 1
        floor_call(r, ns, f"{cid}-{i}")

    serve_rounds(call, conn)


def serve_rounds(call: Any, conn: Any) -> None:
    """A client process: runs rounds on request (n calls, or calls for a duration) and sends
    back the latencies, until told 0. Processes live across rounds, so rtq and the floor are
    measured in alternation under the same machine conditions."""
    for _ in range(20):
        call()  # warm-up: connections, scripts, caches
    conn.send("ready")
    while True:
        n, duration = conn.recv()
        if not n and not duration:
            return
        lat: list[float] = []
        end = time.perf_counter() + duration
        while (n and len(lat) < n) or (not n and time.perf_counter() < end):
            t = time.perf_counter()
            call()
            lat.append(time.perf_counter() - t)
        conn.send(lat)


def floor_stream(r: Any, ns: str, tokens: int) -> tuple[float, float]:
    rid = f"s:{uuid.uuid4().hex[:8]}:{tokens}"
    t0 = time.perf_counter()
    _ = (
        r.pipeline(transaction=False)
        .hset(f"{ns}:req:{rid}", "id", rid)
        .zadd(f"{ns}:pending", {rid: 0})
        .execute()
    )
    ttft, n = None, 0
    while True:
        msg = json.loads(r.brpop([f"{ns}:stream:{rid}"], 30)[1])
        if msg["last"]:
            break
        ttft = ttft or time.perf_counter() - t0
        n += 1
    return ttft or 0.0, n / (time.perf_counter() - t0)


# ---- rtq_nb -----------------------------------------------------------------------------------
def rtq_worker(url: str, queue: str, handler: str) -> None:
    """What ``rtq-nb worker HANDLER --url URL --queue QUEUE`` runs (rtq_nb.cli.cmd_worker, all
    options at their defaults), from the public API: this module does not import the CLI."""
    import asyncio
    import logging
    import signal

    from rtq_nb import Worker
    from rtq_nb.loop import run

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    module, _, attr = handler.partition(":")
    fn: Any = importlib.import_module(module)
    for part in attr.split("."):
        fn = getattr(fn, part)
    worker = Worker(fn, url, queue=queue)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):  # graceful stop, as rtq-nb worker does
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(worker.astop(30.0)))
        await worker.run()

    run(serve())


def rtq_client(url: str, queue: str, conn: Any) -> None:
    from rtq_nb.client.sync import Client

    c = Client(url, queue=queue)
    serve_rounds(lambda: c.call(PAYLOAD), conn)


def rtq_stream(c: Any, queue: str, tokens: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttft, n = None, 0
    for chunk in c.stream("bench", params={"tokens": tokens}):
        ttft = ttft or time.perf_counter() - t0
        n += chunk.pieces
    assert n == tokens, f"stream delivered {n} of {tokens} tokens"
    return ttft or 0.0, n / (time.perf_counter() - t0)
