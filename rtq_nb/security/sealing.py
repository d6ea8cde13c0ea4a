"""End-to-end encryption of inputs and outputs (AES-256-GCM via ``cryptography``): whoever
operates Redis, or reads its dump files, sees ciphertext.

A sealed value is ``<kid>.<base64url(12-byte nonce + ciphertext + tag)>``; the associated data
binds it to its request id and its place (input, result, chunk), so a ciphertext moved to
another request or place does not open. Key text: ``rtq-ek:aesgcm:<kid>:<base64 32 bytes>``.
Several keys may be loaded; the first seals, all open (rotation as for signing keys).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.signing import check_kid
from rtq_nb.security.keys import key_texts, need_cryptography

__all__ = ["SealKey", "Sealer", "Unsealable"]


class Unsealable(ValueError):
    """A sealed value that this side cannot open (unknown key, altered or moved)."""


class SealKey:
    __slots__ = ("_aead", "_key", "kid")

    def __init__(self, kid: str, key: bytes) -> None:
        try:
            self.kid = check_kid(kid)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        if len(key) != 32:
            raise ConfigurationError(f"encryption key {kid!r}: an aesgcm key is 32 bytes")
        need_cryptography()
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._key = key
        self._aead: Any = AESGCM(key)

    @classmethod
    def generate(cls, kid: str) -> SealKey:
        return cls(kid, secrets.token_bytes(32))

    @classmethod
    def from_text(cls, text: str) -> SealKey:
        parts = text.strip().split(":")
        if len(parts) != 4 or parts[0] != "rtq-ek" or parts[1] != "aesgcm":
            raise ConfigurationError(
                "not an rtq_nb encryption key: expected rtq-ek:aesgcm:<kid>:<base64 32 bytes> "
                "(make one with `rtq-nb keygen --alg aesgcm`)"
            )
        try:
            key = base64.b64decode(parts[3], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"encryption key {parts[2]!r}: not valid base64") from None
        return cls(parts[2], key)

    def to_text(self) -> str:
        """The key line: a secret shared by clients and workers only."""
        return f"rtq-ek:aesgcm:{self.kid}:{base64.b64encode(self._key).decode()}"

    def __repr__(self) -> str:
        return f"<SealKey aesgcm kid={self.kid!r} (secret hidden)>"


class Sealer:
    """Seals with the first key, opens with any."""

    def __init__(self, keys: Iterable[SealKey]) -> None:
        self._keys = {k.kid: k for k in keys}
        if not self._keys:
            raise ConfigurationError("an encryption keyring needs at least one key")
        self.current = next(iter(self._keys.values()))

    @classmethod
    def parse(cls, spec: str) -> Sealer:
        return cls(SealKey.from_text(t) for t in key_texts(spec))

    def seal(self, text: str, aad: str) -> str:
        nonce = secrets.token_bytes(12)
        ct = self.current._aead.encrypt(nonce, text.encode(), aad.encode())
        return f"{self.current.kid}.{base64.urlsafe_b64encode(nonce + ct).decode().rstrip('=')}"

    def open(self, token: str, aad: str) -> str:
        kid, _, b64 = token.partition(".")
        key = self._keys.get(kid)
        if key is None:
            raise Unsealable(f"sealed with key {kid!r:.40}, which this side does not hold")
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
            text: str = key._aead.decrypt(raw[:12], raw[12:], aad.encode()).decode()
        except Exception:  # InvalidTag, bad base64, bad UTF-8: all mean "not ours"
            raise Unsealable("the sealed value was altered or belongs elsewhere") from None
        return text

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"<Sealer seals with {self.current.kid!r}, opens {', '.join(self._keys)}>"
