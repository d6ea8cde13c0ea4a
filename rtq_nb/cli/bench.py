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

import json
import multiprocessing as mp
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

PAYLOAD = "x" * 100
_ctx = mp.get_context("spawn")


# ---- the floor ------------------------------------------------------------------------------
def _floor_redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)


def _floor_worker(url: str, ns: str, stop_key: str) -> None:
    r = _floor_redis(url)
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


def _floor_call(r: Any, ns: str, rid: str) -> str:
    p = r.pipeline(transaction=False)
    p.hset(f"{ns}:req:{rid}", mapping={"id": rid, "input": PAYLOAD, "status": "pending"})
    p.zadd(f"{ns}:pending", {rid: 0})
    p.execute()
    return str(r.blpop([f"{ns}:res:{rid}"], 30)[1])


def _floor_client(url: str, ns: str, conn: Any) -> None:
    r = _floor_redis(url)
    cid, i = uuid.uuid4().hex[:8], 0

    def call() -> None:
        nonlocal i
        i += 1
        _floor_call(r, ns, f"{cid}-{i}")

    _serve_rounds(call, conn)


def _serve_rounds(call: Any, conn: Any) -> None:
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


def _floor_stream(r: Any, ns: str, tokens: int) -> tuple[float, float]:
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
    """What ``rtq-nb worker HANDLER --url URL --queue QUEUE`` runs (rtq_nb.cli.cmd_worker, all
    options at their defaults), from the public API: this module does not import the CLI."""
    import asyncio
    import importlib
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


def _rtq_client(url: str, queue: str, conn: Any) -> None:
    from rtq_nb.client.sync import Client

    c = Client(url, queue=queue)
    _serve_rounds(lambda: c.call(PAYLOAD), conn)


def _rtq_stream(c: Any, queue: str, tokens: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttft, n = None, 0
    for chunk in c.stream("bench", params={"tokens": tokens}):
        ttft = ttft or time.perf_counter() - t0
        n += chunk.pieces
    assert n == tokens, f"stream delivered {n} of {tokens} tokens"
    return ttft or 0.0, n / (time.perf_counter() - t0)


# ---- orchestration --------------------------------------------------------------------------
KINDS = ("floor", "rtq")


class _Workers:
    """Worker processes of one kind; the constructor returns once all of them are serving."""

    def __init__(self, kind: str, url: str, ns: str, count: int, handler: str) -> None:
        self.kind, self.url, self.ns, self.handler = kind, url, ns, handler
        self.stop_key = f"{ns}:stop"
        self.procs: list[Any] = []
        self.grow(count)

    def grow(self, count: int) -> None:
        """Start more workers, up to ``count`` in all; returns once all of them are serving."""
        target: Callable[[str, str, str], None] = _rtq_worker
        args = (self.url, self.ns, self.handler)
        if self.kind == "floor":
            target, args = _floor_worker, (self.url, self.ns, self.stop_key)
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
        r = _floor_redis(self.url)
        try:
            if self.kind == "floor":
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
        if self.kind == "floor":
            r = _floor_redis(self.url)
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
        target = _floor_client if kind == "floor" else _rtq_client
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


def _alternate(rounds: int) -> list[tuple[str, str]]:
    """ABBA order, so that a drifting machine favours neither side."""
    return [KINDS if i % 2 == 0 else (KINDS[1], KINDS[0]) for i in range(rounds)]


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
    combos = [(1, 1), (2, 2), (4, 2)] if quick else [(1, 1), (2, 1), (2, 2), (4, 2), (4, 4), (8, 4)]
    tokens = 2000
    res: dict[str, Any] = {"url": url, "quick": quick}

    ws, cs = _setup(url, tag, 1, 1, "rtq_nb.demo:aecho")
    lat: dict[str, list[float]] = {k: [] for k in KINDS}
    for order in _alternate(lat_rounds):
        for k in order:
            lat[k] += cs[k].round(n=lat_n)[0]
    _teardown(ws, cs)
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
        ws, cs = _setup(url, tag, clients, workers, "rtq_nb.demo:aecho")
        done = {k: 0 for k in KINDS}
        for order in _alternate(tp_rounds):
            for k in order:
                done[k] += sum(len(x) for x in cs[k].round(duration=tp_dur))
        _teardown(ws, cs)
        row: dict[str, Any] = {"clients": clients, "workers": workers}
        for k in KINDS:
            row[f"{k}_rps"] = round(done[k] / (tp_rounds * tp_dur), 1)
        row["ratio"] = round(row["rtq_rps"] / row["floor_rps"], 3)
        rows.append(row)
    res["throughput"] = rows

    st: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    sw = {k: _Workers(k, url, f"b{tag}{k}st", 1, "rtq_nb.demo:tokens") for k in KINDS}
    from rtq_nb.client.sync import Client

    fns = {"floor": _floor_stream, "rtq": _rtq_stream}
    conns = {"floor": _floor_redis(url), "rtq": Client(url, queue=sw["rtq"].ns)}
    for k in KINDS:
        fns[k](conns[k], sw[k].ns, 10)  # warm-up: connections open, scripts loaded
    for order in _alternate(5 if quick else 9):
        for k in order:
            st[k].append(fns[k](conns[k], sw[k].ns, tokens))
    conns["rtq"].close()
    for w in sw.values():
        w.stop()
    ttft = {k: statistics.median(r[0] for r in st[k]) for k in KINDS}
    rate = {k: statistics.median(r[1] for r in st[k]) for k in KINDS}
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
