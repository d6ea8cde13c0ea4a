"""How a client takes what workers wrote when it checks signatures or opens encrypted output
(pure: no I/O): result envelopes, and stream entries one by one (attempts, order, seals).

Markers that Redis scripts write themselves (cancelled, expired, a lost attempt's reset) cannot
be signed: a checking client takes their status, never their text, and tells attempts apart by
the attempt number each signed entry covers.
"""

from __future__ import annotations

import logging
from typing import Any

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.encoding import decode_envelope, signed_completed
from rtq_nb.protocol.records import Chunk, Status
from rtq_nb.protocol.signing import ResultKind
from rtq_nb.protocol.stream import OUTCOMES, EntryKind, StreamEntry
from rtq_nb.security.results import UNSIGNED_DETAIL as _UNSIGNED
from rtq_nb.security.results import Forged, ResultCheck
from rtq_nb.security.sealing import Unsealable

__all__ = ["UNSIGNED_DETAIL", "StreamCheck", "checked_envelope"]

log = logging.getLogger("rtq_nb.client")

UNSIGNED_DETAIL = {Status(k): v for k, v in _UNSIGNED.items()}


def checked_envelope(chk: ResultCheck, rid: str, raw: str) -> tuple[Status, Any, str | None] | None:
    """``(status, result, error)`` of a result envelope, or None when it is refused (forged:
    logged, never shown). A sealed result is opened; one that does not open fails. A
    malformed envelope raises MalformedRecord, unless this client verifies: then it is
    dropped like a forgery."""
    try:
        status, result, error, sig = decode_envelope(raw)
    except MalformedRecord as exc:
        if not chk.verifies:
            raise
        log.warning("request %s: dropped a malformed result envelope (%s)", rid, exc)
        return None
    try:
        if chk.verifies and status is Status.COMPLETED:
            parts = signed_completed(raw)
            if parts is None:
                raise Forged("unsigned")
            chk.verify(rid, parts[1], ResultKind.COMPLETED, parts[0])
        elif chk.verifies and status is Status.FAILED:
            chk.verify(rid, sig, ResultKind.FAILED, "" if error is None else error)
        elif chk.verifies:  # cancelled, expired: written by scripts, status only
            error = UNSIGNED_DETAIL.get(status, status.value)
    except Forged as exc:
        log.warning("request %s: dropped a forged %s result (%s)", rid, status.value, exc)
        return None
    if status is Status.COMPLETED:
        try:
            result = chk.open_value(rid, result)
        except (Unsealable, ValueError) as exc:
            status, error = Status.FAILED, f"cannot open the encrypted result: {exc}"
    return status, result, error


class StreamCheck:
    """One reader's check of a stream's entries: signatures, attempts, order, seals."""

    def __init__(self, chk: ResultCheck, rid: str, sealed: bool) -> None:
        self.chk, self.rid, self.sealed = chk, rid, sealed
        self.attempt = 0  # the attempt whose signed entries are being followed
        self.run = ""  # ... and the worker's run of it (a replay's run is another one)

    @property
    def active(self) -> bool:
        return self.chk.verifies or self.sealed

    def take(
        self, entry: StreamEntry, next_seq: int, has_parts: bool
    ) -> tuple[StreamEntry, str | None]:
        """``(entry as taken, why the followed attempt ended or None)``. Forged, superseded,
        out-of-order and unopenable entries become skipped ones (``kind`` None, logged)."""
        kind, rid, verifies = entry.kind, self.rid, self.chk.verifies
        skip = StreamEntry(entry.entry_id, None)
        if kind is None or not self.active:
            return entry, None
        if kind is EntryKind.RESET:
            return (skip if verifies else entry), None
        if kind in (EntryKind.CANCELLED, EntryKind.EXPIRED):
            if not verifies:
                return entry, None
            return StreamEntry(entry.entry_id, kind, detail=UNSIGNED_DETAIL[OUTCOMES[kind]]), None
        try:
            attempt, run = self._verify(entry)
        except Forged as exc:
            log.warning("request %s: dropped forged stream entry %s (%s)", rid, entry.entry_id, exc)
            return skip, None
        if attempt < self.attempt:
            log.warning("request %s: dropped an entry of superseded attempt %d", rid, attempt)
            return skip, None
        if attempt > self.attempt:
            started, self.attempt, self.run = self.attempt, attempt, run
            if started and (has_parts or next_seq):
                return entry, f"attempt {started} was lost; attempt {attempt} began"
        elif verifies and run != self.run:
            if not self.run and not (has_parts or next_seq):
                self.run = run
            else:
                log.warning("request %s: dropped an entry of another run (a replay)", rid)
                return skip, None
        c = entry.chunk
        if kind is EntryKind.DATA and c is not None:
            if c.seq > next_seq:
                log.warning("request %s: dropped an out-of-order chunk (seq %d)", rid, c.seq)
                return skip, None
            if c.seq == next_seq and self.sealed:
                try:
                    text = self.chk.open_chunk(rid, c, c.seq, c.pieces)
                except Unsealable as exc:
                    log.warning("request %s: dropped a chunk that does not open (%s)", rid, exc)
                    return skip, None
                return StreamEntry(
                    entry.entry_id, kind, Chunk(text, c.seq, c.pieces, c.entry_id)
                ), None
        if kind is EntryKind.END and verifies and entry.pieces != next_seq:
            log.warning("request %s: dropped an end marker for %s pieces", rid, entry.pieces)
            return skip, None
        return entry, None

    def _verify(self, entry: StreamEntry) -> tuple[int, str]:
        """``(attempt, run)`` a signed entry covers (0, '' when not verifying); raises
        Forged."""
        chk, rid = self.chk, self.rid
        if entry.kind is EntryKind.DATA and entry.chunk is not None:
            c = entry.chunk
            return chk.verify(rid, entry.auth, ResultKind.DATA, c, c.seq, c.pieces)
        if entry.kind is EntryKind.END:
            n = entry.pieces if entry.pieces is not None else -1
            return chk.verify(rid, entry.auth, ResultKind.END, "", n, n)
        if entry.kind is EntryKind.FAILED:
            return chk.verify(rid, entry.auth, ResultKind.FAILED, entry.detail)
        return self.attempt, self.run
