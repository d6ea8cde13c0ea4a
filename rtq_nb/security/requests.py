"""Signed requests: a client signs each request; a worker checks it before anything else.

A request that fails the check never reaches the handler: its worker fails it with reason
``unauthenticated`` (and the check's finding). Replays are refused two ways: a request is
acceptable only inside its window (from its signing time, less the clock skew allowed, to
its deadline or ``max_age``, plus the skew), and within that window a worker refuses an id it
has already served. (Another worker process, within the window, does not know what this one
served: keep timeouts short where that matters; see the README's threat model.)
"""

from __future__ import annotations

import time

from rtq_nb.protocol.jobs import JOB_INDEX
from rtq_nb.protocol.signing import format_auth, parse_auth, request_message
from rtq_nb.security.keys import Keyring, SigningKey

__all__ = ["RequestGuard", "sign_request"]

MAX_REMEMBERED = 200_000  # served ids kept for replay checks (about 20 MB at most)


def sign_request(
    key: SigningKey,
    *,
    request_id: str,
    queue: str,
    client: str,
    input_json: str,
    params_json: str,
    priority: int,
    timeout_ms: int,
    max_attempts: int,
    stream: bool,
    now_ms: int | None = None,
) -> str:
    """The ``sig`` field of one request (its signing time is ``now_ms``, default now)."""
    signed_ms = int(time.time() * 1000) if now_ms is None else now_ms
    msg = request_message(
        request_id=request_id,
        queue=queue,
        client=client,
        input_json=input_json,
        params_json=params_json,
        priority=priority,
        timeout_ms=timeout_ms,
        max_attempts=max_attempts,
        stream="1" if stream else "0",
        signed_ms=signed_ms,
        kid=key.kid,
    )
    return format_auth(key.kid, signed_ms, key.sign(msg))


_I = JOB_INDEX


class RequestGuard:
    """A worker's check of popped requests against the clients' public keys."""

    def __init__(self, trusted: Keyring, queue: str, *, max_skew: float, max_age: float):
        self.trusted, self.queue = trusted, queue
        self.skew_ms, self.max_age_ms = int(max_skew * 1000), int(max_age * 1000)
        self._served: dict[str, int] = {}  # request id -> end of its window (ms)
        self.refused = 0

    def check(self, request_id: str, payload: list[str], now_ms: int | None = None) -> str | None:
        """Why ``payload`` (POP's ``[attempt, *JOB_FIELDS]``) must not run, or None."""
        why = self._check(
            request_id, payload, int(time.time() * 1000) if now_ms is None else now_ms
        )
        if why is not None:
            self.refused += 1
        return why

    def _check(self, rid: str, p: list[str], now: int) -> str | None:
        if not isinstance(p, list) or len(p) <= _I["sig"]:
            return "not a request this worker can check"
        auth = parse_auth(p[_I["sig"]])
        if auth is None and p[_I["sig"]]:
            return "unreadable signature field"
        if auth is None:
            return "unsigned request (this worker only serves signed requests)"
        key = self.trusted.get(auth.kid)
        if key is None:
            return f"signed with unknown key id {auth.kid!r} (not in this worker's keyring)"
        msg = request_message(
            request_id=rid,
            queue=p[_I["queue"]],
            client=p[_I["client"]],
            input_json=p[_I["input"]],
            params_json=p[_I["params"]],
            priority=p[_I["priority"]],
            timeout_ms=p[_I["timeout_ms"]],
            max_attempts=p[_I["max_attempts"]],
            stream=p[_I["stream"]],
            signed_ms=auth.stamp,
            kid=auth.kid,
        )
        if not key.verify(msg, auth.sig):
            return f"bad signature for key id {auth.kid!r} (forged or altered)"
        if p[_I["queue"]] != self.queue:
            return f"signed for queue {p[_I['queue']]!r}, not this worker's {self.queue!r}"
        signed = int(auth.stamp)
        try:
            timeout = int(p[_I["timeout_ms"]])
        except ValueError:
            return "timeout_ms is not an integer"
        end = signed + (timeout if timeout > 0 else self.max_age_ms) + self.skew_ms
        if now < signed - self.skew_ms:
            return f"signed {(signed - now) / 1000:.0f} s in the future (clock skew?)"
        if now > end:
            return f"outside its window: signed {(now - signed) / 1000:.0f} s ago (a replay?)"
        if self._served.get(rid, 0) >= now:
            return "replayed: this worker already served this request id"
        return None

    def served(self, request_id: str, payload_window_end_ms: int | None = None) -> None:
        """Remember a delivered request (its id is refused until its window closes)."""
        now = int(time.time() * 1000)
        if len(self._served) >= MAX_REMEMBERED:
            self._served = {r: t for r, t in self._served.items() if t >= now}
            if len(self._served) >= MAX_REMEMBERED:  # all still open: forget the oldest half
                keep = sorted(self._served.items(), key=lambda x: x[1])[MAX_REMEMBERED // 2 :]
                self._served = dict(keep)
        self._served[request_id] = payload_window_end_ms or now + self.max_age_ms

    def window_end(self, payload: list[str]) -> int | None:
        """The end of a checked request's window (ms)."""
        auth = parse_auth(payload[_I["sig"]]) if len(payload) > _I["sig"] else None
        if auth is None:
            return None
        timeout = int(payload[_I["timeout_ms"]] or 0)
        return int(auth.stamp) + (timeout if timeout > 0 else self.max_age_ms) + self.skew_ms
