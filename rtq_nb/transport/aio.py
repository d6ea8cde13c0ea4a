"""The asyncio transport for one Redis server: a pool of hiredis links (see ``link``).

This is the hot path: commands are packed once and written on a pooled
:class:`~rtq_nb.transport.link.Link`, not through redis-py's Pipeline object (a task, a lock and
several loop turns per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rex

from rtq_nb.transport.base import SCRIPT_LOADS, OnHead, check_replies
from rtq_nb.transport.endpoint import Endpoint
from rtq_nb.transport.errors import ScriptsLost, raise_mapped
from rtq_nb.transport.link import Link, keep_idle, open_link
from rtq_nb.transport.once import Once, mark_seen
from rtq_nb.transport.resp import Command, pack

__all__ = ["Conn"]

log = logging.getLogger("rtq_nb.transport")
PEAK_HOLD_S = 30.0  # how long a pool keeps the links of its busiest moment


class Conn:
    """Pipelines on pooled asyncio links to the server ``url`` names (one pipeline per link
    at a time; links are made on demand and at most ``max_idle`` are kept)."""

    def __init__(self, url: str, *, max_idle: int = 64) -> None:
        self.url = url
        self.endpoint = Endpoint(url)
        self.max_idle = max_idle
        self._idle: list[Link] = []
        self._busy = 0  # pipelines in flight (each on its own link)
        self._peak, self._peak_at = 0, 0.0  # the most in flight lately, and since when
        self._shared: asyncio.Future[Link] | None = None  # see shared_pipeline
        self._loading: Once[None] = Once()  # see _load
        self._loaded = False
        self._scripts_gen = 0  # counts resets: a load that raced one does not count
        self._closed = False
        if self.endpoint.sentinel is not None:
            self.endpoint.sentinel.follow(self)

    def primary_changed(self) -> None:
        """The Sentinel-managed primary moved (called from the resolver's thread): load the
        scripts again before the next pipeline, let go of the idle links that were dropped."""
        self._scripts_gen += 1
        self._loaded = False
        for link in [x for x in self._idle if x.closed]:
            with contextlib.suppress(ValueError):  # taken meanwhile
                self._idle.remove(link)

    def _forget_scripts(self) -> None:
        log.info("scripts missing on %r (restart or SCRIPT FLUSH?): reloading", self.endpoint)
        self._scripts_gen += 1
        self._loaded = False

    async def pipeline(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        """Send commands in one round trip (no MULTI) and return their raw RESP2 replies
        (strings, ints, nested lists; HGETALL is a flat list). Raises the first error, mapped.

        An error reply with replies still to come drops the connection instead of waiting
        for them: a later command may be a blocking read (``EVALSHA submit`` + ``BLPOP``),
        and Redis forgets a blocked read when its client goes away. A NOSCRIPT reply raises
        :class:`ScriptsLost` (scripts are reloaded before the next pipeline), so the caller's
        own retry decides what to re-run (a blocking read that already ran is not repeated
        blindly).

        ``on_head`` is called with the first ``head`` replies as soon as they are read
        (when none is an error), before waiting for the rest: a worker settles its
        completions at once, then blocks for the next request on the same round trip."""
        if not commands:
            return []  # nothing to send: no reply would ever come
        if not self._loaded:  # load the scripts first
            await self._load()
        return await self._run(commands, head, on_head)

    async def _load(self) -> None:
        """``SCRIPT LOAD`` every script: one round trip, awaited by every pipeline that starts
        before it is done (none of them sends ``EVALSHA`` ahead of it)."""
        await self._loading.run(self._send_loads)

    async def _send_loads(self) -> None:
        gen = self._scripts_gen
        await self._run(SCRIPT_LOADS, 0, None)
        self._loaded = gen == self._scripts_gen  # (reset meanwhile: load again next time)

    async def _run(
        self, commands: Sequence[Command], head: int, on_head: OnHead | None
    ) -> list[Any]:
        data = pack(commands)
        try:
            link = self._idle_link() or await open_link(self.endpoint)
            self._took()
            try:
                replies = await link.request(data, data.n, head=head, on_head=on_head)
            except BaseException as exc:
                link.close()  # reply state unknown (or a blocking read pending): never reuse
                if self.endpoint.sentinel is not None:
                    self.endpoint.sentinel.lost(link, exc)
                raise
            finally:
                self._busy -= 1
        except (rex.RedisError, OSError) as exc:
            raise_mapped(exc, self.url)
        self._give_back(link)
        return self._checked(link, replies)

    async def shared_pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """As :meth:`pipeline`, for commands that never block (submissions, reads without
        ``BLOCK``; never ``WAIT``): on an idle link if one is free, else queued on the one
        link such pipelines share, behind the others (Redis answers them in order). A burst
        (10,000 streams opened at once) then takes one connection instead of one each, and
        none of it waits for a connect."""
        if self._idle or not self._loaded or not commands:
            return await self.pipeline(commands)
        data = pack(commands)
        link: Link | None = None
        try:
            link = await self._shared_link()
            replies = await link.request(data, data.n, whole=True)  # (cancelled: link kept)
        except (rex.RedisError, OSError) as exc:
            if link is not None and self.endpoint.sentinel is not None:
                self.endpoint.sentinel.lost(link, exc)
            raise_mapped(exc, self.url)
        return self._checked(link, replies)

    async def _shared_link(self) -> Link:
        """The link pipelines that never block share, opened once for all who ask at once."""
        opening = self._shared
        if (
            opening is None
            or (opening.done() and _opened(opening) is None)
            or opening.get_loop() is not asyncio.get_running_loop()
        ):
            opening = self._shared = asyncio.ensure_future(open_link(self.endpoint))
            opening.add_done_callback(mark_seen)
        return await asyncio.shield(opening)

    def _checked(self, link: Link, replies: list[Any]) -> list[Any]:
        for r in replies:
            if isinstance(r, Exception):
                if self.endpoint.sentinel is not None:
                    self.endpoint.sentinel.refused(link, replies)
                check_replies(replies, self.url, self._forget_scripts)
        return replies

    def _took(self) -> None:
        self._busy += 1
        if self._busy >= self._peak:
            self._peak, self._peak_at = self._busy, time.monotonic()

    def _give_back(self, link: Link) -> None:
        """Pool a link that finished its pipeline: up to ``max_idle`` links, or as many as
        were in flight at once within the last ``PEAK_HOLD_S`` (many readers ending together,
        then reading again, reuse their links instead of reconnecting)."""
        if self._closed:  # (a pipeline that ended after aclose)
            link.close()
            return
        now = time.monotonic()
        if now - self._peak_at > PEAK_HOLD_S:
            self._peak, self._peak_at = self._busy, now
        keep_idle(self._idle, link, max(self.max_idle, self._peak))

    def _idle_link(self) -> Link | None:
        while self._idle:
            link = self._idle.pop()
            if not link.closed:
                return link
        return None

    async def call(self, *args: Any) -> Any:
        """One command's reply; a script that was lost is reloaded and run once more."""
        try:
            return (await self.pipeline([args]))[0]
        except ScriptsLost:
            return (await self.pipeline([args]))[0]

    async def dedicated_link(self) -> Link:
        """A new link of its own for a caller that keeps it (a stream lane's blocking read):
        never pooled; the caller closes it."""
        try:
            return await open_link(self.endpoint)
        except (rex.RedisError, OSError) as exc:
            raise_mapped(exc, self.url)

    async def aclose(self) -> None:
        self._closed = True
        self._loading.cancel()
        idle, self._idle = self._idle, []
        shared, self._shared = self._shared, None
        if shared is not None:  # closed once opened, if it is still opening
            shared.add_done_callback(_close_opened)
        for link in idle:
            link.close()

    def __repr__(self) -> str:
        return f"<Conn {self.endpoint!r}>"


def _opened(opening: asyncio.Future[Link]) -> Link | None:
    """The link an opening gave, if it is done, gave one, and the link is still open."""
    if not opening.done() or opening.cancelled() or opening.exception() is not None:
        return None
    link = opening.result()
    return None if link.closed else link


def _close_opened(opening: asyncio.Future[Link]) -> None:
    link = _opened(opening)  # (an opening that failed: its error is retrieved, not logged)
    if link is not None:
        link.close()
