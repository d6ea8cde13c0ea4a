"""``rtq-nb bench``: rtq_nb against a minimal raw redis-py floor, measured in the same run.

Floor round trip (the reference design, nothing more): client pipelines HSET record + ZADD
pending, then BLPOP its result list; worker BZPOPMAX + LPUSH result. Floor streaming: the
worker LPUSHes each token and the client BRPOPs each one (one round trip per token).
Clients and workers run in separate processes. Compare ratios, not absolute times.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
import uuid
from typing import Any

PAYLOAD = "x" * 100
_ctx = mp.get_context("spawn")


# ---- the floor ------------------------------------------------------------------------------
def _floor_redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def _floor_worker(url: str, ns: str, stop_key: str) -> None:
    r = _floor_redis(url)
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


def _floor_call(r: Any, ns: str, rid: str) -> str:
    p = r.pipeline(transaction=False)
    p.hset(f"{ns}:req:{rid}", mapping={"id": rid, "input": PAYLOAD, "status": "pending"})
    p.zadd(f"{ns}:pending", {rid: 0})
    p.execute()
    return str(r.blpop([f"{ns}:res:{rid}"], 30)[1])


def _floor_client(url: str, ns: str, n: int, duration: float, out: Any) -> None:
    r = _floor_redis(url)
    lat, done, cid = [], 0, uuid.uuid4().hex[:8]
    end = time.perf_counter() + duration
    while (n and done < n) or (not n and time.perf_counter() < end):
        t = time.perf_counter()
        _floor_call(r, ns, f"{cid}-{done}")
        lat.append(time.perf_counter() - t)
        done += 1
    out.put(lat)


def _floor_stream(url: str, ns: str, tokens: int) -> tuple[float, float]:
    r = _floor_redis(url)
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
def _rtq_worker(url: str, queue: str, handler: str) -> None:
    from .cli import main

    main(["worker", handler, "--url", url, "--queue", queue])


def _rtq_client(url: str, queue: str, n: int, duration: float, out: Any) -> None:
    from .sync import Client

    c = Client(url, queue=queue)
    c.call(PAYLOAD)  # connect + load scripts
    lat, done = [], 0
    end = time.perf_counter() + duration
    while (n and done < n) or (not n and time.perf_counter() < end):
        t = time.perf_counter()
        c.call(PAYLOAD)
        lat.append(time.perf_counter() - t)
        done += 1
    out.put(lat)


def _rtq_stream(url: str, queue: str, tokens: int) -> tuple[float, float]:
    from .sync import Client

    c = Client(url, queue=queue)
    t0 = time.perf_counter()
    ttft, n = None, 0
    for chunk in c.stream("bench", params={"tokens": tokens}):
        ttft = ttft or time.perf_counter() - t0
        n += chunk.pieces
    assert n == tokens, f"stream delivered {n} of {tokens} tokens"
    return ttft or 0.0, n / (time.perf_counter() - t0)


# ---- orchestration --------------------------------------------------------------------------
class _Workers:
    def __init__(self, kind: str, url: str, ns: str, count: int, handler: str) -> None:
        self.kind, self.url, self.ns = kind, url, ns
        self.stop_key = f"{ns}:stop"
        if kind == "floor":
            self.procs = [
                _ctx.Process(target=_floor_worker, args=(url, ns, self.stop_key))
                for _ in range(count)
            ]
        else:
            self.procs = [
                _ctx.Process(target=_rtq_worker, args=(url, ns, handler)) for _ in range(count)
            ]
        for p in self.procs:
            p.start()

    def stop(self) -> None:
        if self.kind == "floor":
            r = _floor_redis(self.url)
            for _ in self.procs:
                r.zadd(self.stop_key, {uuid.uuid4().hex: 1})
        else:
            for p in self.procs:
                p.terminate()  # SIGTERM: graceful stop
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def _clients(
    kind: str, url: str, ns: str, count: int, n: int, duration: float
) -> list[list[float]]:
    q = _ctx.Queue()
    target = _floor_client if kind == "floor" else _rtq_client
    procs = [_ctx.Process(target=target, args=(url, ns, n, duration, q)) for _ in range(count)]
    for p in procs:
        p.start()
    out = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    return out


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def run_bench(url: str | None = None, *, quick: bool = False) -> dict[str, Any]:
    """Run all three measurements; returns the JSON-able result."""
    from ._redis import resolve_url

    url = resolve_url(url)
    tag = uuid.uuid4().hex[:6]
    n_lat = 300 if quick else 2000
    dur = 2.0 if quick else 5.0
    combos = [(1, 1), (2, 2), (4, 2)] if quick else [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    tokens = 2000
    res: dict[str, Any] = {"url": url, "quick": quick}

    lat: dict[str, list[float]] = {}
    for kind in ("floor", "rtq"):
        ns = f"b{tag}{kind}lat"
        ws = _Workers(kind, url, ns, 1, "rtq_nb.demo:aecho")
        lat[kind] = _clients(kind, url, ns, 1, n_lat, 0)[0][20:]  # drop warm-up
        ws.stop()
    res["latency_1x1"] = {
        "requests": len(lat["rtq"]),
        "rtq_p50_us": round(statistics.median(lat["rtq"]) * 1e6, 1),
        "rtq_p99_us": round(_pct(lat["rtq"], 0.99) * 1e6, 1),
        "floor_p50_us": round(statistics.median(lat["floor"]) * 1e6, 1),
        "floor_p99_us": round(_pct(lat["floor"], 0.99) * 1e6, 1),
    }
    res["latency_1x1"]["p50_ratio"] = round(
        res["latency_1x1"]["rtq_p50_us"] / res["latency_1x1"]["floor_p50_us"], 3
    )

    rows = []
    for clients, workers in combos:
        row: dict[str, Any] = {"clients": clients, "workers": workers}
        for kind in ("floor", "rtq"):
            ns = f"b{tag}{kind}t{clients}x{workers}"
            ws = _Workers(kind, url, ns, workers, "rtq_nb.demo:aecho")
            lats = _clients(kind, url, ns, clients, 0, dur)
            ws.stop()
            row[f"{kind}_rps"] = round(sum(len(x) for x in lats) / dur, 1)
        row["ratio"] = round(row["rtq_rps"] / row["floor_rps"], 3)
        rows.append(row)
    res["throughput"] = rows

    st: dict[str, tuple[float, float]] = {}
    for kind in ("floor", "rtq"):
        ns = f"b{tag}{kind}st"
        ws = _Workers(kind, url, ns, 1, "rtq_nb.demo:tokens")
        fn = _floor_stream if kind == "floor" else _rtq_stream
        fn(url, ns, 10)  # warm-up: waits until the worker process is up and connected
        runs = [fn(url, ns, tokens) for _ in range(3 if quick else 7)]
        ws.stop()
        st[kind] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    res["stream"] = {
        "tokens": tokens,
        "rtq_ttft_us": round(st["rtq"][0] * 1e6, 1),
        "floor_ttft_us": round(st["floor"][0] * 1e6, 1),
        "rtq_tokens_per_s": round(st["rtq"][1]),
        "floor_tokens_per_s": round(st["floor"][1]),
        "speedup": round(st["rtq"][1] / st["floor"][1], 2),
    }
    return res


def format_table(r: dict[str, Any]) -> str:
    lt, s = r["latency_1x1"], r["stream"]
    lines = [
        f"rtq-nb bench against {r['url']}{' (quick)' if r['quick'] else ''}",
        "",
        "latency, 1 client x 1 worker, 100-byte echo (sync client)",
        f"  rtq   p50 {lt['rtq_p50_us']:>8.0f} us   p99 {lt['rtq_p99_us']:>8.0f} us",
        f"  floor p50 {lt['floor_p50_us']:>8.0f} us   p99 {lt['floor_p99_us']:>8.0f} us",
        f"  ratio p50 {lt['p50_ratio']:.2f}x   (target <= 1.5x)",
        "",
        "throughput, requests/s (clients x worker processes)",
        f"  {'clients':>7} {'workers':>7} {'rtq':>9} {'floor':>9} {'ratio':>6}",
    ]
    for row in r["throughput"]:
        lines.append(
            f"  {row['clients']:>7} {row['workers']:>7} {row['rtq_rps']:>9.0f} "
            f"{row['floor_rps']:>9.0f} {row['ratio']:>6.2f}"
        )
    lines += [
        "  (target ratio >= 0.8)",
        "",
        f"streaming, {s['tokens']} tiny tokens",
        f"  rtq   ttft {s['rtq_ttft_us']:>8.0f} us   {s['rtq_tokens_per_s']:>9} tokens/s",
        f"  floor ttft {s['floor_ttft_us']:>8.0f} us   {s['floor_tokens_per_s']:>9} tokens/s "
        "(one push per token)",
        f"  speedup {s['speedup']:.1f}x   (target >= 5x)",
    ]
    return "\n".join(lines)
