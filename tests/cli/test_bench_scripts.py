"""``rtq-nb bench --scripts``: each hot-path script measured alone against a real
redis-server, from the server's commandstats deltas; its keys are gone afterwards."""

from __future__ import annotations

from rtq_nb.cli.bench_scripts import format_script_costs, run_script_costs
from rtq_nb.transport.embedded import EmbeddedRedis


def test_script_costs_count_inner_commands_exactly_and_clean_up() -> None:
    with EmbeddedRedis() as srv:
        import redis

        r = redis.Redis.from_url(srv.url)
        r.set("someone-elses", "data")
        res = run_script_costs(srv.url, n=200)
        assert r.dbsize() == 1 and r.get("someone-elses") == b"data"  # only theirs is left
        r.close()
    # Lua runs deterministic commands: every call of a script runs the same inner commands
    # (submit: TIME, 4 TYPE, INCR, HSET, EXPIRE, ZADD pending, LPUSH wake, ZADD history)
    assert res["submit"]["inner_commands"] == 11.0
    assert res["submit"]["inner"]["type"]["per_call"] == 4.0
    assert res["pop"]["inner"]["zpopmax"]["per_call"] == 1.0
    assert res["complete"]["inner"]["lpush"]["per_call"] == 1.0  # the result list
    assert res["append"]["inner"]["xadd"]["per_call"] == 1.0
    for name in ("submit", "pop", "append", "complete"):
        assert res[name]["calls"] == 200 and res[name]["us_per_call"] > 0
    lines = format_script_costs(res)
    assert len(lines) == 5 and "submit" in lines[1] and "complete" in lines[4]
