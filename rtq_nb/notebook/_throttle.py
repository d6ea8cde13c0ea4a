"""Rate limiting of widget syncs (pure logic, no I/O, no ipywidgets).

A :class:`Throttle` paces comm messages and caps them: after ``n`` messages are sent at time
``t`` the next send waits until ``t + n / max_per_s``, and a send of ``n`` messages is allowed
only if the last second holds at most ``max_per_s - n``. So however fast tokens arrive, no
one-second window sees more than ``max_per_s`` messages, they are spread evenly (no bursts),
and a send is never delayed longer than needed: the first token shows at once.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Throttle", "fmt_ms"]


class Throttle:
    """At most ``max_per_s`` messages in any ``window`` (1 s); ``clock`` injectable for tests."""

    def __init__(
        self,
        max_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        window: float = 1.0,
    ) -> None:
        if not max_per_s > 0:
            raise ValueError(f"max_per_s must be > 0, got {max_per_s!r}")
        self.interval = 1.0 / max_per_s
        self.cap = max(1, math.floor(max_per_s * window))
        self.window = window
        self.clock = clock
        self._next = float("-inf")
        self._sent: deque[float] = deque()

    def delay(self, messages: int = 1) -> float:
        """Seconds to wait before ``messages`` may be sent (0 = now)."""
        now = self.clock()
        while self._sent and self._sent[0] <= now - self.window:
            self._sent.popleft()
        wait = max(0.0, self._next - now)
        excess = len(self._sent) + min(messages, self.cap) - self.cap
        if excess > 0:
            wait = max(wait, self._sent[excess - 1] + self.window - now)
        return wait

    def spent(self, messages: int) -> None:
        """Record that ``messages`` were just sent."""
        if messages > 0:
            now = self.clock()
            self._next = now + messages * self.interval
            self._sent.extend([now] * messages)


def fmt_ms(ms: float | None) -> str:
    """Milliseconds for a status line: '—', '850 ms', '2.3 s', '3 min 12 s'."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    return f"{int(s // 60)} min {int(s % 60)} s"
