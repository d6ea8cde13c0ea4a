"""``rtq-nb bench``: rtq_nb against a minimal raw redis-py floor, measured in the same run.

Floor round trip (the reference design, nothing more): client pipelines HSET record + ZADD
pending, then BLPOP its result list; worker BZPOPMAX + LPUSH result. Floor streaming: the
worker LPUSHes each token and the client BRPOPs each one (one round trip per token).
Clients and workers run in separate processes, started (and warmed up) before any clock
runs. rtq and the floor are set up side by side and measured in alternating rounds (ABBA), so
a shared, noisy machine drifts on both alike. Compare ratios, not absolute times.

:func:`scaling` measures rtq_nb alone over a grid of clients x workers with the same processes
(the scaling notebook uses it).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from rtq_nb.cli.bench_cost import KINDS, Cost
from rtq_nb.cli.bench_raw import raw_client, raw_worker
from rtq_nb.cli.bench_sides import (
    floor_client,
    floor_redis,
    floor_stream,
    floor_worker,
    rtq_client,
    rtq_stream,
    rtq_worker,
)

__all__ = ["format_table", "run_bench", "scaling"]

_ctx = mp.get_context("spawn")


# ---- orchestration --------------------------------------------------------------------------
FLOORS = ("floor", "raw")


class _Workers:
    """Worker processes of one kind; the constructor returns once all of them are serving."""

    def __init__(self, kind: str, url: str, ns: str, count: int, handler: str) -> None:
        self.kind, self.url, self.ns, self.handler = kind, url, ns, handler
        self.stop_key = f"{ns}:stop"
        self.procs: list[Any] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        """Start more workers, up to ``count`` in all; returns once all of them are serving."""
        target: Callable[[str, str, str], None] = rtq_worker
        args = (self.url, self.ns, self.handler)
        if self.kind in FLOORS:
            target = floor_worker if self.kind == "floor" else raw_worker
            args = (self.url, self.ns, self.stop_key)
        new = [_ctx.Process(target=target, args=args) for _ in range(count - len(self.procs))]
        self.procs += new
        for p in new:
            p.start()
        try:
            self._wait_ready(len(new))
        except BaseException:
            _kill(self.procs)
            raise

    def _wait_ready(self, new: int, timeout: float = 120.0) -> None:
        r = floor_redis(self.url)
        try:
            if self.kind in FLOORS:
                for _ in range(new):
                    if not r.blpop([f"{self.ns}:ready"], timeout):
                        raise RuntimeError("floor workers did not start")
                return
            from rtq_nb.protocol.keys import Keys

            workers, end = Keys("rtq", self.ns).workers, time.monotonic() + timeout
            while r.zcard(workers) < len(self.procs):  # registration: the worker's first write
                if time.monotonic() > end or not all(p.is_alive() for p in self.procs):
                    raise RuntimeError("rtq workers did not start")
                time.sleep(0.02)
        finally:
            r.close()

    def stop(self) -> None:
        if self.kind in FLOORS:
            r = floor_redis(self.url)
            for _ in self.procs:
                r.zadd(self.stop_key, {uuid.uuid4().hex: 1})
            r.close()
        else:
            for p in self.procs:
                p.terminate()  # SIGTERM: graceful stop
        for p in self.procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def _kill(procs: list[Any]) -> None:
    """Start-up failed: no graceful stop, leave no process behind."""
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()


class _Clients:
    """Client processes of one kind, kept alive across measurement rounds."""

    def __init__(self, kind: str, url: str, ns: str, count: int) -> None:
        target = {"floor": floor_client, "raw": raw_client}.get(kind, rtq_client)
        self.pipes, self.procs = [], []
        for _ in range(count):
            mine, theirs = _ctx.Pipe()
            p = _ctx.Process(target=target, args=(url, ns, theirs))
            p.start()
            self.pipes.append(mine)
            self.procs.append(p)
        try:
            for c in self.pipes:
                if not c.poll(120) or c.recv() != "ready":
                    raise RuntimeError(f"{kind} clients did not start")
        except BaseException:
            _kill(self.procs)
            raise

    def round(
        self, n: int = 0, duration: float = 0.0, clients: int | None = None
    ) -> list[list[float]]:
        """One round: n calls each, or calls for ``duration`` s; the latencies of each client.
        With ``clients``, only that many of the processes (the first ones) take part."""
        pipes = self.pipes[:clients] if clients else self.pipes
        for c in pipes:
            c.send((n, duration))
        return [c.recv() for c in pipes]

    def close(self) -> None:
        for c in self.pipes:
            c.send((0, 0.0))
        for p in self.procs:
            p.join(30)


def _alternate(rounds: int) -> list[tuple[str, ...]]:
    """ABBA order, so that a drifting machine favours neither side."""
    return [KINDS if i % 2 == 0 else KINDS[::-1] for i in range(rounds)]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def _setup(
    url: str, tag: str, clients: int, workers: int, handler: str
) -> tuple[dict[str, _Workers], dict[str, _Clients]]:
    ws = {k: _Workers(k, url, f"b{tag}{k}{clients}x{workers}", workers, handler) for k in KINDS}
    cs = {k: _Clients(k, url, ws[k].ns, clients) for k in KINDS}
    return ws, cs


def _teardown(ws: dict[str, _Workers], cs: dict[str, _Clients]) -> None:
    for c in cs.values():
        c.close()
    for w in ws.values():
        w.stop()


def run_bench(url: str | None = None, *, quick: bool = False) -> dict[str, Any]:
    """Run all three measurements; returns the JSON-able result.

    Both sides run at once (idle workers block, costing nothing) and are measured in
    alternating rounds, so that machine noise hits both alike; ratios compare pooled samples."""
    from rtq_nb.transport import resolve_url

    url = resolve_url(url)
    tag = uuid.uuid4().hex[:6]
    lat_rounds, lat_n = (10, 50) if quick else (20, 100)
    tp_rounds, tp_dur = (2, 1.0) if quick else (4, 1.25)
    combos = [(1, 1), (2, 2), (4, 2)]
    if not quick:
        combos = [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4), (16, 4)]
    tokens = 2000
    res: dict[str, Any] = {"url": url, "quick": quick}

    cost = Cost(url)
    ws, cs = _setup(url, tag, 1, 1, "rtq_nb.demo:aecho")
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    for order in _alternate(lat_rounds):
        for k in order:
            lat[k] += cost.round(k, cs[k], ws[k], n=lat_n)[0]
    _teardown(ws, cs)
    res["latency_1x1"] = {
        "requests": len(lat["rtq"]),
        "rtq_p50_us": round(statistics.median(lat["rtq"]) * 1e6, 1),
        "rtq_p99_us": round(_pct(lat["rtq"], 0.99) * 1e6, 1),
        "floor_p50_us": round(statistics.median(lat["floor"]) * 1e6, 1),
        "floor_p99_us": round(_pct(lat["floor"], 0.99) * 1e6, 1),
        "raw_p50_us": round(statistics.median(lat["raw"]) * 1e6, 1),
        "raw_p99_us": round(_pct(lat["raw"], 0.99) * 1e6, 1),
    }
    lt = res["latency_1x1"]
    lt["p50_ratio"] = round(lt["rtq_p50_us"] / lt["floor_p50_us"], 3)
    lt["raw_p50_ratio"] = round(lt["rtq_p50_us"] / lt["raw_p50_us"], 3)

    rows = []
    for clients, workers in combos:
        ws, cs = _setup(url, tag, clients, workers, "rtq_nb.demo:aecho")
        lats: dict[str, list[float]] = {k: [] for k in KINDS}
        for order in _alternate(tp_rounds):
            for k in order:
                for xs in cost.round(k, cs[k], ws[k], duration=tp_dur):
                    lats[k] += xs
        _teardown(ws, cs)
        row: dict[str, Any] = {"clients": clients, "workers": workers}
        for k in KINDS:
            row[f"{k}_rps"] = round(len(lats[k]) / (tp_rounds * tp_dur), 1)
            row[f"{k}_p99_us"] = round(_pct(lats[k], 0.99) * 1e6, 1) if lats[k] else None
        row["ratio"] = round(row["rtq_rps"] / row["floor_rps"], 3)
        row["raw_ratio"] = round(row["rtq_rps"] / row["raw_rps"], 3)
        rows.append(row)
    res["throughput"] = rows
    res["redis_per_request"] = cost.result()
    cost.r.close()

    sk = ("floor", "rtq")  # the raw floor has no stream side
    st: dict[str, list[tuple[float, float]]] = {k: [] for k in sk}
    sw = {k: _Workers(k, url, f"b{tag}{k}st", 1, "rtq_nb.demo:tokens") for k in sk}
    from rtq_nb.client.sync import Client

    fns = {"floor": floor_stream, "rtq": rtq_stream}
    conns = {"floor": floor_redis(url), "rtq": Client(url, queue=sw["rtq"].ns)}
    for k in sk:
        fns[k](conns[k], sw[k].ns, 10)  # warm-up: connections open, scripts loaded
    for i in range(5 if quick else 9):
        for k in sk if i % 2 == 0 else sk[::-1]:
            # a 10-token stream first: each side measured warm. Idle for the other side's
            # stream (the floor's takes ~100x longer), this machine's cores go cold: 0.7 ms
            # back to back, 4.8 ms after 0.3 s idle, for any side (README, Performance)
            fns[k](conns[k], sw[k].ns, 10)
            st[k].append(fns[k](conns[k], sw[k].ns, tokens))
    conns["rtq"].close()
    for w in sw.values():
        w.stop()
    ttft = {k: statistics.median(r[0] for r in st[k]) for k in sk}
    rate = {k: statistics.median(r[1] for r in st[k]) for k in sk}
    res["stream"] = {
        "tokens": tokens,
        "rtq_ttft_us": round(ttft["rtq"] * 1e6, 1),
        "floor_ttft_us": round(ttft["floor"] * 1e6, 1),
        "rtq_tokens_per_s": round(rate["rtq"]),
        "floor_tokens_per_s": round(rate["floor"]),
        "speedup": round(rate["rtq"] / rate["floor"], 2),
    }
    return res


def scaling(
    url: str | None = None,
    cells: Sequence[tuple[int, int]] = ((1, 1), (2, 2), (4, 4)),
    *,
    seconds: float = 1.0,
    queue: str | None = None,
    handler: str = "rtq_nb.demo:aecho",
) -> list[dict[str, Any]]:
    """rtq_nb's throughput for each ``(clients, workers)`` cell, with the benchmark's processes.

    Worker processes serve ``handler`` on ``queue`` (default: a new ``scaling-xxxxxx``); a pool
    of client processes (as many as the largest cell needs, each warmed up first) send 100-byte
    requests one after the other (``client.call``). For each cell, its first ``clients``
    client processes call for ``seconds`` at the same time. Workers are only ever added: cells
    are measured in order of workers, and the rows come back in the order of ``cells``, one
    dict each: ``clients``, ``workers``, ``requests`` (completed), ``requests_per_s`` and
    ``p50_us`` (median latency). No raw redis-py floor here: this is not ``rtq-nb bench``."""
    from rtq_nb.transport import resolve_url

    cells = [(int(c), int(w)) for c, w in cells]
    if not cells or min(min(cell) for cell in cells) < 1 or seconds <= 0:
        raise ValueError("cells must be (clients, workers) pairs >= 1, and seconds > 0")
    url = resolve_url(url)
    queue = queue or f"scaling-{uuid.uuid4().hex[:6]}"
    rows: dict[int, dict[str, Any]] = {}
    order = sorted(range(len(cells)), key=lambda i: cells[i][1])
    ws = _Workers("rtq", url, queue, cells[order[0]][1], handler)
    try:
        cs = _Clients("rtq", url, queue, max(c for c, _ in cells))
        try:
            for i in order:
                clients, workers = cells[i]
                ws.grow(workers)
                lat = [x for xs in cs.round(duration=seconds, clients=clients) for x in xs]
                rows[i] = {
                    "clients": clients,
                    "workers": workers,
                    "requests": len(lat),
                    "requests_per_s": round(len(lat) / seconds),
                    "p50_us": round(statistics.median(lat) * 1e6) if lat else None,
                }
        finally:
            cs.close()
    finally:
        ws.stop()
    return [rows[i] for i in range(len(cells))]


def _us0(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def _us(x: float | None) -> str:
    return "     n/a" if x is None else f"{x:>6.1f} us"


def format_table(r: dict[str, Any]) -> str:
    lt, s = r["latency_1x1"], r["stream"]
    lines = [
        f"rtq-nb bench against {r['url']}{' (quick)' if r['quick'] else ''}",
        "",
        "latency, 1 client x 1 worker, 100-byte echo (sync client)",
        f"  rtq   p50 {lt['rtq_p50_us']:>8.0f} us   p99 {lt['rtq_p99_us']:>8.0f} us",
        f"  floor p50 {lt['floor_p50_us']:>8.0f} us   p99 {lt['floor_p99_us']:>8.0f} us",
        f"  raw   p50 {lt['raw_p50_us']:>8.0f} us   p99 {lt['raw_p99_us']:>8.0f} us",
        f"  ratio p50 {lt['p50_ratio']:.2f}x the redis-py floor (target <= 1.5x), "
        f"{lt['raw_p50_ratio']:.2f}x the raw floor (target <= 1.25x)",
        "",
        "throughput, requests/s (clients x worker processes)",
        f"  {'clients':>7} {'workers':>7} {'rtq':>9} {'floor':>9} {'raw':>9} {'ratio':>6} "
        f"{'/raw':>6}   p99 us: {'rtq':>7} {'floor':>7} {'raw':>7}",
    ]
    for row in r["throughput"]:
        p99 = " ".join(f"{_us0(row.get(f'{k}_p99_us')):>7}" for k in ("rtq", "floor", "raw"))
        lines.append(
            f"  {row['clients']:>7} {row['workers']:>7} {row['rtq_rps']:>9.0f} "
            f"{row['floor_rps']:>9.0f} {row['raw_rps']:>9.0f} {row['ratio']:>6.2f} "
            f"{row['raw_ratio']:>6.2f}           {p99}"
        )
    lines.append("  (target ratio >= 0.8 of the redis-py floor, >= 0.9 of the raw floor)")
    per = r["redis_per_request"]
    lines += [
        "",
        "per request, over the measured rounds: Redis (server counters), client and worker "
        "processes' CPU",
    ]
    for k, name in (("rtq", "rtq"), ("floor", "floor"), ("raw", "raw")):
        cw = "".join(
            f"   {side} {_us(per[k].get(f'{side}_cpu_us'))} CPU" for side in ("client", "worker")
        )
        lines.append(
            f"  {name:<5} Redis {per[k]['redis_cpu_us']:>6.1f} us CPU "
            f"{per[k]['commands']:>6.2f} commands{cw}"
        )
    lines += [
        "",
        f"streaming, {s['tokens']} tiny tokens",
        f"  rtq   ttft {s['rtq_ttft_us']:>8.0f} us   {s['rtq_tokens_per_s']:>9} tokens/s",
        f"  floor ttft {s['floor_ttft_us']:>8.0f} us   {s['floor_tokens_per_s']:>9} tokens/s "
        "(one push per token)",
        f"  speedup {s['speedup']:.1f}x   (target >= 5x)",
    ]
    return "\n".join(lines)
