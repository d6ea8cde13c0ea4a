"""Values stored by reference (pure: no I/O): the marker a record carries instead of a large
input or result, and the object keys that carry their expiry.

A value above the payload threshold is written to object storage and the record holds
``{"rtq_ref": "<url>", "size": <bytes>, "sha256": "<hex>"}`` instead (README, Large inputs
and results). The object holds exactly the JSON text that would have been stored inline
(sealed first when encrypting), so the reference, and the request or result signature over
it, cover the content through its sha256.

Object keys: ``<base>/exp=<YYYYMMDDTHHMMSSZ>/<request id>/<in|out>``; the expiry (UTC) is
rounded up to a bucket of seconds, so a sweep deletes whole ``exp=`` folders at once.
"""

from __future__ import annotations

import calendar
import math
import time
from typing import Any, NamedTuple

__all__ = [
    "REF_FIELD",
    "PayloadRef",
    "expiry_folder",
    "folder_expiry",
    "is_ref_text",
    "object_key",
    "payload_ref",
    "ref_json",
]

REF_FIELD = "rtq_ref"
_HEAD = f'{{"{REF_FIELD}":'
_STAMP = "%Y%m%dT%H%M%SZ"
_EXP = "exp="


class PayloadRef(NamedTuple):
    """A decoded reference: where the object is, its size in bytes and its sha256 (hex)."""

    url: str
    size: int
    sha256: str


def ref_json(url: str, size: int, sha256: str) -> str:
    """The JSON text a record stores instead of the value (the marker, key order fixed)."""
    quoted = url.replace("\\", "\\\\").replace('"', '\\"')
    return f'{_HEAD}"{quoted}","size":{int(size)},"sha256":"{sha256}"}}'


def payload_ref(value: Any) -> PayloadRef | None:
    """The reference a decoded value is, else None (cheap for every other value)."""
    if type(value) is not dict or REF_FIELD not in value:
        return None
    url, size, digest = value.get(REF_FIELD), value.get("size"), value.get("sha256")
    if (
        len(value) != 3
        or not isinstance(url, str)
        or type(size) is not int
        or not isinstance(digest, str)
    ):
        return None
    return PayloadRef(url, size, digest)


def is_ref_text(raw: str) -> bool:
    """True when a stored JSON text is a reference marker (a prefix test: no parsing)."""
    return raw.startswith(_HEAD)


def expiry_folder(expires_at: float, bucket: int) -> str:
    """The ``exp=`` folder name for an object to keep until ``expires_at`` (epoch s),
    rounded up to ``bucket`` seconds."""
    rounded = math.ceil(expires_at / bucket) * bucket
    return _EXP + time.strftime(_STAMP, time.gmtime(rounded))


def folder_expiry(name: str) -> float | None:
    """The expiry (epoch s) an ``exp=`` folder name stands for; None for any other name."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if not base.startswith(_EXP):
        return None
    try:
        t = time.strptime(base[len(_EXP) :], _STAMP)
    except ValueError:
        return None
    return float(calendar.timegm(t))


def object_key(folder: str, request_id: str, place: str) -> str:
    """``<exp folder>/<request id>/<place>`` (place: ``in`` or ``out``)."""
    return f"{folder}/{request_id}/{place}"
