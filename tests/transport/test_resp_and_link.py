"""``rtq_nb.transport.resp``: packing and the link's reply logic, driven byte by byte without Redis
(the link against a real server is covered by test_transport and every other suite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis import exceptions as rex

from rtq_nb.protocol.scripts import Hole
from rtq_nb.transport.errors import reply_error
from rtq_nb.transport.link import Link
from rtq_nb.transport.resp import Packed, Template, pack


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return None


def link() -> tuple[Link, FakeTransport]:
    lk, tr = Link(), FakeTransport()
    lk.connection_made(tr)  # type: ignore[arg-type]
    return lk, tr


def test_template_fill_equals_packing_the_filled_command() -> None:
    tpl = Template(("EVALSHA", "abc", 2, Hole(0, "q:req:"), "q:pending", Hole(0), 7, Hole(1)))
    for rid, body in (("r-1", '"héllo"'), ("", "{}"), ("r" * 300, "[1, 2]")):
        filled = tpl.fill(rid, body)
        assert isinstance(filled, Packed) and filled.n == 1
        want = pack([("EVALSHA", "abc", 2, f"q:req:{rid}", "q:pending", rid, 7, body)])
        assert bytes(filled) == bytes(want)
    # a template goes into a pipeline like any packed command
    both = pack([("PING",), tpl.fill("x", "1")])
    assert both.n == 2 and bytes(both).startswith(b"*1\r\n$4\r\nPING\r\n*8\r\n")


def test_template_refuses_a_value_redis_cannot_take() -> None:
    with pytest.raises(TypeError, match="cannot send"):
        Template(("SET", Hole(0), object()))


def test_pack_matches_resp_and_counts_commands() -> None:
    p = pack([("SET", "k", 1), ("GET", "ké")])
    assert bytes(p) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$3\r\nk\xc3\xa9\r\n"
    )
    assert p.n == 2
    both = pack([p, ("PING",)])  # an already packed block goes in as is
    assert isinstance(both, Packed) and both.n == 3 and bytes(both).startswith(bytes(p))
    assert bytes(pack([("X", 0.25, b"\x00")])) == b"*3\r\n$1\r\nX\r\n$4\r\n0.25\r\n$1\r\n\x00\r\n"


@pytest.mark.parametrize("bad", [None, True, {"a": 1}])
def test_pack_names_a_value_redis_cannot_take(bad: Any) -> None:
    with pytest.raises(TypeError, match=f"cannot send {type(bad).__name__}"):
        pack([("SET", "k", bad)])


def test_error_replies_map_to_redis_py_classes() -> None:
    assert isinstance(reply_error("NOSCRIPT No matching script"), rex.NoScriptError)
    assert isinstance(reply_error("LOADING Redis is loading"), rex.BusyLoadingError)
    assert isinstance(reply_error("WRONGPASS invalid username-password"), rex.AuthenticationError)
    plain = reply_error("ERR unknown command")
    assert type(plain) is rex.ResponseError and str(plain) == "ERR unknown command"


def test_replies_arrive_in_pieces_and_on_head_runs_before_the_rest() -> None:
    async def go() -> None:
        lk, tr = link()
        seen: list[list[Any]] = []
        task = asyncio.ensure_future(lk.request(b"cmds", 3, head=2, on_head=seen.append))
        await asyncio.sleep(0)
        assert tr.written == [b"cmds"]
        lk.data_received(b":1\r\n$2\r\nok")  # one reply and a half
        assert seen == []
        lk.data_received(b"\r\n")  # the second reply completes the head
        assert seen == [[1, "ok"]] and not task.done()
        lk.data_received(b"*2\r\n$1\r\na\r\n$-1\r\n")  # the blocking read's reply, later
        assert await task == [1, "ok", ["a", None]]
        assert seen == [[1, "ok"]] and not tr.closed

    asyncio.run(go())


def test_an_error_ahead_of_pending_replies_ends_the_request_and_closes() -> None:
    """EVALSHA submit + BLPOP: a NOSCRIPT reply must not wait behind the blocked read."""

    async def go() -> None:
        lk, tr = link()
        seen: list[Any] = []
        task = asyncio.ensure_future(lk.request(b"x", 2, head=1, on_head=seen.append))
        await asyncio.sleep(0)
        lk.data_received(b"-NOSCRIPT No matching script\r\n")
        replies = await task
        assert len(replies) == 1 and isinstance(replies[0], rex.NoScriptError)
        assert tr.closed and lk.closed and seen == []  # on_head never sees an error
        with pytest.raises(rex.ConnectionError):
            await lk.request(b"y", 1)

    asyncio.run(go())


def test_a_lost_connection_fails_the_waiting_request() -> None:
    async def go() -> None:
        lk, _ = link()
        task = asyncio.ensure_future(lk.request(b"x", 1))
        await asyncio.sleep(0)
        lk.connection_lost(None)
        with pytest.raises(rex.ConnectionError, match="closed by the server"):
            await task

    asyncio.run(go())


def test_a_failing_on_head_fails_its_request_and_drops_the_link() -> None:
    async def go() -> None:
        lk, tr = link()

        def boom(_: list[Any]) -> None:
            raise ValueError("settle bug")

        task = asyncio.ensure_future(lk.request(b"x", 2, head=1, on_head=boom))
        await asyncio.sleep(0)
        lk.data_received(b":1\r\n")
        with pytest.raises(ValueError, match="settle bug"):
            await task
        assert tr.closed

    asyncio.run(go())


def test_owned_loops_use_uvloop_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    from rtq_nb.loop import LOOP_ENV, new_loop, run

    async def kind() -> str:
        return type(asyncio.get_running_loop()).__module__

    monkeypatch.delenv(LOOP_ENV, raising=False)
    loop = new_loop()
    assert isinstance(loop, uvloop.Loop)
    loop.close()
    assert run(kind()).startswith("uvloop")
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert run(kind()).startswith("asyncio")


def test_many_concurrent_blocking_reads_reuse_their_links(url: str, raw: Any) -> None:
    """300 stream reads blocked at once on one Conn (max_idle 64), three rounds: the pool keeps
    as many links as were in flight at its busiest moment (for 30 s), so later rounds open no
    connection (before: 236 closed and reopened each round; 10,000 streams read at once
    churned their connections on every read)."""
    from rtq_nb.transport.aio import Conn

    n = 300

    async def rounds() -> list[int]:
        conn = Conn(url)
        opened = []
        try:
            for _ in range(3):
                before = int(raw.info("stats")["total_connections_received"])
                reads = [
                    conn.pipeline([("XREAD", "BLOCK", 100, "STREAMS", f"no-such-stream-{i}", "$")])
                    for i in range(n)
                ]
                assert await asyncio.gather(*reads) == [[None]] * n  # each blocked, timed out
                opened.append(int(raw.info("stats")["total_connections_received"]) - before)
            assert len(conn._idle) <= n
        finally:
            await conn.aclose()
        return opened

    opened = asyncio.run(rounds())
    assert opened[0] >= n - 64 and opened[1:] == [0, 0], opened


def test_keep_idle_closes_the_oldest_beyond_its_cap() -> None:
    from rtq_nb.transport.link import keep_idle

    links = [Link() for _ in range(5)]
    idle: list[Link] = []
    for link in links:
        keep_idle(idle, link, 3)
    assert idle == links[2:] and all(x.closed for x in links[:2])
    gone = Link()
    gone.closed = True
    keep_idle(idle, gone, 10)  # a closed link is never pooled
    assert gone not in idle
