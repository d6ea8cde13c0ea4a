"""StreamView's logic with a fake handle: no Redis, no worker. The view is an adapter over the
handle's public surface (chunks, record, cancel), so a scripted handle drives every state."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtq_nb.errors import (
    RequestCancelled,
    RequestExpired,
    RequestFailed,
    RequestTimeout,
    WorkerLost,
)
from rtq_nb.notebook import _stream_widget, streamview
from rtq_nb.notebook.streamview import StreamSource, StreamView
from rtq_nb.protocol.records import Chunk, RequestRecord, Status
from tests.notebook.helpers import on_status

END = object()
T0 = 1_000_000


class FakeHandle:
    """A streaming handle whose chunks and errors are fed by the test (thread-safe). Its
    server clock starts at 1,000,000 ms; the record says created at 1,000,000 and started at
    1,000,005 (queue wait 5 ms)."""

    def __init__(self) -> None:
        self.id, self.stream = "fake-1", True
        self.submitted_at = time.monotonic()
        self.first_chunk_at: float | None = None
        self.piece_count = 0
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.parts: list[str] = []
        self.cancelled_with: str | None = None
        self.now_ms = T0
        self.rec = RequestRecord(
            id=self.id, client="c", queue="q", priority=0, status=Status.RUNNING,
            created_ms=T0, started_ms=T0 + 5,
        )  # fmt: skip

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def chunks(self, timeout: float | None = None) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        while True:
            item = await loop.run_in_executor(None, self.inbox.get)
            if item is END:
                return
            if isinstance(item, WorkerLost):
                self.parts.clear()
                self.piece_count = 0
            if isinstance(item, BaseException):
                raise item
            self.first_chunk_at = self.first_chunk_at or time.monotonic()
            self.parts.append(item)
            self.piece_count += item.pieces
            yield item

    async def server_ms(self) -> int:
        return self.now_ms

    async def record(self) -> RequestRecord:
        return self.rec

    async def cancel(self, reason: str = "cancelled by client") -> Status | None:
        self.cancelled_with = reason
        self.inbox.put(RequestCancelled(f"request {self.id} was cancelled", request_id=self.id))
        return Status.RUNNING


def chunk(text: str, seq: int, pieces: int = 1, at_ms: int = 0) -> Chunk:
    """A chunk whose Redis entry time is T0 + at_ms."""
    return Chunk(text, seq, pieces, f"{T0 + at_ms}-{seq}")


@pytest.fixture
def fake() -> FakeHandle:
    return FakeHandle()


class Sent(list[dict[str, Any]]):
    """The custom messages a view sent (its ``send`` replaced)."""

    def text(self) -> str:
        """What a front end that saw every message shows."""
        out = ""
        for m in self:
            if m["t"] == "append":
                out += m["text"]
            elif m["t"] == "reset":
                out = ""
            elif m["t"] == "sync":
                out = m["text"]
        return out


def recording(view: StreamView) -> Sent:
    sent = Sent()
    view.send = lambda content, buffers=None: sent.append(content)  # type: ignore[method-assign]
    return sent


def test_fake_handle_is_a_stream_source(fake: FakeHandle) -> None:
    assert isinstance(fake, StreamSource)
    with pytest.raises(TypeError, match="needs a request handle"):
        StreamView(object())  # type: ignore[arg-type]


def test_chunks_go_as_deltas_then_done_with_server_metrics(fake: FakeHandle) -> None:
    view = StreamView(fake)
    sent = recording(view)
    running = on_status(view, "running")
    view.start()
    fake.inbox.put(chunk("<b>one</b> ", 0, 1, at_ms=100))
    assert running.wait(10)
    fake.inbox.put(chunk("two three", 1, 2, at_ms=300))
    fake.inbox.put(END)
    assert view.wait(10) == "<b>one</b> two three"
    assert view.status == "done" and view.error is None and view.reason == ""
    assert all(m["t"] == "append" for m in sent)
    assert sent.text() == view.sent_text == view.text  # raw text: the front end escapes it
    m = view.metrics
    # queue wait and TTFT from the server clock; tokens/s: 2 tokens after the first over 0.2 s
    assert m["queue_wait_ms"] == 5 and m["ttft_ms"] == 100 and m["tokens"] == 3
    assert m["tokens_per_s"] == pytest.approx(10.0)
    assert view.stats["ttft_ms"] == 100 and view.stats["tokens_per_s"] == pytest.approx(10.0)
    assert view.status_text.startswith("done · queue wait 5 ms · TTFT 100 ms · 3 tokens")


def test_a_burst_read_late_does_not_inflate_tokens_per_s(fake: FakeHandle) -> None:
    """200 tokens the model made at 200 tok/s (entry times 5 ms apart) reach the view in one
    burst: tokens/s is the model's, not the burst's."""
    view = StreamView(fake)
    view.start()
    for i in range(200):
        fake.inbox.put(chunk("x", i, 1, at_ms=50 + 5 * i))
    fake.inbox.put(END)
    view.wait(10)
    assert view.metrics["tokens_per_s"] == pytest.approx(199 / 0.995)


def test_queue_wait_grows_while_queued(fake: FakeHandle) -> None:
    fake.rec = RequestRecord(
        id=fake.id, client="c", queue="q", priority=0, status=Status.PENDING, created_ms=T0
    )
    fake.now_ms = T0 + 1500
    view = StreamView(fake)
    view.start()
    deadline = time.monotonic() + 5
    while view.stats.get("queue_wait_ms") != 1500 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert view.status == "queued" and view.stats["queue_wait_ms"] == 1500
    fake.inbox.put(END)
    view.wait(10)


def test_hello_gets_one_full_sync(fake: FakeHandle) -> None:
    view = StreamView(fake)
    sent = recording(view)
    view.start()
    for i, word in enumerate(["alpha ", "beta ", "gamma"]):
        fake.inbox.put(chunk(word, i, 1, at_ms=10 * i))
    fake.inbox.put(END)
    view.wait(10)
    before = len(sent)
    view._on_front_msg(view, {"t": "hello"}, [])  # a re-rendered view (page reload) asks
    assert sent[before:] == [{"t": "sync", "text": "alpha beta gamma"}]
    view._on_front_msg(view, {"t": "nonsense"}, [])
    view._on_front_msg(view, "not a dict", [])
    assert len(sent) == before + 1


def test_a_10k_token_stream_sends_each_byte_once(fake: FakeHandle) -> None:
    words = [f"w{i} " for i in range(10_000)]
    view = StreamView(fake, max_updates_per_s=20)
    sent = recording(view)
    view.start()
    for i, w in enumerate(words):
        fake.inbox.put(chunk(w, i, 1, at_ms=i))
    fake.inbox.put(END)
    view.wait(60)
    text = "".join(words)
    assert sent.text() == text and view.text == text
    payload = sum(len(json.dumps(m).encode()) for m in sent)
    assert view.text_bytes_sent == len(text.encode())
    assert payload <= 1.5 * len(text.encode()), (payload, len(text))
    assert view.metrics["tokens"] == 10_000


def test_default_pacing_sends_each_chunk_of_a_fast_stream_as_it_arrives(
    fake: FakeHandle,
) -> None:
    """The defaults suit a websocket with compression (a message costs a few dozen bytes):
    ``max_delay_s`` and the throttle's interval are both below a worker's chunk interval
    (``flush_interval``), so a chunk that comes one interval after the previous delta goes at
    once. Equal to it, a chunk a little early would wait, and push every later one late."""
    import inspect

    from rtq_nb import Worker

    flush = inspect.signature(Worker).parameters["flush_interval"].default
    view = StreamView(fake)
    assert view.max_delay_s < flush and view._throttle.interval < flush
    assert view.max_delay_s == streamview.MAX_DELAY_S
    assert view._throttle.cap == streamview.MAX_UPDATES_PER_S  # messages/s stay bounded
    view._pending, view._pending_chars, view._text_at = ["x"], 1, 100.0
    assert view._text_wait(100.0 + flush) == 0.0
    assert view._text_wait(100.0 + view.max_delay_s / 2) > 0  # a burst still coalesces
    # a server without compression: max_delay_s=0.25 batches a fast stream into few deltas
    slow = StreamView(fake, max_delay_s=0.25)
    slow._pending, slow._pending_chars, slow._text_at = ["x"], 1, 100.0
    assert slow._text_wait(100.0 + flush) == pytest.approx(0.25 - flush)
    slow._pending_chars = slow.min_delta_chars  # unless the text is already large
    assert slow._text_wait(100.0 + flush) == 0.0


def test_failure_shows_the_worker_error(fake: FakeHandle) -> None:
    view = StreamView(fake)
    view.start()
    fake.inbox.put(chunk("partial", 0, 1))
    fake.inbox.put(RequestFailed("failed", request_id=fake.id, error="ValueError: boom"))
    view.wait(10)
    assert view.status == "failed" and view.error == "ValueError: boom"
    assert view.reason == "ValueError: boom" and "ValueError: boom" in view.status_text
    assert view.text == "partial"


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (RequestTimeout("timed out. Recipes: ...", request_id="fake-1", status="running"),
         "timeout", "timed out"),
        (RequestTimeout("timed out. Recipes: ...", request_id="fake-1", status="pending"),
         "expired", "its deadline passed while it was queued"),
        (RequestExpired("never started", request_id="fake-1"), "expired", "never started"),
        (ConnectionError("redis down"), "error", "ConnectionError: redis down"),
    ],
)  # fmt: skip
def test_terminal_states(fake: FakeHandle, exc: Exception, status: str, reason: str) -> None:
    view = StreamView(fake)
    view.start()
    fake.inbox.put(exc)
    view.wait(10)
    assert view.status == status and view.reason == reason and view.done


def test_cancel_message_cancels_through_the_handle(fake: FakeHandle) -> None:
    view = StreamView(fake)
    view.start()
    fake.inbox.put(chunk("a", 0, 1))
    view._on_front_msg(view, {"t": "cancel"}, [])  # the front end's Cancel button
    view.wait(10)
    assert fake.cancelled_with == "cancelled from StreamView"
    assert view.status == "cancelled" and "cancelled" in view.reason


def test_a_lost_worker_shows_retrying_with_its_reason_then_the_retry(fake: FakeHandle) -> None:
    view = StreamView(fake)
    sent = recording(view)
    seen: list[tuple[str, str]] = []
    view.observe(lambda ch: seen.append((ch["new"], view.reason)), names="status")
    retrying = on_status(view, "retrying")
    view.start()
    fake.inbox.put(chunk("lost attempt", 0, 1))
    lost = WorkerLost("worker w1 died", request_id=fake.id, chunks=["lost attempt"], requeued=True)
    fake.inbox.put(lost)
    assert retrying.wait(10)
    fake.inbox.put(chunk("second try", 0, 1, at_ms=50))
    fake.inbox.put(END)
    assert view.wait(10) == "second try"
    assert {"t": "reset"} in sent and sent.text() == "second try"
    assert ("retrying", "worker w1 died") in [(s, r[:14]) for s, r in seen]
    assert view.status == "done" and view.metrics["tokens"] == 1


def test_fallback_without_anywidget(fake: FakeHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """No anywidget: a plain HTML widget with the whole (escaped) text and the status line."""
    monkeypatch.setattr(_stream_widget, "HAVE_ANYWIDGET", False)
    monkeypatch.setattr(streamview, "HAVE_ANYWIDGET", False)
    rendered: list[str] = []
    monkeypatch.setattr(
        _stream_widget.DeltaWidget,
        "_render_fallback",
        lambda self: rendered.append(_fallback_html(self)),
    )
    view = StreamView(fake)
    view.start()
    fake.inbox.put(chunk("<b>x</b>", 0, 1))
    fake.inbox.put(END)
    view.wait(10)
    assert "&lt;b&gt;x&lt;/b&gt;" in rendered[-1] and "done" in rendered[-1]


def _fallback_html(view: Any) -> str:
    import html

    return html.escape(_stream_widget.status_line(view.status, view.reason, view.stats)) + (
        html.escape(view.sent_text)
    )
