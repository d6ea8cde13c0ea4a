"""A lean asyncio RESP2 link for the hot path: an ``asyncio.Protocol`` feeding hiredis.

redis-py's asyncio connection reads through a ``StreamReader`` and several layers of
parser objects per reply; on a small machine that costs about a third of a local round
trip's CPU. This link writes packed commands (``_redis.pack``) and hands back raw RESP2
replies straight from hiredis: a reply wakes the waiting task once, nothing else.

Only transport lives here. Connection options come from redis-py's own URL parser, so a
``redis://``, ``rediss://`` or ``unix://`` URL means the same thing as everywhere else; errors
are redis-py exception classes, mapped to rtq_nb's by ``_redis.map_error``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
from redis import exceptions as rex
from redis.connection import parse_url

OnHead = Callable[[list[Any]], None]


# ---- encoding ---------------------------------------------------------------------------
def _arg(a: Any) -> bytes:
    t = type(a)
    if t is str:
        return a.encode()  # type: ignore[no-any-return]
    if t is int:
        return b"%d" % a
    if t is bytes:
        return a  # type: ignore[no-any-return]
    if t is float:
        return repr(a).encode()
    raise TypeError(f"cannot send {type(a).__name__} to Redis: {a!r}")


def _pack_python(cmd: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(cmd)]
    for a in cmd:
        b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def _pack_command(cmd: tuple[Any, ...]) -> bytes:
    return hiredis.pack_command(cmd if type(cmd) is tuple else tuple(cmd))  # type: ignore[no-any-return]


class Packed(bytes):
    """Commands already RESP-encoded by :func:`pack`; ``n`` is how many (replies to read)."""

    n: int


Command = tuple[Any, ...] | Packed


def pack(commands: Sequence[Command]) -> Packed:
    """RESP2-encode commands (tuples of str/bytes/int/float) into one buffer. A
    :class:`Packed` item is inserted as is (constant commands are packed once, reused).
    Each command is encoded by hiredis (C); a value of another type raises TypeError."""
    out: list[bytes] = []
    n = 0
    for cmd in commands:
        if isinstance(cmd, Packed):
            out.append(cmd)
            n += cmd.n
            continue
        n += 1
        try:
            out.append(_pack_command(cmd))
        except TypeError:
            out.append(_pack_python(cmd))  # names the offending value, or raises
    packed = Packed(b"".join(out))
    packed.n = n
    return packed


class Hole:
    """A variable argument of a :class:`Template`: ``prefix`` + ``values[index]``."""

    __slots__ = ("index", "prefix")

    def __init__(self, index: int, prefix: str = "") -> None:
        self.index, self.prefix = index, prefix.encode()


class Template:
    """One command whose arguments are constant but for a few :class:`Hole` s, RESP-encoded
    once. :meth:`fill` splices the values in: a hot command (a client's submit) is not
    re-encoded argument by argument on every call."""

    __slots__ = ("_holes", "_parts")

    def __init__(self, cmd: Sequence[Any]) -> None:
        self._parts: list[bytes] = []  # constant runs around the holes (len = holes + 1)
        self._holes: list[Hole] = []
        run = [b"*%d\r\n" % len(cmd)]
        for a in cmd:
            if isinstance(a, Hole):
                self._parts.append(b"".join(run))
                self._holes.append(a)
                run = []
            else:
                b = _arg(a)
                run.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self._parts.append(b"".join(run))

    def fill(self, *values: str) -> Packed:
        """The packed command with each hole's value (str) in place."""
        parts = self._parts
        out = [parts[0]]
        for i, hole in enumerate(self._holes, 1):
            b = hole.prefix + values[hole.index].encode()
            out.append(b"$%d\r\n%b\r\n%b" % (len(b), b, parts[i]))
        packed = Packed(b"".join(out))
        packed.n = 1
        return packed


# ---- replies ----------------------------------------------------------------------------

_ERRORS: tuple[tuple[str, type[rex.RedisError]], ...] = (
    ("NOSCRIPT", rex.NoScriptError),
    ("LOADING", rex.BusyLoadingError),  # a restarting server: a connection-level error
    ("NOAUTH", rex.AuthenticationError),
    ("WRONGPASS", rex.AuthenticationError),
    ("READONLY", rex.ReadOnlyError),
)


def reply_error(message: str) -> rex.RedisError:
    """The redis-py exception for an error reply (hiredis builds it while parsing)."""
    for prefix, cls in _ERRORS:
        if message.startswith(prefix):
            return cls(message)
    return rex.ResponseError(message)


class _Waiter:
    __slots__ = ("fut", "head", "n", "on_head", "replies")

    def __init__(self, fut: asyncio.Future[list[Any]], n: int, head: int, on_head: OnHead | None):
        self.fut, self.n, self.head, self.on_head = fut, n, head, on_head
        self.replies: list[Any] = []


class Link(asyncio.Protocol):
    """One connection; one pipeline in flight at a time (the pool in ``_redis.Conn``
    hands each caller its own link)."""

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
            if isinstance(reply, Exception) and got < w.n:
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
        self, data: bytes, n: int, *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        """Write ``data`` (``n`` packed commands) and return the replies; error replies are
        exception objects in the list. Fewer than ``n`` replies come back when an error
        reply cut the pipeline short (the link is then closed)."""
        if self.closed or self._transport is None:
            raise rex.ConnectionError("connection to Redis is closed")
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(fut, n, head, on_head))
        self._transport.write(data)
        return await fut

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _ssl_context(kw: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
    reqs = kw.get("ssl_cert_reqs", "required")
    reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(str(reqs), reqs)
    if reqs in (ssl.CERT_NONE, ssl.CERT_OPTIONAL) or kw.get("ssl_check_hostname") is False:
        ctx.check_hostname = False
    if reqs in (ssl.CERT_NONE, ssl.CERT_OPTIONAL):
        ctx.verify_mode = reqs
    if kw.get("ssl_certfile"):
        ctx.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
    return ctx


class Endpoint:
    """Where and how to connect, from a Redis URL (parsed by redis-py's own parser)."""

    def __init__(self, url: str) -> None:
        kw: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.path: str | None = kw.get("path")
        self.host = str(kw.get("host", "localhost"))
        self.port = int(kw.get("port", 6379))
        tls_class = getattr(kw.get("connection_class"), "__name__", "")
        self.tls = _ssl_context(kw) if "SSL" in tls_class else None
        self.hello: list[tuple[Any, ...]] = []  # sent once, right after connecting
        if kw.get("password"):
            user = kw.get("username")
            self.hello.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if int(kw.get("db") or 0):
            self.hello.append(("SELECT", int(kw["db"])))


def check_hello(replies: list[Any]) -> None:
    for r in replies:
        if isinstance(r, Exception):
            raise r


async def open_link(url: str, connect_timeout: float = 5.0) -> Link:
    """Connect, authenticate and select the database named by ``url``."""
    ep = Endpoint(url)
    loop = asyncio.get_running_loop()
    if ep.path:
        conn = loop.create_unix_connection(Link, ep.path)
    else:
        conn = loop.create_connection(Link, ep.host, ep.port, ssl=ep.tls)
    try:
        _, link = await asyncio.wait_for(conn, connect_timeout)
    except asyncio.TimeoutError as exc:
        raise rex.TimeoutError(f"connecting timed out after {connect_timeout} s") from exc
    if ep.hello:
        try:
            hello = link.request(pack(ep.hello), len(ep.hello))
            check_hello(await asyncio.wait_for(hello, connect_timeout))
        except BaseException:
            link.close()
            raise
    return link
