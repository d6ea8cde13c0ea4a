"""Stream lanes: many concurrently read async streams share few Redis connections
(``rtq_nb.client.stream_lanes``), against a real redis-server and real worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rtq_nb import AsyncClient, Worker
from rtq_nb.client import stream_lanes
from rtq_nb.demo import fake_answer, fake_llm
from rtq_nb.transport.embedded import EmbeddedRedis
from tests.security.acl_server import AclServer, acl_server

Start = Callable[..., subprocess.Popen[bytes]]
HANDLER = "rtq_nb.demo:fake_llm"


def tcp_clients(raw: Any) -> int:
    """Connections over TCP: the client's (workers and ``raw`` use the unix socket)."""
    return sum(1 for c in raw.client_list() if not c["addr"].startswith("/"))


def lane_ids(c: AsyncClient) -> list[int]:
    lanes = c.stream_lanes()
    assert lanes is not None
    return [lane.client_id for lane in lanes.lanes if lane.client_id is not None]


async def read_all(c: AsyncClient, prompt: str, tokens: int, rate: float) -> str:
    async with c.stream(prompt, params={"tokens": tokens, "rate": rate}) as s:  # cancels if left
        async for _ in s:
            pass
        return s.text


async def until(cond: Callable[[], Any]) -> Any:
    """Poll a lane's state (no event to wait on from outside) until ``cond`` holds."""
    while True:
        if got := cond():
            return got
        await asyncio.sleep(0.005)


def expected(prompt: str, tokens: int) -> str:
    return "".join(fake_answer(prompt, tokens))


async def ready(c: AsyncClient) -> None:
    """Wait for the worker process to serve (a first stream)."""
    await read_all(c, "warm", 2, 0)


def test_many_streams_few_connections(
    redis_server: EmbeddedRedis, prefix: str, raw: Any, worker_process: Start
) -> None:
    """300 streams open at once (started over 1.5 s, 3 s each), read by one AsyncClient over
    TCP: a few lanes and the pool's links, not one connection per stream."""
    n, tokens, rate = 300, 30, 10.0
    worker_process(HANDLER, "--concurrency", str(n))

    async def main() -> tuple[list[str], int, int]:
        async with AsyncClient(redis_server.tcp_url, prefix=prefix, timeout=60) as c:
            await ready(c)

            async def one(i: int) -> str:
                await asyncio.sleep(1.5 * i / n)
                return await read_all(c, f"p{i}", tokens, rate)

            tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
            peak, most = 0, 0
            while not all(t.done() for t in tasks):
                peak = max(peak, await asyncio.to_thread(tcp_clients, raw))
                lanes = c.stream_lanes()
                most = max(most, sum(len(x.readers) for x in lanes.lanes) if lanes else 0)
                await asyncio.sleep(0.05)
            return [t.result() for t in tasks], peak, most

    texts, peak, most = asyncio.run(main())
    print(f"\n{n} streams: the client's connections at peak {peak}; {most} in lanes at once")
    assert texts == [expected(f"p{i}", tokens) for i in range(n)]
    assert most > n // 2  # most streams were open together, in lanes
    # the lanes (n / LANE_KEYS, rounded up) and the pool: the first reads (pipelined with the
    # submissions, until a first chunk), kicks, idle links
    assert peak <= -(-n // stream_lanes.LANE_KEYS) + 50, peak


def test_streams_opened_in_one_instant_take_few_connections(
    redis_server: EmbeddedRedis, prefix: str, raw: Any, worker_process: Start
) -> None:
    """300 streams opened in the same instant by one AsyncClient over TCP: the first
    ``DIRECT_FIRST`` block on links of their own; the others are submitted on one shared
    link with a read that does not block, and read through lanes from their first chunk
    (before: one connection per stream until its first chunk, ~300 at peak)."""
    n, tokens, rate = 300, 20, 10.0
    worker_process(HANDLER, "--concurrency", str(n))

    async def main() -> tuple[list[str], int]:
        async with AsyncClient(redis_server.tcp_url, prefix=prefix, timeout=60) as c:
            await ready(c)
            tasks = [asyncio.ensure_future(read_all(c, f"b{i}", tokens, rate)) for i in range(n)]
            peak = 0
            while not all(t.done() for t in tasks):
                peak = max(peak, await asyncio.to_thread(tcp_clients, raw))
                await asyncio.sleep(0.05)
            return [t.result() for t in tasks], peak

    texts, peak = asyncio.run(main())
    print(f"\n{n} streams opened at once: the client's connections at peak {peak}")
    assert texts == [expected(f"b{i}", tokens) for i in range(n)]
    lanes = -(-n // stream_lanes.LANE_KEYS)
    assert peak <= lanes + stream_lanes.DIRECT_FIRST + 16, peak  # + shared link, kicks, idle


def test_lane_killed_mid_stream(url: str, prefix: str, raw: Any, worker_process: Start):
    n, tokens, rate = 40, 40, 20.0
    worker_process(HANDLER, "--concurrency", str(n))

    async def main() -> tuple[list[str], list[int]]:
        async with AsyncClient(url, prefix=prefix, timeout=60) as c:
            await ready(c)
            tasks = [asyncio.ensure_future(read_all(c, f"k{i}", tokens, rate)) for i in range(n)]

            def delivering() -> list[int]:  # lanes up, chunks handed out through them
                lanes = c.stream_lanes()
                readers = [r for x in lanes.lanes for r in x.readers.values()] if lanes else []
                return lane_ids(c) if any(r.handed for r in readers) else []

            ids = await until(delivering)
            for cid in ids:
                assert raw.execute_command("CLIENT", "KILL", "ID", cid) == 1
            assert not any(t.done() for t in tasks)  # mid-stream
            texts = list(await asyncio.gather(*tasks))
            assert not set(ids) & set(lane_ids(c))  # the killed lanes are gone
            return texts, ids

    texts, ids = asyncio.run(main())
    assert ids
    assert texts == [expected(f"k{i}", tokens) for i in range(n)]


async def read_slowly(c: AsyncClient, prompt: str, tokens: int, rate: float) -> str:
    """A reader slower than its stream: its lane buffers past BUFFER_CAP (backpressure)."""
    async with c.stream(prompt, params={"tokens": tokens, "rate": rate}) as s:
        while True:
            if await s.next_batch() is None:
                return s.text
            await asyncio.sleep(0.05)  # the consumer's own pace (not a synchronisation)


@pytest.mark.parametrize("case", ["joins", "drains"])
def test_a_blocked_lane_is_kicked(
    url: str,
    prefix: str,
    raw: Any,
    worker_process: Start,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
):
    """A reader joining a lane whose XREAD is blocked on other streams ("joins"), or a reader
    draining a buffer its lane had stopped reading for ("drains"), wakes the lane at once."""
    # a lane's XREAD blocks for longer than the test's timeout: a missed kick fails it
    monkeypatch.setattr(stream_lanes, "LANE_BLOCK_MS", 600_000)
    reader = read_all
    if case == "drains":
        monkeypatch.setattr(stream_lanes, "BUFFER_CAP", 2)
        reader = read_slowly
    worker_process(HANDLER, "--concurrency", "8", "--flush-ms", "5")

    async def main() -> tuple[str, list[str]]:
        async with AsyncClient(url, prefix=prefix, timeout=300, reap_interval=0.3) as c:
            await ready(c)
            # slow streams (a token per 100 s): after their first (direct) read's slice they
            # wait in a lane, whose XREAD blocks (the readers' slices end, the XREAD does not)
            slow = [asyncio.ensure_future(read_all(c, f"s{i}", 3, 0.01)) for i in range(3)]
            lane = (await until(lambda: lane_ids(c) and c.stream_lanes())).lanes[0]
            await until(lambda: len(lane.readers) == 3 and lane.in_flight)  # XREAD blocked
            order: list[str] = []
            # a missed kick: its lane reads end with their slices, forever (wait_for fails)
            fast = await asyncio.wait_for(reader(c, "fast", 20, 50), 60)
            order.append("fast done")
            order += ["slow pending" for t in slow if not t.done()]
            for t in slow:
                t.cancel()
            await asyncio.gather(*slow, return_exceptions=True)
            return fast, order

    fast, order = asyncio.run(main())
    assert fast == expected("fast", 20)
    assert order == ["fast done", "slow pending", "slow pending", "slow pending"]


@pytest.fixture(scope="module")
def acl_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    yield from acl_server(tmp_path_factory.mktemp("acl"))


@pytest.mark.parametrize("refused", [None, "client|unblock", "client|id"])
def test_acl_client_role_with_and_without_lanes(acl_srv: AclServer, refused: str | None) -> None:
    """The client role reads streams through lanes with no ACL refusal; a user without
    ``CLIENT UNBLOCK`` (or ``CLIENT ID``) still reads every stream (lanes turn themselves off)."""
    q = f"lanes{uuid.uuid4().hex[:6]}"
    worker, client = acl_srv.user("worker", queue=q), acl_srv.user("client", queue=q)
    if refused is not None:
        acl_srv.apply([["ACL", "SETUSER", client.name, f"-{refused}"]])
    acl_srv.admin.acl_log_reset()
    lanes_opened = acl_srv.calls("client|id")

    async def main() -> tuple[list[str], bool]:
        async with AsyncClient(client.url, queue=q, timeout=60, reap_interval=0.2) as c:
            texts = await asyncio.gather(*(read_all(c, f"a{i}", 12, 20) for i in range(6)))
            lanes = c.stream_lanes()
            assert lanes is not None
            return list(texts), lanes.disabled

    with Worker(fake_llm, worker.url, queue=q, concurrency=8):
        texts, disabled = asyncio.run(main())
    assert texts == [expected(f"a{i}", 12) for i in range(6)]
    assert disabled is (refused is not None)
    assert acl_srv.calls("client|id") > lanes_opened or refused == "client|id"
    denied = acl_srv.denials(client)
    assert not denied if refused is None else {d["object"] for d in denied} <= {refused}, denied
