"""The one interface between a request handle and its client (``AsyncClient`` implements it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from typing_extensions import Unpack

from rtq_nb.client.options import SubmitOptions
from rtq_nb.payloads import PayloadStore
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.security.results import ResultCheck
from rtq_nb.transport.resp import Command

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle
    from rtq_nb.client.stream_lanes import StreamLanes

__all__ = ["HandleHost"]


class HandleHost(Protocol):
    """What a handle needs from its client: the one interface between the two."""

    reap_interval: float
    check: ResultCheck  # verifies and opens results (security/results.py)
    payloads: PayloadStore | None  # reads results stored by reference (None: none configured)

    async def exchange(
        self, cmds: list[Command], handle: AsyncRequestHandle, *, resend: bool, share: bool = False
    ) -> list[Any]:
        """Run a pipeline ending in a read, riding out outages; with ``resend``, the
        pipeline starts with ``handle``'s submission, sent again only if it never landed.
        ``share``: no command blocks (the pipeline may queue on a shared link)."""
        ...

    def stream_lanes(self) -> StreamLanes | None:
        """The client's stream lanes (many streams read on few connections), None: none."""
        ...

    async def find_record(self, keys: Keys, request_id: str) -> RequestRecord | None: ...

    async def server_ms(self) -> int: ...

    async def keys_for(self, queue: str | None, request_id: str) -> Keys: ...

    async def ahead_of(self, keys: Keys, score: int | None) -> int: ...

    async def extend(
        self, request_id: str, seconds: float, *, queue: str | None = None
    ) -> None: ...

    async def cancel(
        self, request_id: str, *, reason: str = ..., queue: str | None = None
    ) -> Status | None: ...

    async def get(self, request_id: str, *, queue: str | None = None) -> RequestRecord: ...

    async def submit(
        self, input: Any, *, stream: bool = False, **o: Unpack[SubmitOptions]
    ) -> AsyncRequestHandle: ...
