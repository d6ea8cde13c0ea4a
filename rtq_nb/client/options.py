"""Typed submission options and the "use the client's default" sentinel (pure: no I/O)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

from rtq_nb.payloads import PayloadStore
from rtq_nb.security.settings import Security
from rtq_nb.transport.resp import Command

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle

__all__ = [
    "DEFAULT",
    "BatchOptions",
    "ClientDefault",
    "ClientOptions",
    "Prepared",
    "SubmitOptions",
]


class ClientDefault(enum.Enum):
    """Type of :data:`DEFAULT`: "use the client's setting" (httpx's ``UseClientDefault``)."""

    DEFAULT = "client default"

    def __repr__(self) -> str:
        return "<client default>"


DEFAULT = ClientDefault.DEFAULT


class ClientOptions(TypedDict, total=False):
    """A client's settings (``Client(url, **options)``, ``AsyncClient(url, **options)``)."""

    queue: str  # the default queue (default "default")
    prefix: str  # key prefix (default "rtq")
    timeout: float | None  # default per-request timeout, s (default 60; None: no deadline)
    retention: float  # s records, results and streams stay after the fact (default 24 h)
    client_id: str  # a fixed id (default: random); ids: <client_id>-<session>-<n>
    max_attempts: int  # attempts before a request whose workers die is dead-lettered (3)
    reap_interval: float  # s per wait slice: a waiting client re-reads the record (default 2)
    reconnect_timeout: float  # s to ride out an unreachable Redis before failing (default 30)
    security: Security | None  # signing/verification/encryption keys (default: RTQ_* env)
    min_replicas: int  # WAIT for this many replicas after each submission (default 0: off)
    replica_timeout: float  # s that WAIT may take (default 1.0)
    tracing: bool | None  # OpenTelemetry spans and context (default: RTQ_TRACING; see README)
    payloads: PayloadStore | str | None  # large values by reference (default: RTQ_PAYLOAD_URL)


class BatchOptions(TypedDict, total=False):
    """Options shared by every request of a :meth:`~rtq_nb.AsyncClient.submit_many`."""

    priority: int  # [-1000, 1000], higher first; FIFO among equals
    timeout: float | ClientDefault | None  # seconds from submission, queueing included
    params: dict[str, Any] | None  # JSON object handed to the handler
    queue: str | None  # another queue than the client's


class SubmitOptions(BatchOptions, total=False):
    """Options of one request (``call``, ``stream``; ``submit`` takes them as keywords)."""

    request_id: str | None  # your own id (1-128 of A-Z a-z 0-9 _ . : -); unique per queue


class Prepared(NamedTuple):
    """A request ready to send: its submission commands and its handle (no I/O yet), and
    the commands to send once the submission has landed (``after``: a sharded queue's wake
    token when it lives on another cluster node). ``AsyncClient.prepare`` makes it; the async
    core and the sync fast path both send it."""

    commands: list[Command]
    handle: AsyncRequestHandle
    after: Sequence[Command] = ()
