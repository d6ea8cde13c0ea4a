"""``rtq-nb bench --capacity`` measures from the server's own counters: Redis commands per
call are a count, so they are checked exactly (31 today: a change to the protocol's cost
shows here first); a stream's grow with its flushes."""

from __future__ import annotations

from rtq_nb.cli.bench_capacity import run_capacity, run_idle_workers


def test_capacity_counts_redis_commands_per_request(url: str) -> None:
    r = run_capacity(url, calls=300, streams=8, tokens=20, rate=0, flush_ms=20.0)
    assert 30.5 <= r["call"]["commands"] <= 31.5, r
    assert r["call"]["redis_cpu_us"] > 0 and r["stream"]["redis_cpu_us"] > 0
    assert 200 < r["call"]["retained_bytes"] < 5000  # a record + a history entry, measured
    assert r["stream"]["commands"] > r["call"]["commands"]  # at least one flush and a read


def test_one_submission_wakes_one_of_many_idle_fetchers(url: str) -> None:
    """100 fetchers blocked on one queue: a call costs what it costs with one worker (~31
    commands); a thundering herd would add about 100 wake-ups per submission."""
    r = run_idle_workers(url, idle=100, calls=50)
    assert 28 <= r["commands"] <= 36, r
    assert r["blocked_after"] >= 100  # they are all blocked again, waiting
