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
from pathlib import Path

import pytest
from jupyter_harness import (
    JupyterLabSession,
    check_monotonic_growth,
    isolated_jupyter_env,
    open_lab_page,
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
        env = isolated_jupyter_env(tmp_path / "lab" / "env")
        env.pop("REDIS_URL", None)
        env["RTQ_REDIS_URL"] = redis_srv.url
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

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
