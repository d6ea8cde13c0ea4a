"""The Lua scripts and, for each, one typed command builder and one reply parser (pure: no I/O).
(Their sources and the generated constants are in ``script_source``.)

The scripts live in ``lua/<name>.lua``; each file's header documents its KEYS and ARGV. At load
time every script gets a prelude of the constants it uses, generated from Python (statuses,
stream entry kinds, lease results, key infixes, the score span, envelopes), so Lua and Python
cannot disagree; scripts that need the time read it from the Redis server (``TIME``), so
clients and workers never compare their own clocks. Scores are formatted with ``%d``.

Every script validates first and writes second: the type of every key it will touch and the
range of every argument are checked before its first write, so a refusal (an error reply
marked DUPLICATE, MALFORMED or INVALID) leaves nothing half-written, and one damaged request
fails alone (POP reports it as ``PopKind.BAD``) without taking its neighbours with it.

Only this module knows each script's KEYS/ARGV order and reply shape: callers use the builders
(``submit(...)``, ``pop(...)``, ...) and parsers (``parse_pop(...)``, ...). Commands are plain
tuples; the transport runs them with ``EVALSHA`` and owns the one NOSCRIPT policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.defaults import DEFAULT_MAX_ATTEMPTS, REAP_LIMIT
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Status, Usage
from rtq_nb.protocol.script_source import (
    CONSTANTS,
    DUPLICATE,
    INVALID,
    MALFORMED,
    REAP_CUT,
    Command,
    PopKind,
    Script,
    render,
)
from rtq_nb.protocol.stream import LeaseResult

SUBMIT = Script.load("submit")
POP = Script.load("pop")
APPEND = Script.load("append")
COMPLETE = Script.load("complete")
CANCEL = Script.load("cancel")
EXTEND = Script.load("extend")
RENEW = Script.load("renew")
REAP = Script.load("reap")
REQUEUE = Script.load("requeue")
HANDBACK = Script.load("handback")
ALL: tuple[Script, ...] = (
    SUBMIT,
    POP,
    APPEND,
    COMPLETE,
    CANCEL,
    EXTEND,
    RENEW,
    REAP,
    REQUEUE,
    HANDBACK,
)


class Hole:
    """A value left open in a command built once and filled per use (a client's submit
    template): ``prefix`` + the ``index``-th value given when the command is filled."""

    __slots__ = ("index", "prefix")

    def __init__(self, index: int, prefix: str = "") -> None:
        self.index, self.prefix = index, prefix.encode()


def _status(reply: object) -> Status | None:
    return Status(reply) if reply in Status._value2member_map_ else None


# ---- SUBMIT ----------------------------------------------------------------------------------
def submit(
    k: Keys,
    request_id: str | Hole,
    *,
    priority: int,
    timeout_ms: int,
    retention_s: int,
    wake_cap: int,
    fields: Sequence[object],
) -> Command:
    """Store and enqueue one request. ``request_id`` may be a :class:`Hole` (a template);
    ``fields`` are the record's field/value pairs the client writes."""
    record = (
        Hole(request_id.index, k.request(""))
        if isinstance(request_id, Hole)
        else k.request(request_id)
    )
    return SUBMIT.cmd(
        [record, k.pending, k.wake, k.seq, k.history],
        [request_id, priority, timeout_ms, retention_s, wake_cap, *fields],
    )


def duplicate_id(message: str) -> str | None:
    """The text after the DUPLICATE marker of SUBMIT's error reply, if it is that error."""
    return _after(message, DUPLICATE)


def malformed(message: str) -> str | None:
    """What a script found damaged (a key of another type, a bad counter), if it said so."""
    return _after(message, MALFORMED)


def invalid(message: str) -> str | None:
    """Which argument a script refused, if it did."""
    return _after(message, INVALID)


def _after(message: str, marker: str) -> str | None:
    _, sep, rest = message.partition(marker + " ")
    return rest if sep else None


# ---- POP -------------------------------------------------------------------------------------
def pop(
    k: Keys,
    worker_id: str,
    *,
    lease_ms: int,
    count: int,
    consumed: int,
    retention_s: int,
    floor: int | None = None,
) -> Command:
    """Lease up to ``count`` requests; ``consumed``: wake tokens this fetch already took;
    ``floor``: take only requests scored at least this (a sharded queue's global order)."""
    argv: list[object] = [k.base, worker_id, lease_ms, count, consumed, retention_s]
    if floor is not None:
        argv.append(f"{floor:d}")
    return POP.cmd([k.pending, k.running, k.wake, k.unsuccessful], argv)


class Popped(NamedTuple):
    """One id POP took: what it did (``kind``, a :class:`PopKind` value) and its payload
    (``[attempt, *JOB_FIELDS]`` for RUN, the status it had for SKIP)."""

    id: str
    kind: str
    payload: Any


_POP_KINDS = frozenset(k.value for k in PopKind)


def parse_pop(reply: object) -> tuple[list[Popped], int]:
    """(popped ids, requests still pending) from POP's reply (the worker's hot path: plain
    tuples). A malformed reply raises MalformedRecord; an unknown kind is reported as SKIP."""
    if type(reply) is not list or not reply or (len(reply) - 1) % 3:
        raise MalformedRecord(f"unexpected POP reply {reply!r:.200}")
    out = [
        Popped(reply[i], k if (k := reply[i + 1]) in _POP_KINDS else PopKind.SKIP, reply[i + 2])
        for i in range(0, len(reply) - 1, 3)
    ]
    return out, int(reply[-1])


# ---- APPEND, COMPLETE, RENEW, HANDBACK: under a worker's lease ------------------------------
def append(
    k: Keys,
    request_id: str,
    *,
    worker_id: str,
    attempt: str,
    retention_s: int,
    first: bool,
    chunks: Sequence[tuple[int, int, str, str]],
) -> Command:
    """Write chunks ``(seq, pieces, text, signature or '')`` to a request's stream."""
    return APPEND.cmd(
        [k.request(request_id), k.stream(request_id)],
        [
            worker_id,
            attempt,
            retention_s,
            "1" if first else "0",
            *[x for chunk in chunks for x in chunk],
        ],
    )


def complete(
    k: Keys,
    request_id: str,
    *,
    worker_id: str,
    attempt: str,
    status: Status,
    value: str,
    envelope: str,
    stream: bool,
    retention_s: int,
    pieces: int,
    sig: str = "",
    end_sig: str = "",
    counter: str = "",
    usage: Usage | None = None,
) -> Command:
    """Deliver an outcome. COMPLETED: ``value`` is the result JSON and ``envelope`` is ''
    (the script wraps it); FAILED: ``value`` is the error and ``envelope`` the encoded
    failure envelope (``encoding.encode_envelope``). ``sig``: the worker's signature of
    ``value``, ``end_sig`` of a stream's end marker ('' when unsigned); ``counter``: one more
    stats counter to count (e.g. ``unauthenticated``); ``usage``: the model's tokens, stored in
    the record (``prompt_tokens``, ``completion_tokens``)."""
    return (  # built directly, not through Script.cmd: once per request on the worker
        "EVALSHA",
        COMPLETE.sha,
        7,
        k.request(request_id),
        k.result(request_id),
        k.stream(request_id),
        k.running,
        k.stats,
        k.history,
        k.unsuccessful,
        worker_id,
        attempt,
        request_id,
        status.value,
        "result" if status is Status.COMPLETED else "error",
        value,
        envelope,
        "1" if stream else "0",
        retention_s,
        pieces,
        sig,
        end_sig,
        counter,
        *(() if usage is None else (usage.prompt_tokens, usage.completion_tokens)),
    )


def renew(k: Keys, worker_id: str, *, lease_ms: int, held: Sequence[tuple[str, str]]) -> Command:
    """Renew the leases of ``held`` ``(request id, attempt)`` pairs."""
    return RENEW.cmd([k.running], [k.base, lease_ms, worker_id, *[x for p in held for x in p]])


def parse_renew(reply: object) -> list[LeaseResult]:
    return [LeaseResult.of(r) for r in reply] if isinstance(reply, list) else []


def handback(k: Keys, request_id: str, *, worker_id: str, attempt: str) -> Command:
    return HANDBACK.cmd(
        [k.request(request_id), k.running, k.pending, k.wake, k.stream(request_id)],
        [worker_id, attempt, request_id],
    )


# ---- REAP, REQUEUE ---------------------------------------------------------------------------
def reap(k: Keys, *, retention_s: int, limit: int = REAP_LIMIT) -> Command:
    return REAP.cmd(
        [k.running, k.pending, k.wake, k.dead, k.history, k.unsuccessful],
        [k.base, DEFAULT_MAX_ATTEMPTS, limit, retention_s],
    )


def parse_reap(reply: object) -> tuple[list[str], list[str]]:
    """(requeued ids, dead-lettered ids)."""
    if not isinstance(reply, list) or REAP_CUT not in reply:
        raise MalformedRecord(f"unexpected REAP reply {reply!r:.200}")
    cut = reply.index(REAP_CUT)
    return [str(x) for x in reply[:cut]], [str(x) for x in reply[cut + 1 :]]


def requeue(k: Keys, request_id: str) -> Command:
    return REQUEUE.cmd(
        [
            k.request(request_id),
            k.dead,
            k.pending,
            k.wake,
            k.result(request_id),
            k.stream(request_id),
        ],
        [request_id],
    )


# ---- CANCEL, EXTEND --------------------------------------------------------------------------
def cancel(k: Keys, request_id: str, *, reason: str, retention_s: int) -> Command:
    return CANCEL.cmd(
        [
            k.request(request_id),
            k.pending,
            k.running,
            k.result(request_id),
            k.stream(request_id),
            k.unsuccessful,
        ],
        [request_id, reason, retention_s],
    )


def extend(k: Keys, request_id: str, *, extra_ms: int) -> Command:
    return EXTEND.cmd([k.request(request_id)], [extra_ms])


def parse_status(reply: object) -> Status | None:
    """CANCEL's and EXTEND's reply: the status the request had (None: no record)."""
    return _status(reply)


__all__ = [
    "ALL",
    "CONSTANTS",
    "DUPLICATE",
    "Command",
    "Hole",
    "PopKind",
    "Popped",
    "Script",
    "append",
    "cancel",
    "complete",
    "duplicate_id",
    "extend",
    "handback",
    "invalid",
    "malformed",
    "parse_pop",
    "parse_reap",
    "parse_renew",
    "parse_status",
    "pop",
    "reap",
    "render",
    "renew",
    "requeue",
    "submit",
]
