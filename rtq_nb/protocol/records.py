"""Wire-format models and encoding (pure: no I/O). See ``_keys`` for where each lives.

The request record is a Redis hash of strings; :class:`RequestRecord` is its typed view.
JSON is used for ``input``, ``params`` and ``result``; times are integer ms since the epoch
(Redis server clock); empty string means "not set".
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rtq_nb.errors import EncodingError, MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION
from rtq_nb.protocol.scripts import JOB_FIELDS


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


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, what: str) -> str:
    """JSON-encode ``value`` compactly; raise :class:`EncodingError` naming ``what``."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise EncodingError(
            f"{what} must be JSON-serialisable (str, int, float, bool, None, list, dict): "
            f"{exc}. Convert it first, e.g. to a list or a str, or send a reference "
            f"(such as an object-storage URL) for large binary data."
        ) from exc


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
                except (TypeError, ValueError) as exc:
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
    def created(self) -> datetime | None:
        return self._dt(self.created_ms)

    @property
    def finished(self) -> datetime | None:
        return self._dt(self.finished_ms)


def encode_params(params: dict[str, Any] | None) -> str:
    """``params`` as stored in a record (JSON object text)."""
    if params is not None and not isinstance(params, dict):
        raise EncodingError(
            f"params must be a dict of JSON-serialisable values, got {type(params).__name__}"
        )
    return dumps(params, "params") if params else "{}"


def record_fields(
    *, client: str, queue: str, input_json: object, params_json: str, stream: bool
) -> list[object]:
    """The field/value list a client writes at submission (the script adds the rest).
    ``input_json`` is the JSON text of the input (or a template hole standing for it)."""
    return [
        "v",
        str(WIRE_VERSION),
        "client",
        client,
        "queue",
        queue,
        "input",
        input_json,
        "params",
        params_json,
        "stream",
        "1" if stream else "0",
    ]


def timeout_to_ms(timeout: float | None) -> int:
    """Seconds (None or 0 = no deadline) to integer ms; rejects negatives and NaN."""
    if timeout is None or timeout == 0:
        return 0
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise EncodingError(
            f"timeout must be a positive number of seconds or None, got {timeout!r}"
        )
    return max(1, int(timeout * 1000))


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


_V = str(WIRE_VERSION)


def parse_job(request_id: str, payload: list[str], fields: tuple[str, ...]) -> tuple[str, Request]:
    """A popped request (``[attempt, *values of fields]``) as ``(attempt, Request)``.

    The worker's hot path: strict checks by hand (no pydantic). Any problem raises
    :class:`MalformedRecord` naming the field, so the worker fails just this request.
    A well-formed payload in POP's field order is read straight off the list; anything
    else (or any doubt) goes through the field-by-field check, which names the problem."""
    if fields is JOB_FIELDS and type(payload) is list and len(payload) == 10:  # POP's order
        attempt, v, rid, queue, prio, inp, params, stream, created, deadline = payload
        if v == _V and rid == request_id and queue and inp and prio and stream in ("0", "1"):
            try:
                par = {} if params == "{}" else json.loads(params)
                if type(par) is dict:
                    return attempt, Request(
                        id=request_id,
                        input=json.loads(inp),
                        params=par,
                        stream=stream == "1",
                        priority=int(prio),
                        attempt=int(attempt),
                        queue=queue,
                        created_ms=int(created) if created else None,
                        deadline_ms=(int(deadline) or None) if deadline else None,
                    )
            except (ValueError, TypeError):
                pass
    return _parse_job_checked(request_id, payload, fields)


def _parse_job_checked(
    request_id: str, payload: list[str], fields: tuple[str, ...]
) -> tuple[str, Request]:
    if not isinstance(payload, list) or len(payload) != len(fields) + 1:
        raise MalformedRecord(f"request {request_id!r}: unexpected pop payload {payload!r:.200}")
    attempt, values = payload[0], dict(zip(fields, payload[1:]))

    def need(name: str) -> str:
        v = values.get(name, "")
        if v == "":
            raise MalformedRecord(f"request {request_id!r}: missing field {name!r}")
        return v

    def integer(name: str, required: bool = True) -> int | None:
        v = values.get(name, "")
        if v == "" and not required:
            return None
        v = need(name)
        try:
            return int(v)
        except ValueError:
            raise MalformedRecord(
                f"request {request_id!r}: field {name!r} is not an integer: {v!r:.50}"
            ) from None

    def js(name: str) -> Any:
        try:
            return json.loads(need(name))
        except ValueError as exc:
            raise MalformedRecord(
                f"request {request_id!r}: field {name!r} is not valid JSON: {exc}"
            ) from None

    version = integer("v")
    if version != WIRE_VERSION:
        raise MalformedRecord(
            f"request {request_id!r}: unsupported wire version {version} "
            f"(this rtq_nb speaks {WIRE_VERSION})"
        )
    if need("id") != request_id:
        raise MalformedRecord(f"request {request_id!r}: record id {values['id']!r} does not match")
    params = js("params")
    if not isinstance(params, dict):
        raise MalformedRecord(f"request {request_id!r}: field 'params' must be a JSON object")
    stream = need("stream")
    if stream not in ("0", "1"):
        raise MalformedRecord(
            f"request {request_id!r}: field 'stream' must be '0' or '1', got {stream!r:.20}"
        )
    return attempt, Request(
        id=request_id,
        input=js("input"),
        params=params,
        stream=stream == "1",
        priority=integer("priority") or 0,
        attempt=int(attempt),
        queue=need("queue"),
        created_ms=integer("created_ms", False),
        deadline_ms=integer("deadline_ms", False) or None,
    )


def decode_envelope(raw: str) -> tuple[Status, Any, str | None]:
    """Parse a result-list envelope ``{"status":..., "result":..., "error":...}``."""
    try:
        env = json.loads(raw)
        return Status(env["status"]), env.get("result"), env.get("error")
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedRecord(f"malformed result envelope {raw[:200]!r}: {exc}") from exc


def encode_envelope(status: Status, result: Any = None, error: str | None = None) -> str:
    """The result-list envelope. (A worker's COMPLETE script builds the completed one itself
    around the result JSON, byte for byte like this; the wire-format test pins it.)"""
    if status is Status.COMPLETED:
        return '{"status":"completed","result":' + dumps(result, "result") + "}"
    return dumps({"status": status.value, "error": error}, "error")
