"""``rtq-nb keygen`` and the security options of ``rtq-nb worker`` (see the README,
"Security"). Private keys go to files readable by their owner only; only public key lines
and file names are printed."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.security.keys import SigningKey
from rtq_nb.security.sealing import SealKey
from rtq_nb.security.settings import Security

__all__ = ["add_keygen_parser", "add_security_args", "cmd_keygen", "worker_security"]

log = logging.getLogger("rtq_nb.cli")

KEYGEN_DESCRIPTION = """\
Make a key and write it to files (private: mode 0600, never printed):

  ed25519  (default) a signing key pair: KID.key (private) and KID.pub (public). Clients sign
           requests with theirs; workers sign results with theirs; each side trusts the
           other side's .pub files. A GPU node holding only client .pub files cannot forge
           a client's request.
  hmac     a shared secret KID.key: whoever can verify can also sign (small setups).
  aesgcm   an end-to-end encryption key KID.key, shared by clients and workers only.

Use them with RTQ_CLIENT_SIGNING_KEY=@c1.key RTQ_TRUSTED_WORKER_KEYS=@workers.pub (clients),
RTQ_WORKER_SIGNING_KEY=@w1.key RTQ_TRUSTED_CLIENT_KEYS=@clients.pub (workers),
RTQ_ENCRYPTION_KEYS=@e1.key (both), or the rtq-nb worker options. A keyring file may hold
several keys (one per line): that is how keys are rotated.
"""


def add_keygen_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "keygen",
        help="make a signing or encryption key (written to files, never printed)",
        description=KEYGEN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kid", required=True, help="key id (1-32 of A-Z a-z 0-9 _ -)")
    p.add_argument("--alg", default="ed25519", choices=["ed25519", "hmac", "aesgcm"])
    p.add_argument("--out", default=".", help="directory for the key files (default: .)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(fn=cmd_keygen)
    return p


def _write(path: Path, text: str, private: bool, force: bool) -> None:
    if path.exists() and not force:
        raise ConfigurationError(f"{path} exists: choose another --kid or pass --force")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    if private:
        os.chmod(path, 0o600)


def cmd_keygen(a: argparse.Namespace) -> int:
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.alg == "aesgcm":
        _write(out / f"{a.kid}.key", SealKey.generate(a.kid).to_text(), True, a.force)
        print(f"wrote {out / (a.kid + '.key')} (encryption key: share with clients and workers)")
        return 0
    key = SigningKey.generate(a.kid, a.alg)
    _write(out / f"{a.kid}.key", key.to_text(), True, a.force)
    print(f"wrote {out / (a.kid + '.key')} (private: keep it on its owner only)")
    if a.alg == "ed25519":
        public = key.public().to_text()
        _write(out / f"{a.kid}.pub", public, False, a.force)
        print(f"wrote {out / (a.kid + '.pub')}: {public}")
    return 0


def add_security_args(p: argparse.ArgumentParser) -> None:
    """The worker's key options (each overrides its environment variable)."""
    g = p.add_argument_group(
        "security (see README, Security; values are key lines or @file)",
    )
    g.add_argument(
        "--trusted-client-keys",
        default=None,
        help="clients' public keys: only requests signed by one of them run "
        "(default: $RTQ_TRUSTED_CLIENT_KEYS; unset: unsigned requests run, insecure)",
    )
    g.add_argument(
        "--signing-key",
        default=None,
        help="this worker's private key: results and stream entries are signed "
        "(default: $RTQ_WORKER_SIGNING_KEY)",
    )
    g.add_argument(
        "--encryption-keys",
        default=None,
        help="AES-GCM keys shared with clients: encrypted inputs are opened and outputs "
        "encrypted (default: $RTQ_ENCRYPTION_KEYS)",
    )
    g.add_argument(
        "--max-clock-skew",
        type=float,
        default=None,
        help="seconds a request's signing time may differ from this clock "
        "(default: $RTQ_MAX_CLOCK_SKEW or 60)",
    )


def worker_security(a: argparse.Namespace) -> Security:
    """The worker's settings: the environment, overridden by the options given."""
    env = Security.from_env("worker")
    sec = Security.build(
        signing_key=a.signing_key or env.signing_key,
        trusted=a.trusted_client_keys or env.trusted,
        encryption_keys=a.encryption_keys or env.sealer,
        max_skew=env.max_skew if a.max_clock_skew is None else a.max_clock_skew,
    )
    if sec.trusted is None:
        log.warning(
            "worker: no trusted client keys: unsigned requests will run (anyone who can "
            "write to Redis can submit work); see README, Security"
        )
    log.info("worker security: %r", sec)
    return sec
