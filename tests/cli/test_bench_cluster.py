"""``rtq-nb bench --cluster`` runs end to end on private servers (a single Redis and a 3-master
cluster it builds itself) and reports every row; the numbers themselves are the bench's, not
asserted here (timing goals live in benchmarks)."""

from __future__ import annotations

from rtq_nb.cli.bench_cluster import format_cluster, run_cluster_bench


def test_cluster_bench_reports_every_row() -> None:
    r = run_cluster_bench(quick=True)
    names = [row["name"] for row in r["rows"]]
    assert names == [
        "single Redis, 1 queue",
        "cluster, 1 queue (1 master)",
        "single Redis, 3 shards",
        "cluster, 3 shards (3 masters)",
    ]
    for row in r["rows"]:
        assert row["rt_p50"] > 0 and row["rps"] > 0 and row["redis_cpu_us"] > 0
    assert r["rows"][0]["rt_ratio"] == 1.0
    assert "cluster, 3 shards" in format_cluster(r)
