"""Encoding values for the wire (pure: no I/O): JSON, params, timeouts, the fields a client
writes at submission, and result envelopes."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rtq_nb.errors import ConfigurationError, EncodingError, MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION
from rtq_nb.protocol.records import Status

__all__ = [
    "COMPLETED_ENVELOPE_HEAD",
    "ENVELOPE_SIG",
    "EXPIRED_ENVELOPE",
    "EXPIRED_WHY",
    "MAX_SECONDS",
    "check_retention",
    "decode_envelope",
    "dumps",
    "encode_envelope",
    "encode_params",
    "record_fields",
    "signed_completed",
    "timeout_to_ms",
]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any, what: str) -> str:
    """JSON-encode ``value`` compactly; raise :class:`EncodingError` naming ``what``."""
    try:
        text: str = _ENCODER.encode(value)
        if not text.isascii():
            text.encode("utf-8")  # a lone surrogate cannot go on the wire
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise EncodingError(
            f"{what} must be JSON-serialisable (str, int, float, bool, None, list, dict) "
            f"and valid Unicode: {_sentence(exc)} Convert it first, e.g. to a list or a str, "
            "or send a reference (such as an object-storage URL) for large binary data."
        ) from exc
    except RecursionError as exc:
        raise EncodingError(
            f"{what} is nested too deeply to encode as JSON (over Python's recursion limit, "
            f"{sys.getrecursionlimit()}): flatten it, or send it as a string."
        ) from exc
    return text


def _sentence(exc: BaseException) -> str:
    """An exception's text as a sentence ending in one full stop."""
    text = str(exc).rstrip(". ")
    return f"{text}."


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


MAX_SECONDS = 10 * 365 * 24 * 3600  # the longest timeout or retention rtq_nb accepts


def timeout_to_ms(timeout: float | None, what: str = "timeout") -> int:
    """Seconds (None or 0 = no deadline) to integer ms; rejects negatives, NaN, infinities
    and more than ten years, naming ``what``."""
    if timeout is None or timeout == 0:
        return 0
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_SECONDS
    ):
        raise EncodingError(
            f"{what} must be a positive number of seconds up to {MAX_SECONDS} (ten years), "
            f"or None for no deadline; got {timeout!r}"
        )
    return max(1, int(timeout * 1000))


def check_retention(retention: float) -> int:
    """Seconds records, results and streams are kept: an int number of seconds >= 1."""
    if (
        isinstance(retention, bool)
        or not isinstance(retention, (int, float))
        or not math.isfinite(retention)
        or not 1 <= retention <= MAX_SECONDS
    ):
        raise ConfigurationError(
            f"retention must be a number of seconds from 1 to {MAX_SECONDS}, got {retention!r} "
            "(Redis keeps TTLs in whole seconds: a shorter retention would expire a result "
            "before its reader gets it)"
        )
    return int(retention)


def decode_envelope(raw: str) -> tuple[Status, Any, str | None, str]:
    """Parse a result-list envelope ``{"status":..., "result":..., "error":..., "sig":...}``:
    ``(status, result, error, signature or "")``."""
    try:
        env = json.loads(raw)
        sig = env.get("sig", "")
        return Status(env["status"]), env.get("result"), env.get("error"), sig
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise MalformedRecord(f"malformed result envelope {raw[:200]!r}: {exc}") from exc


def encode_envelope(
    status: Status, result: Any = None, error: str | None = None, sig: str = ""
) -> str:
    """The result-list envelope. (A worker's COMPLETE script builds the completed one itself
    around the result JSON, byte for byte like this; the wire-format test pins it.) ``sig``:
    the worker's signature of the result (or error), last, so that the result's JSON text can
    be cut out of a completed envelope unchanged (:func:`signed_completed`)."""
    tail = f'{ENVELOPE_SIG}{sig}"}}' if sig else "}"
    if status is Status.COMPLETED:
        return COMPLETED_ENVELOPE_HEAD + dumps(result, "result") + tail
    return dumps({"status": status.value, "error": error}, "error")[:-1] + tail


def signed_completed(raw: str) -> tuple[str, str] | None:
    """``(result JSON text exactly as signed, signature)`` of a signed completed envelope,
    else None."""
    if not raw.startswith(COMPLETED_ENVELOPE_HEAD) or not raw.endswith('"}'):
        return None
    cut = raw.rfind(ENVELOPE_SIG)
    if cut < len(COMPLETED_ENVELOPE_HEAD):
        return None
    sig = raw[cut + len(ENVELOPE_SIG) : -2]
    return (raw[len(COMPLETED_ENVELOPE_HEAD) : cut], sig) if '"' not in sig else None


# The completed envelope is the result JSON between these; COMPLETE wraps it in Lua (adding
# ENVELOPE_SIG + signature + '"' before the brace when the worker signs).
COMPLETED_ENVELOPE_HEAD = '{"status":"completed","result":'
ENVELOPE_SIG = ',"sig":"'
EXPIRED_WHY = "deadline passed while pending"
EXPIRED_ENVELOPE = encode_envelope(Status.EXPIRED, None, EXPIRED_WHY)
