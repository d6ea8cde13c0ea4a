"""``rtq-nb bench --scripts``: what each Lua script of the hot path costs Redis, in isolation.

For each of SUBMIT, POP, APPEND (one streamed chunk) and COMPLETE, ``n`` calls are pipelined
against a private namespace (nothing else of rtq_nb runs meanwhile) and the server's own
``INFO commandstats`` counters are read before and after: the script's microseconds per call
(Redis's wall time inside ``EVALSHA``, its inner commands included) and its inner commands
per call, each inner command's share listed. Deltas, not ``CONFIG RESETSTAT``: a shared
server's statistics are left alone. The namespace's keys are deleted afterwards.

Isolated and pipelined, these are lower bounds of what the same scripts cost in a live round
trip (caches are warm here; the per-request figures of ``rtq-nb bench`` include the I/O).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from rtq_nb.protocol import scripts
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Status

__all__ = ["run_script_costs"]

_INPUT = '"' + "x" * 100 + '"'  # the bench's 100-byte echo, JSON-encoded
_FIELDS = ["v", "1", "input", _INPUT, "params", "{}", "stream", "0", "client", "bench"]


def _stats(r: Any) -> dict[str, tuple[int, int]]:
    """{command: (calls, usec)} from INFO commandstats."""
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in r.info("commandstats").items()
    }


def _measure(r: Any, commands: list[tuple[Any, ...]]) -> dict[str, Any]:
    before = _stats(r)
    pipe = r.pipeline(transaction=False)
    for c in commands:
        pipe.execute_command(*c)
    replies = pipe.execute(raise_on_error=False)
    after = _stats(r)
    errors = [x for x in replies if isinstance(x, Exception)]
    if errors:
        raise RuntimeError(f"a script was refused while measuring: {errors[0]}")
    n = len(commands)
    delta = {
        k: (c - before.get(k, (0, 0))[0], u - before.get(k, (0, 0))[1])
        for k, (c, u) in after.items()
    }
    calls, usec = delta.pop("evalsha", (0, 0))
    inner = {k: (c, u) for k, (c, u) in delta.items() if c > 0 and k not in ("info", "ping")}
    return {
        "calls": calls,
        "us_per_call": round(usec / max(1, calls), 2),
        "inner_commands": round(sum(c for c, _ in inner.values()) / n, 2),
        "inner": {
            k: {"per_call": round(c / n, 2), "us": round(u / n, 2)}
            for k, (c, u) in sorted(inner.items(), key=lambda kv: -kv[1][1])
        },
    }


def run_script_costs(url: str, n: int = 3000) -> dict[str, Any]:
    """Each hot-path script's cost per call (see the module docstring); JSON-able."""
    from rtq_nb.cli.bench_sides import floor_redis

    r = floor_redis(url)
    k = Keys("rtq", f"bscripts{uuid.uuid4().hex[:6]}")
    ids = [f"b-{i}" for i in range(n)]
    for s in scripts.ALL:
        r.script_load(s.source)
    steps: list[tuple[str, Callable[[str], tuple[Any, ...]]]] = [
        (
            "submit",
            lambda rid: scripts.submit(
                k, rid, priority=0, timeout_ms=60_000, retention_s=600, wake_cap=n, fields=_FIELDS
            ),
        ),
        (
            "pop",
            lambda rid: scripts.pop(k, "bw", lease_ms=60_000, count=1, consumed=1, retention_s=600),
        ),
        (
            "append",
            lambda rid: scripts.append(
                k,
                rid,
                worker_id="bw",
                attempt="1",
                retention_s=600,
                first=True,
                chunks=[(0, 1, "tok ", "")],
            ),
        ),
        (
            "complete",
            lambda rid: scripts.complete(
                k,
                rid,
                worker_id="bw",
                attempt="1",
                status=Status.COMPLETED,
                value=_INPUT,
                envelope="",
                stream=False,
                retention_s=600,
                pieces=0,
            ),
        ),
    ]
    out: dict[str, Any] = {"calls": n}
    try:
        for name, make in steps:
            out[name] = _measure(r, [make(rid) for rid in ids])
    finally:
        keys = [k.pending, k.running, k.wake, k.seq, k.history, k.stats]
        for rid in ids:
            keys += [k.request(rid), k.result(rid), k.stream(rid)]
        for i in range(0, len(keys), 1000):
            r.delete(*keys[i : i + 1000])
        r.close()
    return out


def format_script_costs(res: dict[str, Any]) -> list[str]:
    """The table's lines."""
    lines = [f"Lua scripts in isolation ({res['calls']} pipelined calls each, commandstats)"]
    for name in ("submit", "pop", "append", "complete"):
        s = res[name]
        top = ", ".join(f"{c} {v['us']:.2f}" for c, v in list(s["inner"].items())[:4])
        lines.append(
            f"  {name:<9}{s['us_per_call']:>6.2f} us/call  {s['inner_commands']:>5.2f} inner "
            f"commands (us: {top})"
        )
    return lines
