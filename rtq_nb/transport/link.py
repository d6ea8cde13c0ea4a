"""A lean asyncio RESP2 link for the hot path: an ``asyncio.Protocol`` feeding hiredis.

redis-py's asyncio connection reads through a ``StreamReader`` and several layers of parser
objects per reply; on a small machine that costs about a third of a local round trip's CPU.
This link writes packed commands and hands back raw RESP2 replies straight from hiredis: a
reply wakes the waiting task once, nothing else. Error replies are exception objects in the
reply list (built by :func:`~rtq_nb.transport.errors.reply_error`); mapping them is the
caller's (:class:`~rtq_nb.transport.aio.Conn`).
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Callable
from typing import Any

import hiredis
from redis import exceptions as rex

from rtq_nb.transport.endpoint import Endpoint
from rtq_nb.transport.errors import reply_error
from rtq_nb.transport.resp import pack

__all__ = ["Link", "OnHead", "check_hello", "keep_idle", "open_link"]

OnHead = Callable[[list[Any]], None]


class _Waiter:
    __slots__ = ("fut", "head", "n", "on_head", "replies", "whole")

    def __init__(
        self, fut: asyncio.Future[list[Any]], n: int, head: int, on_head: OnHead | None, whole: bool
    ):
        self.fut, self.n, self.head, self.on_head, self.whole = fut, n, head, on_head, whole
        self.replies: list[Any] = []


class Link(asyncio.Protocol):
    """One connection. The pool in ``aio.Conn`` hands each caller its own link; pipelines
    that never block may also queue on one link (``whole``: each reads all its replies)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace", replyError=reply_error)
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    # ---- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while self._waiters:
            reply = self._reader.gets()
            if reply is False:
                return
            w = self._waiters[0]
            w.replies.append(reply)
            got = len(w.replies)
            if isinstance(reply, Exception) and got < w.n and not w.whole:
                # replies still to come may be a blocking read (EVALSHA + BLPOP): give up on
                # them; Redis forgets a blocked read when its client goes away
                self._finish(w)
                self.close()
                return
            if (
                got == w.head
                and w.on_head is not None
                and not any(isinstance(r, Exception) for r in w.replies)
            ):
                try:
                    w.on_head(w.replies[:])
                except Exception as exc:  # the caller's bug: fail its pipeline
                    self._waiters.popleft()
                    if not w.fut.done():
                        w.fut.set_exception(exc)
                    self.close()
                    return
            if got == w.n:
                self._finish(w)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = rex.ConnectionError(f"connection to Redis lost: {exc or 'closed by the server'}")
        while self._waiters:
            w = self._waiters.popleft()
            if not w.fut.done():
                w.fut.set_exception(err)

    def _finish(self, w: _Waiter) -> None:
        self._waiters.popleft()
        if not w.fut.done():
            w.fut.set_result(w.replies)

    # ---- use ----------------------------------------------------------------------------
    async def request(
        self,
        data: bytes,
        n: int,
        *,
        head: int = 0,
        on_head: OnHead | None = None,
        whole: bool = False,
    ) -> list[Any]:
        """Write ``data`` (``n`` packed commands) and return the replies; error replies are
        exception objects in the list. Fewer than ``n`` replies come back when an error
        reply cut the pipeline short (the link is then closed), unless ``whole``: commands
        that never block, all ``n`` replies read (other pipelines may queue behind them)."""
        if self.closed or self._transport is None:
            raise rex.ConnectionError("connection to Redis is closed")
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(fut, n, head, on_head, whole))
        self._transport.write(data)
        return await fut

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def keep_idle(idle: list[Link], link: Link, cap: int) -> None:
    """Put a link that finished its pipeline back on ``idle`` (taken from its end), keeping at
    most ``cap`` there: the oldest beyond it are closed (see ``Conn._give_back`` for the cap)."""
    if link.closed:
        return
    idle.append(link)
    while len(idle) > cap:
        idle.pop(0).close()


def check_hello(replies: list[Any]) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r


async def open_link(ep: Endpoint, connect_timeout: float = 5.0) -> Link:
    """Connect, authenticate and select the database ``ep`` names. A Sentinel endpoint
    connects to the primary its resolver names, checks its ``ROLE`` in the same round trip,
    and has the link tracked (dropped when the primary changes)."""
    loop = asyncio.get_running_loop()
    host, port, resolver = ep.host, ep.port, ep.sentinel
    if resolver is not None:
        host, port = await resolver.primary(connect_timeout)
    if ep.path:
        conn = loop.create_unix_connection(Link, ep.path)
    else:
        conn = loop.create_connection(Link, host, port, ssl=ep.tls)
    try:
        _, link = await asyncio.wait_for(conn, connect_timeout)
    except (asyncio.TimeoutError, OSError) as exc:
        if resolver is not None:
            resolver.unreachable((host, port))
        if isinstance(exc, asyncio.TimeoutError):
            raise rex.TimeoutError(f"connecting timed out after {connect_timeout} s") from exc
        raise
    hello = ep.hello if resolver is None else [*ep.hello, ("ROLE",)]
    if hello:
        try:
            request = link.request(pack(hello), len(hello))
            replies = await asyncio.wait_for(request, connect_timeout)
            check_hello(replies[: len(ep.hello)])
            if resolver is not None:
                resolver.adopt(link, (host, port), replies[-1], loop)
        except BaseException:
            link.close()
            raise
    return link
