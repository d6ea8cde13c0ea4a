"""``rtq-nb bench --scale``: cost must stay flat as the work grows (issue 15). On a private
redis-server (or the URL given), each as a ratio to the small case of the same run:

* submit and pop with 1,000,000 requests pending (LOW priority) versus an empty queue: Redis
  CPU and commands per submit and per pop (server counters), and the p50 of a call at HIGH
  priority, run serially by the bench as both sides (submit, the POP script, the COMPLETE
  script, the client's BLPOP): what the backlog adds to each step, without a busy worker's
  draining on the same cores;
* 10,000 streams read at once versus 10 (:mod:`rtq_nb.cli.bench_scale_streams`);
* a history view over 1,000,000 records versus 1,000: time and peak Python memory;
* Redis memory per retained request, and which record fields take it.

Sizes: :data:`FULL` (about 3-4 minutes on 2 cores) or ``RTQ_BENCH_SCALE=small``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rtq_nb.cli.bench_scale_streams import complete, history_cost, retained_cost, stream_cost
from rtq_nb.cli.bench_sides import PAYLOAD, floor_redis, redis_totals
from rtq_nb.client.core import AsyncClient
from rtq_nb.client.options import Prepared
from rtq_nb.loop import portal
from rtq_nb.protocol import scripts
from rtq_nb.protocol.scores import priority_bounds
from rtq_nb.transport.embedded import EmbeddedRedis

__all__ = ["FULL", "SMALL", "ScaleSizes", "format_scale", "run_scale", "sizes"]

log = logging.getLogger("rtq_nb.bench")
HIGH, LOW = 10, -10
FILL_BATCH = 20_000  # requests prepared, then sent 1,000 per round trip


@dataclasses.dataclass(frozen=True)
class ScaleSizes:
    pending: int = 1_000_000
    streams: int = 10_000
    history: int = 1_000_000
    small_streams: int = 10
    small_history: int = 1_000
    calls: int = 4096  # measured submits and pops (a multiple of 1024: the submit script
    latency_calls: int = 300  # trims its wake list and history every 1024th submission)
    tokens: int = 20  # per stream
    retained: int = 2000


FULL = ScaleSizes()
SMALL = ScaleSizes(pending=20_000, streams=100, history=20_000, calls=2048, latency_calls=100,
                   retained=300)  # fmt: skip


def sizes() -> ScaleSizes:
    """:data:`SMALL` when ``RTQ_BENCH_SCALE=small``, else :data:`FULL`."""
    return SMALL if os.environ.get("RTQ_BENCH_SCALE", "").lower() == "small" else FULL


class Counters:
    """Redis CPU seconds and commands over an interval, from the server's counters."""

    def __init__(self, url: str) -> None:
        self.r = floor_redis(url)

    def __enter__(self) -> Counters:
        self.cpu, self.n = redis_totals(self.r)
        return self

    def __exit__(self, *exc: object) -> None:
        cpu, n = redis_totals(self.r)
        self.r.close()
        self.cpu, self.n = cpu - self.cpu, n - self.n - 2  # INFO commandstats, then INFO cpu


def _fresh_batch(ac: AsyncClient, n: int, priority: int) -> list[Prepared]:
    """``n`` prepared submissions that carry nothing but their submit script (a registry
    refresh falls due every few seconds: a submission that carries one is sent, popped and
    completed unmeasured, and the batch prepared again)."""
    while True:
        batch = [ac.prepare(PAYLOAD, stream=False, priority=priority) for _ in range(n)]
        carriers = [p for p in batch if len(p.commands) > 1]
        if not carriers:
            return batch
        portal().call(ac.send(carriers))  # the rest of the batch is never sent
        leased = popped(portal().call(_pipelined(ac, [_pop(ac)] * len(carriers))))
        portal().call(_pipelined(ac, [complete(ac, rid, a) for rid, a in leased]))


async def _send(ac: AsyncClient, batch: list[Prepared]) -> None:
    for i in range(0, len(batch), 1000):
        await ac.send(batch[i : i + 1000])


def fill(ac: AsyncClient, n: int, priority: int = LOW) -> float:
    """Submit ``n`` requests through the prepared batch API, pipelined 1,000 per round trip;
    returns the requests per second."""
    t0 = time.perf_counter()
    for i in range(0, n, FILL_BATCH):
        batch = [ac.prepare(PAYLOAD, stream=False, priority=priority)
                 for _ in range(min(FILL_BATCH, n - i))]  # fmt: skip
        portal().call(_send(ac, batch))
    return n / max(1e-9, time.perf_counter() - t0)


def _pop(ac: AsyncClient, floor: int | None = None) -> Any:
    return scripts.pop(ac.keys(), "bench-w", lease_ms=600_000, count=1, consumed=0,
                       retention_s=ac.retention, floor=floor)  # fmt: skip


def popped(replies: list[Any]) -> list[tuple[str, str]]:
    """(id, attempt) of every request the POP replies leased."""
    out: list[tuple[str, str]] = []
    for reply in replies:
        for p in scripts.parse_pop(reply)[0]:
            if p.kind == scripts.PopKind.RUN:
                out.append((p.id, str(p.payload[0])))
    return out


async def _pipelined(ac: AsyncClient, cmds: list[Any]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(cmds), 1000):
        out += await ac.conn.pipeline(cmds[i : i + 1000])
    return out


async def _one_call(ac: AsyncClient, floor: int) -> float:
    """One call, both sides in turn: submit, POP (HIGH only), COMPLETE, the client's read."""
    t = time.perf_counter()
    p = ac.prepare(PAYLOAD, stream=False, priority=HIGH)
    await ac.send([p])
    [(rid, attempt)] = popped(await ac.conn.pipeline([_pop(ac, floor)]))
    await ac.conn.pipeline([complete(ac, rid, attempt)])
    got = await p.handle.result()
    assert got == PAYLOAD, got
    return time.perf_counter() - t


def _round(url: str, ac: AsyncClient, calls: int, latency_calls: int) -> dict[str, Any]:
    """One round on ``ac``'s queue: ``calls`` submits, pops and completes (each step pipelined,
    its Redis CPU seconds and commands), then ``latency_calls`` calls one at a time."""
    out: dict[str, Any] = {}
    batch = _fresh_batch(ac, calls, HIGH)
    with Counters(url) as out["submit"]:
        portal().call(_send(ac, batch))
    pops = [_pop(ac) for _ in range(calls)]
    with Counters(url) as out["pop"]:
        leased = popped(portal().call(_pipelined(ac, pops)))
    assert len(leased) == calls, f"popped {len(leased)} of {calls}"
    done = [complete(ac, rid, attempt) for rid, attempt in leased]
    with Counters(url) as out["complete"]:
        portal().call(_pipelined(ac, done))
    portal().call(_pipelined(ac, [("DEL", ac.keys().result(rid)) for rid, _ in leased]))
    floor = priority_bounds(HIGH)[0]
    out["lat"] = [portal().call(_one_call(ac, floor)) for _ in range(latency_calls)]
    return out


def queue_cost(url: str, queues: dict[str, AsyncClient], sz: ScaleSizes) -> dict[str, Any]:
    """Submit, pop and call costs on an empty queue and on one holding ``sz.pending`` (both
    on one server), measured in alternating rounds of 1,024 (machine noise falls on both)."""
    out: dict[str, Any] = {"empty": {"pending": 0}, "backlog": {"pending": sz.pending}}
    t0 = time.perf_counter()
    out["backlog"]["fill_per_s"] = fill(queues["backlog"], sz.pending)
    out["backlog"]["fill_s"] = time.perf_counter() - t0
    log.info("filled %d pending in %.1f s", sz.pending, out["backlog"]["fill_s"])
    rounds = max(1, sz.calls // 1024)
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in queues}
    for _ in range(rounds):
        for name, ac in queues.items():
            got[name].append(_round(url, ac, 1024, max(1, sz.latency_calls // rounds)))
    for name, ac in queues.items():
        o, n = out[name], rounds * 1024
        for step in ("submit", "pop", "complete"):
            o[step] = {
                "redis_cpu_us": sum(g[step].cpu for g in got[name]) / n * 1e6,
                "commands": sum(g[step].n for g in got[name]) / n,
            }
        o["call_p50_ms"] = statistics.median(x for g in got[name] for x in g["lat"]) * 1000
        o["pending_after"] = portal().call(ac.pending_count())
    return out


@contextmanager
def private_server(url: str | None) -> Iterator[tuple[str, bool]]:
    """(url, private): the URL given, or a private redis-server (room for 10,000 readers)."""
    if url:
        yield url, False
        return
    # a stock server's record encoding (the embedded default keeps records as listpacks)
    srv = EmbeddedRedis(extra_args=["--maxclients", "12000", "--hash-max-ziplist-value", "64"])
    srv.start()
    try:
        yield srv.url, True
    finally:
        srv.stop()


def _ratio(big: float, small: float) -> float:
    return big / small if small else float("nan")


def run_scale(url: str | None = None, sz: ScaleSizes | None = None) -> dict[str, Any]:
    """The four measurements (see the module docs), each with its ratio to the small case."""
    sz = sz or sizes()
    tag = f"sc{int(time.time() * 1000) % 10**8}"
    out: dict[str, Any] = {"sizes": dataclasses.asdict(sz)}
    with private_server(url) as (u, private):
        r = floor_redis(u)

        def client(name: str, flush: bool = True) -> AsyncClient:
            if private and flush:
                r.flushall()
            ac = AsyncClient(u, queue=f"{tag}{name}", timeout=None, retention=3600)
            portal().call(ac.layout())
            portal().call(_send(ac, _fresh_batch(ac, 10, LOW)))  # scripts loaded, announced
            portal().call(_pipelined(ac, [_pop(ac)] * 10))
            return ac

        if private:
            r.flushall()
        queues = {name: client(name, flush=False) for name in ("empty", "backlog")}
        try:
            cases = queue_cost(u, queues, sz)
        finally:
            for ac in queues.values():
                portal().call(ac.aclose())
        e, b = cases["empty"], cases["backlog"]
        out["queue"] = {
            **cases,
            "ratio": {
                "submit_cpu": _ratio(b["submit"]["redis_cpu_us"], e["submit"]["redis_cpu_us"]),
                "pop_cpu": _ratio(b["pop"]["redis_cpu_us"], e["pop"]["redis_cpu_us"]),
                "call_p50": _ratio(b["call_p50_ms"], e["call_p50_ms"]),
            },
        }
        for key, fn, args in (
            ("retained", retained_cost, (sz.retained, private)),
            ("streams", stream_cost, (sz.small_streams, sz.streams, sz.tokens)),
            ("history", history_cost, (sz.small_history, sz.history)),
        ):
            ac = client(key)
            try:
                out[key] = fn(u, ac, *args)
            finally:
                portal().call(ac.aclose())
        r.close()
    return out


def format_scale(s: dict[str, Any]) -> str:
    """The table ``rtq-nb bench --scale`` prints."""
    q, st, h, m = s["queue"], s["streams"], s["history"], s["retained"]
    e, b = q["empty"], q["backlog"]
    lines = [
        f"scale: {b['pending']:,} pending (filled at {b.get('fill_per_s', 0):,.0f}/s in "
        f"{b.get('fill_s', 0):.0f} s) vs empty",
        f"  submit  {e['submit']['redis_cpu_us']:6.1f} -> {b['submit']['redis_cpu_us']:6.1f} us "
        f"Redis CPU ({q['ratio']['submit_cpu']:.2f}x), commands {e['submit']['commands']:.2f} "
        f"-> {b['submit']['commands']:.2f}",
        f"  pop     {e['pop']['redis_cpu_us']:6.1f} -> {b['pop']['redis_cpu_us']:6.1f} us "
        f"Redis CPU ({q['ratio']['pop_cpu']:.2f}x), commands {e['pop']['commands']:.2f} -> "
        f"{b['pop']['commands']:.2f}",
        f"  call p50 (HIGH over a LOW backlog) {e['call_p50_ms']:.2f} -> "
        f"{b['call_p50_ms']:.2f} ms ({q['ratio']['call_p50']:.2f}x)",
    ]
    for label, c in (("small", st["small"]), ("big", st["big"])):
        lines.append(
            f"  {c['streams']:>6,} streams read at once: {c['redis_cpu_us']:.1f} us Redis CPU, "
            f"{c['commands']:.2f} commands ({c['xreads']:.2f} XREAD), {c['client_cpu_us']:.1f} us "
            f"client CPU per chunk; {c['connections']:,} connections at peak, "
            f"{c['connect_retries']:,} connects refused and retried ({label})"
        )
    lines.append(
        f"  streams ratio (big/small) Redis CPU {st['ratio']['redis_cpu']:.2f}x, commands "
        f"{st['ratio']['commands']:.2f}x, client CPU {st['ratio']['client_cpu']:.2f}x"
    )
    for label in ("small", "big"):
        c = h[label]
        lines.append(
            f"  history of {c['records']:>9,}: newest {c['limit']:,} in {c['newest_s']:.3f} s, "
            f"peak {c['newest_peak_mb']:.1f} MB; filtered to running (reads all) "
            f"{c['scan_s']:.2f} s, peak {c['scan_peak_mb']:.1f} MB; to failed (the unsuccessful "
            f"history) {c['unsuccessful_s']:.4f} s; stats {c['stats_s']:.4f} s"
        )
    lines.append(
        f"  retained per request: {m['per_request_bytes']:.0f} bytes (used_memory), record "
        f"{m['record_bytes']:.0f} + history {m['history_bytes']:.0f} (+ unread result "
        f"{m['result_bytes']:.0f}); record is a {m['encoding']} of {m['fields']} fields; "
        f"biggest: {', '.join(f'{k} {v}' for k, v in m['biggest'][:5])}"
    )
    if m.get("record_as_listpack_bytes"):
        lim = {k: v for k, v in m["listpack_limits"].items() if k.endswith("-value")}
        lines.append(
            f"  the record as a listpack ({', '.join(f'{k} {v}' for k, v in lim.items())}: its "
            f"100-byte input "
            f"and result): {m['record_as_listpack_bytes']} bytes instead of {m['record_bytes']}"
        )
    return "\n".join(lines)
