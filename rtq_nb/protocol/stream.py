"""Stream entries and lease results (pure: no I/O).

A streaming request's Redis Stream holds data entries (``k=d s=<seq> n=<pieces> d=<text>``)
and one terminal marker, or a reset marker when an attempt was lost. Scripts that act under a
worker's lease answer with a :class:`LeaseResult`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from rtq_nb.protocol.records import Chunk, Status

__all__ = ["OUTCOMES", "EntryKind", "LeaseResult", "StreamEntry", "decode_entry", "pairs"]


class EntryKind(str, enum.Enum):
    """The ``k`` field of a stream entry."""

    DATA = "d"  # a chunk: s=<seq of its first piece> n=<pieces> d=<text>
    END = "e"  # completed
    FAILED = "f"  # d=<error>
    CANCELLED = "c"  # d=<reason>
    EXPIRED = "x"  # d=<why>: its deadline passed while it was queued
    RESET = "r"  # d=<why>: the attempt was lost; a retry streams again from the start


OUTCOMES: dict[EntryKind, Status] = {
    EntryKind.END: Status.COMPLETED,
    EntryKind.FAILED: Status.FAILED,
    EntryKind.CANCELLED: Status.CANCELLED,
    EntryKind.EXPIRED: Status.EXPIRED,
}


class LeaseResult(enum.IntEnum):
    """What a script run under a worker's lease (APPEND, COMPLETE, RENEW) found."""

    OK = 1  # appended / delivered / renewed
    LOST = 0  # the lease is not this worker's any more (reaped, taken over): discarded
    CANCELLED = -1  # the request was cancelled: stop generating

    @classmethod
    def of(cls, reply: object) -> LeaseResult:
        """The result for a script's integer reply; anything unexpected counts as LOST."""
        try:
            return cls(int(reply))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return cls.LOST


def pairs(flat: Sequence[object]) -> dict[str, str]:
    """A flat ``[field, value, ...]`` reply (HGETALL, a stream entry) as a dict."""
    return dict(zip(flat[::2], flat[1::2]))  # type: ignore[arg-type]


@dataclass(frozen=True)
class StreamEntry:
    """One decoded entry: a chunk (``kind`` DATA), a marker, or something unreadable
    (``kind`` None, ``problem`` says what)."""

    entry_id: str
    kind: EntryKind | None
    chunk: Chunk | None = None
    detail: str = ""
    problem: str = ""
    auth: str = ""  # the worker's signature (field ``a``), '' when unsigned
    pieces: int | None = None  # an end marker's total pieces (field ``n``, when signed)

    @property
    def outcome(self) -> Status | None:
        """The request's final status for a terminal marker, else None."""
        return OUTCOMES.get(self.kind) if self.kind is not None else None


_KINDS = {k.value: k for k in EntryKind}


def decode_entry(entry_id: str, fields: Sequence[object]) -> StreamEntry:
    """Decode one stream entry (its flat field list); never raises."""
    f = pairs(fields)
    kind = _KINDS.get(f.get("k", ""))
    if kind is None:
        return StreamEntry(entry_id, None, problem=f"unknown entry kind {f.get('k')!r}")
    if kind is EntryKind.DATA:
        try:
            chunk = Chunk(f["d"], int(f["s"]), int(f["n"]), entry_id)
        except (KeyError, ValueError, TypeError):
            return StreamEntry(entry_id, None, problem=f"malformed data entry {f!r:.200}")
        return StreamEntry(entry_id, kind, chunk=chunk, auth=f.get("a", ""))
    n = f.get("n")
    pieces = int(n) if n is not None and n.isascii() and n.isdigit() and len(n) < 19 else None
    return StreamEntry(entry_id, kind, detail=f.get("d", ""), auth=f.get("a", ""), pieces=pieces)
