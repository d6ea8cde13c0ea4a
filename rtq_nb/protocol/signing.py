"""What requests and results are signed over, and how a signature is written down (pure: no
I/O, no cryptography: the keys live in :mod:`rtq_nb.security`).

Canonical encoding (wire format v1, pinned by ``tests/protocol/test_wire_format.py``)::

    <domain> "\\n" then, for every part in order, <byte length> ":" <UTF-8 bytes> ","

Length-prefixed parts cannot be confused with one another (``"ab","c"`` and ``"a","bc"`` sign
different bytes), and a domain string per kind keeps a request signature from ever verifying
as a result's. A request signs what its client chose: id, queue, client id, the input and
params exactly as stored (JSON text), priority, timeout, attempt budget, stream flag, the
client's clock when it signed, and the key id. A result part signs request id, attempt, kind
(:class:`ResultKind`), sequence number, piece count and the payload exactly as stored.

Signature text (one field): ``<key id>.<stamp>.<base64url signature, unpadded>[.<run>]``; the
stamp is the signing time in ms for a request and the attempt for a result part; ``run`` (stream
parts only) the worker's random id for that run of the request.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import sys
from typing import NamedTuple

__all__ = [
    "KID_PATTERN",
    "REQUEST_DOMAIN",
    "RESULT_DOMAIN",
    "SEALED_FIELD",
    "Auth",
    "ResultKind",
    "canonical",
    "check_kid",
    "format_auth",
    "parse_auth",
    "request_message",
    "result_message",
]

REQUEST_DOMAIN = "rtq-request-v1"
RESULT_DOMAIN = "rtq-result-v1"
# An encrypted value is stored as the JSON object {SEALED_FIELD: "<key id>.<base64url>"}.
SEALED_FIELD = "rtq_sealed"
KID_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_URL_TO_STD = str.maketrans("-_+/", "+/-_")  # swap, so standard-alphabet input is refused
_STRICT = sys.version_info >= (3, 11)  # binascii's strict_mode
_B64URL = re.compile(r"^[A-Za-z0-9_\-]+$")  # Python 3.10: checked by hand


class ResultKind(str, enum.Enum):
    """What a signed result part is."""

    COMPLETED = "c"  # the result value (envelope and record)
    FAILED = "f"  # the error text (envelope, stream marker and record)
    DATA = "d"  # one stream chunk
    END = "e"  # a stream's end marker (pieces = the stream's total)


_KIND = {k: k.value for k in ResultKind}  # plain str: enum .value is slow on the hot path


def check_kid(kid: str) -> str:
    """A key id: 1-32 of A-Z a-z 0-9 _ - (no dots: the signature text splits on them)."""
    if not isinstance(kid, str) or not KID_PATTERN.match(kid):
        raise ValueError(f"invalid key id {kid!r}: use 1-32 characters from A-Z a-z 0-9 _ -")
    return kid


def canonical(domain: str, *parts: str) -> bytes:
    """The bytes signed for ``parts`` under ``domain`` (see the module docstring)."""
    text = domain + "\n" + "".join([f"{len(p)}:{p}," for p in parts])
    if text.isascii():  # the common case: character counts are byte counts
        return text.encode()
    out = [domain.encode(), b"\n"]
    for p in parts:
        b = p.encode()
        out.append(b"%d:%b," % (len(b), b))
    return b"".join(out)


def request_message(
    *,
    request_id: str,
    queue: str,
    client: str,
    input_json: str,
    params_json: str,
    priority: int | str,
    timeout_ms: int | str,
    max_attempts: int | str,
    stream: str,
    signed_ms: int | str,
    kid: str,
) -> bytes:
    """The canonical bytes a client signs for one request (``stream`` is ``"0"``/``"1"``)."""
    return canonical(
        REQUEST_DOMAIN,
        request_id,
        queue,
        client,
        input_json,
        params_json,
        str(priority),
        str(timeout_ms),
        str(max_attempts),
        stream,
        str(signed_ms),
        kid,
    )


def result_message(
    request_id: str,
    attempt: str,
    kind: ResultKind,
    seq: int,
    pieces: int,
    payload: str,
    run: str = "",
) -> bytes:
    """The canonical bytes a worker signs for one result part. ``run``: the worker's random
    id for this run of the request (stream parts), so that parts of two runs of one attempt
    (a replay) cannot be spliced into one stream."""
    return canonical(
        RESULT_DOMAIN, request_id, attempt, run, _KIND[kind], str(seq), str(pieces), payload
    )


class Auth(NamedTuple):
    """A parsed signature field."""

    kid: str
    stamp: str
    sig: bytes
    run: str = ""


def format_auth(kid: str, stamp: int | str, sig: bytes, run: str = "") -> str:
    text = f"{kid}.{stamp}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    return f"{text}.{run}" if run else text


def parse_auth(text: object) -> Auth | None:
    """The parts of a signature field, or None when it is not one. (The key id's form is
    checked by the keyring lookup that follows: an id that is not there is refused.)"""
    if type(text) is not str or len(text) > 800:
        return None
    kid, _, rest = text.partition(".")
    stamp, _, b64 = rest.partition(".")
    b64, _, run = b64.partition(".")
    if not (kid and b64) or not stamp.isascii() or not stamp.isdigit() or len(stamp) > 20:
        return None
    if run and (len(run) > 32 or not run.isascii() or not run.isalnum()):
        return None
    padded = (b64 + "=" * (-len(b64) % 4)).translate(_URL_TO_STD)
    try:  # strict: only the base64url alphabet (mapped onto standard base64), no dots
        if _STRICT:
            sig = binascii.a2b_base64(padded, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
        elif _B64URL.match(b64):
            sig = binascii.a2b_base64(padded)
        else:
            return None
    except (binascii.Error, ValueError):
        return None
    return Auth(kid, stamp, sig, run)
