"""pandas views against a real Redis: typed columns, filters, malformed records, registries."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest

from rtq_nb import AsyncClient, Client, RequestFailed, Worker, demo, views
from rtq_nb.errors import ConfigurationError
from rtq_nb.loop import portal
from rtq_nb.notebook.views import HISTORY_COLUMNS


def raw(client: Client, *cmd: Any) -> Any:
    """One raw Redis command (test setup only)."""
    return portal().call(client.async_client.conn.call(*cmd))


def run_mixed(client: Client, start_worker: Callable[..., Worker], n: int = 12) -> list[str]:
    """n requests: every third fails; all finished. Returns their ids in submit order."""
    start_worker(demo.fake_llm, concurrency=2)
    handles = [
        client.submit(
            f"req {i}", params={"tokens": 3, "rate": 0, "fail_at": 1 if i % 3 == 0 else None}
        )
        for i in range(n)
    ]
    for h in handles:
        with contextlib.suppress(RequestFailed):
            h.result(timeout=30)
    return [h.id for h in handles]


# ---- history ---------------------------------------------------------------------------------


def test_history_typed_columns(client: Client, start_worker: Callable[..., Worker]) -> None:
    ids = run_mixed(client, start_worker)
    df = views.history(client)
    assert list(df.columns) == list(HISTORY_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == HISTORY_COLUMNS
    assert set(df.id) == set(ids) and len(df) == len(ids)
    assert df.created.is_monotonic_decreasing  # newest first
    ok = df[df.status == "completed"]
    bad = df[df.status == "failed"]
    assert len(bad) == 4 and len(ok) == 8
    assert ok.worker.notna().all() and ok.duration_ms.notna().all()
    assert (ok.queue_wait_ms >= 0).all() and ok.attempts.eq(1).all()
    assert bad.error.str.contains("fake model failure").all()
    assert df.parse_error.isna().all()
    row = df.set_index("id").loc[ids[1]]
    assert row.input_preview == "req 1"
    assert row.output_preview == "".join(demo.fake_answer("req 1", 3))
    now = pd.Timestamp.now(tz="UTC")
    assert ((now - df.created) < pd.Timedelta(minutes=5)).all()


def test_history_filters(client: Client, start_worker: Callable[..., Worker]) -> None:
    run_mixed(client, start_worker, n=30)
    full = views.history(client)
    failed = views.history(client, status="failed")
    assert len(failed) == 10 and set(failed.status) == {"failed"}
    two = views.history(client, status=["failed"], limit=2)
    assert list(two.id) == list(failed.id[:2])  # paging keeps newest-first order
    both = views.history(client, status=["failed", "completed"])
    assert len(both) == 30
    top = views.history(client, limit=5)
    assert list(top.id) == list(full.id[:5])
    assert views.history(client, limit=0).empty
    cut = full.created.iloc[len(full) // 2]
    since = views.history(client, since=cut)
    assert set(since.id) == set(full.id[full.created >= cut])
    until = views.history(client, until=cut)
    assert set(until.id) == set(full.id[full.created <= cut])
    assert len(views.history(client, since=timedelta(hours=1))) == 30
    assert views.history(client, until=timedelta(hours=1)).empty
    assert views.history(client, since=cut.isoformat()).id.tolist() == since.id.tolist()
    with pytest.raises(ConfigurationError, match="unknown status"):
        views.history(client, status="done")


def test_history_other_queue_and_all_queues(
    client: Client, url: str, prefix: str, start_worker: Callable[..., Worker]
) -> None:
    start_worker(demo.aecho)
    start_worker(demo.aecho, queue="other")
    other = Client(url, prefix=prefix, queue="other")
    try:
        a = client.call("on default")
        b = other.call("on other")
        assert (a, b) == ("on default", "on other")
    finally:
        other.close()
    assert views.history(client).input_preview.tolist() == ["on default"]
    assert views.history(client, queue="other").input_preview.tolist() == ["on other"]
    assert sorted(views.history(client, queue="*").queue) == ["default", "other"]


def test_malformed_records_become_rows(client: Client, start_worker: Callable[..., Worker]) -> None:
    ids = run_mixed(client, start_worker, n=3)
    k = client.async_client.keys()
    raw(
        client,
        "HSET",
        k.request("garbage-1"),
        "v",
        "1",
        "id",
        "garbage-1",
        "status",
        "bogus",
        "priority",
        "high",
        "input",
        "{not json",
        "created_ms",
        "yesterday",
    )
    raw(client, "HSET", k.request("garbage-2"), "nothing", "useful")
    raw(client, "ZADD", k.history, 1, "garbage-1", 2, "garbage-2", 3, "expired-one")  # no hash
    df = views.history(client)
    assert len(df) == 5  # 3 good + 2 malformed; the id without a record is skipped
    bad = df.set_index("id").loc[["garbage-1", "garbage-2"]]
    assert bad.parse_error.notna().all()
    assert "garbage-1" in bad.parse_error["garbage-1"]  # names the key
    assert bad.status["garbage-1"] == "bogus" and pd.isna(bad.priority["garbage-1"])
    assert pd.isna(bad.created["garbage-1"])
    good = df[df.id.isin(ids)]
    assert good.parse_error.isna().all() and len(good) == 3
    assert len(views.history(client, status="completed")) == 2  # filters still work


def test_history_accepts_async_client(
    client: Client, url: str, prefix: str, start_worker: Callable[..., Worker]
) -> None:
    ids = run_mixed(client, start_worker, n=4)
    ac = AsyncClient(url, prefix=prefix)
    try:
        assert set(views.history(ac).id) == set(ids)
    finally:
        portal().call(ac.aclose())


# ---- workers, clients, pending --------------------------------------------------------------


def test_workers_frame(client: Client, start_worker: Callable[..., Worker]) -> None:
    assert views.workers(client).empty
    w = start_worker(demo.fake_llm, concurrency=3)
    client.call("hi", params={"tokens": 2, "rate": 0})
    df = views.workers(client)
    assert df.id.tolist() == [w.id]
    row = df.iloc[0]
    assert row.concurrency == 3 and row.status in ("idle", "busy") and row.queue == "default"
    assert str(df.dtypes["last_heartbeat"]) == "datetime64[ms, UTC]"
    assert 0 <= row.heartbeat_age_s < 60
    assert str(df.dtypes["processed"]) == "Int64"


def test_clients_frame(client: Client) -> None:
    client.submit("x")
    df = views.clients(client)
    assert df.id.tolist() == [client.client_id]
    row = df.iloc[0]
    assert bool(row.alive) and row.submitted >= 1 and row.queue == "default"
    assert str(df.dtypes["last_seen"]) == "datetime64[ms, UTC]"


def test_pending_frames(client: Client) -> None:
    low = client.submit("low", priority=-1)
    high = [client.submit(f"high {i}", priority=2) for i in range(3)]
    by_prio = views.pending(client)
    assert by_prio.to_dict("list") == {"priority": [2, -1], "count": [3, 1]}
    df = views.pending(client, by_priority=False)
    assert df.id.tolist() == [*(h.id for h in high), low.id]  # the order workers take them
    assert df.priority.tolist() == [2, 2, 2, -1]
    assert str(df.dtypes["age"]) == "timedelta64[ms]"
    assert (df.age >= pd.Timedelta(0)).all() and df.created.notna().all()
    assert views.pending(client, by_priority=False, limit=2).id.tolist() == [high[0].id, high[1].id]


def test_rejects_non_clients() -> None:
    with pytest.raises(TypeError, match="Client"):
        views.workers("redis://localhost")  # type: ignore[arg-type]
