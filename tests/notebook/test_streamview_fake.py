"""StreamView's logic with a fake handle: no Redis, no worker. The view is an adapter over the
handle's public surface (chunks, record, cancel), so a scripted handle drives every state."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rtq_nb.errors import RequestCancelled, RequestFailed, WorkerLost
from rtq_nb.notebook.streamview import StreamSource, StreamView
from rtq_nb.protocol.records import Chunk, RequestRecord, Status
from tests.notebook.helpers import on_status

END = object()


class FakeHandle:
    """A streaming handle whose chunks and errors are fed by the test (thread-safe)."""

    def __init__(self) -> None:
        self.id, self.stream = "fake-1", True
        self.submitted_at = time.monotonic()
        self.first_chunk_at: float | None = None
        self.piece_count = 0
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.parts: list[str] = []
        self.cancelled_with: str | None = None

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

    async def record(self) -> RequestRecord:
        return RequestRecord(
            id=self.id, client="c", queue="q", priority=0, status=Status.COMPLETED,
            queue_wait_ms=5, ttfc_ms=7,
        )  # fmt: skip

    async def cancel(self, reason: str = "cancelled by client") -> Status | None:
        self.cancelled_with = reason
        self.inbox.put(RequestCancelled(f"request {self.id} was cancelled", request_id=self.id))
        return Status.RUNNING


@pytest.fixture
def fake() -> FakeHandle:
    return FakeHandle()


def test_fake_handle_is_a_stream_source(fake: FakeHandle) -> None:
    assert isinstance(fake, StreamSource)
    with pytest.raises(TypeError, match="needs a request handle"):
        StreamView(object())  # type: ignore[arg-type]


def test_chunks_render_escaped_then_done_with_server_metrics(fake: FakeHandle) -> None:
    view = StreamView(fake)
    running = on_status(view, "running")
    view.start()
    fake.inbox.put(Chunk("<b>one</b> ", 0, 1, "1-0"))
    assert running.wait(10)
    fake.inbox.put(Chunk("two three", 1, 2, "2-0"))
    fake.inbox.put(END)
    assert view.wait(10) == "<b>one</b> two three"
    assert view.status == "done" and view.error is None
    assert "&lt;b&gt;one&lt;/b&gt; two three" in view.text_widget.value
    m = view.metrics
    assert m["tokens"] == 3 and m["queue_wait_ms"] == 5 and m["ttft_ms"] == 7
    assert "done" in view.status_widget.value and view.cancel_button.disabled


def test_failure_shows_the_worker_error(fake: FakeHandle) -> None:
    view = StreamView(fake)
    view.start()
    fake.inbox.put(Chunk("partial", 0, 1, "1-0"))
    fake.inbox.put(RequestFailed("failed", request_id=fake.id, error="ValueError: boom"))
    view.wait(10)
    assert view.status == "failed" and view.error == "ValueError: boom"
    assert "ValueError: boom" in view.status_widget.value and view.text == "partial"


def test_cancel_button_cancels_through_the_handle(fake: FakeHandle) -> None:
    view = StreamView(fake)
    view.start()
    fake.inbox.put(Chunk("a", 0, 1, "1-0"))
    view.cancel_button.click()
    view.wait(10)
    assert fake.cancelled_with == "cancelled from StreamView"
    assert view.status == "cancelled" and view.cancel_button.disabled


def test_a_lost_worker_shows_retrying_then_the_retry(fake: FakeHandle) -> None:
    view = StreamView(fake)
    retrying = on_status(view, "retrying")
    view.start()
    fake.inbox.put(Chunk("lost attempt", 0, 1, "1-0"))
    lost = WorkerLost("lost", request_id=fake.id, chunks=["lost attempt"], requeued=True)
    fake.inbox.put(lost)
    assert retrying.wait(10)
    fake.inbox.put(Chunk("second try", 0, 1, "3-0"))
    fake.inbox.put(END)
    assert view.wait(10) == "second try"
    assert "lost attempt" not in view.text_widget.value and view.status == "done"
