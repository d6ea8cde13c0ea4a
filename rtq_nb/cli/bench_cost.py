"""What each side of ``rtq-nb bench`` costs per request, beside its latency: Redis CPU and
commands (the server's own counters) and the CPU of its client and worker processes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rtq_nb.cli.bench_sides import floor_redis, redis_totals

__all__ = ["KINDS", "Cost", "proc_cpu"]

KINDS = ("floor", "raw", "rtq")  # redis-py floor, raw hiredis floor (bench_raw), rtq_nb


class Cost:
    """Redis CPU and commands per request of each side, over its measured rounds (only one
    side runs at a time; the others' workers are blocked, costing nothing), and the CPU its
    client and worker processes spent per request (Linux ``/proc``; absent elsewhere)."""

    def __init__(self, url: str) -> None:
        self.r = floor_redis(url)
        self.cpu = {k: 0.0 for k in KINDS}
        self.cmds = {k: 0 for k in KINDS}
        self.reqs = {k: 0 for k in KINDS}
        self.proc: dict[str, dict[str, float | None]] = {
            k: {"client": 0.0, "worker": 0.0} for k in KINDS
        }

    def round(self, kind: str, clients: Any, workers: Any, **kw: Any) -> list[list[float]]:
        sides = {"client": clients.procs, "worker": workers.procs}
        before = {side: proc_cpu(ps) for side, ps in sides.items()}
        cpu0, n0 = redis_totals(self.r)
        got: list[list[float]] = clients.round(**kw)
        cpu1, n1 = redis_totals(self.r)
        for side, ps in sides.items():
            t0, t1, acc = before[side], proc_cpu(ps), self.proc[kind]
            so_far = acc[side]
            acc[side] = None if t0 is None or t1 is None or so_far is None else so_far + t1 - t0
        self.cpu[kind] += cpu1 - cpu0
        self.cmds[kind] += n1 - n0 - 2  # the two INFO calls of this accounting
        self.reqs[kind] += sum(len(x) for x in got)
        return got

    def result(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for k in KINDS:
            n = max(1, self.reqs[k])
            out[k] = {
                "redis_cpu_us": round(self.cpu[k] / n * 1e6, 1),
                "commands": round(self.cmds[k] / n, 2),
            }
            for side, total in self.proc[k].items():
                out[k][f"{side}_cpu_us"] = None if total is None else round(total / n * 1e6, 1)
        return out


def proc_cpu(procs: Sequence[Any]) -> float | None:
    """CPU seconds (user + system) the processes have used so far, from ``/proc/<pid>/stat``;
    None where that is not available (not Linux). Kernel clock ticks (10 ms): measure
    thousands of requests, not a few."""
    import os

    total = 0.0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for p in procs:
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return total
