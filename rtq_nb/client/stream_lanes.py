"""Stream lanes: many concurrently read streams through few Redis connections.

A :class:`Lane` is one dedicated connection blocking in ONE ``XREAD ... STREAMS k1..kn
id1..idn`` over up to ``LANE_KEYS`` registered streams. Each reader (a handle's stream read
after its first read) has a record in its lane: the last id fetched, the entries fetched but
not yet taken, the last batch handed out (re-reads) and its waiting future. A stream stays
registered until its reader leaves; one whose buffer is large is left out of the next
``XREAD`` until its reader drains it (backpressure).

A reader joining a lane whose ``XREAD`` is blocked wakes it with ``CLIENT UNBLOCK <lane id>``
sent on the client's pooled transport, retried until the lane's read in flight includes it
(the kick can reach Redis before the lane's new ``XREAD``). Any failure of a lane fails its
readers with :class:`LaneUnavailable`: they go back to direct reads (which ride out outages).
A user without ``CLIENT ID`` / ``CLIENT UNBLOCK`` (ACL) disables lanes for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Protocol

from redis import exceptions as rex

from rtq_nb.errors import AccessDenied
from rtq_nb.transport.link import Link
from rtq_nb.transport.resp import pack

__all__ = [
    "BUFFER_CAP",
    "DIRECT_FIRST",
    "LANE_BLOCK_MS",
    "LANE_KEYS",
    "READ_COUNT",
    "Lane",
    "LaneUnavailable",
    "LinkSource",
    "StreamLanes",
]

log = logging.getLogger("rtq_nb.client")

LANE_KEYS = 128  # streams per lane (per connection)
LANE_BLOCK_MS = 10_000  # a lane's XREAD block (new readers kick it, so it can be long)
BUFFER_CAP = 4096  # entries buffered for a reader before its stream is left out (backpressure)
READ_COUNT = 1024  # entries per stream per XREAD, and per batch handed out
LINGER_S = 1.0  # an empty lane keeps its connection this long
DIRECT_FIRST = 32  # first reads blocking on links of their own at once; more go to lanes


class LaneUnavailable(Exception):
    """The lane cannot serve this reader (lane lost, lanes disabled, a re-read it no longer
    covers): read the stream directly from the handle's position."""


class LinkSource(Protocol):
    """What lanes need from the client's transport (``Conn`` / ``AutoTransport``)."""

    async def dedicated_link(self) -> Link | None: ...

    async def call(self, *args: Any) -> Any: ...


def _after(entries: list[Any], after_id: str) -> list[Any] | None:
    """The entries after ``after_id`` if ``after_id`` is one of them, else None."""
    for i, e in enumerate(entries):
        if e[0] == after_id:
            return entries[i + 1 :]
    return None


class _Reader:
    __slots__ = (
        "active",
        "buffer",
        "handed",
        "handed_from",
        "key",
        "lane",
        "last",
        "pos",
        "waiter",
    )

    def __init__(self, lane: Lane, key: str, after_id: str) -> None:
        self.lane, self.key = lane, key
        self.last = after_id  # the last id fetched into the buffer
        self.pos = after_id  # the last id handed out
        self.buffer: deque[Any] = deque()
        self.handed: list[Any] = []  # the last batch handed out
        self.handed_from = after_id  # the position before it
        self.waiter: asyncio.Future[None] | None = None
        self.active = True  # False once it left (an XREAD in flight may still name its key)

    def wake(self, exc: BaseException | None = None) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            if exc is None:
                w.set_result(None)
            else:
                w.set_exception(exc)


class Lane:
    """One dedicated connection blocking in one ``XREAD`` over its readers' streams."""

    def __init__(self, lanes: StreamLanes) -> None:
        self.lanes = lanes
        self.readers: dict[object, _Reader] = {}
        self.keys: set[str] = set()  # the streams registered (one reader each per lane)
        self.link: Link | None = None
        self.client_id: int | None = None
        self.in_flight: dict[str, _Reader] | None = None  # whom the XREAD in flight reads for
        self.reads = 0  # XREADs sent (the kicker kicks each one at most once)
        self.closed = False
        self.changed = asyncio.Event()
        self.kicker: asyncio.Task[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self.task = asyncio.ensure_future(self._run())

    @property
    def full(self) -> bool:
        return len(self.readers) >= LANE_KEYS

    def wanted(self) -> list[_Reader]:
        return [r for r in self.readers.values() if len(r.buffer) < BUFFER_CAP]

    def add(self, owner: object, key: str, after_id: str) -> _Reader:
        r = self.readers[owner] = _Reader(self, key, after_id)
        self.keys.add(key)
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.include()
        return r

    def include(self) -> None:
        """A stream to read from now on: wake the lane's wait, or kick its blocked XREAD."""
        self.changed.set()
        if self.in_flight is not None and (self.kicker is None or self.kicker.done()):
            self.kicker = asyncio.ensure_future(self._kick())

    def remove(self, owner: object) -> None:
        r = self.readers.pop(owner, None)
        if r is None:
            return
        r.active = False
        self.keys.discard(r.key)
        r.wake(LaneUnavailable("left"))
        if not self.readers and not self.closed:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(LINGER_S, self._close_if_empty)

    def _close_if_empty(self) -> None:
        self._linger = None
        if not self.readers:
            self.close()

    async def _open(self) -> None:
        link = await self.lanes.source.dedicated_link()
        if link is None:
            raise LaneUnavailable("no dedicated link on this transport")
        self.link = link
        if self.closed:
            link.close()
            raise LaneUnavailable("lane closed")
        (cid,) = await link.request(*_packed(("CLIENT", "ID")))
        _raise(cid)
        # the kick's permission, checked once on the lane's own link (0: it is not blocked)
        (probe,) = await link.request(*_packed(("CLIENT", "UNBLOCK", cid)))
        _raise(probe)
        self.client_id = int(cid)

    async def _run(self) -> None:
        try:
            await self._open()
            while not self.closed:
                wanted = self.wanted()
                if not wanted:
                    self.changed.clear()
                    await self.changed.wait()
                    continue
                flight = self.in_flight = {r.key: r for r in wanted}
                cmd = ("XREAD", "COUNT", READ_COUNT, "BLOCK", LANE_BLOCK_MS, "STREAMS", *flight)
                self.reads += 1
                assert self.link is not None
                data, n = _packed((*cmd, *(r.last for r in wanted)))
                try:  # delivered as the reply is parsed: readers wake as soon as direct ones
                    (got,) = await self.link.request(data, n, head=1, on_head=self._on_reply)
                finally:
                    self.in_flight = None
                if isinstance(got, Exception):
                    raise got  # (a key refused by the ACL: this lane fails, not every lane)
        except asyncio.CancelledError:
            self._fail(LaneUnavailable("lane closed"))
        except BaseException as exc:
            if not self.closed:
                self.lanes.failed(self, exc)
            self._fail(exc)

    def _on_reply(self, replies: list[Any]) -> None:
        flight, self.in_flight = self.in_flight or {}, None
        got = replies[0]
        if not got:
            return
        for key, entries in got:
            r = flight.get(key)
            if r is None or not r.active or not entries:
                continue  # left meanwhile (a new reader of the key asked from its own id)
            r.buffer.extend(entries)
            r.last = entries[-1][0]
            r.wake()

    async def _kick(self) -> None:
        """``CLIENT UNBLOCK`` the lane until its XREAD in flight includes every wanted key."""
        delay, kicked = 0.0005, -1
        try:
            while not self.closed and self.client_id is not None:
                flight = self.in_flight
                if flight is None:
                    return  # between reads: the next XREAD includes every key
                if all(flight.get(r.key) is r for r in self.wanted()):
                    return
                if kicked != self.reads:
                    n = await self.lanes.source.call("CLIENT", "UNBLOCK", self.client_id)
                    if n:
                        kicked = self.reads
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
        except AccessDenied as exc:
            self.lanes.disable(exc)
        except Exception as exc:  # the pooled transport failed: so may this lane's link
            log.debug("stream lane kick failed: %s", exc)
            self.lanes.failed(self, exc)
            self.close()

    def _fail(self, exc: BaseException) -> None:
        why = exc if isinstance(exc, LaneUnavailable) else LaneUnavailable(str(exc))
        for r in self.readers.values():
            r.wake(why)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.lanes.dropped(self)
        self.changed.set()
        if self._linger is not None:
            self._linger.cancel()
        if self.kicker is not None and self.kicker is not asyncio.current_task():
            self.kicker.cancel()
        if self.link is not None:
            self.link.close()  # a blocked XREAD fails: _run ends
        for r in self.readers.values():
            r.wake(LaneUnavailable("lane closed"))


def _packed(cmd: tuple[Any, ...]) -> tuple[bytes, int]:
    data = pack([cmd])
    return data, data.n


def _raise(reply: Any) -> None:
    if isinstance(reply, rex.NoPermissionError):
        raise AccessDenied(str(reply))
    if isinstance(reply, Exception):
        raise reply


class StreamLanes:
    """The lanes of one client: ``await read(owner, key, after_id, timeout)``, then
    ``leave(owner)`` when the reader is done."""

    def __init__(self, source: LinkSource) -> None:
        self.source = source
        self.lanes: list[Lane] = []
        self.where: dict[object, _Reader] = {}
        self.disabled = False
        self.direct = 0  # first reads blocking on links of their own now (DIRECT_FIRST)

    def _lane_for(self, key: str) -> Lane:
        for lane in self.lanes:
            if not lane.closed and not lane.full and key not in lane.keys:
                return lane
        lane = Lane(self)
        self.lanes.append(lane)
        return lane

    async def read(self, owner: object, key: str, after_id: str, timeout: float) -> Any:
        """The stream's next entries after ``after_id`` in ``XREAD``'s reply shape for one key,
        or None when none arrived within ``timeout`` s. Raises :class:`LaneUnavailable`: read
        directly from ``after_id`` instead (and ``leave``)."""
        if self.disabled:
            raise LaneUnavailable("stream lanes are disabled")
        r = self.where.get(owner)
        if r is None or r.key != key:
            if r is not None:
                self.leave(owner)
            r = self.where[owner] = self._lane_for(key).add(owner, key, after_id)
        elif after_id != r.pos:  # a re-read: take_entries stopped early in the last batch
            again = r.handed if after_id == r.handed_from else _after(r.handed, after_id)
            if again is None:
                raise LaneUnavailable(f"{key}: re-read from {after_id} not covered")
            return [[key, again]] if again else None
        if r.lane.closed:
            raise LaneUnavailable("lane closed")
        if not r.buffer:
            loop = asyncio.get_running_loop()
            fut = r.waiter = loop.create_future()
            timer = loop.call_later(max(timeout, 0.0), _expire, fut)
            try:
                await fut
            finally:
                timer.cancel()
                if r.waiter is fut:
                    r.waiter = None
            if not r.buffer:
                return None
        n = min(len(r.buffer), READ_COUNT)
        batch = [r.buffer.popleft() for _ in range(n)]
        r.handed_from, r.handed, r.pos = r.pos, batch, batch[-1][0]
        if len(r.buffer) + n >= BUFFER_CAP > len(r.buffer):
            r.lane.include()  # it was left out of the lane's reads: include it again
        return [[key, batch]]

    def leave(self, owner: object) -> None:
        """The reader is done (its buffer is dropped)."""
        r = self.where.pop(owner, None)
        if r is not None:
            r.lane.remove(owner)

    def failed(self, lane: Lane, exc: BaseException) -> None:
        if isinstance(exc, AccessDenied):
            self.disable(exc)
        else:
            log.debug("stream lane lost (its readers read directly): %s", exc)

    def disable(self, exc: BaseException) -> None:
        if not self.disabled:
            self.disabled = True
            log.info("stream lanes disabled (streams are read one connection each): %s", exc)
        self.close()

    def dropped(self, lane: Lane) -> None:
        with contextlib.suppress(ValueError):
            self.lanes.remove(lane)
        for owner in [o for o, r in self.where.items() if r.lane is lane]:
            del self.where[owner]

    def close(self) -> None:
        for lane in list(self.lanes):
            lane.close()

    async def aclose(self) -> None:
        lanes = list(self.lanes)
        self.close()
        for lane in lanes:
            with contextlib.suppress(Exception):  # (its task catches its own errors)
                await lane.task


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
