"""Signing keys, verification keys and keyrings (Ed25519 via PyNaCl's libsodium when installed,
else ``cryptography``; HMAC-SHA256 from the standard library). Secrets never appear in a
repr, an error or a log line.

Key text (one line each; ``rtq-nb keygen`` writes them)::

    rtq-sk:ed25519:<kid>:<base64 32-byte seed>     private: signs (keep on its owner only)
    rtq-pk:ed25519:<kid>:<base64 32-byte key>      public: verifies (share freely)
    rtq-sk:hmac:<kid>:<base64 secret>              shared secret: signs and verifies

A keyring holds several verification keys at once, by key id: to rotate, add the new public
key everywhere, switch the signer to the new private key, then retire the old one.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.signing import check_kid

__all__ = ["ALGORITHMS", "Keyring", "SigningKey", "VerifyKey", "key_texts", "need_cryptography"]

ALGORITHMS = ("ed25519", "hmac")


def _nacl() -> Any:
    """PyNaCl's signing module (libsodium: Ed25519 about twice as fast as OpenSSL's), or None.
    Signatures are the same bytes either way (Ed25519 is deterministic)."""
    try:
        import nacl.exceptions
        import nacl.signing

        return nacl.signing
    except ImportError:
        return None


_NACL = _nacl()


class _NaclVerifier:
    """libsodium's verify, called directly (the hot path: no wrapper objects)."""

    __slots__ = ("_open", "_pk")

    def __init__(self, raw: bytes) -> None:
        self._pk = bytes(_NACL.VerifyKey(raw))  # validates the key
        self._open = _NACL.nacl.bindings.crypto_sign_open

    def verify(self, sig: bytes, message: bytes) -> None:
        if len(sig) != 64:
            raise ValueError("an Ed25519 signature is 64 bytes")
        self._open(sig + message, self._pk)  # raises BadSignatureError when wrong

    def public_bytes_raw(self) -> bytes:
        return self._pk


class _NaclSigner:
    __slots__ = ("_pk", "_sign", "_sk")

    def __init__(self, seed: bytes) -> None:
        key = _NACL.SigningKey(seed)
        self._sk = key._signing_key  # libsodium's 64-byte secret key (seed + public key)
        self._pk = bytes(key.verify_key)
        self._sign = _NACL.nacl.bindings.crypto_sign

    def sign(self, message: bytes) -> bytes:
        signed: bytes = self._sign(message, self._sk)
        return signed[:64]

    def public_key(self) -> _NaclVerifier:
        return _NaclVerifier(self._pk)


def need_cryptography() -> Any:
    """The ``cryptography`` package, or a ConfigurationError saying how to install it."""
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519 as ed

        return ed
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ConfigurationError(
            "Ed25519 keys and encryption need the 'cryptography' package: "
            "pip install 'rtq-nb[security]' (or use an hmac key)"
        ) from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{what}: the key material is not valid base64") from None


def _split(text: str) -> tuple[str, str, str, bytes]:
    """``(kind, alg, kid, material)`` of a key line; errors never echo the material."""
    parts = text.strip().split(":")
    if len(parts) != 4 or parts[0] not in ("rtq-sk", "rtq-pk") or parts[1] not in ALGORITHMS:
        head = ":".join(parts[:2]) if len(parts) > 1 else "(not a key)"
        raise ConfigurationError(
            f"not an rtq_nb key (starts {head!r}): expected rtq-sk:<alg>:<kid>:<base64> or "
            f"rtq-pk:ed25519:<kid>:<base64>, with <alg> one of {', '.join(ALGORITHMS)}; "
            "make keys with `rtq-nb keygen`"
        )
    kind, alg, kid = parts[0], parts[1], parts[2]
    try:
        check_kid(kid)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    material = _unb64(parts[3], f"key {kid!r}")
    if alg == "ed25519" and len(material) != 32:
        raise ConfigurationError(f"key {kid!r}: an ed25519 key is 32 bytes")
    if alg == "hmac" and (kind != "rtq-sk" or len(material) < 16):
        raise ConfigurationError(f"key {kid!r}: an hmac key is a secret (rtq-sk) of 16+ bytes")
    return kind, alg, kid, material


class VerifyKey:
    """Checks signatures made by one key id."""

    __slots__ = ("_impl", "_secret", "alg", "kid")

    def __init__(self, alg: str, kid: str, material: bytes) -> None:
        self.alg, self.kid = alg, kid
        self._secret = material if alg == "hmac" else b""
        self._impl: Any = None
        if alg == "ed25519" and _NACL is not None:
            self._impl = _NaclVerifier(material)
        elif alg == "ed25519":
            self._impl = need_cryptography().Ed25519PublicKey.from_public_bytes(material)

    @classmethod
    def from_text(cls, text: str) -> VerifyKey:
        kind, alg, kid, material = _split(text)
        if kind == "rtq-sk":
            return SigningKey(alg, kid, material).public()
        return cls(alg, kid, material)

    def verify(self, message: bytes, sig: bytes) -> bool:
        if self._impl is None:
            return hmac.compare_digest(hmac.digest(self._secret, message, "sha256"), sig)
        try:
            self._impl.verify(sig, message)
            return True
        except Exception:  # InvalidSignature / BadSignatureError, or a malformed signature
            return False

    def to_text(self) -> str:
        """The public key line (for hmac: the secret itself, so it is refused)."""
        if self.alg == "hmac":
            raise ConfigurationError(f"key {self.kid!r} is an hmac secret: it has no public form")
        raw = self._impl.public_bytes_raw()
        return f"rtq-pk:ed25519:{self.kid}:{_b64(raw)}"

    def __repr__(self) -> str:
        return f"<VerifyKey {self.alg} kid={self.kid!r}>"


class SigningKey:
    """Signs with one key id (an Ed25519 private key or an HMAC secret)."""

    __slots__ = ("_impl", "_secret", "alg", "kid")

    def __init__(self, alg: str, kid: str, material: bytes) -> None:
        self.alg, self.kid = alg, check_kid(kid)
        self._secret = material
        self._impl: Any = None
        if alg == "ed25519" and _NACL is not None:
            self._impl = _NaclSigner(material)
        elif alg == "ed25519":
            self._impl = need_cryptography().Ed25519PrivateKey.from_private_bytes(material)

    @classmethod
    def generate(cls, kid: str, alg: str = "ed25519") -> SigningKey:
        if alg not in ALGORITHMS:
            raise ConfigurationError(f"unknown algorithm {alg!r}: use {' or '.join(ALGORITHMS)}")
        return cls(alg, kid, secrets.token_bytes(32))

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        kind, alg, kid, material = _split(text)
        if kind != "rtq-sk":
            raise ConfigurationError(f"key {kid!r} is a public key: it cannot sign")
        return cls(alg, kid, material)

    def sign(self, message: bytes) -> bytes:
        if self._impl is None:
            return hmac.digest(self._secret, message, "sha256")
        sig: bytes = self._impl.sign(message)
        return sig

    def public(self) -> VerifyKey:
        """The key that verifies this one's signatures (hmac: the same secret)."""
        if self._impl is None:
            return VerifyKey(self.alg, self.kid, self._secret)
        return VerifyKey(self.alg, self.kid, self._impl.public_key().public_bytes_raw())

    def to_text(self) -> str:
        """The private key line: a secret. Write it to a file readable by its owner only."""
        return f"rtq-sk:{self.alg}:{self.kid}:{_b64(self._secret)}"

    def __repr__(self) -> str:
        return f"<SigningKey {self.alg} kid={self.kid!r} (secret hidden)>"


def key_texts(spec: str) -> list[str]:
    """Key lines from ``spec``: ``@path`` (a file of keys), a path to an existing file, or key
    lines themselves, separated by newlines, commas or spaces; ``#`` starts a comment. Errors
    never echo ``spec`` (it may hold secrets)."""
    spec = spec.strip()
    is_keys = spec.startswith(("rtq-sk:", "rtq-pk:", "rtq-ek:", "#"))
    if spec.startswith("@") or (not is_keys and "\n" not in spec and len(spec) < 4096):
        path = spec[1:] if spec.startswith("@") else spec
        try:
            spec = Path(path).read_text()
        except (OSError, ValueError) as exc:
            what = getattr(exc, "strerror", None) or "not a readable file"
            if spec.startswith("@") or ("/" in path and len(path) < 256):
                raise ConfigurationError(f"cannot read key file {path!r}: {what}") from None
            raise ConfigurationError(  # might be a mistyped secret: never echo it
                "the value given is neither key lines (rtq-sk:..., rtq-pk:..., rtq-ek:...) "
                "nor a readable key file (write @path for a file)"
            ) from None
    words: list[str] = []
    for line in spec.splitlines():
        line = line.split("#", 1)[0]
        words += [w for w in line.replace(",", " ").split() if w]
    return words


class Keyring:
    """Verification keys by key id: what one side trusts the other side's signatures with."""

    def __init__(self, keys: Iterable[VerifyKey | SigningKey] = ()) -> None:
        self._keys: dict[str, VerifyKey] = {}
        for k in keys:
            vk = k.public() if isinstance(k, SigningKey) else k
            if vk.kid in self._keys:
                raise ConfigurationError(f"two keys with the id {vk.kid!r} in one keyring")
            self._keys[vk.kid] = vk

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """A keyring from key lines, ``@file`` or a file path (see :func:`key_texts`)."""
        return cls(VerifyKey.from_text(t) for t in key_texts(spec))

    def get(self, kid: str) -> VerifyKey | None:
        return self._keys.get(kid)

    def add(self, key: VerifyKey | SigningKey) -> None:
        """Trust one more key (rotation step 1)."""
        vk = key.public() if isinstance(key, SigningKey) else key
        self._keys[vk.kid] = vk

    def retire(self, kid: str) -> None:
        """Stop trusting ``kid`` (rotation's last step)."""
        self._keys.pop(kid, None)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)

    def __iter__(self) -> Iterator[VerifyKey]:
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"<Keyring {', '.join(f'{k.kid} ({k.alg})' for k in self) or '(empty)'}>"
