"""Pipelines that never block share one link when no pooled link is free
(``Conn.shared_pipeline``), against a real redis-server: a burst takes one connection, each
pipeline gets its own replies, and an error or a cancellation in one leaves the others whole."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rtq_nb.errors import RtqError
from rtq_nb.transport.aio import Conn

SLOW = "local i = 0 while i < 2000000 do i = i + 1 end return 'slow'"  # holds Redis a while


def opened(raw: Any) -> int:
    return int(raw.info("stats")["total_connections_received"])


def on_conn(url: str, body: Callable[[Conn], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        conn = Conn(url)
        try:
            await conn.pipeline([("PING",)])  # scripts loaded; one idle link
            return await body(conn)
        finally:
            await conn.aclose()

    return asyncio.run(main())


def test_a_burst_takes_one_shared_link_and_each_gets_its_replies(
    url: str, prefix: str, raw: Any
) -> None:
    n = 500

    async def body(conn: Conn) -> tuple[list[Any], int]:
        before = opened(raw)
        calls = [
            conn.shared_pipeline([("INCR", f"{prefix}:c{i}"), ("ECHO", f"v{i}")]) for i in range(n)
        ]
        got = await asyncio.gather(*calls)
        return got, opened(raw) - before

    got, new = on_conn(url, body)
    assert got == [[1, f"v{i}"] for i in range(n)]
    assert new <= 1, new  # the first took the idle link; the others shared one new link
    # the same burst as plain pipelines opens a connection for each one in flight
    plain = on_conn(
        url,
        lambda conn: asyncio.gather(*(conn.pipeline([("ECHO", i)]) for i in range(n))),
    )
    assert plain == [[str(i)] for i in range(n)]


def test_an_error_reply_fails_only_its_own_pipeline(url: str, prefix: str, raw: Any) -> None:
    raw.set(f"{prefix}:text", "not a number")

    async def body(conn: Conn) -> tuple[list[Any], int]:
        before = opened(raw)
        calls = [
            conn.shared_pipeline([("ECHO", "a"), ("INCR", f"{prefix}:text"), ("ECHO", "b")]),
            conn.shared_pipeline([("ECHO", "c"), ("INCR", f"{prefix}:n")]),
            conn.shared_pipeline([("ECHO", "d")]),
        ]
        got = await asyncio.gather(*calls, return_exceptions=True)
        after = await conn.shared_pipeline([("ECHO", "e")])  # the shared link still serves
        return [*got, after], opened(raw) - before

    (bad, *good), new = on_conn(url, body)
    assert isinstance(bad, RtqError) and "not an integer" in str(bad)
    assert good == [["c", 1], ["d"], ["e"]]
    assert new <= 1, new


def test_a_cancelled_pipeline_leaves_the_others_aligned(url: str, prefix: str) -> None:
    async def body(conn: Conn) -> tuple[Any, Any]:
        while conn._idle:  # the warm-up link: every call now shares
            conn._idle.pop().close()
        slow = asyncio.ensure_future(conn.shared_pipeline([("EVAL", SLOW, 0)]))
        gone = asyncio.ensure_future(conn.shared_pipeline([("ECHO", "gone")]))
        kept = asyncio.ensure_future(conn.shared_pipeline([("INCR", f"{prefix}:k")]))
        while True:  # until all three are written on the shared link (a loop turn each)
            if conn._shared is not None and conn._shared.done() and len(waiting(conn)) == 3:
                break
            await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await slow, await kept

    assert on_conn(url, body) == (["slow"], [1])


def waiting(conn: Conn) -> Any:
    assert conn._shared is not None
    return conn._shared.result()._waiters


def test_closing_while_the_shared_link_opens_closes_it_once_open(url: str) -> None:
    async def main() -> bool:
        conn = Conn(url)
        await conn.pipeline([("PING",)])
        while conn._idle:
            conn._idle.pop().close()
        call = asyncio.ensure_future(conn.shared_pipeline([("PING",)]))
        await asyncio.sleep(0)  # one loop turn: the call has started opening the shared link
        opening = conn._shared
        assert opening is not None and not opening.done()
        await conn.aclose()
        link = await opening  # (aclose's callback, added first, has closed it by now)
        with contextlib.suppress(RtqError):
            await call
        return link.closed

    assert asyncio.run(main())


def test_a_fresh_burst_waits_for_one_script_load(url: str, prefix: str, raw: Any) -> None:
    """The scripts are loaded once, by one round trip every pipeline of a burst waits for:
    no ``EVALSHA`` reaches Redis ahead of it (none fails with NOSCRIPT), five times over."""
    from rtq_nb.protocol import scripts
    from rtq_nb.protocol.keys import Keys

    k = Keys(prefix, "default")
    extend = scripts.extend(k, "no-such-request", extra_ms=1000)

    async def burst() -> list[Any]:
        conn = Conn(url)
        try:
            return await asyncio.gather(*(conn.shared_pipeline([extend]) for _ in range(50)))
        finally:
            await conn.aclose()

    for _ in range(5):
        raw.script_flush()
        loads = script_loads(raw)
        assert asyncio.run(burst()) == [[""]] * 50  # EXTEND of no record: ''
        assert script_loads(raw) - loads == len(scripts.ALL)


def script_loads(raw: Any) -> int:
    stats = raw.info("commandstats")  # Redis 7 counts SCRIPT LOAD apart; 6.2 all of SCRIPT
    return int(stats.get("cmdstat_script|load", stats.get("cmdstat_script", {})).get("calls", 0))


def test_a_fresh_clients_burst_of_submissions_takes_two_connections(
    url: str, prefix: str, raw: Any
) -> None:
    """300 submissions at once from a new AsyncClient: one detection (``INFO cluster``), one
    script load and one layout read that all of them wait for, on one link; then the
    submissions on it and on the shared link."""
    from rtq_nb import AsyncClient

    def info_calls() -> int:
        return int(raw.info("commandstats").get("cmdstat_info", {}).get("calls", 0))

    async def main() -> int:
        async with AsyncClient(url, prefix=prefix) as c:
            handles = await asyncio.gather(*(c.submit(i) for i in range(300)))
            assert len({h.id for h in handles}) == 300
            return await c.pending_count()

    before = opened(raw)
    infos = info_calls()
    assert asyncio.run(main()) == 300
    infos = info_calls() - infos - 1  # (less the first reading's own INFO)
    assert opened(raw) - before <= 2, opened(raw) - before
    assert infos == 1, infos


def test_a_reset_during_the_script_load_is_not_lost(url: str) -> None:
    """A NOSCRIPT reply or a Sentinel failover resets the scripts while a load is in flight:
    the load does not count, the next pipeline loads them again."""

    async def main() -> tuple[bool, bool]:
        conn = Conn(url)
        try:
            load = asyncio.ensure_future(conn._load())
            await asyncio.sleep(0)  # one loop turn: the single-flight task is made
            await asyncio.sleep(0)  # another: it has started its round trip
            conn._forget_scripts()
            await load
            raced = conn._loaded
            await conn.pipeline([("PING",)])
            return raced, conn._loaded
        finally:
            await conn.aclose()

    assert asyncio.run(main()) == (False, True)


def test_aclose_ends_a_load_in_flight_and_pools_nothing_after(url: str) -> None:
    async def main() -> list[Any]:
        conn = Conn(url)
        call = asyncio.ensure_future(conn.pipeline([("PING",)]))
        await asyncio.sleep(0)  # the call waits for the load
        await asyncio.sleep(0)  # the load has started
        await conn.aclose()
        with contextlib.suppress(asyncio.CancelledError, RtqError):
            await call
        return conn._idle

    assert asyncio.run(main()) == []


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_conn_left_mid_load_on_a_closed_loop_works_on_the_next(url: str) -> None:
    """A loop closed without cancelling its tasks leaves the single-flight task pending on
    it forever: the next loop starts a task of its own instead of waiting on that one."""
    conn = Conn(url)
    dead = asyncio.new_event_loop()
    left = dead.create_task(conn.pipeline([("PING",)]))
    dead.run_until_complete(asyncio.sleep(0))  # the load is under way, on that loop
    dead.close()
    assert not left.done()

    async def main() -> list[Any]:
        try:
            return await conn.pipeline([("ECHO", "alive")])
        finally:
            await conn.aclose()

    assert asyncio.run(main()) == ["alive"]
    del left, dead
    gc.collect()  # the dead loop's pending task complains here, in this test (ignored)
