"""The unsuccessful history (``Keys.unsuccessful``): requests that end failed, expired or
cancelled are listed there by the scripts that end them, and a view filtered to those
statuses reads it (O(matches)) instead of every record, with the same rows as a full scan."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from rtq_nb import Client, Request, RtqError, Worker
from rtq_nb.loop import portal
from tests.conftest import wait_until


def flaky(request: Request) -> Any:
    if str(request.input).startswith("boom"):
        raise ValueError(f"refused {request.input}")
    return request.input


def hmgets(raw: Any) -> int:
    return int(raw.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0))


def rows(client: Client, statuses: set[str] | None) -> list[list[Any]]:
    ac = client.async_client
    want = None if statuses is None else frozenset(statuses)
    return portal().call(ac.history_rows([client.queue], statuses=want, limit=10_000))


def test_failed_expired_and_cancelled_are_indexed_and_filtered_from_the_index(
    client: Client, raw: Any, start_worker: Callable[..., Worker]
) -> None:
    k = client.async_client.keys()
    cancelled = client.submit("never run")  # no worker yet: still pending
    assert client.cancel(cancelled.id, reason="changed my mind") is not None
    expired = client.submit("too late", timeout=0.05)
    deadline = int(raw.hget(k.request(expired.id), "deadline_ms"))
    wait_until(lambda: raw.time()[0] * 1000 + raw.time()[1] // 1000 > deadline, what="deadline")
    start_worker(flaky)
    ok = [client.submit(f"fine {i}") for i in range(200)]
    failed = [client.submit(f"boom {i}") for i in range(3)]
    assert [h.result() for h in ok] == [f"fine {i}" for i in range(200)]
    for h in [*failed, expired, cancelled]:
        with contextlib.suppress(RtqError):
            h.result()
    ended = {h.id: h.record() for h in [*failed, expired, cancelled]}
    assert {r.status.value for r in ended.values()} == {"failed", "expired", "cancelled"}

    listed = dict(raw.zrange(k.unsuccessful, 0, -1, withscores=True))
    assert listed == {rid: float(rec.created_ms) for rid, rec in ended.items()}

    everything = rows(client, None)
    for statuses in ({"failed"}, {"expired", "cancelled"}, {"failed", "expired", "cancelled"}):
        before = hmgets(raw)
        got = rows(client, statuses)
        read = hmgets(raw) - before
        assert got == [r for r in everything if r[5] in statuses], statuses
        assert read == len(listed), (statuses, read)  # only the listed records were read
    before = hmgets(raw)
    assert len(rows(client, {"completed"})) == 200
    assert hmgets(raw) - before == 205  # a filter with a common status reads every record


def test_a_retried_request_that_then_completes_is_not_shown_as_failed(
    client: Client, raw: Any, start_worker: Callable[..., Worker]
) -> None:
    """The index may still list a request that was retried since (``requeue``): the view
    checks each record's status, so it shows it as what it is now."""
    k = client.async_client.keys()
    start_worker(flaky)
    h = client.submit("boom once")
    with contextlib.suppress(RtqError):
        h.result()
    assert raw.zscore(k.unsuccessful, h.id) is not None
    assert [r[0] for r in rows(client, {"failed"})] == [h.id]
    raw.hset(k.request(h.id), "status", "completed")  # as if a retry had completed it
    assert rows(client, {"failed"}) == []
