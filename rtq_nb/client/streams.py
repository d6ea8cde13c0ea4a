"""The stream a ``stream()`` call returns, in the shape users know from openai-python: iterate
text deltas, or ``events()`` (``delta``, ``usage``, ``done``); ``text`` is a live snapshot;
``final()`` waits for the end and returns the whole text with usage and timings. The request
is submitted when ``stream()`` is called (its first read rides in the same round trip);
leaving a ``with`` block early cancels it (the worker stops generating).

:class:`AsyncStream` is the async core's; :class:`Stream` the sync facade's (one thread hop
per batch of chunks, not per chunk)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rtq_nb.errors import RtqError
from rtq_nb.protocol.records import Chunk, RequestRecord, Status, Usage

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle
    from rtq_nb.loop import LoopThread

__all__ = ["AsyncStream", "Started", "Stream", "StreamEvent", "StreamResult", "started"]


@dataclass(frozen=True)
class StreamResult:
    """A finished stream: its whole text, the model's usage (if the worker recorded it) and
    timings (measured here: from submission; ``record`` has the server's)."""

    id: str
    text: str
    status: Status
    usage: Usage | None
    pieces: int
    ttft_s: float | None  # time to the first chunk, from submission
    duration_s: float  # submission to the end marker
    record: RequestRecord | None = None

    @property
    def tokens_per_s(self) -> float:
        """Pieces (tokens) per second after the first one arrived."""
        if self.ttft_s is None or self.duration_s <= self.ttft_s:
            return 0.0
        return max(0, self.pieces - 1) / (self.duration_s - self.ttft_s)


@dataclass(frozen=True)
class StreamEvent:
    """``delta`` (``text``: the new text, ``snapshot``: all so far), ``usage`` (``usage``)
    or ``done`` (``result``: the :class:`StreamResult`)."""

    type: Literal["delta", "usage", "done"]
    text: str = ""
    snapshot: str = ""
    usage: Usage | None = None
    result: StreamResult | None = None


def _result(h: AsyncRequestHandle, rec: RequestRecord | None, t0: float) -> StreamResult:
    first = None if h.first_chunk_at is None else h.first_chunk_at - t0
    status = rec.status if rec is not None else Status.COMPLETED
    usage = rec.usage if rec is not None else None
    return StreamResult(
        h.id, h.text, status, usage, h.piece_count, first, time.monotonic() - t0, rec
    )


Started = tuple["AsyncRequestHandle", AsyncIterator[list[Chunk]]]


async def started(handle: AsyncRequestHandle, batches: AsyncIterator[list[Chunk]]) -> Started:
    """A stream whose request is prepared already (its handle and its reads)."""
    return handle, batches


class AsyncStream:
    """A streaming request in flight (see the module docs). ``async for delta in s``.
    ``start`` prepares the request (and reads the queue's layout first if needed)."""

    def __init__(self, start: Awaitable[Started]) -> None:
        self._handle: AsyncRequestHandle | None = None
        self._batches: AsyncIterator[list[Chunk]] | None = None
        self._start: Awaitable[Started] | None = start
        self._first: asyncio.Future[list[Chunk]] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: the first read submits
            self._first = asyncio.ensure_future(self._begin())
        self._ended = False
        self._result: StreamResult | None = None

    async def _begin(self) -> list[Chunk]:
        """Prepare, then submit with the first read in the same round trip."""
        if self._start is not None:
            start, self._start = self._start, None
            self._handle, self._batches = await start
        assert self._batches is not None
        return await self._batches.__anext__()

    @property
    def handle(self) -> AsyncRequestHandle:
        if self._handle is None:
            raise RuntimeError("the stream has not been submitted yet: read from it first")
        return self._handle

    @property
    def id(self) -> str:
        return self.handle.id

    @property
    def text(self) -> str:
        """The text received so far (no I/O)."""
        return "" if self._handle is None else self._handle.text

    async def next_batch(self) -> list[Chunk] | None:
        """The next chunks that arrived together (None: the stream ended)."""
        if self._ended:
            return None
        try:
            if self._first is not None:
                first, self._first = self._first, None
                return await first
            if self._batches is None:
                return await self._begin()
            return await self._batches.__anext__()
        except StopAsyncIteration:
            self._ended = True
            return None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[Chunk]:
        while (batch := await self.next_batch()) is not None:
            for chunk in batch:
                yield chunk

    async def events(self) -> AsyncIterator[StreamEvent]:
        """``delta`` events, then ``usage`` (when recorded) and ``done``."""
        async for chunk in self:
            yield StreamEvent("delta", text=chunk, snapshot=self.text)
        result = await self.final()
        if result.usage is not None:
            yield StreamEvent("usage", usage=result.usage)
        yield StreamEvent("done", result=result)

    async def final(self) -> StreamResult:
        """Wait for the end; the whole text, usage and timings (one record read)."""
        if self._result is None:
            while await self.next_batch() is not None:
                pass
            rec = await self.handle.record()
            self._result = _result(self.handle, rec, self.handle.submitted_at)
        return self._result

    async def cancel(self) -> None:
        """Cancel the request (the worker stops generating) and stop reading."""
        if not self._ended and self._handle is not None:
            await self._handle.cancel()
        await self.aclose()

    async def aclose(self) -> None:
        self._ended = True
        if self._first is not None:
            self._first.cancel()
            self._first = None
        aclose = getattr(self._batches, "aclose", None)
        if aclose is not None:
            await aclose()
        if isinstance(self._start, Coroutine):  # never started: do not leave it unawaited
            self._start.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()  # a no-op once the stream has ended


class Stream:
    """The sync facade's stream (see the module docs). ``for delta in s``."""

    def __init__(
        self,
        handle: AsyncRequestHandle,
        portal: LoopThread,
        *,
        start: Started | None = None,
        reads: Iterator[list[Chunk]] | None = None,
    ) -> None:
        """Either ``start``: the prepared request's handle and reads (the stream is made on the
        loop, where its submission starts at once); or ``reads``: the request is submitted and
        these are its batches, read on the calling thread (``rtq_nb.client.sync_reads``)."""

        async def build(s: Started) -> AsyncStream:
            return AsyncStream(started(*s))

        self._portal = portal
        self._buffer: list[Chunk] = []  # the rest of the last batch, reversed
        self._inner = None if start is None else portal.call(build(start))
        self._reads = reads
        self._result: StreamResult | None = None
        self.id, self.handle = handle.id, handle

    @property
    def text(self) -> str:
        return self.handle.text

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        while not self._buffer:
            batch = self._next_batch()
            if batch is None:
                raise StopIteration
            self._buffer.extend(reversed(batch))
        return self._buffer.pop()

    def _next_batch(self) -> list[Chunk] | None:
        if self._inner is not None:
            return self._portal.call(self._inner.next_batch())
        if self._reads is None:
            return None
        batch = next(self._reads, None)
        if batch is None:
            self._reads = None  # ended: nothing to cancel any more
        return batch

    def events(self) -> Iterator[StreamEvent]:
        for chunk in self:
            yield StreamEvent("delta", text=chunk, snapshot=self.text)
        result = self.final()
        if result.usage is not None:
            yield StreamEvent("usage", usage=result.usage)
        yield StreamEvent("done", result=result)

    def final(self) -> StreamResult:
        if self._inner is not None:
            return self._portal.call(self._inner.final())
        if self._result is None:
            for _ in self:
                pass
            rec = self._portal.call(self.handle.record())
            self._result = _result(self.handle, rec, self.handle.submitted_at)
        return self._result

    def until_done(self) -> Stream:
        self.final()
        return self

    def cancel(self) -> None:
        """Cancel the request (the worker stops generating) and stop reading. From another
        thread while this one reads: the reader ends with RequestCancelled."""
        if self._inner is not None:
            self._portal.call(self._inner.cancel())
        elif self._reads is not None:
            self._portal.call(self.handle.cancel())
            self.close()

    def close(self) -> None:
        """Stop reading (a read in progress on another thread is left to end by itself)."""
        if self._inner is not None:
            self._portal.call(self._inner.aclose())
        elif self._reads is not None:
            close = getattr(self._reads, "close", None)
            try:
                if close is not None:
                    close()
            except ValueError:  # "generator already executing": being read on another thread
                return
            self._reads = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(RtqError):  # never hide what left the block
            self.cancel()

    def __repr__(self) -> str:
        return f"<Stream {self.id} {len(self.text)} chars so far>"
