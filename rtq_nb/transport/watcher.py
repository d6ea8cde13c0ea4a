"""Talking to Redis Sentinel: asking where a service's primary is, and one background thread
per deployment that follows the sentinels' failover events.

The thread keeps a subscription on every sentinel (a failover is announced only by the
sentinel that runs it) to ``+try-failover`` (a failover of the primary starts: stop writing
to it before the replica is promoted, or writes sent meanwhile would be lost when the old
primary is turned into a replica), ``+switch-master`` (the new primary) and
``-failover-abort-*``. It also runs discovery (``SENTINEL GET-MASTER-ADDR-BY-NAME``, the
sentinels asked in turn) whenever the resolver needs an address. What it learns goes to a
:class:`Listener` (the :class:`~rtq_nb.transport.sentinel.Resolver`), which it holds weakly:
the thread ends when the resolver is gone.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import hiredis

from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.resp import pack

__all__ = ["Addr", "Listener", "SentinelSpec", "Watcher", "ask_primary", "failover_running"]

log = logging.getLogger("rtq_nb.transport")
Addr = tuple[str, int]
QUERY_TIMEOUT = 1.0  # one sentinel's answer (connect + reply)
POLL = 0.05  # between discovery rounds while a primary is wanted and none is known
RESUBSCRIBE = 1.0  # a lost subscription is made again after this long
FENCE_CHECK = 0.5  # while fenced: how often the fencing sentinel's state is checked
EVENTS = ("+try-failover", "+switch-master")
ABORTS = "-failover-abort-*"
_CONFIRMATIONS = len(EVENTS) + 1  # subscribe replies (and one psubscribe) per sentinel


@dataclass(frozen=True)
class SentinelSpec:
    """Which sentinels to ask about which service, and how to authenticate to them."""

    sentinels: tuple[Addr, ...]
    service: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def hello(self) -> list[tuple[Any, ...]]:
        if not self.password:
            return []
        if self.username:
            return [("AUTH", self.username, self.password)]
        return [("AUTH", self.password)]

    def where(self, i: int) -> str:
        host, port = self.sentinels[i]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Refused(Exception):
    """A sentinel answered, but not with an address: wrong credentials, or it does not
    monitor the service. Retrying cannot help."""


class Listener(Protocol):
    """What the watcher reports to (the resolver)."""

    def wants_primary(self) -> bool: ...
    def fenced(self) -> dict[int, Addr]: ...
    def found(self, addr: Addr) -> None: ...
    def failed(self, problem: str, config: ConfigurationError | None) -> None: ...
    def fence(self, sentinel: int, addr: Addr) -> None: ...
    def unfence(self, sentinel: int) -> None: ...
    def switched(self, addr: Addr) -> None: ...
    def subscribed(self, sentinel: int, live: bool) -> None: ...


def _open(spec: SentinelSpec, i: int) -> tuple[socket.socket, hiredis.Reader]:
    sock = socket.create_connection(spec.sentinels[i], QUERY_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, hiredis.Reader(encoding="utf-8", errors="replace")


def _request(spec: SentinelSpec, i: int, *commands: tuple[Any, ...]) -> list[Any]:
    """One round trip to sentinel ``i`` (AUTH first when configured); replies after AUTH."""
    hello = spec.hello()
    sock, reader = _open(spec, i)
    with sock:
        data = pack([*hello, *commands])
        sock.sendall(data)
        replies: list[Any] = []
        while len(replies) < data.n:
            reply = reader.gets()
            if reply is False:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the sentinel")
                reader.feed(chunk)
                continue
            replies.append(reply)
    for r in replies:
        if isinstance(r, hiredis.ReplyError):
            raise Refused(f"sentinel at {spec.where(i)} refused: {r}")
    return replies[len(hello) :]


def ask_primary(spec: SentinelSpec, i: int) -> Addr:
    """Where sentinel ``i`` says the primary is."""
    (got,) = _request(spec, i, ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", spec.service))
    if not got:
        raise Refused(f"sentinel at {spec.where(i)} monitors no service named {spec.service!r}")
    return str(got[0]), int(got[1])


def failover_running(spec: SentinelSpec, i: int) -> bool:
    """Whether sentinel ``i`` is running a failover of the service (False if unreachable)."""
    try:
        (flat,) = _request(spec, i, ("SENTINEL", "MASTER", spec.service))
    except (OSError, Refused):
        return False
    fields = dict(zip(flat[::2], flat[1::2])) if isinstance(flat, list) else {}
    return "failover_in_progress" in str(fields.get("flags", ""))


class _Sub:
    """A subscription to one sentinel's failover events."""

    def __init__(self, spec: SentinelSpec, i: int) -> None:
        self.i = i
        self.sock, self.reader = _open(spec, i)
        self.confirmed = 0
        try:
            self.sock.sendall(pack([*spec.hello(), ("SUBSCRIBE", *EVENTS), ("PSUBSCRIBE", ABORTS)]))
        except OSError:
            self.sock.close()
            raise


class Watcher(threading.Thread):
    """The background thread of one resolver (see the module's docstring)."""

    def __init__(self, listener: Listener, spec: SentinelSpec) -> None:
        super().__init__(name=f"rtq-sentinel-{spec.service}", daemon=True)
        self._ref = weakref.ref(listener)
        self.spec = spec
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._subs: dict[int, _Sub] = {}
        self._retry_at = [0.0] * len(spec.sentinels)
        self._preferred = 0  # the sentinel that answered last is asked first
        self._fence_checked = 0.0

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            self._wake_w.send(b"x")

    def stop(self) -> None:
        self._stopping = True
        self.wake()

    def run(self) -> None:
        try:
            while not self._stopping:
                try:
                    if not self._turn():
                        return
                except Exception:  # a bug here must not leave every caller waiting
                    log.exception("sentinel watcher of %r", self.spec.service)
                    self._sel.select(RESUBSCRIBE)
        finally:
            for sub in list(self._subs.values()):
                sub.sock.close()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _turn(self) -> bool:
        """Subscribe, discover if wanted, wait for events; False once the resolver is gone."""
        r = self._ref()
        if r is None:
            return False
        self._subscribe()
        wanted = r.wants_primary()
        if wanted:
            self._discover(r)
            wanted = r.wants_primary()
        del r  # never keep the resolver alive while waiting
        for key, _ in self._sel.select(POLL if wanted else RESUBSCRIBE):
            if key.data is None:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            else:
                self._read(key.data)
        return True

    # ---- subscriptions ------------------------------------------------------------------------
    def _subscribe(self) -> None:
        now = time.monotonic()
        for i in range(len(self.spec.sentinels)):
            if i in self._subs or now < self._retry_at[i]:
                continue
            self._retry_at[i] = now + RESUBSCRIBE
            try:
                sub = _Sub(self.spec, i)
            except OSError:
                continue
            self._subs[i] = sub
            self._sel.register(sub.sock, selectors.EVENT_READ, sub)

    def _drop(self, sub: _Sub) -> None:
        self._subs.pop(sub.i, None)
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sub.sock)
        sub.sock.close()
        r = self._ref()
        if r is not None:
            r.subscribed(sub.i, False)

    def _read(self, sub: _Sub) -> None:
        try:
            data = sub.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(sub)
            return
        sub.reader.feed(data)
        r = self._ref()
        while r is not None:
            msg = sub.reader.gets()
            if msg is False:
                return
            if isinstance(msg, hiredis.ReplyError):  # AUTH refused: discovery says why
                self._drop(sub)
                return
            if isinstance(msg, list) and msg and msg[0] in ("subscribe", "psubscribe"):
                sub.confirmed += 1
                if sub.confirmed == _CONFIRMATIONS:
                    r.subscribed(sub.i, True)
            elif isinstance(msg, list) and len(msg) >= 3 and msg[0] in ("message", "pmessage"):
                self._event(r, sub.i, str(msg[-2]), str(msg[-1]).split())

    def _event(self, r: Listener, i: int, channel: str, words: list[str]) -> None:
        if channel == "+switch-master" and len(words) == 5 and words[0] == self.spec.service:
            r.switched((words[3], int(words[4])))
        elif len(words) >= 4 and words[:2] == ["master", self.spec.service]:
            if channel == "+try-failover":
                r.fence(i, (words[2], int(words[3])))
            elif channel.startswith("-failover-abort"):
                r.unfence(i)

    # ---- discovery ----------------------------------------------------------------------------
    def _discover(self, r: Listener) -> None:
        n = len(self.spec.sentinels)
        problems: list[str] = []
        refusals: list[str] = []
        for i in [(self._preferred + k) % n for k in range(n)]:
            try:
                addr = ask_primary(self.spec, i)
            except Refused as exc:
                refusals.append(str(exc))
                continue
            except (OSError, ValueError, IndexError, TypeError) as exc:
                problems.append(f"sentinel at {self.spec.where(i)}: {exc or type(exc).__name__}")
                continue
            fences = r.fenced()
            if addr in fences.values():
                self._check_fences(r, fences)
                if addr in r.fenced().values():
                    r.failed(f"a failover of {addr[0]}:{addr[1]} is under way", None)
                    return
            self._preferred = i
            r.found(addr)
            return
        config = None
        if refusals and not problems:
            config = ConfigurationError(
                f"no sentinel gives the primary of {self.spec.service!r}: "
                + "; ".join(refusals)
                + ". Check the service name (the URL's path) and sentinel_password / "
                "sentinel_username (query options)"
            )
        r.failed("; ".join(problems + refusals), config)

    def _check_fences(self, r: Listener, fences: dict[int, Addr]) -> None:
        """A fence stays while the sentinel that announced the failover is running it (a
        missed ``+switch-master`` or abort must not fence the primary forever)."""
        now = time.monotonic()
        if now - self._fence_checked < FENCE_CHECK:
            return
        self._fence_checked = now
        for i in fences:
            if not failover_running(self.spec, i):
                r.unfence(i)
