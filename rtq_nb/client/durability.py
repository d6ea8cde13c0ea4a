"""Optional durability of submissions: ``WAIT`` for replicas after each one (off by default),
so that an acknowledged request survives a failover of the primary (pure: builds the command
and reads its reply)."""

from __future__ import annotations

import logging
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.encoding import timeout_to_ms
from rtq_nb.transport.resp import Command

__all__ = ["Replication"]

log = logging.getLogger("rtq_nb.client")


class Replication:
    """``min_replicas`` replicas must acknowledge within ``timeout`` seconds."""

    def __init__(self, min_replicas: int = 0, timeout: float = 1.0) -> None:
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
            raise ConfigurationError(f"min_replicas must be an int >= 0, got {min_replicas!r}")
        self.min_replicas = min_replicas
        ms = timeout_to_ms(timeout, "replica_timeout")
        self.command: Command | None = ("WAIT", min_replicas, ms) if min_replicas else None
        self.unreplicated = 0  # submissions WAIT did not confirm on min_replicas replicas

    def note(self, cmds: list[Any], replies: list[Any]) -> None:
        """Count (and log) the submissions of a pipeline that WAIT did not confirm."""
        if self.command is None:
            return
        for cmd, reply in zip(cmds, replies):
            if cmd is self.command and isinstance(reply, int) and reply < self.min_replicas:
                self.unreplicated += 1
                log.warning(
                    "a submission reached %d of %d replicas within replica_timeout: it is "
                    "queued on the primary, and a failover now could lose it",
                    reply,
                    self.min_replicas,
                )
