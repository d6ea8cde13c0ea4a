"""The transport interface every caller uses, and what all transports share.

A transport runs pipelines of commands (tuples, or commands packed once) against one Redis
deployment and returns raw RESP2 replies. It owns connecting, the scripts (loaded before the
first pipeline; the one NOSCRIPT policy: a lost script marks the scripts for reloading and
raises :class:`~rtq_nb.transport.errors.ScriptsLost`, a retryable
:class:`~rtq_nb.errors.RedisUnavailable`) and the error mapping. A Redis Cluster router or a
Sentinel resolver is another implementation of :class:`Transport`: callers do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from redis import exceptions as rex

from rtq_nb.protocol import scripts
from rtq_nb.transport.errors import raise_mapped
from rtq_nb.transport.resp import Command

__all__ = ["SCRIPT_LOADS", "Transport", "check_replies"]

OnHead = Callable[[list[Any]], None]

# SCRIPT LOAD of every script, sent before a connection's first pipeline.
SCRIPT_LOADS: list[Command] = [("SCRIPT", "LOAD", s.source) for s in scripts.ALL]


class Transport(Protocol):
    """What the client and the worker need from Redis."""

    url: str

    async def pipeline(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        """Run ``commands`` in one round trip (no MULTI); raw replies, first error raised.
        ``on_head`` gets the first ``head`` replies as soon as they arrive."""
        ...

    async def call(self, *args: Any) -> Any:
        """One command's reply (a script that was lost is reloaded and run again)."""
        ...

    async def aclose(self) -> None: ...


def check_replies(replies: list[Any], url: str, forget_scripts: Callable[[], None]) -> None:
    """Raise the first error reply, mapped; NOSCRIPT first calls ``forget_scripts``."""
    for r in replies:
        if isinstance(r, Exception):
            if isinstance(r, rex.NoScriptError):
                forget_scripts()
            raise_mapped(r, url)
