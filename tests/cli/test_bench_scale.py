"""``rtq-nb bench --scale`` at a small size (20,000 pending, 100 streams, 20,000 history
records) on its own private redis-server: the report's shape, and what must not move with
the size: the Redis commands of a submit and of a pop are a count (the scripts run the same
commands over a backlog as over an empty queue), and a history read keeps one page at a
time however long the history is."""

from __future__ import annotations

import math

from rtq_nb.cli.bench_scale import SMALL, format_scale, run_scale


def test_scale_report_small() -> None:
    r = run_scale(None, SMALL)
    q = r["queue"]
    e, b = q["empty"], q["backlog"]
    assert b["pending"] == SMALL.pending and b["pending_after"] >= SMALL.pending
    assert b["fill_per_s"] > 1000
    for step in ("submit", "pop", "complete"):
        assert e[step]["commands"] == b[step]["commands"], (step, e[step], b[step])
        assert e[step]["redis_cpu_us"] > 0 and b[step]["redis_cpu_us"] > 0
    assert 11.9 < e["submit"]["commands"] < 12.1  # HSET EXPIRE ZADD LPUSH ZADD ... per submit
    for name, v in q["ratio"].items():
        assert v > 0 and math.isfinite(v), (name, v)
    s = r["streams"]
    assert s["small"]["streams"] == SMALL.small_streams and s["big"]["streams"] == SMALL.streams
    for c in (s["small"], s["big"]):
        assert c["chunks"] >= c["streams"] and c["commands"] > 1 and c["client_cpu_us"] > 0
        assert c["xreads"] > 0
    assert s["big"]["connections"] > SMALL.streams  # one link per stream being read (finding)
    assert all(v > 0 for v in s["ratio"].values())
    h = r["history"]
    assert h["big"]["records"] == SMALL.history
    assert h["big"]["newest_peak_mb"] < 2 * h["small"]["newest_peak_mb"] + 1
    assert h["big"]["scan_peak_mb"] < 2 * h["small"]["scan_peak_mb"] + 1  # one page at a time
    assert h["big"]["scan_s"] > h["small"]["scan_s"]  # it does read all 20,000
    m = r["retained"]
    assert 300 < m["per_request_bytes"] < 10_000 and m["record_bytes"] > 0
    assert m["history_bytes"] > 0 and m["fields"] >= 15
    assert {f for f, _ in m["biggest"][:2]} == {"input", "result"}
    assert 0 < m["record_as_listpack_bytes"] < m["record_bytes"]
    text = format_scale(r)
    assert "pending" in text and "streams read at once" in text and "history of" in text
