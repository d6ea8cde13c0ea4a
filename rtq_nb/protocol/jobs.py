"""A popped request as the worker's handler sees it (pure: no I/O). The worker's hot path:
strict checks by hand, no pydantic."""

from __future__ import annotations

import json
from typing import Any

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION
from rtq_nb.protocol.records import Request

__all__ = ["JOB_FIELDS", "JOB_INDEX", "parse_job"]

# Fields POP returns for each request it leases, in this order, after the attempt number.
# The last four are what a worker needs beyond the handler's view to check a signed request
# (rtq_nb.protocol.signing): the other signed parts are above. ``trace`` (last) is the
# client's tracing context (rtq_nb.tracing): unsigned, observability only, empty when off.
JOB_FIELDS = (
    "v",
    "id",
    "queue",
    "priority",
    "input",
    "params",
    "stream",
    "created_ms",
    "deadline_ms",
    "client",
    "timeout_ms",
    "max_attempts",
    "sig",
    "trace",
)
JOB_INDEX = {name: i for i, name in enumerate(JOB_FIELDS, 1)}  # position in a POP payload
_LEN = len(JOB_FIELDS) + 1

_V = str(WIRE_VERSION)


def parse_job(request_id: str, payload: list[str]) -> tuple[str, Request]:
    """A popped request (``[attempt, *values of fields]``) as ``(attempt, Request)``.

    The worker's hot path: strict checks by hand (no pydantic). Any problem raises
    :class:`MalformedRecord` naming the field, so the worker fails just this request.
    A well-formed payload in POP's field order is read straight off the list; anything
    else (or any doubt) goes through the field-by-field check, which names the problem."""
    if type(payload) is list and len(payload) == _LEN:  # POP's order: read by position
        attempt, v, rid, queue, prio, inp, params, stream, created, deadline = payload[:10]
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
    return _parse_job_checked(request_id, payload)


def _parse_job_checked(request_id: str, payload: list[str]) -> tuple[str, Request]:
    fields = JOB_FIELDS
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
