"""Waiting for what real servers report (a replica's link, a cluster's state, a failover):
conditions we cannot block on, polled with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

__all__ = ["wait_for"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    end = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            got = check()
            if got:
                return got
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.02)  # polling a condition the servers report, not standing in for one
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")
