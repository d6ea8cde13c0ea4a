"""What a user sees: quickstart.ipynb in JupyterLab in headless Chromium streams visibly.

JupyterLab (a real server, kernels attached through ``RTQ_REDIS_URL`` to a redis-server this
test owns) opens a copy of ``notebooks/quickstart.ipynb``; Run All executes it; a
MutationObserver in the page records every distinct text of the ``rtq-stream-text`` element
with ``Date.now()``. The test checks live growth (several strict-prefix states up to the exact
final answer), saves mid-stream and final screenshots to ``$RTQ_ARTIFACTS`` (or tmp), and
measures push -> display delay per chunk: the chunk's Redis stream entry id carries the Redis
server's clock (ms) at the moment the worker pushed it, and the browser runs on the same host,
so ``first sample containing the chunk - entry time`` is the end-to-end delay (Redis -> client
in the kernel -> widget coalescing -> comm -> JupyterLab -> DOM).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import zlib
from pathlib import Path
from typing import Any

import pytest
from jupyter_harness import (
    CountingProxy,
    JupyterLabSession,
    check_monotonic_growth,
    open_lab_page,
    rtq_lab_env,
    skip_reason,
)

from rtq_nb import Client, Status
from rtq_nb.demo import fake_answer
from rtq_nb.transport.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "notebooks" / "quickstart.ipynb"
STREAM_CLASS = "rtq-stream-text"
DONE_CLASS = "rtq-quickstart-done"
PROMPT = "Explain how a Redis queue serves real-time inference."
TOKENS = 60

pytestmark = pytest.mark.browser


def _text_len_js(n: int) -> str:
    sel = json.dumps(STREAM_CLASS)
    return f"(document.getElementsByClassName({sel})[0]?.textContent || '').trim().length >= {n}"


def test_quickstart_streams_in_jupyterlab(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    expected = "".join(fake_answer(PROMPT, TOKENS))
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(QUICKSTART, root / QUICKSTART.name)
    artifacts = Path(os.environ.get("RTQ_ARTIFACTS") or tmp_path / "artifacts")

    with EmbeddedRedis(tcp=True) as redis_srv:
        env = rtq_lab_env(tmp_path / "lab" / "env", redis_srv.url, ROOT)

        with (
            JupyterLabSession(root, tmp_path / "lab", env=env) as lab,
            open_lab_page(lab, QUICKSTART.name, STREAM_CLASS) as page,
        ):
            page.run_all_cells()
            page.wait_for(_text_len_js(len(expected) // 3), timeout_s=90)
            mid_text = page.probe_text() or ""
            mid_shot = page.screenshot(artifacts / "quickstart-lab-mid.png")
            page.wait_for_probe_text(expected[-40:], timeout_s=60)
            final_shot = page.screenshot(artifacts / "quickstart-lab-final.png")
            page.wait_for(
                f"document.getElementsByClassName({json.dumps(DONE_CLASS)}).length", timeout_s=60
            )  # every later cell (sync + async API) ran too
            samples = page.samples()
            final_text = (page.probe_text() or "").strip()

        # The streamed request, as Redis recorded it: its chunks carry their push times.
        with Client(redis_srv.url) as client:
            history = _stream_requests(client)
            assert history, "no streaming request for the quickstart prompt in Redis"
            handle = client.handle(history[0], stream=True)
            chunks = list(handle.chunks(timeout=10))
            assert handle.done and client.get(history[0]).status is Status.COMPLETED

    # --- live growth, as the user saw it
    assert final_text == expected
    report = check_monotonic_growth(samples, expected[-40:], min_intermediate=5)
    assert len(mid_text.strip()) < len(expected), "mid-stream screenshot came too late"
    assert mid_shot.stat().st_size > 0 and final_shot.stat().st_size > 0
    assert "".join(chunks) == expected

    # --- push -> display delay per chunk
    kept = [s for s in samples if str(s["text"]).strip()]
    delays: list[float] = []
    prefix = ""
    for chunk in chunks:
        prefix += chunk
        shown = next(s for s in kept if str(s["text"]).strip().startswith(prefix.strip()))
        delays.append(float(shown["wall"]) - chunk.timestamp_ms)
    p50, worst = statistics.median(delays), max(delays)
    print(
        f"\n[browser] {report.states} distinct states over {report.span_s:.2f} s "
        f"({report.intermediate} intermediate); {len(chunks)} chunks from Redis; "
        f"push -> display delay p50 {p50:.0f} ms, max {worst:.0f} ms, min {min(delays):.0f} ms; "
        f"screenshots: {mid_shot}, {final_shot}"
    )
    assert min(delays) >= -5, f"a chunk appeared before Redis stored it? {delays}"
    assert p50 < 500 and worst < 2000, f"slow display: p50 {p50:.0f} ms, max {worst:.0f} ms"


def _stream_requests(client: Client) -> list[str]:
    """Ids of the streaming requests for PROMPT, oldest first (the stream_view one is first)."""
    from rtq_nb import views

    df = views.history(client)
    df = df[(df.input_preview == PROMPT) & (df.chunks > 0)].sort_values("created")
    return [str(x) for x in df.id]


# --------------------------------------------------------------------------- 10,000 tokens
LONG_TOKENS, LONG_RATE = 10_000, 2500  # ~4 s of streaming
LONG_CELLS = [
    "from rtq_nb import Client, Worker\n"
    "from rtq_nb.demo import fake_llm\n"
    "from rtq_nb.notebook import stream_view\n"
    "client = Client()\n"
    "worker = Worker(fake_llm, client.url).start()",
    f"view = stream_view(client, 'long answer', params={{'tokens': {LONG_TOKENS}, "
    f"'rate': {LONG_RATE}}}, timeout=120, block=True)\n"
    "print('LONG-DONE', view.status, len(view.text), view.update_count)",
    "worker.stop()",
]
_SCROLL_JS = """() => {
  const s = document.querySelector('.rtq-sv-scroll');
  if (!s) return null;
  return {top: s.scrollTop, height: s.scrollHeight, client: s.clientHeight,
          len: (document.querySelector('.rtq-stream-text')?.textContent || '').length};
}"""


def _text_frames(frames: list[tuple[float, int, str | bytes]]) -> dict[int, list[Any]]:
    """The websocket frames that carry the stream widget's text (append/sync messages), by
    socket: ``{socket number: [(time, frame bytes), ...]}``."""
    out: dict[int, list[Any]] = {}
    for t, n, payload in frames:
        raw = payload.encode() if isinstance(payload, str) else payload
        if b'"t": "append"' in raw or b'"t":"append"' in raw or b'"t": "sync"' in raw:
            out.setdefault(n, []).append((t, raw))
    return out


def test_10k_token_answer_streams_as_deltas(tmp_path: Path) -> None:
    """A 10,000-token answer in JupyterLab: the text grows live to the exact answer, the
    scroll box follows the tail, the badge says done, and the websocket carries at most 1.5x
    the text's bytes on the wire (deltas, never the whole text again; permessage-deflate, as
    ``rtq-nb lab`` runs it, shrinks each message's ~550-byte envelope to a few dozen bytes).
    The page is loaded through a counting proxy: CDP reports inflated payloads."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from jupyter_harness import write_notebook

    expected = "".join(fake_answer("long answer", LONG_TOKENS))
    root = tmp_path / "root"
    write_notebook(root / "long.ipynb", LONG_CELLS)
    artifacts = Path(os.environ.get("RTQ_ARTIFACTS") or tmp_path / "artifacts")

    with EmbeddedRedis(tcp=True) as redis_srv:
        env = rtq_lab_env(tmp_path / "lab" / "env", redis_srv.url, ROOT)
        with (
            JupyterLabSession(root, tmp_path / "lab", env=env) as lab,
            CountingProxy(lab) as proxy,
            open_lab_page(proxy, "long.ipynb", STREAM_CLASS) as page,  # type: ignore[arg-type]
        ):
            page.run_all_cells()
            page.wait_for(_text_len_js(len(expected) // 5), timeout_s=90)
            scrolls = []
            for _ in range(6):  # mid-stream: the box follows the tail
                scrolls.append(page.page.evaluate(_SCROLL_JS))
                page.page.wait_for_timeout(150)
            mid_shot = page.screenshot(artifacts / "stream-10k-mid.png")
            page.wait_for_probe_text(expected[-60:], timeout_s=90)
            page.wait_for(
                "document.querySelector('.rtq-sv-badge')?.textContent === 'done'", timeout_s=30
            )
            page.page.wait_for_timeout(300)
            final_shot = page.screenshot(artifacts / "stream-10k-done.png")
            badge_bg = page.page.evaluate(
                "getComputedStyle(document.querySelector('.rtq-sv-badge')).backgroundColor"
            )
            final_scroll = page.page.evaluate(_SCROLL_JS)
            samples = page.samples()
            final_text = page.probe_text() or ""
            frames, urls = list(page.ws_frames), list(page.ws_urls)
            sockets = proxy.kernel_sockets()

    assert final_text == expected
    report = check_monotonic_growth(samples, expected[-60:], min_intermediate=8)
    mid = [s for s in scrolls if s and s["len"] < len(expected)]
    assert mid, f"no mid-stream scroll sample: {scrolls}"
    for s in mid:
        assert s["height"] > s["client"] > 0, s  # a scroll box, not a page-long output
        assert s["height"] - s["top"] - s["client"] < 60, f"not following the tail: {s}"
    assert final_scroll["height"] - final_scroll["top"] - final_scroll["client"] < 60
    assert badge_bg not in ("", "rgba(0, 0, 0, 0)"), badge_bg
    by_socket = _text_frames(frames)
    assert by_socket, f"no text frames on {urls}"
    text_bytes = len(expected.encode())
    deflated = len(zlib.compress(expected.encode(), 6))
    dom_span = report.span_s or 1.0
    for n, text_frames in sorted(by_socket.items()):  # message bytes, as CDP sees them
        frame_bytes = sum(len(raw) for _, raw in text_frames)
        span = text_frames[-1][0] - text_frames[0][0] if len(text_frames) > 1 else 0.0
        print(
            f"\n[browser 10k] socket {n} ({urls[n].split('?')[0][-60:]}): {len(expected)} chars; "
            f"{len(text_frames)} text messages over {span:.2f} s "
            f"({len(text_frames) / max(span, 1e-9):.1f}/s), {frame_bytes} B = "
            f"{frame_bytes / text_bytes:.2f}x the text (message bytes, envelopes included)"
        )
        assert len(text_frames) >= 8
    carrying = [c for c in sockets if any(_is_text(m.payload) for m in c.messages)]
    assert len(carrying) == len(by_socket), (len(carrying), len(by_socket))
    cdp_total = sum(len(raw) for fr in by_socket.values() for _, raw in fr)
    assert sum(len(m.payload) for c in carrying for m in c.messages if _is_text(m.payload)) == (
        cdp_total
    ), "the proxy's inflated messages are not what the page received"
    for conn in carrying:  # wire bytes, as the proxy counted them
        assert "permessage-deflate" in conn.extensions, f"no compression: {conn.extensions!r}"
        msgs = [m for m in conn.messages if _is_text(m.payload)]
        wire, inflated = sum(m.wire for m in msgs), sum(len(m.payload) for m in msgs)
        print(
            f"[browser 10k] wire: {len(msgs)} text messages, {wire} B = "
            f"{wire / text_bytes:.2f}x the text ({inflated} B inflated; the text alone "
            f"deflates to {deflated / text_bytes:.2f}x; {(wire - deflated) / len(msgs):.0f} B "
            f"per message beyond it)"
        )
        # each kernel socket carries the text about once: deltas, never the whole text again
        assert wire <= 1.5 * text_bytes, f"{wire} B on the wire for {text_bytes} B of text"
        # and the envelopes really deflate (the demo text deflates to almost nothing, so the
        # ratio above alone would hide envelopes that did not)
        assert (wire - deflated) / len(msgs) < 120, f"{wire} B for {len(msgs)} messages"
    print(
        f"[browser 10k] {len(by_socket)} kernel socket(s) carried the text; "
        f"{report.states} DOM states over {report.span_s:.2f} s "
        f"({report.states / dom_span:.1f}/s); screenshots {mid_shot}, {final_shot}"
    )


def _is_text(payload: bytes) -> bool:
    return any(k in payload for k in (b'"t": "append"', b'"t":"append"', b'"t": "sync"'))
