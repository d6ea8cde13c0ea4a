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
    """A worker's check of popped requests against the clients' public keys.

    Replays: within its window, a request id this worker has delivered is refused, and so is
    one it has already started as many times as the request's signed attempt budget (a
    legitimate retry comes back at most that often; an attacker who steals leases to replay
    it gets no more runs than that)."""

    def __init__(self, trusted: Keyring, queue: str, *, max_skew: float, max_age: float):
        self.trusted, self.queue = trusted, queue
        self.skew_ms, self.max_age_ms = int(max_skew * 1000), int(max_age * 1000)
        # request id -> (runs started here, end of its window in ms); runs < 0: delivered
        self._seen: dict[str, tuple[int, int]] = {}
        self.refused = 0

    def check(self, request_id: str, payload: list[str], now_ms: int | None = None) -> str | None:
        """Why ``payload`` (POP's ``[attempt, *JOB_FIELDS]``) must not run, or None; a
        request that may run is counted as started."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        why = self._check(request_id, payload, now)
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
        try:  # both signed: the client wrote them
            timeout, budget = int(p[_I["timeout_ms"]]), int(p[_I["max_attempts"]])
        except ValueError:
            return "timeout_ms or max_attempts is not an integer"
        end = signed + (timeout if timeout > 0 else self.max_age_ms) + self.skew_ms
        if now < signed - self.skew_ms:
            return f"signed {(signed - now) / 1000:.0f} s in the future (clock skew?)"
        if now > end:
            return f"outside its window: signed {(now - signed) / 1000:.0f} s ago (a replay?)"
        runs, _ = self._seen.get(rid, (0, 0))
        if runs < 0:
            return "replayed: this worker already served this request id"
        if runs >= max(budget, 1):
            return f"replayed: this worker already started it {runs} time(s), its attempt budget"
        self._remember(rid, runs + 1, end, now)
        return None

    def served(self, request_id: str) -> None:
        """A delivered request: its id is refused until its window closes."""
        _, end = self._seen.get(request_id, (0, 0))
        if end:
            self._seen[request_id] = (-1, end)

    def _remember(self, rid: str, runs: int, end: int, now: int) -> None:
        seen = self._seen
        if len(seen) >= MAX_REMEMBERED and rid not in seen:
            seen = {r: v for r, v in seen.items() if v[1] >= now}
            if len(seen) >= MAX_REMEMBERED:  # all still open: forget the oldest half
                seen = dict(sorted(seen.items(), key=lambda x: x[1][1])[MAX_REMEMBERED // 2 :])
            self._seen = seen
        seen[rid] = (runs, end)
