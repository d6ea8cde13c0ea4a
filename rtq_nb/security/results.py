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
from typing import Any

from rtq_nb.protocol.encoding import dumps
from rtq_nb.protocol.history import HISTORY_FIELDS
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
    "UNVERIFIED",
    "Forged",
    "ResultCheck",
    "ResultSigner",
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
        self, rid: str, attempt: str, kind: ResultKind, payload: str, seq: int = 0, n: int = 0
    ) -> str:
        if self.key is None:
            return ""
        msg = result_message(rid, attempt, kind, seq, n, payload)
        return format_auth(self.key.kid, attempt, self.key.sign(msg))

    def value(self, rid: str, json_text: str) -> str:
        """A result's JSON text as stored (sealed when encrypting)."""
        return json_text if self.sealer is None else seal_json(self.sealer, rid, "out", json_text)

    def chunk(self, rid: str, seq: int, text: str) -> str:
        """A stream chunk's text as stored (a sealed token when encrypting)."""
        return text if self.sealer is None else self.sealer.seal(text, f"{rid}|chunk|{seq}")


class ResultCheck:
    """A client's side: verify with the workers' public keys (when ``trusted``) and open
    sealed values (when it holds the encryption keys)."""

    def __init__(self, trusted: Keyring | None, sealer: Sealer | None) -> None:
        self.trusted, self.sealer = trusted, sealer

    @property
    def verifies(self) -> bool:
        return self.trusted is not None

    def verify(
        self, rid: str, auth: str, kind: ResultKind, payload: str, seq: int = 0, n: int = 0
    ) -> int:
        """The attempt a part was signed for; raises :class:`Forged` saying why not.
        Without trusted keys every part passes (attempt 0: unknown)."""
        if self.trusted is None:
            return 0
        a = parse_auth(auth)
        if a is None:
            raise Forged("unsigned" if not auth else "unreadable signature")
        key = self.trusted.get(a.kid)
        if key is None:
            raise Forged(f"signed with unknown key id {a.kid!r}")
        if not key.verify(result_message(rid, a.stamp, kind, seq, n, payload), a.sig):
            raise Forged(f"bad signature for key id {a.kid!r}")
        return int(a.stamp)

    def open_value(self, rid: str, value: Any) -> Any:
        """A decoded result value, opened when sealed; raises :class:`Unsealable`."""
        token = sealed_token(value)
        if token is None:
            return value
        return json.loads(self._sealer().open(token, f"{rid}|out"))

    def open_chunk(self, rid: str, seq: int, text: str, sealed: bool) -> str:
        """A chunk's text, opened when the stream is sealed; raises :class:`Unsealable`."""
        return self._sealer().open(text, f"{rid}|chunk|{seq}") if sealed else text

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise Unsealable(
                "it is encrypted and this client holds no encryption key (set "
                "RTQ_ENCRYPTION_KEYS, or pass security=Security.build(encryption_keys=...))"
            )
        return self.sealer

    def record_fields(self, fields: dict[str, str]) -> dict[str, str]:
        """A record hash as a checking reader may show it: a completed or failed record whose
        signature does not verify loses its result (its error says why); sealed input and
        result are opened when this side holds the key. Never raises."""
        out = dict(fields)
        rid, status = out.get("id", ""), out.get("status", "")
        if self.trusted is not None and status in ("completed", "failed"):
            kind = ResultKind.COMPLETED if status == "completed" else ResultKind.FAILED
            payload = out.get("result" if status == "completed" else "error", "")
            try:
                attempt = self.verify(rid, out.get("res_sig", ""), kind, payload)
                if str(attempt) != out.get("attempts"):
                    raise Forged("signed for another attempt")
            except Forged as exc:
                out.pop("result", None)
                out["error"] = f"{UNVERIFIED} the stored outcome's signature failed ({exc})"
        for name, place in (("input", "in"), ("result", "out")):
            raw = out.get(name, "")
            if not raw.startswith(f'{{"{SEALED_FIELD}"'):
                continue
            try:
                token = sealed_token(json.loads(raw))
                if token is not None and self.sealer is not None:
                    out[name] = self.sealer.open(token, f"{rid}|{place}")
            except (ValueError, Unsealable):
                out[name] = dumps(ENCRYPTED, name)
            else:
                if self.sealer is None:
                    out[name] = dumps(ENCRYPTED, name)
        return out

    def history_values(self, values: list[str | None]) -> list[str | None]:
        """HMGET values of ``HISTORY_FIELDS`` + ``res_sig``, checked like
        :meth:`record_fields`: the values of ``HISTORY_FIELDS`` as a reader may show them."""
        names = (*HISTORY_FIELDS, "res_sig")
        checked = self.record_fields(
            {n: v for n, v in zip(names, values, strict=True) if v is not None}
        )
        return [checked.get(n) for n in HISTORY_FIELDS]
