"""Notebook widgets at the trait/comm level: real Redis, in-process workers, a recording comm.

Every widget comm message is captured by replacing ``comm.create_comm`` (what ipywidgets calls
to open a widget's comm) with a comm that records what it would send to the frontend.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm

from rtq_nb import Client, Request, RequestFailed, Status, Worker, demo
from rtq_nb.notebook import QueueMonitor, StreamView, progress, stream_view
from rtq_nb.notebook._throttle import Throttle
from tests.notebook.helpers import on_status


class RecordingComm(BaseComm):
    """A comm that records every message instead of sending it to a frontend."""

    sent: list[tuple[float, str, str, dict[str, Any]]] = []

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        RecordingComm.sent.append((time.monotonic(), self.comm_id, msg_type, data or {}))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str, str, dict[str, Any]]]:
    sent: list[tuple[float, str, str, dict[str, Any]]] = []
    monkeypatch.setattr(RecordingComm, "sent", sent)
    monkeypatch.setattr(comm, "create_comm", lambda *a, **k: RecordingComm(*a, **k))
    return sent


def updates(sent: list[Any], *widgets: Any) -> list[tuple[float, str, str, dict[str, Any]]]:
    ids = {w.comm.comm_id for w in widgets}
    return [
        m for m in sent if m[1] in ids and m[2] == "comm_msg" and m[3].get("method") == "update"
    ]


def answer(prompt: str, tokens: int) -> str:
    return "".join(demo.fake_answer(prompt, tokens))


# ---- pure logic ----------------------------------------------------------------------------


def test_throttle_paces_and_caps_messages() -> None:
    now = [0.0]
    t = Throttle(10, clock=lambda: now[0])
    assert t.delay(2) == 0  # the first send goes out at once
    t.spent(2)
    assert t.delay(2) == pytest.approx(0.2)  # 2 messages pay 2 intervals
    sends = 0
    while now[0] < 5:  # a producer that always has something to send
        d = t.delay(2)
        if d > 0:
            now[0] += d
            continue
        t.spent(2)
        sends += 2
    assert 45 <= sends <= 52  # ~10 per second over 5 s
    with pytest.raises(ValueError):
        Throttle(0)


def test_import_rtq_nb_does_not_import_widgets_or_pandas() -> None:
    code = (
        "import sys, rtq_nb, rtq_nb.notebook, rtq_nb.notebook.views;"
        "bad = [m for m in ('ipywidgets', 'pandas', 'IPython') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- StreamView ----------------------------------------------------------------------------


def customs(sent: list[Any], view: Any) -> list[tuple[float, dict[str, Any]]]:
    """The custom messages (text deltas) ``view`` sent, with their times."""
    return [
        (m[0], m[3]["content"])
        for m in sent
        if m[1] == view.comm.comm_id and m[2] == "comm_msg" and m[3].get("method") == "custom"
    ]


def test_10k_token_stream_is_coalesced_deltas(
    client: Client, start_worker: Callable[..., Worker], recorded: list[Any]
) -> None:
    # flush_interval=0: the worker writes every token as its own stream entry, so the view
    # really receives 10,000 chunks and must coalesce them itself
    start_worker(demo.fake_llm, flush_interval=0.0)
    h = client.submit("coalesce", stream=True, params={"tokens": 10_000, "rate": 5000})
    view = StreamView(h, max_updates_per_s=20)
    assert view.update_count == 0
    before = len(recorded)  # creation messages (comm_open) are not counted
    view.start()
    text = view.wait(120)
    assert view.status == "done"
    expected = answer("coalesce", 10_000)
    assert text == expected
    assert view.metrics["tokens"] == 10_000
    assert h.async_handle.piece_count == 10_000
    msgs = [m for m in recorded[before:] if m[1] == view.comm.comm_id and m[2] == "comm_msg"]
    assert view.update_count == len(msgs)  # the view counts what it really sent
    assert len(msgs) < 200  # vs 10,000 tokens
    # at most 20 messages in any one-second window (the final update may add up to 3)
    times = [m[0] for m in msgs[:-3]]
    assert max(sum(1 for u in times if t <= u < t + 1) for t in times) <= 20
    # the text went as deltas: each byte once, nothing re-sent
    deltas = customs(recorded[before:], view)
    assert all(c["t"] == "append" for _, c in deltas)
    assert "".join(c["text"] for _, c in deltas) == expected
    payload = sum(len(json.dumps(c).encode()) for _, c in deltas)
    assert payload <= 1.5 * len(expected.encode())
    assert "rtq-stream-view" in view._dom_classes
    # tokens/s is the model's (5,000 tok/s paced), not how fast batches reached the kernel
    tps = view.metrics["tokens_per_s"]
    assert tps is not None and 1000 < tps < 8000, tps


def test_status_queued_running_done(client: Client, start_worker: Callable[..., Worker]) -> None:
    h = client.submit("status", stream=True, params={"tokens": 20, "rate": 200})
    view = StreamView(h)
    seen: list[str] = []
    view.observe(lambda ch: seen.append(ch["new"]), names="status")
    running = on_status(view, "running")
    view.start()
    assert client.get(h.id).status is Status.PENDING  # no worker yet: really queued
    assert view.status == "queued"
    assert view.status_text.startswith("queued")
    time.sleep(0.6)  # the queue wait grows while queued (server clock), not 0
    assert view.stats["queue_wait_ms"] is not None and view.stats["queue_wait_ms"] >= 200
    start_worker(demo.fake_llm)
    assert running.wait(30)
    assert view.wait(30) == answer("status", 20)
    assert seen == ["running", "done"]
    assert view.status_text.startswith("done")
    m = view.metrics
    rec = client.get(h.id)
    assert m["queue_wait_ms"] is not None and m["queue_wait_ms"] >= 600
    assert m["ttft_ms"] == rec.ttft_ms  # the live value is the server's: no jump at the end
    assert m["ttft_ms"] is not None and m["ttft_ms"] >= m["queue_wait_ms"]
    assert m["tokens"] == 20


def test_failed_handler(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(demo.fake_llm)
    h = client.submit("fail", stream=True, params={"tokens": 50, "rate": 0, "fail_at": 5})
    view = StreamView(h)
    view.start()
    view.wait(30)
    assert view.status == "failed"
    assert view.error is not None and "fake model failure at token 5" in view.error
    assert "fake model failure" in view.reason
    assert answer("fail", 50).startswith(view.text)
    assert client.get(h.id).status is Status.FAILED


def test_expired_in_queue_shows_expired(client: Client) -> None:
    h = client.submit("never run", stream=True, timeout=0.5)  # no worker: it expires queued
    view = StreamView(h)
    view.start()
    view.wait(30)
    assert view.status == "expired", (view.status, view.reason)


def test_cancel_button(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(demo.fake_llm)
    h = client.submit("cancel me", stream=True, params={"tokens": 2000, "rate": 100})
    view = StreamView(h)
    running = on_status(view, "running")
    view.start()
    assert running.wait(30)
    view._on_front_msg(view, {"t": "cancel"}, [])  # what the front end's button sends
    view.wait(30)
    assert view.status == "cancelled"
    assert client.get(h.id).status is Status.CANCELLED
    assert len(view.text) < len(answer("cancel me", 2000))


def test_text_goes_raw_for_the_front_end_to_escape(
    client: Client, start_worker: Callable[..., Worker], recorded: list[Any]
) -> None:
    """Deltas carry the raw text: the front end puts it in a text node (or escapes it in its
    Markdown renderer), so nothing is HTML-interpreted."""
    tokens = ["<script>alert('x')</script>", " a & b ", "<b>bold</b>", "\n<img src=x onerror=y>"]

    async def evil(request: Request) -> AsyncIterator[str]:
        for t in tokens:
            yield t

    start_worker(evil)
    view = stream_view(client, "x", block=True, display=False)
    assert view.text == "".join(tokens)
    sent = "".join(c.get("text", "") for _, c in customs(recorded, view))
    assert sent == view.text


@pytest.mark.parametrize("markdown", [False, True])
def test_markdown_flag(client: Client, start_worker: Callable[..., Worker], markdown: bool) -> None:
    doc = ["# Title\n\n", "Some **bold** text ", "<script>x()</script>", "\n\n- item\n"]

    async def md(request: Request) -> AsyncIterator[str]:
        for t in doc:
            yield t

    start_worker(md)
    view = stream_view(client, "md", block=True, markdown=markdown, display=False)
    assert view.text == "".join(doc)
    assert view.markdown is markdown  # a synced trait: the front end renders while streaming
    assert "markdown" in view.get_state()


def test_accepts_async_handle(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(demo.fake_llm)
    ah = client.submit("async", stream=True, params={"tokens": 7, "rate": 0}).async_handle
    view = StreamView(ah)
    view.start()
    assert view.wait(30) == answer("async", 7)
    assert view.status == "done"


def test_stream_view_nonblocking_then_wait(
    client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(demo.fake_llm)
    view = stream_view(client, "nb", params={"tokens": 100, "rate": 100}, display=True)
    assert not view.done  # returned at once, ~1 s of streaming left
    assert view.wait(30) == answer("nb", 100)
    with pytest.raises(Exception, match="not a stream"):
        StreamView(client.submit("plain"))


def test_stream_view_shows_the_models_usage(
    client: Client, start_worker: Callable[..., Worker]
) -> None:
    from rtq_nb import Usage

    def counted(request: Request) -> Any:
        request.usage = Usage(prompt_tokens=4, completion_tokens=2)
        yield "a "
        yield "b"

    start_worker(counted)
    view = stream_view(client, "x", display=False)
    assert view.wait(30) == "a b"
    assert view.metrics["usage"] == Usage(4, 2)
    assert "usage 4 + 2 tokens" in view.status_text
    assert view.stats["tokens"] == 2  # the engine's count


def test_stream_view_pacing_is_a_choice(
    client: Client, start_worker: Callable[..., Worker]
) -> None:
    start_worker(demo.fake_llm)
    view = stream_view(
        client, "p", params={"tokens": 5, "rate": 0}, display=False, max_delay_s=0.03
    )
    assert view.max_delay_s == 0.03 and view.wait(30) == answer("p", 5)


# ---- PromptLab, QueueMonitor, progress ----------------------------------------------------


def test_queue_monitor_refresh(client: Client, start_worker: Callable[..., Worker]) -> None:
    w = start_worker(demo.fake_llm)
    for h in client.submit_many(["a", "b", "c"], params={"tokens": 2, "rate": 0}):
        h.result(timeout=30)
    mon = QueueMonitor(client, interval=0.2)
    snap = mon.refresh()
    assert [x.id for x in snap["workers"]] == [w.id]
    assert snap["windows"][0]["completed"] == 3
    assert snap["windows"][0]["p50_duration_ms"] is not None
    assert w.id in mon.body_widget.value
    w.stop()
    client.submit_many(["p"] * 3, priority=5)
    client.submit_many(["q"] * 2)
    client.submit("<evil>", priority=-3)
    snap = mon.refresh()
    assert snap["pending"] == [(5, 3), (0, 2), (-3, 1)]
    assert snap["pending_total"] == 6 and snap["workers"] == []
    assert "no live workers" in mon.body_widget.value
    assert mon.refresh_count == 2


def test_queue_monitor_start_stop(client: Client) -> None:
    mon = QueueMonitor(client, interval=0.05)
    refreshed = threading.Event()
    mon.body_widget.observe(lambda ch: mon.refresh_count >= 3 and refreshed.set(), names="value")
    mon.start()
    assert mon.running and not mon.stop_button.disabled
    assert refreshed.wait(30)  # the loop refreshes on its own, the caller is not blocked
    mon.stop_button.click()
    assert not mon.running and mon.stop_button.disabled
    assert mon.status_text == "stopped"


def test_progress_text(
    client: Client, start_worker: Callable[..., Worker], capsys: pytest.CaptureFixture[str]
) -> None:
    start_worker(demo.fake_llm, concurrency=4)
    handles = [
        client.submit(
            f"job {i}", params={"tokens": 3, "rate": 0, "fail_at": 1 if i % 4 == 0 else None}
        )
        for i in range(12)
    ]
    out = progress(handles, widget=False)
    assert len(out) == 12
    for i, r in enumerate(out):
        if i % 4 == 0:
            assert isinstance(r, RequestFailed)
        else:
            assert r == answer(f"job {i}", 3)  # non-streaming fake_llm returns the joined text
    err = capsys.readouterr().err
    assert "12/12" in err and "3 failed" in err


def test_progress_widget(
    client: Client, start_worker: Callable[..., Worker], recorded: list[Any]
) -> None:
    start_worker(demo.fake_llm)
    handles = client.submit_many(
        [f"w{i}" for i in range(5)], stream=True, params={"tokens": 3, "rate": 0}
    )
    out = progress(handles, widget=True)
    assert out == [answer(f"w{i}", 3) for i in range(5)]
    values = [
        m[3]["state"]["value"]
        for m in recorded
        if m[2] == "comm_msg"
        and "value" in m[3].get("state", {})
        and isinstance(m[3]["state"]["value"], int)
    ]
    assert values and values[-1] == 5
