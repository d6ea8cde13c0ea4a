"""Wire-format models (pure: no I/O): request status, the stored record, a handler's request,
a streamed chunk. See ``keys`` for where each lives and ``encoding`` for how values are written.

The request record is a Redis hash of strings; :class:`RequestRecord` is its typed view.
JSON is used for ``input``, ``params`` and ``result``; times are integer ms since the epoch
(Redis server clock); empty string means "not set".
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION

__all__ = ["Chunk", "Request", "RequestRecord", "Status", "Usage"]


class Status(str, enum.Enum):
    """Lifecycle of a request: pending -> running -> one of the terminal states."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (Status.PENDING, Status.RUNNING)


@dataclass(frozen=True)
class Usage:
    """Tokens a model used for one request, as its engine reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _ms(v: Any) -> int | None:
    if v is None or v == "":
        return None
    return int(float(v))


class RequestRecord(BaseModel):
    """The stored request record (one Redis hash per request)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = WIRE_VERSION
    id: str
    client: str
    queue: str
    priority: int
    score: int | None = None
    input: Any = None
    params: dict[str, Any] = {}
    stream: bool = False
    status: Status
    created_ms: int | None = None
    deadline_ms: int | None = None
    started_ms: int | None = None
    first_chunk_ms: int | None = None
    finished_ms: int | None = None
    worker: str | None = None
    attempts: int = 0
    max_attempts: int | None = None
    timeout_ms: int | None = None
    result: Any = None
    error: str | None = None
    queue_wait_ms: int | None = None
    ttfc_ms: int | None = None
    duration_ms: int | None = None
    chunks: int = 0
    prompt_tokens: int | None = None  # usage, when the handler recorded it
    completion_tokens: int | None = None

    @field_validator(
        "created_ms",
        "deadline_ms",
        "started_ms",
        "first_chunk_ms",
        "finished_ms",
        "queue_wait_ms",
        "ttfc_ms",
        "duration_ms",
        "timeout_ms",
        "score",
        "prompt_tokens",
        "completion_tokens",
        mode="before",
    )
    @classmethod
    def _opt_ms(cls, v: Any) -> int | None:
        return _ms(v)

    @field_validator("worker", "error", mode="before")
    @classmethod
    def _opt_str(cls, v: Any) -> str | None:
        return None if v == "" else v

    @field_validator("stream", mode="before")
    @classmethod
    def _flag(cls, v: Any) -> Any:
        return {"1": True, "0": False}.get(v, v) if isinstance(v, str) else v

    @field_validator("v")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != WIRE_VERSION:
            raise ValueError(f"unsupported wire version {v} (this rtq_nb speaks {WIRE_VERSION})")
        return v

    @classmethod
    def from_redis(cls, fields: dict[str, str], *, key: str | None = None) -> RequestRecord:
        """Parse a record hash; any problem raises :class:`MalformedRecord` naming the field."""
        if not fields:
            raise MalformedRecord("empty or missing request record", key=key)
        data: dict[str, Any] = dict(fields)
        for name in ("input", "params", "result"):
            if name in data and data[name] != "":
                try:
                    data[name] = json.loads(data[name])
                except (TypeError, ValueError, RecursionError) as exc:
                    raise MalformedRecord(
                        f"field {name!r} is not valid JSON: {exc}", key=key
                    ) from exc
            elif name in data:
                data.pop(name)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}"
                for e in exc.errors()
            )
            raise MalformedRecord(f"invalid request record: {problems}", key=key) from exc

    def _dt(self, ms: int | None) -> datetime | None:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)

    @property
    def ttft_ms(self) -> int | None:
        """Time to first token from submission (the wire field ``ttfc_ms``)."""
        return self.ttfc_ms

    @property
    def usage(self) -> Usage | None:
        """Tokens the model used (None: the handler recorded none)."""
        if self.prompt_tokens is None and self.completion_tokens is None:
            return None
        return Usage(self.prompt_tokens or 0, self.completion_tokens or 0)

    @property
    def created(self) -> datetime | None:
        return self._dt(self.created_ms)

    @property
    def finished(self) -> datetime | None:
        return self._dt(self.finished_ms)


class Chunk(str):
    """A text delta of a stream; a ``str`` with the chunk's metadata as attributes.

    ``seq`` is the sequence number of its first piece, ``pieces`` how many pieces (tokens)
    the worker coalesced into it, ``entry_id`` the Redis stream entry id (resume point).
    """

    seq: int
    pieces: int
    entry_id: str

    def __new__(cls, text: str, seq: int = 0, pieces: int = 1, entry_id: str = "") -> Chunk:
        obj = super().__new__(cls, text)
        obj.seq, obj.pieces, obj.entry_id = seq, pieces, entry_id
        return obj

    @property
    def text(self) -> str:
        return str.__str__(self)

    @property
    def timestamp_ms(self) -> int:
        """When Redis stored it (from the stream entry id)."""
        return int(self.entry_id.split("-", 1)[0]) if self.entry_id else 0


@dataclass
class Request:
    """What a worker's handler receives: one request's input and context."""

    id: str
    input: Any
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    priority: int = 0
    attempt: int = 1
    queue: str = "default"
    created_ms: int | None = None
    deadline_ms: int | None = None
    cancelled: bool = False
    usage: Usage | None = None  # set by a handler whose model reports it: stored with the outcome

    @classmethod
    def from_record(cls, rec: RequestRecord) -> Request:
        return cls(
            id=rec.id,
            input=rec.input,
            params=dict(rec.params),
            stream=rec.stream,
            priority=rec.priority,
            attempt=rec.attempts,
            queue=rec.queue,
            created_ms=rec.created_ms,
            deadline_ms=rec.deadline_ms or None,
        )
