"""StreamView: a streaming request's text growing as chunks arrive, with status, metrics and a
Cancel button. Updates are coalesced (see ``_throttle``): a 10,000-token answer sends tens of
comm messages per second, not one per token."""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import ipywidgets as widgets
import traitlets

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
from rtq_nb.notebook._throttle import Throttle, fmt_ms

if TYPE_CHECKING:
    from rtq_nb.client import Client, RequestHandle
    from rtq_nb.protocol.records import Chunk, RequestRecord, Status, Usage


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

STATUS_EVERY = 0.25  # s between status-line refreshes while text streams (transitions: at once)
TERMINAL = frozenset({"done", "failed", "cancelled", "timeout", "expired", "error"})
_PRE = "<pre style='white-space:pre-wrap;margin:0'>{}</pre>"


class StreamView(ShowOnce, widgets.VBox):  # type: ignore[misc]
    """Widget for one streaming request (a sync ``RequestHandle`` or an ``AsyncRequestHandle``).

    ``start()`` consumes the stream in the background and returns at once; ``wait()`` blocks
    until the request ends and returns the final text. ``status`` is one of queued, running,
    done, failed, cancelled, timeout, expired, error (an observable, unsynced trait:
    ``view.observe(fn, names="status")``). At most ``max_updates_per_s`` comm messages per
    second are sent (``update_count`` counts them), plus one final update with the full text.

    Where it runs: a sync handle (and an ``AsyncRequestHandle`` when no other event loop runs in
    the calling thread) is consumed on rtq_nb's loop thread; an ``AsyncRequestHandle`` started
    from code running on another event loop (an ``AsyncClient`` in a notebook) is consumed as a
    task of that loop: use ``await view.finished()`` there rather than ``wait()``."""

    status = traitlets.Unicode("queued")

    def __init__(
        self,
        handle: RequestHandle | StreamSource,
        *,
        markdown: bool = False,
        max_updates_per_s: float = 20,
    ) -> None:
        ah = getattr(handle, "async_handle", handle)
        if not isinstance(ah, StreamSource):
            raise TypeError(f"StreamView needs a request handle, got {type(handle).__name__}")
        if not ah.stream:
            raise RtqError(f"request {ah.id} is not a stream: submit it with stream=True")
        self.handle = handle
        self._ah = ah
        self._portal_loop = getattr(handle, "loop", None) if ah is not handle else None
        self.markdown = markdown
        self._throttle = Throttle(max_updates_per_s)
        self._lock = threading.Lock()
        self._updates = 0
        self._escaped: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: concurrent.futures.Future[None] | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self._status_due = True
        self._line_at = float("-inf")
        self._done = threading.Event()
        self._end: float | None = None
        self.error: str | None = None
        self._queue_wait_ms: int | None = None
        self._ttft_ms: int | None = None
        self._usage: Usage | None = None  # the model's, from the record once done
        self._text = widgets.HTML(value=_PRE.format(""))
        self._text.add_class("rtq-stream-text")
        self._line = widgets.HTML(value=self._status_html())
        self._line.add_class("rtq-stream-status")
        self._button = widgets.Button(
            description="Cancel",
            icon="stop",
            tooltip="Cancel this request",
            layout=widgets.Layout(width="auto"),
        )
        self._button.add_class("rtq-stream-cancel")
        self._button.on_click(lambda _b: self.cancel())
        super().__init__([widgets.HBox([self._line, self._button]), self._text])
        self.add_class("rtq-stream-view")
        # the parts, for tests and layouts: the text (CSS class rtq-stream-text), the status
        # line (rtq-stream-status) and the Cancel button (rtq-stream-cancel)
        self.text_widget, self.status_widget = self._text, self._line
        self.cancel_button = self._button

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
        """Comm messages (trait syncs) this view has sent since it was created."""
        return self._updates

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def metrics(self) -> dict[str, Any]:
        """queue_wait_ms, ttft_ms (from submission), tokens, tokens_per_s, elapsed_s, usage."""
        h = self._ah
        now = self._end or time.monotonic()
        ttft = self._ttft_ms
        if ttft is None and h.first_chunk_at is not None:
            ttft = round((h.first_chunk_at - h.submitted_at) * 1000)
        tps = None
        if h.first_chunk_at is not None and h.piece_count > 1 and now > h.first_chunk_at:
            tps = h.piece_count / (now - h.first_chunk_at)
        return {
            "queue_wait_ms": self._queue_wait_ms,
            "ttft_ms": ttft,
            "tokens": h.piece_count,
            "tokens_per_s": tps,
            "elapsed_s": now - h.submitted_at,
            "usage": self._usage,
        }

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
        with self._button.hold_sync():
            self._button.disabled = True
            self._button.description = "Cancelling…"
        self._count(1)
        self.start()  # the consumer sees the cancel marker and finishes the view
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._ah.cancel("cancelled from StreamView"), self._loop)

    # ---- on the consumer's loop -----------------------------------------------------------
    async def _consume(self) -> None:
        ticker = asyncio.ensure_future(self._tick())
        final = "done"
        try:
            while True:
                try:
                    async for chunk in self._ah.chunks():
                        if self.status in ("queued", "retrying"):
                            self._set_status("running")
                        self._escaped.append(html.escape(chunk))
                        self._dirty()
                    break
                except WorkerLost:  # its worker died; the retry streams again from the start
                    self._escaped.clear()
                    self._set_status("retrying")
                    self._dirty()
        except RequestCancelled as exc:
            final, self.error = "cancelled", str(exc)
        except RequestFailed as exc:
            final, self.error = "failed", exc.error
        except RequestTimeout as exc:
            final, self.error = "timeout", str(exc).split(". Recipes")[0]
        except RequestExpired as exc:
            final, self.error = "expired", str(exc)
        except Exception as exc:  # Redis down, malformed data, bugs: show, never hide
            log.warning("stream view of %s ended with an error", self.request_id, exc_info=True)
            final, self.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            self._end = time.monotonic()
            ticker.cancel()
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
        try:
            rec = await self._ah.record()
            if rec.queue_wait_ms is not None:
                self._queue_wait_ms = rec.queue_wait_ms
            self._ttft_ms, self._usage = rec.ttft_ms, rec.usage
        except RtqError:
            pass  # metrics stay client-side estimates
        self._set_status(final)
        try:
            self._flush(final=True)
        finally:
            self._done.set()

    async def _tick(self) -> None:
        """Read the record while queued (running + queue wait); refresh the elapsed time."""
        while True:
            if self._queue_wait_ms is None:
                try:
                    rec = await self._ah.record()
                    if rec.created_ms and rec.started_ms:
                        self._queue_wait_ms = rec.started_ms - rec.created_ms
                    if rec.status.value == "running" and self.status == "queued":
                        self._set_status("running")
                except RtqError:
                    pass
            self._status_due = True
            self._dirty()
            await asyncio.sleep(0.25 if self.status == "queued" else 0.5)

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self._status_due = True

    def _dirty(self) -> None:
        if self._flush_handle is not None:
            return
        delay = self._throttle.delay(2)  # a flush sends at most 2 messages (text, status)
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
        if len(self._escaped) > 1:
            self._escaped = ["".join(self._escaped)]
        body = self._escaped[0] if self._escaped else ""
        text = _PRE.format(body)
        if final and self.markdown and self.status == "done":
            rendered = render_markdown(self.text)
            if rendered is not None:
                text = f"<div class='rtq-markdown'>{rendered}</div>"
        line = None
        if final or self._status_due or now - self._line_at >= STATUS_EVERY:
            line = self._status_html()
        sent = 0
        with self._text.hold_sync(), self._line.hold_sync(), self._button.hold_sync():
            if text != self._text.value:
                self._text.value = text
                sent += 1
            if line is not None:
                self._status_due, self._line_at = False, now
                if line != self._line.value:
                    self._line.value = line
                    sent += 1
            if final and (not self._button.disabled or self._button.description != "Cancel"):
                self._button.disabled, self._button.description = True, "Cancel"
                sent += 1
        self._count(sent)
        self._throttle.spent(sent)

    def _count(self, n: int) -> None:
        with self._lock:
            self._updates += n

    def _status_html(self) -> str:
        m = self.metrics
        st = self.status
        parts = [
            f"<b class='rtq-status rtq-status-{st}'>{st}</b>",
            f"queue wait {fmt_ms(m['queue_wait_ms'])}",
            f"TTFT {fmt_ms(m['ttft_ms'])}",
            f"{m['tokens']} tokens",
        ]
        if m["tokens_per_s"] is not None:
            parts.append(f"{m['tokens_per_s']:.1f} tok/s")
        parts.append(f"elapsed {fmt_ms(m['elapsed_s'] * 1000)}")
        if (u := m["usage"]) is not None:
            parts.append(f"usage {u.prompt_tokens} + {u.completion_tokens} tokens")
        if self.error and st in TERMINAL:
            parts.append(f"<span class='rtq-error'>{html.escape(self.error[:300])}</span>")
        return "<span class='rtq-stream-line'>" + " &middot; ".join(parts) + "</span>"


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
) -> StreamView:
    """Submit a streaming request with the sync ``client``, show a :class:`StreamView` of it and
    start it (non-blocking unless ``block=True``). ``timeout`` in seconds, None = no deadline
    (as in ``Client.submit``). Shown once per cell even when it is also the cell's result."""
    handle = client.submit(prompt, stream=True, params=params, priority=priority, timeout=timeout)
    view = StreamView(handle, markdown=markdown)
    if display:
        view.show()
    view.start()
    if block:
        view.wait()
    return view


__all__ = ["StreamView", "render_markdown", "stream_view"]
