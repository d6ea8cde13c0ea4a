"""The one boundary between rtq_nb and redis-py: connections, scripts, error mapping.

Every Redis exception is turned into an :mod:`rtq_nb.errors` exception here (``raise ... from``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import redis.asyncio as aredis
from redis import exceptions as rex

from rtq_nb.errors import ConfigurationError, RedisUnavailable, RtqError
from rtq_nb.protocol import scripts as _scripts
from rtq_nb.transport.resp import Command, Link, open_link, pack

log = logging.getLogger("rtq_nb.redis")

URL_ENV_VARS = ("RTQ_REDIS_URL", "REDIS_URL")


def configured_url(url: str | None = None) -> str | None:
    """The Redis URL from the argument, else ``RTQ_REDIS_URL``, else ``REDIS_URL``, else None."""
    if url:
        return url
    for name in URL_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def resolve_url(url: str | None = None) -> str:
    """A usable Redis URL; starts the process-wide embedded redis-server when none is set."""
    found = configured_url(url)
    if found:
        return found
    from rtq_nb.transport.embedded import default_server

    return default_server().url


def pairs(flat: Sequence[Any]) -> dict[str, Any]:
    """A raw flat ``[field, value, ...]`` reply (HGETALL, stream entry) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _sha(src: str) -> str:
    return hashlib.sha1(src.encode()).hexdigest()


SHAS: dict[str, str] = {name: _sha(src) for name, src in _scripts.ALL.items()}


def map_error(exc: BaseException, url: str) -> BaseException:
    """The rtq_nb exception for a redis-py (or socket) exception; others pass unchanged."""
    if isinstance(exc, RtqError):
        return exc
    if isinstance(exc, rex.ResponseError):
        msg = str(exc)
        if "RTQ_DUPLICATE" in msg:
            return ConfigurationError(
                msg.split("RTQ_DUPLICATE ", 1)[-1] + ": choose another request_id (nothing was "
                "overwritten)"
            )
        return RtqError(f"Redis at {url} refused a command: {msg}")
    if isinstance(exc, rex.AuthenticationError):  # retrying cannot help: say what to fix
        return ConfigurationError(
            f"Redis at {url} refused the credentials: {exc}. Put the right password in the "
            "URL (redis://:password@host:port/db or redis://user:password@host:port/db)."
        )
    if isinstance(exc, (rex.ConnectionError, rex.TimeoutError, OSError)):
        return RedisUnavailable(
            f"cannot reach Redis at {url}: {exc}. Check that it runs, or pass url=... "
            f"(or set RTQ_REDIS_URL); with no URL rtq_nb starts an embedded redis-server."
        )
    if isinstance(exc, rex.RedisError):
        return RtqError(f"Redis error at {url}: {exc}")
    return exc


def raise_mapped(exc: BaseException, url: str) -> NoReturn:
    """Raise the rtq_nb exception for ``exc`` (chained), or ``exc`` itself."""
    mapped = map_error(exc, url)
    if mapped is exc:
        raise exc
    raise mapped from exc


@contextlib.contextmanager
def mapped_errors(url: str) -> Any:
    """Map redis-py exceptions to the rtq_nb tree (see :func:`map_error`)."""
    try:
        yield
    except (rex.RedisError, OSError) as exc:
        raise_mapped(exc, url)


class Conn:
    """An asyncio Redis client plus our scripts (EVALSHA, reloaded on NOSCRIPT)."""

    def __init__(self, url: str, *, max_connections: int | None = None) -> None:
        self.url = url
        opts: dict[str, Any] = {"socket_keepalive": True} if not url.startswith("unix") else {}
        self.redis: Any = aredis.Redis.from_url(
            url,
            decode_responses=True,
            protocol=2,
            socket_connect_timeout=5,
            socket_timeout=None,  # blocking reads carry their own timeouts
            health_check_interval=30,
            max_connections=max_connections,
            **opts,
        )
        self._loaded = False
        self._idle: list[Link] = []
        self.max_idle = 64

    async def load_scripts(self) -> None:
        with mapped_errors(self.url):
            pipe = self.redis.pipeline(transaction=False)
            for src in _scripts.ALL.values():
                pipe.script_load(src)
            await pipe.execute()
        self._loaded = True

    async def ensure(self) -> None:
        if not self._loaded:
            await self.load_scripts()

    @staticmethod
    def script_cmd(name: str, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
        """Command tuple for a script (EVALSHA; see :meth:`pipeline` for NOSCRIPT)."""
        return ("EVALSHA", SHAS[name], len(keys), *keys, *args)

    async def script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script; reload all scripts once on NOSCRIPT."""
        await self.ensure()
        with mapped_errors(self.url):
            try:
                return await self.redis.execute_command(*self.script_cmd(name, keys, args))
            except rex.NoScriptError:
                log.info("scripts missing on %s (restart or SCRIPT FLUSH?): reloading", self.url)
                await self.load_scripts()
                return await self.redis.execute_command(*self.script_cmd(name, keys, args))

    def _idle_link(self) -> Link | None:
        while self._idle:
            link = self._idle.pop()
            if not link.closed:
                return link
        return None

    async def pipeline(
        self,
        commands: Sequence[Command],
        *,
        head: int = 0,
        on_head: Callable[[list[Any]], None] | None = None,
    ) -> list[Any]:
        """Send commands in one round trip (no MULTI) and return their raw RESP2 replies
        (strings, ints, nested lists; HGETALL is a flat list). Raises the first error, mapped.

        This is the hot path: commands are packed here and written on a pooled
        :class:`~rtq_nb.transport.resp.Link` (an asyncio protocol over hiredis), not through
        redis-py's Pipeline object (a task, a lock and several loop turns per call).

        An error reply with replies still to come drops the connection instead of waiting
        for them: a later command may be a blocking read (``EVALSHA submit`` + ``BLPOP``),
        and Redis forgets a blocked read when its client goes away. A NOSCRIPT reply reloads
        the scripts and raises :class:`RedisUnavailable`, so the caller's own retry decides
        what to re-run (a blocking read that already ran is not repeated blindly).

        ``on_head`` is called with the first ``head`` replies as soon as they are read
        (when none is an error), before waiting for the rest: a worker settles its
        completions at once, then blocks for the next request on the same round trip."""
        if not self._loaded:
            await self.load_scripts()
        data = pack(commands)
        try:
            link = self._idle_link() or await open_link(self.url)
            try:
                replies = await link.request(data, data.n, head=head, on_head=on_head)
            except BaseException:
                link.close()  # reply state unknown (or a blocking read pending): never reuse
                raise
        except (rex.RedisError, OSError) as exc:
            raise_mapped(exc, self.url)
        if not link.closed:
            if len(self._idle) < self.max_idle:
                self._idle.append(link)
            else:
                link.close()
        for r in replies:
            if isinstance(r, Exception):
                await self._raise_reply(r)
        return replies

    async def _raise_reply(self, r: Exception) -> None:
        if isinstance(r, rex.NoScriptError):
            await self.load_scripts()
            raise RedisUnavailable(
                f"Redis at {self.url} had lost rtq_nb's scripts (restarted or flushed); "
                "they are loaded again: retry"
            ) from r
        raise_mapped(r, self.url)

    async def call(self, *args: Any) -> Any:
        with mapped_errors(self.url):
            return await self.redis.execute_command(*args)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for link in idle:
            link.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[Conn]:
    conn = Conn(url)
    try:
        yield conn
    finally:
        await conn.aclose()
