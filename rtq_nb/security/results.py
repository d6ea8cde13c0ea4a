"""Signed (and optionally sealed) results: a worker signs each result part; a client checks
each one before it is shown, and opens sealed ones.

The parts are the result value (envelope and record), the error text of a failure, every
stream chunk and a stream's end marker; each signature covers request id, attempt, kind,
sequence number, pieces and the payload exactly as stored (:mod:`rtq_nb.protocol.signing`).
Markers that Redis scripts write themselves (cancelled, expired, a lost attempt's reset)
cannot be signed: a checking client takes their status but not their text.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from rtq_nb.protocol.encoding import dumps
from rtq_nb.protocol.history import HISTORY_FIELDS
from rtq_nb.protocol.refs import is_ref_text, payload_ref
from rtq_nb.protocol.signing import (
    SEALED_FIELD,
    ResultKind,
    format_auth,
    parse_auth,
    result_message,
)
from rtq_nb.security.keys import Keyring, SigningKey
from rtq_nb.security.sealing import Sealer, Unsealable

__all__ = [
    "ENCRYPTED",
    "NOT_SEALED",
    "UNSIGNED_DETAIL",
    "UNVERIFIED",
    "Forged",
    "ResultCheck",
    "ResultSigner",
    "new_run",
    "seal_json",
    "sealed_token",
]

ENCRYPTED = "(encrypted)"  # what a reader without the key sees instead of a sealed value
UNVERIFIED = "unverified:"  # starts the error of a record whose stored outcome failed the check


class Forged(Exception):
    """A result part whose signature is missing, unknown or wrong."""


def seal_json(sealer: Sealer, request_id: str, place: str, json_text: str) -> str:
    """``json_text`` sealed, as the JSON text stored instead: ``{"rtq_sealed": token}``."""
    token = sealer.seal(json_text, f"{request_id}|{place}")
    return f'{{"{SEALED_FIELD}":"{token}"}}'


def sealed_token(value: Any) -> str | None:
    """The token of a decoded sealed value, else None."""
    if type(value) is dict and len(value) == 1:
        token = value.get(SEALED_FIELD)
        return token if isinstance(token, str) else None
    return None


class ResultSigner:
    """A worker's side: seal (when encrypting) and sign (when signing) each result part."""

    def __init__(self, key: SigningKey | None, sealer: Sealer | None) -> None:
        self.key, self.sealer = key, sealer

    def sign(
        self,
        rid: str,
        attempt: str,
        kind: ResultKind,
        payload: str,
        seq: int = 0,
        n: int = 0,
        run: str = "",
    ) -> str:
        if self.key is None:
            return ""
        msg = result_message(rid, attempt, kind, seq, n, payload, run)
        return format_auth(self.key.kid, attempt, self.key.sign(msg), run)

    def value(self, rid: str, json_text: str) -> str:
        """A result's JSON text as stored (sealed when encrypting)."""
        return json_text if self.sealer is None else seal_json(self.sealer, rid, "out", json_text)

    def chunk(self, rid: str, seq: int, pieces: int, text: str) -> str:
        """A stream chunk's text as stored (a sealed token when encrypting), bound to its
        request, sequence number and piece count."""
        if self.sealer is None:
            return text
        return self.sealer.seal(text, f"{rid}|chunk|{seq}|{pieces}")


def new_run() -> str:
    """A random id for one run of a request on a worker (signed into its stream parts)."""
    return secrets.token_hex(6)


# Markers Redis scripts write cannot be signed: a checking reader shows these, not their text.
UNSIGNED_DETAIL = {
    "cancelled": "cancelled (the reason is not signed, so it is not shown)",
    "expired": "deadline passed while pending",
}
NOT_SEALED = "(not encrypted: not shown)"  # plaintext where this side expects ciphertext


class ResultCheck:
    """A client's side: verify with the workers' public keys (when ``trusted``) and open
    sealed values (when it holds the encryption keys: then it also refuses plaintext)."""

    def __init__(self, trusted: Keyring | None, sealer: Sealer | None) -> None:
        self.trusted, self.sealer = trusted, sealer

    @property
    def verifies(self) -> bool:
        return self.trusted is not None

    def verify(
        self,
        rid: str,
        auth: str,
        kind: ResultKind,
        payload: object,
        seq: int = 0,
        n: int = 0,
    ) -> tuple[int, str]:
        """``(attempt, run)`` a part was signed for; raises :class:`Forged` saying why not.
        Without trusted keys every part passes (attempt 0 and run '': unknown)."""
        if self.trusted is None:
            return 0, ""
        if not isinstance(payload, str):
            raise Forged(f"a {type(payload).__name__} where text is signed")
        a = parse_auth(auth)
        if a is None:
            raise Forged("unsigned" if not auth else "unreadable signature")
        key = self.trusted.get(a.kid)
        if key is None:
            raise Forged(f"signed with unknown key id {a.kid!r}")
        if not key.verify(result_message(rid, a.stamp, kind, seq, n, payload, a.run), a.sig):
            raise Forged(f"bad signature for key id {a.kid!r}")
        return int(a.stamp), a.run

    def open_value(self, rid: str, value: Any) -> Any:
        """A decoded result value, opened when sealed; raises :class:`Unsealable` (also for
        plaintext when this side encrypts: then only sealed results are accepted)."""
        token = sealed_token(value)
        if token is None:
            if payload_ref(value) is not None:
                return value  # by reference: opened once read (client/payloads.py)
            if self.sealer is not None:
                raise Unsealable("the result is not encrypted, and this client encrypts")
            return value
        return json.loads(self._sealer().open(token, f"{rid}|out"))

    def open_chunk(self, rid: str, chunk: str, seq: int, pieces: int) -> str:
        """A sealed chunk's text; raises :class:`Unsealable`."""
        return self._sealer().open(chunk, f"{rid}|chunk|{seq}|{pieces}")

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise Unsealable(
                "it is encrypted and this client holds no encryption key (set "
                "RTQ_ENCRYPTION_KEYS, or pass security=Security.build(encryption_keys=...))"
            )
        return self.sealer

    def record_fields(self, fields: dict[str, str], request_id: str) -> dict[str, str]:
        """A record hash, read under ``request_id``, as a checking reader may show it: a
        record of another id, or a completed or failed one whose signature does not verify,
        loses its result (its error says why); unsigned statuses show a fixed text; sealed
        input and result are opened when this side holds the key (bound to ``request_id``:
        a value moved from another request does not open). Never raises."""
        out = dict(fields)
        status = out.get("status", "")
        if self.trusted is not None:
            why = self._unverified(out, request_id, status)
            if why is not None:
                out.pop("result", None)
                out["error"] = f"{UNVERIFIED} {why}"
            elif status not in ("completed", "failed"):
                out.pop("result", None)
                if status in UNSIGNED_DETAIL:
                    out["error"] = UNSIGNED_DETAIL[status]
                else:
                    out.pop("error", None)
        for name, place in (("input", "in"), ("result", "out")):
            if name in out:
                out[name] = self._shown(out[name], request_id, place, name)
        return out

    def _unverified(self, out: dict[str, str], rid: str, status: str) -> str | None:
        if out.get("id", rid) != rid:
            return "the record carries another request's id"
        if status not in ("completed", "failed"):
            return None
        kind = ResultKind.COMPLETED if status == "completed" else ResultKind.FAILED
        payload = out.get("result" if status == "completed" else "error", "")
        try:
            attempt, _ = self.verify(rid, out.get("res_sig", ""), kind, payload)
        except Forged as exc:
            return f"the stored outcome's signature failed ({exc})"
        if str(attempt) != out.get("attempts"):
            return "the stored outcome is signed for another attempt"
        return None

    def _shown(self, raw: str, rid: str, place: str, name: str) -> str:
        """A stored input or result (JSON text) as shown: opened, or a marker."""
        sealed = raw.startswith(f'{{"{SEALED_FIELD}"')
        if not sealed:
            if self.sealer is None or raw == "" or is_ref_text(raw):  # a reference is shown
                return raw
            return dumps(NOT_SEALED, name)
        try:
            token = sealed_token(json.loads(raw))
            if token is None:
                return dumps(ENCRYPTED, name)
            if self.sealer is None:
                return dumps(ENCRYPTED, name)
            return self.sealer.open(token, f"{rid}|{place}")
        except (ValueError, RecursionError, Unsealable):
            return dumps(ENCRYPTED, name)

    def history_values(self, values: list[str | None], request_id: str) -> list[str | None]:
        """HMGET values of ``HISTORY_FIELDS`` + ``res_sig``, checked like
        :meth:`record_fields`: the values of ``HISTORY_FIELDS`` as a reader may show them."""
        names = (*HISTORY_FIELDS, "res_sig")
        checked = self.record_fields(
            {n: v for n, v in zip(names, values, strict=True) if v is not None}, request_id
        )
        return [checked.get(n) for n in HISTORY_FIELDS]
