"""``rtq-nb bench``'s cost per request: Redis CPU and commands from the server's counters, and
the CPU of each side's client and worker processes, over one real round (raw floor processes
against a private redis-server: no other client runs commands meanwhile)."""

from __future__ import annotations

import os
import uuid

import pytest

from rtq_nb.cli.bench import _Clients, _Workers
from rtq_nb.cli.bench_cost import Cost, proc_cpu
from rtq_nb.transport.embedded import EmbeddedRedis


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_cost_round_counts_commands_and_process_cpu() -> None:
    with EmbeddedRedis() as srv:
        ns = f"cost{uuid.uuid4().hex[:6]}"
        ws = _Workers("raw", srv.url, ns, 1, "")
        cs = _Clients("raw", srv.url, ns, 1)
        try:
            cost = Cost(srv.url)
            lat = cost.round("raw", cs, ws, n=3000)[0]
            got = cost.result()["raw"]
            cost.r.close()
        finally:
            cs.close()
            ws.stop()
    assert len(lat) == 3000
    # HSET + ZADD + BLPOP (client), BZPOPMAX + HGET + LPUSH (worker): exactly 6 per call
    assert got["commands"] == 6.0
    assert got["redis_cpu_us"] is not None and got["redis_cpu_us"] > 0
    for side in ("client", "worker"):
        v = got[f"{side}_cpu_us"]
        assert v is not None and 0 < v < 1e6, got


def test_proc_cpu_is_none_without_proc_entries() -> None:
    class Gone:
        pid = 2**31 - 1  # no such process

    assert proc_cpu([Gone()]) is None
    assert proc_cpu([]) == 0.0
