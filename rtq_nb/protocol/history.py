"""History rows: the parts of a request record a history view shows, parsed leniently (pure:
no I/O). A record that does not follow the wire format becomes a row with ``parse_error``
set; parsing never raises."""

from __future__ import annotations

import json
from typing import Any

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.protocol.refs import payload_ref
from rtq_nb.protocol.signing import SEALED_FIELD

__all__ = ["HISTORY_FIELDS", "PREVIEW", "STATUSES", "UNSUCCESSFUL", "history_row", "lenient_int"]

PREVIEW = 80  # characters kept in input_preview / output_preview
STATUSES = frozenset(s.value for s in Status)
# the statuses the ``unsuccessful`` history lists (Keys.unsuccessful): a view filtered to some
# of them reads that index, O(matches), instead of every record of the history
UNSUCCESSFUL = frozenset(s.value for s in (Status.FAILED, Status.EXPIRED, Status.CANCELLED))
_WIRE = str(WIRE_VERSION)
_INT_FIELDS = (
    "priority",
    "created_ms",
    "queue_wait_ms",
    "ttfc_ms",
    "duration_ms",
    "chunks",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
)


def lenient_int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return int(f) if f == f and f not in (float("inf"), float("-inf")) else None


def _preview(raw: str) -> tuple[str | None, str | None]:
    """(preview text, problem) of a JSON field value."""
    if raw == "":
        return None, None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return raw[:PREVIEW], f"not valid JSON: {exc}"
    if type(value) is dict and list(value) == [SEALED_FIELD]:
        return "(encrypted)", None  # end-to-end encrypted: only its clients can read it
    ref = payload_ref(value)
    if ref is not None:  # stored by reference: the URL and size, never the bytes
        return f"(by reference: {ref.url}, {ref.size} bytes)", None
    text = value if isinstance(value, str) else raw
    return (text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"), None


HISTORY_FIELDS = (
    "v",
    "id",
    "client",
    "worker",
    "queue",
    "status",
    "error",
    "input",
    "result",
    "params",
    *_INT_FIELDS,
)  # read with HMGET: only what the view shows (not the whole hash)


def history_row(
    rid: str,
    values: list[str | None],
    key: str,
    whole: dict[str, str] | None = None,
) -> list[Any]:
    """One history row from the HMGET values of ``HISTORY_FIELDS``; problems (if any) go to
    parse_error, never raise. The hot loop of a history view: positional values, no pydantic
    unless the record looks malformed (then ``whole``, the full hash if known, is validated for
    the canonical message)."""
    v, rec_id, client, worker, queue, status, error, inp_raw, res_raw, params, *raw_ints = values
    problems: list[str] = []
    ints: list[int | None] = []
    for name, raw in zip(_INT_FIELDS, raw_ints, strict=True):
        if not raw:
            ints.append(None)
            continue
        try:
            ints.append(int(raw))
        except ValueError:
            value = lenient_int(raw)
            ints.append(value)
            if value is None:
                problems.append(f"{name}: not a number ({raw[:30]!r})")
    priority, created, wait, ttft, duration, chunks, attempts, p_tokens, c_tokens = ints
    if v != _WIRE or rec_id != rid or status not in STATUSES or priority is None:
        problems.append("bad header fields (v, id, status or priority)")
    if not client or not queue:
        problems.append("missing client or queue")
    inp, bad = _preview(inp_raw or "")
    if bad:
        problems.append(f"input: {bad}")
    out, bad = _preview(res_raw or "")
    if bad:
        problems.append(f"result: {bad}")
    if params and params != "{}":
        try:
            if not isinstance(json.loads(params), dict):
                problems.append("params: not a JSON object")
        except ValueError as exc:
            problems.append(f"params: not valid JSON: {exc}")
    parse_error = None
    if problems:
        fields = whole or {
            n: x for n, x in zip(HISTORY_FIELDS, values, strict=True) if x is not None
        }
        try:  # the canonical message, when the model agrees the record is malformed
            RequestRecord.from_redis(fields, key=key)
            parse_error = "; ".join(problems)
        except MalformedRecord as exc:
            parse_error = str(exc)
    return [
        rid,
        client or None,
        worker or None,
        queue or None,
        priority,
        status or None,
        created,
        wait,
        ttft,
        duration,
        chunks,
        attempts,
        p_tokens,
        c_tokens,
        error or None,
        inp,
        out,
        parse_error,
    ]
