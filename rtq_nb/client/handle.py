"""AsyncRequestHandle: one submitted request, its result or its stream (async core)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rtq_nb.client.checks import StreamCheck, checked_envelope
from rtq_nb.client.host import HandleHost
from rtq_nb.client.outcomes import (
    expired_while_pending,
    outcome_error,
    timeout_error,
    worker_lost,
)
from rtq_nb.client.payloads import ByReference
from rtq_nb.client.recipes import Recipes
from rtq_nb.client.stream_reads import StreamReads
from rtq_nb.errors import RedisUnavailable, RequestNotFound, WorkerLost
from rtq_nb.protocol.defaults import MIN_BLOCK
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import Chunk, Status
from rtq_nb.protocol.stream import EntryKind, StreamEntry, decode_entry
from rtq_nb.security.results import UNVERIFIED, Forged
from rtq_nb.transport.resp import Command

__all__ = ["AsyncRequestHandle", "HandleHost"]  # HandleHost: see client.host

log = logging.getLogger("rtq_nb.client")

XREAD_COUNT = 1024  # stream entries fetched per round trip


class AsyncRequestHandle(Recipes, ByReference):
    """A submitted request. ``await h.result()`` for a whole result, ``async for chunk in h``
    for a stream (each chunk is a ``str`` with ``.seq``/``.pieces`` metadata)."""

    def __init__(
        self,
        host: HandleHost,
        keys: Keys,
        request_id: str,
        *,
        stream: bool,
        timeout: float | None,
        input: Any,
        params: dict[str, Any] | None,
        priority: int,
    ) -> None:
        self._host = host
        self.keys = keys
        self.placed = True  # False: its shard is found on the first read (sharded queues)
        self.id = request_id
        self.queue = keys.queue
        self.stream = stream
        self.timeout = timeout
        self.priority = priority
        self.input = input
        self.params = params
        self.submitted_at = time.monotonic()
        self.deadline = None if not timeout else self.submitted_at + timeout
        self._last_entry = "0-0"
        self._parts: list[str] = []
        self._done = False
        self._result: Any = None
        self._outcome: Status | None = None
        self.piece_count = 0  # pieces (tokens) received in chunks so far
        self.first_chunk_at: float | None = None
        self.resets = 0
        self._next_seq = 0
        self.check = host.check
        self.sealed = host.check.sealer is not None  # its input was sealed: so is its output
        self._follow = StreamCheck(host.check, request_id, self.sealed)

    @property
    def text(self) -> str:
        """Stream text received so far (no I/O)."""
        return "".join(self._parts)

    @property
    def done(self) -> bool:
        """True once this handle has seen the request end (no I/O)."""
        return self._done

    def remaining(self, timeout: float | None = None) -> float | None:
        """Seconds left to wait: ``timeout`` if given, else what is left of the request's."""
        if timeout is not None:
            return timeout
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    # ---- whole results -------------------------------------------------------------------
    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the result. ``timeout`` (s) defaults to what is left of the request's own
        timeout. Raises RequestTimeout / RequestFailed / RequestCancelled / RequestExpired."""
        if self._done:
            return self._finish_outcome()
        if self.stream:
            while True:
                try:
                    async for _ in self.batches(timeout=timeout):
                        pass
                    return self.text
                except WorkerLost:
                    continue  # the retry starts over: keep reading after the reset marker
        return await self.wait_envelope(self.remaining(timeout))

    async def wait_envelope(
        self,
        remaining: float | None,
        before: Sequence[Command] = (),
        *,
        since: float | None = None,
        recheck: bool = False,
    ) -> Any:
        """BLPOP the result (after ``before``, the submission, in the same round trip) in
        slices of ``reap_interval``, reading (never writing) the record between slices.
        Returns the result or raises. ``since``: when the wait began (monotonic), if before
        this call; ``recheck``: a slice has just passed (read the record first)."""
        now = time.monotonic()
        end = None if remaining is None else now + remaining
        t0, before = now if since is None else since, list(before)
        await self._place()
        while True:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return await self._on_timeout(time.monotonic() - t0)
            if not recheck:
                replies = await self._host.exchange(
                    [*before, self.wait_command(left)], self, resend=bool(before)
                )
                before = []
                popped = replies[-1]
                if popped is not None:
                    if self.settle_envelope(popped[1]):
                        return self._finish_outcome()
                    continue  # refused (forged): keep waiting for the genuine one
            recheck = False
            try:
                rec = await self._host.find_record(self.keys, self.id)
            except RedisUnavailable:
                continue  # the next wait goes through the reconnect logic
            if rec is None:
                raise RequestNotFound(
                    f"request {self.id} has no record (never submitted, or its TTL ran out)",
                    request_id=self.id,
                )
            if rec.status.terminal and not (rec.error or "").startswith(UNVERIFIED):
                # it ended just after the slice (take its envelope, or none is left behind)
                # or another reader took the envelope (then use the checked record)
                last = await self._host.exchange([self.wait_command(MIN_BLOCK)], self, resend=False)
                if last[-1] is not None and self.settle_envelope(last[-1][1]):
                    return self._finish_outcome()
                self._set_outcome(rec.status, rec.result, rec.error)
                return self._finish_outcome()

    async def _place(self) -> None:  # find the shard of a handle made from an id alone
        if not self.placed:
            self.keys, self.placed = await self._host.keys_for(self.queue, self.id), True

    def wait_command(self, left: float | None) -> tuple[Any, ...]:
        """One wait slice for the result: ``reap_interval``, or less when ``left`` is less."""
        slice_s = self._host.reap_interval
        block = slice_s if left is None else min(left, slice_s)
        return ("BLPOP", self.keys.result(self.id), max(block, MIN_BLOCK))

    def accept_envelope(self, raw: str) -> Any:
        """The request's outcome from a result envelope (pure: no I/O): the result, or the
        matching RequestFailed / RequestCancelled / RequestExpired."""
        if not self.settle_envelope(raw):
            raise Forged(f"request {self.id}: the result envelope was refused")
        return self._finish_outcome()

    def settle_envelope(self, raw: str) -> bool:
        """Take a result envelope as the outcome (pure: no I/O). With the workers' keys, an
        envelope whose signature fails is dropped and logged (False), never shown."""
        taken = checked_envelope(self.check, self.id, raw)
        if taken is None:
            return False
        self._set_outcome(*taken)
        return True

    def outcome(self) -> Any:
        """The settled outcome: the result, or the error it raises (after settle_envelope)."""
        return self._finish_outcome()

    def _set_outcome(self, status: Status, result: Any, error: str | None) -> None:
        self._done = True
        self._outcome = status
        self._result = result if status is Status.COMPLETED else (error or status.value)

    def _finish_outcome(self) -> Any:
        if self._outcome is Status.COMPLETED:
            return self.completed_value()  # (a result by reference is read: client/payloads)
        raise outcome_error(self.id, self._outcome, self._result)

    # ---- streams -------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self.chunks()

    async def chunks(
        self, timeout: float | None = None, *, _before: Sequence[Command] = ()
    ) -> AsyncIterator[Chunk]:
        """Yield the stream's chunks in order, fetching them in batches; ends at the end
        marker. Resumes where this handle left off if called again."""
        async for batch in self.batches(timeout, _before=_before):
            for chunk in batch:
                yield chunk

    async def batches(
        self,
        timeout: float | None = None,
        *,
        _before: Sequence[Command] = (),
        since: float | None = None,
    ) -> AsyncIterator[list[Chunk]]:
        """Like :meth:`chunks`, one list per Redis read (what arrived together). Raises
        :class:`WorkerLost` (with the lost attempt's chunks) when the worker of the stream
        died; the handle stays usable and the next iteration follows the retry. ``since``:
        when the reading began (monotonic), if before this call (for a timeout's message)."""
        await self._place()
        before = list(_before)
        t0 = time.monotonic()
        end = None if (rem := self.remaining(timeout)) is None else t0 + rem
        t0 = t0 if since is None else since
        reads = StreamReads(self, self._host.stream_lanes())  # after the first: few connections
        try:
            while not self._done:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    rec = await self._host.find_record(self.keys, self.id)
                    if rec is None or not rec.status.terminal:
                        await self._on_timeout(time.monotonic() - t0)
                    end = left = None  # it has finished: read what is left, no more waiting
                got = await reads.next(before, left, self._last_entry)
                before = []
                batch, lost = self.take_entries(got)
                if batch:
                    yield batch
                if lost is not None:
                    raise lost
        finally:
            reads.close()
        self.end_of_stream()

    def read_command(self, left: float | None) -> Command:
        """One blocking read of the stream's next entries (at most ``reap_interval``)."""
        slice_s = self._host.reap_interval if left is None else min(left, self._host.reap_interval)
        block = max(1, int(slice_s * 1000))
        key = self.keys.stream(self.id)
        return ("XREAD", "COUNT", XREAD_COUNT, "BLOCK", block, "STREAMS", key, self._last_entry)

    def take_entries(self, got: Any) -> tuple[list[Chunk], WorkerLost | None]:
        """Take an ``XREAD`` reply (no I/O): the new chunks, and the WorkerLost to raise after
        them if the attempt followed so far ended (a malformed entry is logged and skipped)."""
        batch: list[Chunk] = []
        if not got:
            return batch, None
        for entry_id, fields in got[0][1]:
            entry = decode_entry(entry_id, fields)
            if (self.check.verifies or self.sealed) and entry.kind is not None:
                entry, lost = self._checked(entry)
                if lost is not None:
                    return batch, lost  # this entry starts a new attempt: read again after it
            self._last_entry = entry_id
            if entry.kind is EntryKind.RESET:
                return batch, self._on_reset(entry.detail)
            if entry.kind is EntryKind.DATA:
                chunk = self._on_chunk(entry.chunk)
                if chunk is not None:
                    batch.append(chunk)
            elif entry.outcome is not None:
                self._set_outcome(entry.outcome, self.text, entry.detail or None)
            elif entry.problem:
                log.warning("skipping stream entry %s of %s: %s", entry_id, self.id, entry.problem)
        return batch, None

    def end_of_stream(self) -> None:
        """After the end marker: raise the outcome's error unless it completed."""
        if self._outcome is not Status.COMPLETED:
            self._finish_outcome()

    def _checked(self, entry: StreamEntry) -> tuple[StreamEntry, WorkerLost | None]:
        """A stream entry as a checking reader takes it (see ``StreamCheck``); a signed entry
        of a newer attempt ends the attempt followed so far: a WorkerLost to raise (the entry
        is read again after it)."""
        taken, ended = self._follow.take(entry, self._next_seq, bool(self._parts))
        return taken, (None if ended is None else self._on_reset(ended))

    def _on_reset(self, why: str) -> WorkerLost:
        lost = list(self._parts)
        self._parts.clear()
        self._next_seq = 0
        self.piece_count = 0
        self.first_chunk_at = None
        self.resets += 1
        return worker_lost(self.id, why, lost)

    def _on_chunk(self, chunk: Chunk | None) -> Chunk | None:
        if chunk is None or chunk.seq < self._next_seq:
            return None  # stored twice by a worker's retried write: already seen
        self._next_seq = chunk.seq + chunk.pieces
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
        self._parts.append(chunk)
        self.piece_count += chunk.pieces
        return chunk

    # ---- what is known, and the reference design's recipes --------------------------------
    async def _on_timeout(self, waited: float) -> Any:
        rec = await self._host.find_record(self.keys, self.id)
        if rec is None:
            raise RequestNotFound(
                f"request {self.id} has no record (its TTL ran out?)", request_id=self.id
            )
        trusted = not (rec.error or "").startswith(UNVERIFIED)
        if trusted and ((rec.status.terminal and not self.stream) or rec.status is Status.EXPIRED):
            # the envelope was consumed elsewhere (another viewer): the record has the outcome
            self._set_outcome(rec.status, rec.result, rec.error)
            return self._finish_outcome()
        now_ms = await self._host.server_ms()
        if expired_while_pending(rec, now_ms):  # no worker will start it any more
            self._set_outcome(Status.EXPIRED, None, "deadline passed while pending")
            return self._finish_outcome()
        self.seen, self.waited_out = rec.status, True  # (for the repr)
        ahead = None
        if rec.status is Status.PENDING:
            ahead = await self._host.ahead_of(self.keys, rec.score)
        raise timeout_error(rec, now_ms, waited, ahead, list(self._parts))
