"""One server or a Redis Cluster, found out on the first pipeline: the transport
:func:`~rtq_nb.transport.connect` gives for a plain ``redis://`` URL."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rtq_nb.errors import AccessDenied
from rtq_nb.transport.aio import Conn
from rtq_nb.transport.base import OnHead, Transport
from rtq_nb.transport.cluster import ClusterTransport
from rtq_nb.transport.endpoint import safe_url
from rtq_nb.transport.link import Link
from rtq_nb.transport.once import Once
from rtq_nb.transport.resp import Command

__all__ = ["AutoTransport"]

log = logging.getLogger("rtq_nb.transport")


class AutoTransport:
    """One server or a cluster, found out on the first pipeline (``INFO cluster``, one round
    trip per transport): then its methods are the chosen transport's own (no cost after).
    ``cluster`` is None until then."""

    cluster: bool | None = None

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = Conn(url)
        self.target: Transport | None = None
        self._detecting: Once[None] = Once()

    async def _detect(self) -> Transport:
        """The chosen transport; the first callers all wait for one ``INFO cluster``."""
        if self.target is None:
            await self._detecting.run(self._find)
        assert self.target is not None
        return self.target

    async def _find(self) -> None:
        try:
            info = await self._conn.call("INFO", "cluster")
        except AccessDenied:  # a least-privilege user without INFO: one server, then
            info = ""
        if "cluster_enabled:1" in str(info):
            log.info("%s is a Redis Cluster node: routing by slot", safe_url(self.url))
            self.target, self.cluster = ClusterTransport(self.url), True
        else:
            self.target, self.cluster = self._conn, False
        self.pipeline = self.target.pipeline  # type: ignore[method-assign]
        self.call = self.target.call  # type: ignore[method-assign]

    async def pipeline(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        target = await self._detect()
        return await target.pipeline(commands, head=head, on_head=on_head)

    async def call(self, *args: Any) -> Any:
        return await (await self._detect()).call(*args)

    async def shared_pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """``Conn.shared_pipeline`` on one server; a plain pipeline on a cluster."""
        target = await self._detect()
        return await (target.pipeline if self.cluster else self._conn.shared_pipeline)(commands)

    async def dedicated_link(self) -> Link | None:
        """A link of its own (``Conn.dedicated_link``); None on a cluster (one node only)."""
        await self._detect()
        return None if self.cluster else await self._conn.dedicated_link()

    async def aclose(self) -> None:
        self._detecting.cancel()
        if self.target is not None and self.target is not self._conn:
            await self.target.aclose()
        await self._conn.aclose()

    def __repr__(self) -> str:
        return repr(self.target) if self.target is not None else f"<Conn {safe_url(self.url)}>"
