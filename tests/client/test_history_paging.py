"""History reads page by score (keyset), not by offset: every record exactly once, newest
first, across pages that end inside a run of equal creation times; a filter that reads the
whole history reads it one page at a time."""

from __future__ import annotations

from typing import Any

import pytest

from rtq_nb import Client
from rtq_nb.client import inspect
from rtq_nb.loop import portal


def _records(client: Client, scores: list[int]) -> list[str]:
    """Records ``p-<i>`` (copies of a real pending one, every 5th marked failed), each in
    the history zset at ``scores[i]`` (the failed ones in the unsuccessful history too);
    their ids, newest first as the view orders them."""
    ac = client.async_client
    h = client.submit("x" * 100)
    k = ac.keys()
    flat = portal().call(ac.conn.call("HGETALL", k.request(h.id)))
    rec = dict(zip(flat[::2], flat[1::2], strict=True))
    cmds: list[Any] = [("ZREM", k.history, h.id)]
    for i, score in enumerate(scores):
        rid = f"p-{i:04d}"
        fields = {**rec, "id": rid, "created_ms": str(score)}
        fields["status"] = "failed" if i % 5 == 0 else rec["status"]
        cmds += [
            ("HSET", k.request(rid), *[x for kv in fields.items() for x in kv]),
            ("ZADD", k.history, score, rid),
        ]
        if fields["status"] == "failed":  # what the scripts do when a request fails
            cmds.append(("ZADD", k.unsuccessful, score, rid))
    portal().call(ac.conn.pipeline(cmds))
    return [f"p-{i:04d}" for i in sorted(range(len(scores)), key=lambda i: (-scores[i], -i))]


@pytest.mark.parametrize("page", [1, 3, 7, 1000])
def test_pages_end_inside_runs_of_equal_scores(
    client: Client, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    monkeypatch.setattr(inspect, "PAGE", page)
    scores = [1000 + i // 4 for i in range(40)] + [999] * 9 + [5000]  # runs of 4, of 9, alone
    want = _records(client, scores)
    rows = portal().call(client.async_client.history_rows([client.queue], limit=10_000))
    assert [r[0] for r in rows] == want  # each once, newest first (ZREVRANGE's tie order)
    failed = portal().call(
        client.async_client.history_rows(
            [client.queue], statuses=frozenset({"failed"}), limit=10_000
        )
    )
    assert [r[0] for r in failed] == [r for r in want if int(r[2:]) % 5 == 0]
    top = portal().call(client.async_client.history_rows([client.queue], limit=5))
    assert [r[0] for r in top] == want[:5]
    ranged = portal().call(
        client.async_client.history_rows([client.queue], since_ms=1002, until_ms=1005, limit=99)
    )
    assert [r[0] for r in ranged] == [
        r for r, s in zip(want, sorted(scores, reverse=True), strict=True) if 1002 <= s <= 1005
    ]


def test_a_deep_scan_reads_one_page_at_a_time(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ZREVRANGEBYSCORE of every page starts at its score, with a small skip: no page
    walks past the records before it (an offset would grow with the depth)."""
    monkeypatch.setattr(inspect, "PAGE", 10)
    _records(client, [2000 + i for i in range(95)])
    sent: list[tuple[Any, ...]] = []
    conn = client.async_client.reads
    real = conn.call

    async def spy(*args: Any) -> Any:
        sent.append(args)
        return await real(*args)

    monkeypatch.setattr(conn, "call", spy)
    pending = portal().call(  # (a filter to failed would read the unsuccessful history)
        client.async_client.history_rows([client.queue], statuses=frozenset({"pending"}))
    )
    assert len(pending) == 76
    pages = [a for a in sent if a[0] == "ZREVRANGEBYSCORE"]
    assert len(pages) == 10
    assert all(a[-2] <= 1 and a[-1] == 10 for a in pages), pages  # skip <= 1, PAGE ids
