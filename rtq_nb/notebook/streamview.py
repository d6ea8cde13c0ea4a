"""StreamView: a streaming request's text growing as chunks arrive, with status, metrics and a
Cancel button. The text goes to the front end as coalesced deltas (see ``_stream_widget`` and
``_throttle``): at most ``max_updates_per_s`` small comm messages per second, not one per
token, and never the whole text again.

Pacing is a trade of liveliness against bytes. Every Jupyter comm message carries a ~550-byte
JSON envelope (header, parent header, metadata); with permessage-deflate on the kernel
websocket (``rtq-nb lab``, Binder and the README's ``--ServerApp.websocket_compression_options``)
it costs a few dozen bytes, so the defaults update the page as each chunk arrives (a 500 tok/s
stream: ~50 messages/s, token push -> page p50 ~20 ms, 0.6-1.4x the text on the wire). On a
server without compression those envelopes are ~10x the text of such a stream: there,
``max_delay_s=0.25`` sends few, large deltas (1.2-1.9x the text, ~140 ms p50)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rtq_nb.errors import (
    RequestCancelled,
    RequestExpired,
    RequestFailed,
    RequestTimeout,
    RtqError,
    WorkerLost,
)
from rtq_nb.loop import portal
from rtq_nb.notebook._display import ShowOnce, render_markdown
from rtq_nb.notebook._stream_widget import HAVE_ANYWIDGET, DeltaWidget, status_line
from rtq_nb.notebook._throttle import Throttle
from rtq_nb.notebook.live_metrics import LiveMetrics
from rtq_nb.protocol.records import Chunk

if TYPE_CHECKING:
    from rtq_nb.client import Client, RequestHandle
    from rtq_nb.protocol.records import RequestRecord, Status


@runtime_checkable
class StreamSource(Protocol):
    """What a StreamView follows: an :class:`~rtq_nb.AsyncRequestHandle` (or a fake one in
    tests). The view only uses this public surface: no Redis calls of its own."""

    id: str
    stream: bool
    submitted_at: float
    first_chunk_at: float | None
    piece_count: int

    @property
    def text(self) -> str: ...

    def chunks(self, timeout: float | None = None) -> AsyncIterator[Chunk]: ...

    async def record(self) -> RequestRecord: ...

    async def cancel(self, reason: str = ...) -> Status | None: ...


log = logging.getLogger("rtq_nb.notebook")

STATUS_EVERY = 0.25  # s between metrics refreshes while text streams (transitions: at once)
#: default pacing (measured: tests/notebook/bench_stream_widget.py, README Notebook layer).
#: Both below a worker's default chunk interval (20 ms), so each chunk goes when it arrives
#: (equal to it, waits add up: a chunk a little early waits, and the next one too).
MAX_DELAY_S = 0.015
MAX_UPDATES_PER_S = 60.0
TERMINAL = frozenset({"done", "failed", "cancelled", "timeout", "expired", "error"})


class StreamView(ShowOnce, DeltaWidget):
    """Widget for one streaming request (a sync ``RequestHandle`` or an ``AsyncRequestHandle``).

    ``start()`` consumes the stream in the background and returns at once; ``wait()`` blocks
    until the request ends and returns the final text. ``status`` is one of queued, running,
    retrying (``reason`` says why), done, failed, cancelled, timeout, expired (its deadline
    passed while queued), error; an observable trait: ``view.observe(fn, names="status")``.

    The front end gets the text as deltas (see ``_stream_widget``): at most
    ``max_updates_per_s`` comm messages per second (``update_count`` counts them), each
    carrying only the text that arrived since the previous one; a delta goes at once when it
    is the first text or holds ``min_delta_chars``, else at most ``max_delay_s`` after the
    previous one. The defaults send each chunk as it arrives (up to 60 messages/s), for a
    websocket with compression; without it, ``max_delay_s=0.25`` costs ~6x fewer bytes for
    ~120 ms more latency (see the module docstring). The metrics come
    from the Redis server's clock (:class:`LiveMetrics`), the same live and at the end.

    Where it runs: a sync handle (and an ``AsyncRequestHandle`` when no other event loop runs in
    the calling thread) is consumed on rtq_nb's loop thread; an ``AsyncRequestHandle`` started
    from code running on another event loop (an ``AsyncClient`` in a notebook) is consumed as a
    task of that loop: use ``await view.finished()`` there rather than ``wait()``."""

    def __init__(
        self,
        handle: RequestHandle | StreamSource,
        *,
        markdown: bool = False,
        max_updates_per_s: float = MAX_UPDATES_PER_S,
        min_delta_chars: int = 4096,
        max_delay_s: float = MAX_DELAY_S,
    ) -> None:
        ah = getattr(handle, "async_handle", handle)
        if not isinstance(ah, StreamSource):
            raise TypeError(f"StreamView needs a request handle, got {type(handle).__name__}")
        if not ah.stream:
            raise RtqError(f"request {ah.id} is not a stream: submit it with stream=True")
        super().__init__(markdown=markdown)
        self.handle = handle
        self._ah = ah
        self._portal_loop = getattr(handle, "loop", None) if ah is not handle else None
        self._throttle = Throttle(max_updates_per_s)
        self._lock = threading.Lock()
        self._pending: list[str] = []  # text received, not yet sent to the front end
        self._pending_chars = 0
        self._text_at = float("-inf")  # when text was last sent
        self.min_delta_chars, self.max_delay_s = min_delta_chars, max_delay_s
        self._live = LiveMetrics()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._state_due = True
        self._state_at = float("-inf")
        self._done = threading.Event()
        self.error: str | None = None
        self.stats = self._stats()

    # ---- public ---------------------------------------------------------------------------
    @property
    def request_id(self) -> str:
        return self._ah.id

    @property
    def text(self) -> str:
        """Text received so far (the full answer once done)."""
        return self._ah.text

    @property
    def update_count(self) -> int:
        """Comm messages (deltas and state syncs) this view has sent since it was created."""
        return self.messages_sent

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def metrics(self) -> dict[str, Any]:
        """queue_wait_ms, ttft_ms (from submission), tokens, tokens_per_s (the model's, over
        its generation time), elapsed_ms (and elapsed_s), usage: from the Redis server's clock."""
        m = self._live.snapshot().as_dict()
        m["elapsed_s"] = None if m["elapsed_ms"] is None else m["elapsed_ms"] / 1000
        return m

    @property
    def status_text(self) -> str:
        """The status line the front end shows, as text."""
        return status_line(self.status, self.reason, self.stats)

    def start(self) -> None:
        """Consume the stream in the background; returns at once (idempotent)."""
        with self._lock:
            if self._future is not None:
                return
            loop = self._portal_loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is None or loop is portal().loop:
                    loop = portal().loop
            self._loop = loop
            self._future = asyncio.run_coroutine_threadsafe(self._consume(), loop)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the request ends (starting the view if needed); return the final text.
        Failures do not raise: see ``status`` and ``error``. Raises RequestTimeout if still
        streaming after ``timeout`` seconds (the view keeps going)."""
        self.start()
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            raise RtqError(
                "StreamView.wait() would block the event loop that streams this view: "
                "use `await view.finished()` in async code"
            )
        if not self._done.wait(timeout):
            raise RequestTimeout(
                f"StreamView of {self.request_id} still {self.status} after {timeout} s; it "
                "keeps streaming (wait again, or press Cancel)",
                request_id=self.request_id,
                status=self.status,
                waited=timeout,
            )
        return self.text

    async def finished(self) -> str:
        """Await the end of the stream from any event loop; returns the final text."""
        self.start()
        assert self._future is not None
        await asyncio.wrap_future(self._future)
        return self.text

    def cancel(self) -> None:
        """Cancel the request (the Cancel button calls this); never blocks. The status becomes
        ``cancelled`` when the worker/queue confirms it on the stream."""
        if self._done.is_set():
            return
        self.start()  # the consumer sees the cancel marker and finishes the view
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._ah.cancel("cancelled from StreamView"), self._loop)

    # ---- on the consumer's loop -----------------------------------------------------------
    async def _consume(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        final, reason = "done", ""
        try:
            while True:
                try:
                    async for chunk in self._ah.chunks():
                        self._live.on_chunk(chunk)
                        if self.status in ("queued", "retrying"):
                            self._set_status("running")
                        self._pending.append(chunk.text if isinstance(chunk, Chunk) else chunk)
                        self._pending_chars += len(chunk)
                        self._dirty()
                    break
                except WorkerLost as exc:  # its worker died; the retry streams from the start
                    self._pending, self._pending_chars, self._text_at = [], 0, float("-inf")
                    self._live.reset()
                    self._emit_reset()
                    self._set_status("retrying", _short(exc))
                    self._dirty()
        except RequestCancelled as exc:
            final, reason = "cancelled", str(exc)
        except RequestFailed as exc:
            final, reason = "failed", exc.error or str(exc)
        except RequestTimeout as exc:
            final, reason = "timeout", str(exc).split(". Recipes")[0]
            if str(getattr(exc.status, "value", exc.status)) in ("pending", "expired"):
                final, reason = "expired", "its deadline passed while it was queued"
        except RequestExpired as exc:
            final, reason = "expired", str(exc)
        except Exception as exc:  # Redis down, malformed data, bugs: show, never hide
            log.warning("stream view of %s ended with an error", self.request_id, exc_info=True)
            final, reason = "error", f"{type(exc).__name__}: {exc}"
        finally:
            ticker.cancel()
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        await self._read_record()
        self.error = reason if final != "done" else None
        try:
            self._flush(final=True)  # the last text first: a view that shows "done" has it all
            self._set_status(final, reason[:300])
            self._flush(final=True)
        finally:
            self._done.set()

    async def _read_record(self) -> None:
        """Feed the record (and the server's clock) to the metrics."""
        now_ms = None
        server_ms = getattr(self._ah, "server_ms", None)
        try:
            if server_ms is not None:
                now_ms = await server_ms()
            rec = await self._ah.record()
        except RtqError:
            return  # the metrics keep what they have
        self._live.on_record(rec, now_ms)
        if rec.status.value == "running" and self.status == "queued":
            self._set_status("running")

    async def _tick(self) -> None:
        """Read the record while queued or running: the status and the live metrics."""
        while True:
            await self._read_record()
            self._state_due = True
            self._dirty()
            await asyncio.sleep(0.25 if self.status == "queued" else 0.5)

    def _set_status(self, status: str, reason: str = "") -> None:
        if status != self.status or reason != self.reason:
            with self.hold_sync():
                self.reason, self.status = reason, status
            self._count(1)
            self._state_due = True
            if not HAVE_ANYWIDGET:
                self._render_fallback()  # (its HTML holds the status line)

    def _text_wait(self, now: float) -> float:
        """Seconds before the pending text is worth a message: at once for the first text or
        ``min_delta_chars`` of it, else ``max_delay_s`` after the previous text (a message's
        envelope is ~550 bytes, a few dozen deflated: see the module docstring)."""
        if not self._pending:
            return float("inf")
        if self._text_at < 0 or self._pending_chars >= self.min_delta_chars:
            return 0.0
        return max(0.0, self._text_at + self.max_delay_s - now)

    def _dirty(self) -> None:
        if self._flush_handle is not None:
            return
        now = time.monotonic()
        due = 0.0 if self._state_due else max(0.0, self._state_at + STATUS_EVERY - now)
        due = min(due, self._text_wait(now))
        if due == float("inf"):
            return
        delay = max(due, self._throttle.delay(2))  # a flush sends at most 2 messages
        if delay <= 0:
            self._flush()
        else:
            assert self._loop is not None
            self._flush_handle = self._loop.call_later(delay, self._scheduled)

    def _scheduled(self) -> None:
        self._flush_handle = None
        self._dirty()  # re-check: a loop's timers may fire a little early (uvloop: ~1 ms)

    def _flush(self, final: bool = False) -> None:
        now = time.monotonic()
        sent = 0
        if final or self._text_wait(now) <= 0:
            delta, self._pending, self._pending_chars = "".join(self._pending), [], 0
            sent = self._emit(delta)
            self._text_at = now
        if final or self._state_due or now - self._state_at >= STATUS_EVERY:
            self._state_due, self._state_at = False, now
            stats = self._stats()
            if stats != self.stats:
                self.stats = stats
                self._count(1)
                sent += 1
                if not HAVE_ANYWIDGET:
                    self._render_fallback()
        self._throttle.spent(sent)
        if not final and self._pending:
            self._dirty()  # the rest of the text, when it is due

    def _stats(self) -> dict[str, Any]:
        m = self.metrics
        m["chars"] = self.sent_units  # a front end that missed a delta sees it
        del m["elapsed_s"]
        u = m.pop("usage")
        if u is not None:
            m["usage"] = {
                "prompt_tokens": u.prompt_tokens,
                "completion_tokens": u.completion_tokens,
            }
        return m

    def _count(self, n: int) -> None:
        """Trait syncs outside ``_emit`` (status, reason) count as messages too."""
        if n:
            with self._send_lock:
                self.messages_sent += n


def _short(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:200]


def stream_view(
    client: Client,
    prompt: Any,
    *,
    params: dict[str, Any] | None = None,
    priority: int = 0,
    timeout: float | None = None,
    block: bool = False,
    markdown: bool = False,
    display: bool = True,
    max_delay_s: float = MAX_DELAY_S,
) -> StreamView:
    """Submit a streaming request with the sync ``client``, show a :class:`StreamView` of it and
    start it (non-blocking unless ``block=True``). ``timeout`` in seconds, None = no deadline
    (as in ``Client.submit``). Shown once per cell even when it is also the cell's result.
    ``max_delay_s``: how long text may wait after the previous delta before it is sent to the
    page (lower: livelier, more messages). Each message carries a ~550-byte envelope, a few
    dozen bytes on a websocket with compression (the default suits that); on a server without
    it, ``max_delay_s=0.25`` keeps a fast stream's bytes near its text's."""
    handle = client.submit(prompt, stream=True, params=params, priority=priority, timeout=timeout)
    view = StreamView(handle, markdown=markdown, max_delay_s=max_delay_s)
    if display:
        view.show()
    view.start()
    if block:
        view.wait()
    return view


__all__ = ["StreamView", "render_markdown", "stream_view"]
