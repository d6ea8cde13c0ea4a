"""What a user sees: QueueMonitor's dashboard in JupyterLab (headless Chromium) draws its SVG
charts, redraws them under load while later cells run, and its Stop button stops it."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from jupyter_harness import (
    JupyterLabSession,
    open_lab_page,
    rtq_lab_env,
    skip_reason,
    write_notebook,
)

from rtq_nb.transport.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
BODY = "rtq-monitor-body"
DONE = "rtq-dash-done"
SCROLL = "document.querySelector('.rtq-monitor')?.scrollIntoView()"

pytestmark = pytest.mark.browser

CELLS = [
    "import os\n"
    "from rtq_nb import Client, Worker\n"
    "from rtq_nb.demo import fake_llm\n"
    "from rtq_nb.notebook import QueueMonitor\n"
    "client = Client(os.environ['RTQ_REDIS_URL'], queue='dash')\n"
    "worker = Worker(fake_llm, client.url, queue='dash', concurrency=2).start()\n"
    "monitor = QueueMonitor(client, interval=0.3)\n"
    "monitor.start()",
    "import time\n"
    "handles = client.submit_many(['x'] * 40, params={'tokens': 10, 'rate': 50})\n"
    "time.sleep(1.5)\n"
    "answers = [h.result(timeout=120) for h in handles]",
    f"from IPython.display import HTML\nHTML(f\"<p class='{DONE}'>{{len(answers)}} answers</p>\")",
]


def test_monitor_dashboard_in_jupyterlab(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    write_notebook(root / "dash.ipynb", CELLS)
    artifacts = Path(os.environ.get("RTQ_ARTIFACTS") or tmp_path / "artifacts")
    charts = "document.querySelectorAll('.rtq-monitor .rtq-chart-svg')"
    with EmbeddedRedis(tcp=True) as redis_srv:
        env = rtq_lab_env(tmp_path / "lab" / "env", redis_srv.url, ROOT)
        with (
            JupyterLabSession(root, tmp_path / "lab", env=env) as lab,
            open_lab_page(lab, "dash.ipynb", BODY) as page,
        ):
            page.run_all_cells()
            page.wait_for(f"{charts}.length === 5", timeout_s=90)
            page.wait_for(  # under load: something pending shows in the header
                f"/[1-9]\\d* pending/.test(document.getElementsByClassName({json.dumps(BODY)})"
                "[0]?.textContent || '')",
                timeout_s=60,
            )
            first = page.page.evaluate(f"{charts}[0].outerHTML")
            time.sleep(1.0)
            second = page.page.evaluate(f"{charts}[0].outerHTML")
            page.page.evaluate(SCROLL)  # the body is replaced on each refresh
            page.screenshot(artifacts / "monitor-lab-load.png", scroll_to_probe=False)
            page.wait_for(  # the later cells ran while the monitor kept refreshing
                f"document.getElementsByClassName({json.dumps(DONE)}).length", timeout_s=120
            )
            page.page.evaluate(SCROLL)  # the body is replaced on each refresh
            page.screenshot(artifacts / "monitor-lab-done.png", scroll_to_probe=False)
            button = page.page.locator(".rtq-monitor button", has_text="Stop")
            assert button.is_enabled()
            button.click()
            page.wait_for(
                "document.querySelector('.rtq-monitor')?.textContent.includes('stopped')",
                timeout_s=30,
            )
            text = page.probe_text() or ""
    assert first != second, "the pending chart was not redrawn under load"
    assert "<polygon" in first or "<circle" in first
    for label in ("pending by priority", "throughput", "queue wait", "duration", "workers"):
        assert label in text
    assert "in flight on 1 worker(s)" in text and "last 60 s" in text
