"""A small synchronous transport for the sync facade's hottest call (``Client.call``).

It only moves bytes: the commands come from the async core's pure builders
(``AsyncClient._prepare_kw``) and the reply is interpreted by the core
(``AsyncRequestHandle._accept_envelope``). Anything that is not the common case (a wait longer
than one slice, a timeout, a dropped connection) goes back to the async core on rtq_nb's loop
thread. What it saves is the thread hop and the event-loop turns of a sync call: about a
third of a ``call()`` round trip on a small machine (see README, Performance).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis import exceptions as rex

from . import _scripts
from ._redis import mapped_errors
from ._resp import Command, pack
from .errors import RedisUnavailable


class SyncConn:
    """Pipelines over redis-py's thread-safe sync connection pool (hiredis when installed)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: Any = redis.ConnectionPool.from_url(
            url,
            decode_responses=True,
            protocol=2,
            socket_connect_timeout=5,
            socket_timeout=None,
            health_check_interval=30,
        )
        self._loaded = False

    def _load_scripts(self) -> None:
        self._send([("SCRIPT", "LOAD", src) for src in _scripts.ALL.values()])
        self._loaded = True

    def pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """One round trip; raw replies. Errors are mapped; NOSCRIPT becomes RedisUnavailable
        (the caller falls back to the async core). Scripts are loaded before the first use."""
        if not self._loaded:
            self._load_scripts()
        return self._send(commands)

    def _send(self, commands: Sequence[Command]) -> list[Any]:
        data = pack(commands)
        with mapped_errors(self.url):
            conn = self.pool.get_connection()
            replies: list[Any] = []
            try:
                conn.send_packed_command([bytes(data)], check_health=False)
                for i in range(data.n):
                    try:
                        replies.append(conn.read_response())
                    except rex.ResponseError as exc:
                        replies.append(exc)
                        if i + 1 < data.n:  # never wait behind an error (a BLPOP may follow)
                            conn.disconnect()
                            break
            except BaseException:
                conn.disconnect()  # reply state unknown: never reuse
                raise
            finally:
                self.pool.release(conn)
        for r in replies:
            if isinstance(r, rex.NoScriptError):
                self._loaded = False  # loaded again before the next pipeline
                raise RedisUnavailable(f"Redis at {self.url} had lost rtq_nb's scripts") from r
            if isinstance(r, Exception):
                with mapped_errors(self.url):
                    raise r
        return replies

    def close(self) -> None:
        self.pool.disconnect()
