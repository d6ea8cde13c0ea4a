"""The stream API (openai-python's shape): ``stream()`` submits when called; deltas, events
(delta, usage, done), a live text snapshot, ``final()`` with text, usage and timings; a
``with`` block left early cancels the request; sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtq_nb import AsyncClient, Client, Request, Status, Usage, Worker
from rtq_nb.errors import ConfigurationError
from tests.conftest import wait_until


def words(request: Request) -> Iterator[str]:
    text = str(request.input).split()
    request.usage = Usage(prompt_tokens=1, completion_tokens=len(text))
    for w in text:
        yield w + " "


def endless(request: Request) -> Iterator[str]:
    i = 0
    while not request.cancelled:
        i += 1
        yield f"t{i} "
        import time

        time.sleep(0.01)


def test_stream_submits_when_called(
    client: Client, start_worker: Callable[..., Worker], raw: Any
) -> None:
    s = client.stream("a b c")  # no worker yet: it stays pending, but it is in Redis
    wait_until(lambda: raw.exists(s.handle.keys.request(s.id)), what="submitted")
    assert client.get(s.id).status is Status.PENDING
    with pytest.raises(ConfigurationError, match="priority"):
        client.stream("x", priority=5000)  # bad arguments raise at the call
    start_worker(words)
    assert "".join(s) == "a b c "


def test_events_snapshot_and_final(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(words, flush_interval=0)
    s = client.stream("one two three")
    events = list(s.events())
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["usage", "done"] and set(kinds[:-2]) == {"delta"}
    deltas = [e.text for e in events if e.type == "delta"]
    assert "".join(deltas) == "one two three " == events[-3].snapshot == s.text
    result = events[-1].result
    assert result is not None and result.text == "one two three " and result.pieces == 3
    assert result.usage == Usage(1, 3) and result.status is Status.COMPLETED
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.duration_s
    assert s.final() is result  # cached
    again = client.stream("x y").final()
    assert again.text == "x y " and again.record is not None and again.record.worker


def test_leaving_a_with_block_cancels(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(endless, heartbeat=0.5, lease=2.0)
    with client.stream("go") as s:
        first = next(s)
        assert first.startswith("t1")
    rec = wait_until(lambda: r if (r := client.get(s.id)).status.terminal else None, what="ended")
    assert rec.status is Status.CANCELLED


def test_async_stream(url: str, prefix: str, start_worker: Callable[..., Worker]) -> None:
    start_worker(words)

    async def main() -> tuple[str, str, Any]:
        async with AsyncClient(url, prefix=prefix, timeout=30) as c:
            got = "".join([d async for d in c.stream("p q")])
            s = c.stream("r s t")
            kinds = [e.type async for e in s.events()]
            final = await s.final()
            assert kinds[-1] == "done" and final.usage == Usage(1, 3)
            return got, final.text, s.text

    got, text, snap = asyncio.run(main())
    assert got == "p q " and text == "r s t " == snap
