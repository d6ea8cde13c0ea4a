"""Per-request stream output on the worker: a handler's pieces are cut (granularity),
coalesced into chunks (one Redis write per flush interval) and sent by one flusher task per
request, at most one write in flight (no Redis here: the write is a callback)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NamedTuple

from rtq_nb.errors import RtqError
from rtq_nb.protocol.records import Request
from rtq_nb.protocol.stream import LeaseResult
from rtq_nb.transport.retry import Backoff
from rtq_nb.worker.chunking import ChunkData, Chunker, ChunkerSpec, Coalescer, make_chunker
from rtq_nb.worker.threads import HandlerThreads

__all__ = ["SendFn", "SendNowFn", "StreamWriter", "consume", "is_stream"]

log = logging.getLogger("rtq_nb.worker")
SEND_TRIES = 12  # about 15 s of backoff

SendFn = Callable[[list[ChunkData]], Awaitable[LeaseResult]]
SendNowFn = Callable[[list[ChunkData]], LeaseResult]  # a blocking write, from another thread


class StreamWriter:
    """Per-request stream output: chunker -> coalescer -> one in-flight send at a time."""

    def __init__(
        self,
        request: Request,
        send: SendFn | None,
        granularity: ChunkerSpec,
        interval: float,
        send_now: SendNowFn | None = None,
    ) -> None:
        """``send``: the write (on the loop); ``send_now``: the same write, blocking, for a
        sync generator's thread to send its first piece without waking the loop (None: the
        loop sends everything)."""
        self.request = request
        self._send = send
        self.send_now = send_now if send is not None and granularity in (None, "token") else None
        self._granularity = granularity
        self.interval = interval
        self._chunker: Chunker | None = None  # made at the first write (most results are whole)
        self._co: Coalescer | None = None  # made at the first piece to send
        self._parts: list[str] = []
        self._wake = asyncio.Event() if send is not None else None  # no flusher without send
        self._sent = asyncio.Event() if send is not None else None  # first write answered
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._on_sent: list[Callable[[], None]] = []  # called once the first write is answered
        self.state = LeaseResult.OK  # from the last write: OK, LOST or CANCELLED

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def pieces(self) -> int:
        return len(self._parts)

    @property
    def streams(self) -> bool:
        """Whether pieces are sent to Redis as they come (a streaming request)."""
        return self._send is not None

    @property
    def stopped(self) -> bool:
        return self.state is not LeaseResult.OK

    def write(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(
                f"a streaming handler must yield str, got {type(text).__name__}: convert it "
                "(e.g. json.dumps) before yielding"
            )
        if self._chunker is None:
            self._chunker = make_chunker(self._granularity)
        for piece in self._chunker.feed(text):
            self._add(piece)

    def _add(self, piece: str) -> None:
        self._parts.append(piece)
        if self._send is None:
            return
        if self._co is None:  # token pieces merge into one entry; other granularities do not
            self._co = Coalescer(self.interval, merge=self._granularity in (None, "token"))
        self._co.add(piece)
        if self.stopped:
            return  # cancelled or the lease was lost: nothing more is sent
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._send is not None and self._wake is not None and self._co is not None
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            while len(self._co) and not self._closing:
                delay = self._co.due_at() - loop.time()
                if delay > 0:  # wait out the interval; a wake only re-checks (close/overflow)
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                entries = self._co.take(loop.time())
                if entries:
                    self.state = await self._send_retrying(entries)
                    self._mark_sent()
                    if self.state is not LeaseResult.OK:
                        self.request.cancelled = True  # cancelled, or the lease was lost
                        return

    async def _send_retrying(self, chunks: list[ChunkData]) -> LeaseResult:
        """Send, riding out a dropped connection for a while. A resend after a lost reply
        may store chunks twice; readers drop them by sequence number."""
        assert self._send is not None
        backoff = Backoff(tries=SEND_TRIES)
        while True:
            try:
                return await self._send(chunks)
            except RtqError as exc:
                try:
                    await backoff.retry(exc, f"stream {self.request.id}: write")
                except RtqError:
                    log.error(
                        "stream %s: giving up writing; its lease will expire and requeue it",
                        self.request.id,
                    )
                    return LeaseResult.LOST

    def sent_first(self, text: str, state: LeaseResult) -> None:
        """The first piece was written already, by the generator's thread (``send_now``)."""
        self._parts.append(text)
        if self._co is None:
            self._co = Coalescer(self.interval, merge=True)
        self._co.skip(1, asyncio.get_running_loop().time())
        self.state = state
        self._mark_sent()
        if state is not LeaseResult.OK:
            self.request.cancelled = True  # cancelled, or the lease was lost

    def _mark_sent(self) -> None:
        assert self._sent is not None
        self._sent.set()
        calls, self._on_sent = self._on_sent, []
        for call in calls:
            call()

    def when_first_sent(self, call: Callable[[], None]) -> None:
        """Call ``call`` (on the loop) once the first write is answered; at once if none is
        waiting for an answer (already answered, nothing to send yet, or not streaming)."""
        if self._task is None or self._sent is None or self._sent.is_set():
            call()
        else:
            self._on_sent.append(call)

    async def first_sent(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the first write is in Redis. A generator that
        pauses here for one round trip lets its first token out at once: one that keeps the
        CPU busy would otherwise leave Redis and the reader waiting for a CPU (2 cores)."""
        if self._sent is not None and self._parts and not self._sent.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._sent.wait(), timeout)

    async def close(self) -> list[ChunkData]:
        """Stop the flusher (waiting for a send in flight) and return what is left unsent."""
        if self._chunker is not None:
            for piece in self._chunker.flush():
                self._add(piece)
        self._closing = True
        if self._sent is not None:
            self._mark_sent()
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except Exception:  # never let a writer failure end the worker's loop
                log.exception("stream %s: writer failed", self.request.id)
                self.state = LeaseResult.LOST
        return [] if self.stopped or self._co is None else self._co.take(0.0)


class _ThreadFeed:
    """Hands pieces from a generator running in a thread to the writer on the loop,
    waking the loop once per batch rather than once per piece."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: StreamWriter) -> None:
        self._loop, self._writer = loop, writer
        self._lock = threading.Lock()
        self._buf: list[Any] = []  # pieces, or a _SentFirst
        self._scheduled = False
        self._first_sent = threading.Event()
        self.error: BaseException | None = None

    def put(self, text: Any) -> None:
        with self._lock:
            self._buf.append(text)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def put_first(self, text: Any) -> None:
        """From the generator's thread: its first piece. Written from here when the writer
        allows it (``send_now``: a blocking write, the loop is not woken for it), else handed
        to the loop like the rest; returns once it is in Redis (or after the flush
        interval), so that a generator that keeps the CPU busy lets it out at once."""
        send_now = self._writer.send_now
        if send_now is None or type(text) is not str or not text:
            self.put(text)
            self.wait_first_sent()
            return
        try:
            state = send_now([ChunkData(0, 1, text)])
        except RtqError as exc:  # the loop's writer sends it, riding out the outage
            rid = self._writer.request.id
            log.debug("stream %s: first piece handed to the loop (%s)", rid, exc)
            self.put(text)
            self.wait_first_sent()
            return
        if state is not LeaseResult.OK:
            self._writer.request.cancelled = True  # cancelled, or the lease was lost: stop now
        self.put(_SentFirst(text, state))

    def wait_first_sent(self) -> None:
        """From the generator's thread, after its first piece: block until that piece's write
        is answered (bounded by the flush interval), so that a generator that keeps the CPU
        busy lets its first token out at once."""
        if self._writer.streams:
            self._first_sent.wait(self._writer.interval)

    def _drain(self) -> None:
        with self._lock:
            items, self._buf, self._scheduled = self._buf, [], False
        try:
            for t in items:
                if type(t) is _SentFirst:
                    self._writer.sent_first(t.text, t.state)
                else:
                    self._writer.write(t)
        except BaseException as exc:
            self.error = exc
            self._writer.request.cancelled = True  # stops the generator thread
        if not self._first_sent.is_set():
            self._writer.when_first_sent(self._first_sent.set)


class _SentFirst(NamedTuple):
    """A first piece the generator's thread wrote itself, and the write's answer."""

    text: str
    state: LeaseResult


def _drive_sync_iter(it: Iterator[Any], feed: _ThreadFeed, req: Request) -> None:
    first = True
    try:
        for piece in it:
            if req.cancelled or feed.error is not None:
                break
            if first:  # in Redis before the next piece: a CPU-bound generator would otherwise
                first = False  # hold the GIL (and a CPU) while the loop tries to send it
                feed.put_first(piece)
            else:
                feed.put(piece)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


async def _drive_async_iter(ait: AsyncIterator[Any], writer: StreamWriter) -> None:
    """An async generator that never awaits (tokens from a CPU-bound loop) would keep the
    flusher off the loop until it ends: pause after the first piece until it is in Redis, then
    yield to the loop at least once per flush interval."""
    next_yield = None
    try:
        async for piece in ait:
            writer.write(piece)
            if writer.stopped or writer.request.cancelled:
                break
            now = time.monotonic()
            if next_yield is None:
                next_yield = now + writer.interval
                await writer.first_sent(writer.interval)
            elif now >= next_yield:
                next_yield = now + writer.interval
                await asyncio.sleep(0)
    finally:
        aclose = getattr(ait, "aclose", None)
        if aclose is not None:
            await aclose()


_PLAIN = (str, dict, list, int, float, bool, type(None))


def is_stream(value: Any) -> bool:
    if type(value) in _PLAIN:  # the common case, without inspecting
        return False
    return (
        inspect.isgenerator(value)
        or inspect.isasyncgen(value)
        or (hasattr(value, "__anext__") and not isinstance(value, (str, bytes, dict, list)))
    )


async def consume(value: Any, writer: StreamWriter, executor: HandlerThreads) -> None:
    """Feed a handler's streamed output (sync or async iterator) into ``writer``."""
    if hasattr(value, "__anext__"):
        await _drive_async_iter(value, writer)
    else:
        loop = asyncio.get_running_loop()
        feed = _ThreadFeed(loop, writer)
        it = iter(value)  # driven in a thread, in the caller's context
        await executor.call(_drive_sync_iter, it, feed, writer.request)
        await asyncio.sleep(0)  # let the last scheduled _drain run before we close
        if feed.error is not None:
            raise feed.error
