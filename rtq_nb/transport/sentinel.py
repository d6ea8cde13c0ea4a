"""Redis Sentinel: the primary's address for ``redis+sentinel://`` endpoints, found through
the sentinels and followed across failovers (README, Sentinel).

One :class:`Resolver` per deployment (sentinels + service + their credentials) per process,
shared by every endpoint that names it. It caches the primary's address; a link opened to it
is tracked. The address is forgotten (the next link asks the sentinels again) when a link to
it fails, when it answers READONLY or its ``ROLE`` is not ``master``, and when a sentinel
announces a failover of it (``+try-failover``: from then on it is *fenced*, never handed out
again until a sentinel names another primary or the failover is aborted). Forgetting an
address drops the links to it (blocked reads included: their callers retry on the new
primary) and tells the pools (``primary_changed``: idle links and loaded scripts are
forgotten). Endpoints of plain ``redis://`` URLs have no resolver and pay nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from redis import exceptions as rex

from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.watcher import Addr, SentinelSpec, Watcher

__all__ = ["NotPrimary", "Pool", "Resolver", "resolver_for"]

log = logging.getLogger("rtq_nb.transport")
_LOST = (OSError, rex.ConnectionError, rex.TimeoutError)


class NotPrimary(rex.ConnectionError):
    """The server a link reached is not the primary (any more): ask the sentinels again."""


class Pool(Protocol):
    """A connection pool told when the primary changes (it drops idle links, reloads scripts)."""

    def primary_changed(self) -> None: ...


class Resolver:
    """The primary of one Sentinel-managed service (see the module's docstring)."""

    def __init__(self, spec: SentinelSpec) -> None:
        self.spec = spec
        self.pid = os.getpid()
        self.addr: Addr | None = None  # the primary, when known and not fenced
        self._fences: dict[int, Addr] = {}  # sentinel -> the primary it is failing over
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._sync_waiting = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Addr]]] = []
        self._links: weakref.WeakKeyDictionary[Any, tuple[Addr, Any]] = weakref.WeakKeyDictionary()
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._problem = "not asked yet"
        self._config: ConfigurationError | None = None  # the last round's, if refused
        self._refusals = 0  # rounds refused so far (a waiter raises on a new one)
        self._last: Addr | None = None  # the last primary found
        self._live: set[int] = set()
        self._watchers: list[Watcher] = []  # the running one last (a forked child starts anew)
        self._starting = threading.Lock()
        self._watch()
        weakref.finalize(self, _stop, self._watchers)

    # ---- what links and pools use ----------------------------------------------------------
    def primary_sync(self, timeout: float) -> Addr:
        """The primary's address, waiting up to ``timeout`` s for the sentinels to name one."""
        addr = self.addr
        if addr is not None:
            return addr
        end = time.monotonic() + timeout
        with self._cond:
            self._sync_waiting += 1
            refusals = self._refusals
            try:
                self._watch()
                while self.addr is None:
                    left = end - time.monotonic()
                    if self._config is not None and self._refusals != refusals:
                        raise self._config
                    if left <= 0:
                        raise self._none(timeout)
                    self._cond.wait(left)
                return self.addr
            finally:
                self._sync_waiting -= 1

    async def primary(self, timeout: float) -> Addr:
        """:meth:`primary_sync` for asyncio (the event loop is never blocked)."""
        addr = self.addr
        if addr is not None:
            return addr
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Addr] = loop.create_future()
        with self._lock:
            if self.addr is not None:
                return self.addr
            self._waiters.append((loop, fut))
        self._watch()
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise self._none(timeout) from None
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))

    def follow(self, pool: Pool) -> None:
        """Tell ``pool`` (held weakly) when the primary changes."""
        self._pools.add(pool)

    def adopt(self, link: Any, addr: Addr, role: Any, loop: Any = None) -> None:
        """Track a new link to ``addr`` (``loop``: an asyncio link's), given its ``ROLE``
        reply; raise :class:`NotPrimary` if ``addr`` is not the primary (any more)."""
        if isinstance(role, list) and role and role[0] != "master":
            self.demoted(addr)
            raise NotPrimary(f"{addr[0]}:{addr[1]}, named by the sentinels, is a replica")
        with self._lock:  # an error reply (a user without +role) skips the check
            if self.addr == addr:
                self._links[link] = (addr, loop)
                return
        raise NotPrimary(f"the primary moved from {addr[0]}:{addr[1]} while connecting")

    def unreachable(self, addr: Addr) -> None:
        """Connecting to ``addr`` failed: the next link asks the sentinels again."""
        with self._lock:
            if self.addr == addr:
                self.addr = None

    def lost(self, link: Any, exc: BaseException) -> None:
        """A link failed: forget its address if it is still the one in use."""
        if isinstance(exc, _LOST):
            with self._lock:
                entry = self._links.pop(link, None)
                if entry is not None and entry[0] == self.addr:
                    self.addr = None

    def refused(self, link: Any, replies: list[Any]) -> None:
        """Error replies on a link: READONLY means its server was demoted."""
        if any(isinstance(r, rex.ReadOnlyError) for r in replies):
            entry = self._links.get(link)
            if entry is not None:
                self.demoted(entry[0])

    def demoted(self, addr: Addr) -> None:
        """``addr`` is a replica now: forget it and drop the links to it."""
        with self._lock:
            if self.addr == addr:
                self.addr = None
        self._sever(lambda a: a == addr)

    @property
    def subscriptions(self) -> int:
        """How many sentinels' failover events are being followed."""
        return len(self._live)

    # ---- what the watcher reports ------------------------------------------------------------
    def wants_primary(self) -> bool:
        return self.addr is None and bool(self._sync_waiting or self._waiters)

    def fenced(self) -> dict[int, Addr]:
        with self._lock:
            return dict(self._fences)

    def found(self, addr: Addr) -> None:
        with self._lock:
            if addr in self._fences.values():
                return
            self.addr, self._config, self._problem = addr, None, ""
            self._publish(addr)
        self._moved(addr)

    def failed(self, problem: str, config: ConfigurationError | None) -> None:
        with self._lock:
            self._problem, self._config = problem, config
            if config is not None:
                self._refusals += 1
                self._publish(config)

    def fence(self, sentinel: int, addr: Addr) -> None:
        log.warning(
            "sentinel %s: failover of %r from %s:%s begins: not writing there any more",
            self.spec.where(sentinel),
            self.spec.service,
            *addr,
        )
        with self._lock:
            self._fences[sentinel] = addr
            if self.addr == addr:
                self.addr = None
        self._sever(lambda a: a == addr)

    def unfence(self, sentinel: int) -> None:
        with self._lock:
            self._fences.pop(sentinel, None)

    def switched(self, addr: Addr) -> None:
        with self._lock:
            self._fences.clear()
            self.addr, self._config = addr, None
            self._publish(addr)
        self._sever(lambda a: a != addr)
        self._moved(addr)

    def subscribed(self, sentinel: int, live: bool) -> None:
        (self._live.add if live else self._live.discard)(sentinel)

    # ---- internals ---------------------------------------------------------------------------
    def _watch(self) -> None:
        """Wake the watcher thread; start one if none runs (first use, or in a forked child,
        where the parent's thread does not exist)."""
        with self._starting:
            watcher = self._watchers[-1] if self._watchers else None
            if watcher is None or not watcher.is_alive():
                self._live.clear()
                watcher = Watcher(self, self.spec)
                self._watchers.append(watcher)
                watcher.start()
        watcher.wake()

    def _publish(self, outcome: Addr | ConfigurationError) -> None:
        """Wake every waiter (called with the lock held)."""
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_settle, fut, outcome)

    def _sever(self, doomed: Callable[[Addr], bool]) -> None:
        """Close the links whose address is ``doomed`` (from any thread), tell the pools."""
        with self._lock:
            links = [(k, v) for k, v in list(self._links.items()) if doomed(v[0])]
            for k, _ in links:
                self._links.pop(k, None)
        for link, (_, loop) in links:
            if loop is None:
                link.sever()  # a blocking link: shut its socket down from here
            else:
                link.closed = True  # not taken from a pool again, not written to
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(link.close)
        if links:
            self._tell_pools()

    def _moved(self, addr: Addr) -> None:
        """A primary was found: if it is another server, the pools forget their scripts."""
        last, self._last = self._last, addr
        if last is not None and last != addr:
            log.warning("the primary of %r is now %s:%s", self.spec.service, *addr)
            self._tell_pools()

    def _tell_pools(self) -> None:
        for pool in list(self._pools):
            pool.primary_changed()

    def _none(self, timeout: float) -> rex.ConnectionError:
        hosts = ", ".join(self.spec.where(i) for i in range(len(self.spec.sentinels)))
        return rex.ConnectionError(
            f"no primary for service {self.spec.service!r} from the sentinels at {hosts} "
            f"within {timeout:g} s ({self._problem})"
        )

    def __repr__(self) -> str:
        return f"<Resolver {self.spec.service!r} primary={self.addr}>"


def _stop(watchers: list[Watcher]) -> None:
    for w in watchers:
        w.stop()


def _settle(fut: asyncio.Future[Addr], outcome: Addr | ConfigurationError) -> None:
    if not fut.done():
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


_resolvers: weakref.WeakValueDictionary[SentinelSpec, Resolver] = weakref.WeakValueDictionary()
_resolvers_lock = threading.Lock()


def resolver_for(spec: SentinelSpec) -> Resolver:
    """The process's resolver for ``spec`` (made, and its thread started, on first use)."""
    with _resolvers_lock:
        r = _resolvers.get(spec)
        if r is None or r.pid != os.getpid():  # a forked child makes its own
            r = _resolvers[spec] = Resolver(spec)
        return r
