"""``rtq-nb bench --capacity`` measures from the server's own counters: Redis commands per
call are a count, so they are checked exactly (31 today: a change to the protocol's cost
shows here first); a stream's grow with its flushes."""

from __future__ import annotations

from rtq_nb.cli.bench_capacity import run_capacity


def test_capacity_counts_redis_commands_per_request(url: str) -> None:
    r = run_capacity(url, calls=300, streams=8, tokens=20, rate=0, flush_ms=20.0)
    assert 30.5 <= r["call"]["commands"] <= 31.5, r
    assert r["call"]["redis_cpu_us"] > 0 and r["stream"]["redis_cpu_us"] > 0
    assert 200 < r["call"]["retained_bytes"] < 5000  # a record + a history entry, measured
    assert r["stream"]["commands"] > r["call"]["commands"]  # at least one flush and a read
