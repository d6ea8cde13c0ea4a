"""A small synchronous transport for the sync facade's hottest call (``Client.call``).

It only moves bytes: the commands come from the client's I/O-free prepare step
(``AsyncClient.prepare``) and the reply is interpreted by the handle (``accept_envelope``).
Anything that is not the common case (a wait longer than one slice, a timeout, a dropped
connection) goes back to the async core on rtq_nb's loop thread. What it saves is the thread
hop and the event-loop turns of a sync call, and
redis-py's per-call pool checks (a poll of the socket each time): a blocking socket and a
hiredis reader, nothing else (see README, Performance).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Sequence
from typing import Any

import hiredis
from redis import exceptions as rex

from rtq_nb.transport.base import SCRIPT_LOADS, check_replies
from rtq_nb.transport.endpoint import Endpoint
from rtq_nb.transport.errors import raise_mapped, reply_error
from rtq_nb.transport.link import check_hello
from rtq_nb.transport.resp import Command, pack

__all__ = ["SyncConn"]


class _SyncLink:
    """One blocking connection; used by one thread at a time (:meth:`sever` excepted)."""

    def __init__(self, ep: Endpoint, connect_timeout: float) -> None:
        self.closed = False
        self._lock = threading.Lock()  # sever() vs close(): never shut down a reused fd
        resolver = ep.sentinel
        if resolver is None:
            self._connect(ep, ep.host, ep.port, connect_timeout)
            if ep.hello:
                self._hello(ep.hello)
            return
        addr = resolver.primary_sync(connect_timeout)
        try:
            self._connect(ep, *addr, connect_timeout)
        except OSError:
            resolver.unreachable(addr)
            raise
        replies = self._hello([*ep.hello, ("ROLE",)], len(ep.hello))
        try:
            resolver.adopt(self, addr, replies[-1])
        except BaseException:
            self.close()
            raise

    def _connect(self, ep: Endpoint, host: str, port: int, connect_timeout: float) -> None:
        if ep.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(connect_timeout)
            try:
                sock.connect(ep.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((host, port), connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if ep.tls is not None:
                sock = ep.tls.wrap_socket(sock, server_hostname=host)
        sock.settimeout(None)  # blocking reads carry their own (Redis-side) timeouts
        self.sock = sock
        self.reader = hiredis.Reader(encoding="utf-8", errors="replace", replyError=reply_error)

    def _hello(self, hello: Sequence[Command], checked: int | None = None) -> list[Any]:
        """Send the handshake; raise its first error reply (among the first ``checked``)."""
        try:
            replies = self.request(pack(hello), len(hello))
            check_hello(replies[:checked])
            return replies
        except BaseException:
            self.close()
            raise

    def request(self, data: bytes, n: int) -> list[Any]:
        """Write ``data`` (``n`` commands) and read the replies; an error reply with
        replies still to come closes the link instead of waiting (a BLPOP may follow)."""
        self.sock.sendall(data)
        replies: list[Any] = []
        reader = self.reader
        while len(replies) < n:
            reply = reader.gets()
            if reply is False:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise rex.ConnectionError("connection to Redis lost: closed by the server")
                reader.feed(chunk)
                continue
            replies.append(reply)
            if isinstance(reply, Exception) and len(replies) < n:
                self.close()
                break
        return replies

    def close(self) -> None:
        self.closed = True
        with self._lock, contextlib.suppress(OSError):
            self.sock.close()

    def sever(self) -> None:
        """Shut the socket down from another thread (the primary changed): a blocked read in
        the owning thread returns at once, and the link is not used again."""
        self.closed = True
        with self._lock, contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)  # not SSLSocket's: no state


class SyncConn:
    """Pipelines on blocking sockets, one idle-link pool shared by the calling threads."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._ep = Endpoint(url)
        self._connect_timeout = connect_timeout
        self._idle: list[_SyncLink] = []
        self._lock = threading.Lock()
        self._closed = False
        self._loaded = False
        if self._ep.sentinel is not None:
            self._ep.sentinel.follow(self)

    def primary_changed(self) -> None:
        """The Sentinel-managed primary moved (any thread): load the scripts again before
        the next pipeline, let go of the idle links that were dropped."""
        self._loaded = False
        for link in [x for x in self._idle if x.closed]:
            with contextlib.suppress(ValueError):  # taken meanwhile
                self._idle.remove(link)

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; raw replies. Errors are mapped, as in the async transport (a lost
        script raises ``ScriptsLost``: the caller goes on in the async core)."""
        if not self._loaded:  # load the scripts first, on the same path
            self._loaded = True
            try:
                self.pipeline(SCRIPT_LOADS)
            except BaseException:
                self._loaded = False
                raise
        return self._send(commands)

    def _forget_scripts(self) -> None:
        self._loaded = False  # loaded again before the next pipeline

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        data = pack(commands)
        try:
            try:
                link = self._idle.pop()  # list.pop/append are atomic: no lock on this path
            except IndexError:
                link = _SyncLink(self._ep, self._connect_timeout)
            try:
                replies = link.request(data, data.n)
            except BaseException as exc:
                link.close()  # reply state unknown: never reuse
                if self._ep.sentinel is not None:
                    self._ep.sentinel.lost(link, exc)
                raise
        except (rex.RedisError, OSError) as exc:
            raise_mapped(exc, self.url)
        if self._closed:  # closed while this pipeline ran: do not keep the link
            link.close()
        elif not link.closed:
            self._idle.append(link)
        for r in replies:
            if isinstance(r, Exception):
                if self._ep.sentinel is not None:
                    self._ep.sentinel.refused(link, replies)
                check_replies(replies, self.url, self._forget_scripts)
        return replies

    def close(self) -> None:
        """Close the idle links, and every link in use as its pipeline ends."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for link in idle:
            link.close()
