"""``rtq-nb bench``'s table from a result (the JSON ``--json`` prints): every figure shown,
'n/a' where a platform cannot measure it (process CPU outside Linux)."""

from __future__ import annotations

from typing import Any

from rtq_nb.cli.bench import format_table


def _result() -> dict[str, Any]:
    side = {"redis_cpu_us": 130.5, "commands": 31.49, "client_cpu_us": 99.5, "worker_cpu_us": None}
    return {
        "url": "unix:///tmp/x.sock",
        "quick": False,
        "latency_1x1": {
            "rtq_p50_us": 330.0, "rtq_p99_us": 900.0, "floor_p50_us": 241.0,
            "floor_p99_us": 800.0, "raw_p50_us": 157.0, "raw_p99_us": 486.0,
            "p50_ratio": 1.37, "raw_p50_ratio": 2.1,
        },
        "throughput": [
            {"clients": 16, "workers": 4, "rtq_rps": 5000.0, "floor_rps": 5200.0,
             "raw_rps": 17000.0, "ratio": 0.96, "raw_ratio": 0.29, "rtq_p99_us": 7300.0,
             "floor_p99_us": 15300.0, "raw_p99_us": None},
        ],
        "redis_per_request": {"rtq": side, "floor": dict(side), "raw": dict(side)},
        "stream": {
            "tokens": 2000, "rtq_ttft_us": 914.0, "floor_ttft_us": 255.0,
            "rtq_tokens_per_s": 651502, "floor_tokens_per_s": 9335, "speedup": 69.8,
        },
    }  # fmt: skip


def test_table_shows_each_figure_and_na_for_what_was_not_measured() -> None:
    table = format_table(_result())
    row = next(line for line in table.splitlines() if line.split()[:2] == ["16", "4"])
    assert row.split()[-3:] == ["7300", "15300", "n/a"]  # p99 at 16 x 4: rtq, floor, raw
    assert "130.5 us CPU" in table and "31.49 commands" in table
    assert "client   99.5 us CPU" in table and "worker      n/a CPU" in table
    assert "2.10x the raw floor" in table and "ttft      914 us" in table
