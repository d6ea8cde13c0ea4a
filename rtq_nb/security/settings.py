"""One side's security settings: the key it signs with, the keys it trusts, the encryption
keys; by argument or from the environment (documented in the README, "Security").

==========================  =====================================================
``RTQ_CLIENT_SIGNING_KEY``  a client's private key (signs requests)
``RTQ_TRUSTED_WORKER_KEYS`` workers' public keys (a client verifies results)
``RTQ_WORKER_SIGNING_KEY``  a worker's private key (signs results)
``RTQ_TRUSTED_CLIENT_KEYS`` clients' public keys (a worker verifies requests)
``RTQ_ENCRYPTION_KEYS``     shared AES-GCM keys (clients and workers; first seals)
``RTQ_MAX_CLOCK_SKEW``      seconds a request's signing time may be off (default 60)
==========================  =====================================================

Each key variable holds key lines, or ``@path`` of a file of them. Nothing here prints a
secret: reprs name key ids and algorithms only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rtq_nb.errors import ConfigurationError
from rtq_nb.security.keys import Keyring, SigningKey
from rtq_nb.security.sealing import Sealer

__all__ = ["ENV", "Role", "Security", "coerce_security"]

Role = Literal["client", "worker"]

ENV: dict[Role, tuple[str, str]] = {
    "client": ("RTQ_CLIENT_SIGNING_KEY", "RTQ_TRUSTED_WORKER_KEYS"),
    "worker": ("RTQ_WORKER_SIGNING_KEY", "RTQ_TRUSTED_CLIENT_KEYS"),
}
ENCRYPTION_ENV = "RTQ_ENCRYPTION_KEYS"
SKEW_ENV = "RTQ_MAX_CLOCK_SKEW"


@dataclass(frozen=True, repr=False)
class Security:
    """``signing_key`` signs what this side sends (a client's requests, a worker's results);
    ``trusted`` verifies what the other side sends, and, when set, anything unsigned or
    badly signed is refused; ``sealer`` encrypts inputs and outputs end to end.
    ``max_skew``: seconds a request's signing time may differ from the worker's clock;
    ``max_age``: how long a request without a deadline stays acceptable (s)."""

    signing_key: SigningKey | None = None
    trusted: Keyring | None = None
    sealer: Sealer | None = None
    max_skew: float = 60.0
    max_age: float = 24 * 3600.0

    def __post_init__(self) -> None:
        for name in ("max_skew", "max_age"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigurationError(f"{name} must be a number of seconds, got {v!r}")
            if v < 0:
                raise ConfigurationError(f"{name} must not be negative, got {v!r}")

    @classmethod
    def build(
        cls,
        *,
        signing_key: SigningKey | str | None = None,
        trusted: Keyring | str | None = None,
        encryption_keys: Sealer | str | None = None,
        max_skew: float = 60.0,
        max_age: float = 24 * 3600.0,
    ) -> Security:
        """From objects or key text (``@path`` reads a file)."""
        return cls(
            signing_key=SigningKey.from_text(_one(signing_key))
            if isinstance(signing_key, str)
            else signing_key,
            trusted=Keyring.parse(trusted) if isinstance(trusted, str) else trusted,
            sealer=Sealer.parse(encryption_keys)
            if isinstance(encryption_keys, str)
            else encryption_keys,
            max_skew=max_skew,
            max_age=max_age,
        )

    @classmethod
    def from_env(cls, role: Role, environ: Mapping[str, str] | None = None) -> Security:
        """The settings of a ``role`` from ``RTQ_*`` variables (see the module docstring)."""
        env = os.environ if environ is None else environ
        sign_var, trust_var = ENV[role]
        skew = env.get(SKEW_ENV, "")
        try:
            max_skew = float(skew) if skew else 60.0
        except ValueError:
            raise ConfigurationError(f"{SKEW_ENV} must be a number of seconds") from None
        return cls.build(
            signing_key=env.get(sign_var) or None,
            trusted=env.get(trust_var) or None,
            encryption_keys=env.get(ENCRYPTION_ENV) or None,
            max_skew=max_skew,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.signing_key or self.trusted or self.sealer)

    def __repr__(self) -> str:
        parts = []
        if self.signing_key:
            parts.append(f"signs as {self.signing_key.kid!r} ({self.signing_key.alg})")
        if self.trusted is not None:
            parts.append(f"trusts {', '.join(self.trusted.kids) or 'no key'}")
        if self.sealer:
            parts.append(f"encrypts with {self.sealer.current.kid!r}")
        return f"<Security {'; '.join(parts) or 'off (unsigned, unencrypted)'}>"


def _one(spec: str) -> str:
    from rtq_nb.security.keys import key_texts

    texts = key_texts(spec)
    if len(texts) != 1:
        raise ConfigurationError(f"a signing key is one key line; found {len(texts)}")
    return texts[0]


def coerce_security(value: Security | None, role: Role) -> Security:
    """``value``, or the role's settings from the environment when it is None."""
    if value is None:
        return Security.from_env(role)
    if not isinstance(value, Security):
        raise ConfigurationError(f"security must be an rtq_nb.Security, got {type(value).__name__}")
    return value
