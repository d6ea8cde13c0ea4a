"""The stream widget outside JupyterLab: Notebook 7 and Voila, each a real server with real
kernels (attached through ``RTQ_REDIS_URL`` to a redis-server this module owns) and headless
Chromium.

* Notebook 7 (``python -m notebook``) opens ``/notebooks/<name>.ipynb``; Run All (the app's
  command registry, as in JupyterLab) runs a ``stream_view`` over the fake model; a
  MutationObserver records every distinct text of ``.rtq-stream-text``: it must grow through
  several strict-prefix states to the exact answer, and the badge must say ``done``.
* Voila (``python -m voila <nb>``) executes the notebook when the page is requested and shows
  only the outputs; the widget must render there and reach the exact answer with ``done``.

Screenshots: ``nb7-stream.png`` and ``voila-stream.png`` in ``$RTQ_ARTIFACTS`` (or tmp).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from jupyter_harness import (
    JupyterLabSession,
    LabPage,
    _free_port,
    check_monotonic_growth,
    chromium_page,
    rtq_lab_env,
    skip_reason,
    write_notebook,
)

from rtq_nb.demo import fake_answer
from rtq_nb.transport.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
STREAM_CLASS = "rtq-stream-text"
TOKENS, RATE = 150, 60  # 2.5 s of streaming: many intermediate states at 60 msg/s at most
BADGE_DONE = "document.querySelector('.rtq-sv-badge')?.textContent === 'done'"
T0 = time.monotonic()

pytestmark = pytest.mark.browser


def _cells(prompt: str, block: bool) -> list[str]:
    cells = [
        "from rtq_nb import Client, Worker\n"
        "from rtq_nb.demo import fake_llm\n"
        "from rtq_nb.notebook import stream_view\n"
        "client = Client()\n"
        "worker = Worker(fake_llm, client.url).start()",
        f"view = stream_view(client, {prompt!r}, params={{'tokens': {TOKENS}, 'rate': {RATE}}}, "
        f"timeout=60, block={block})",
    ]
    if block:
        cells.append("worker.stop()\nprint('NB-DONE', view.status, len(view.text))")
    return cells


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with EmbeddedRedis(tcp=True) as srv:
        yield srv.url
    print(f"\n[frontends] whole file: {time.monotonic() - T0:.1f} s wall")


def _artifacts(tmp_path: Path) -> Path:
    return Path(os.environ.get("RTQ_ARTIFACTS") or tmp_path / "artifacts")


@contextmanager
def _open_page(
    server: JupyterLabSession | VoilaServer, path: str, ready_js: str, ready_timeout_s: float
) -> Iterator[LabPage]:
    """Open ``server.url(path)`` in headless Chromium (``chromium_page``) and return once
    ``ready_js`` is truthy."""
    with chromium_page(server, path, STREAM_CLASS, wait_until="commit") as lab_page:
        lab_page.wait_for(ready_js, timeout_s=ready_timeout_s)
        yield lab_page


# --------------------------------------------------------------------------- Notebook 7
_NB7_KERNEL_IDLE = (
    "window.jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'"
)


def test_stream_view_streams_in_notebook7(redis_url: str, tmp_path: Path) -> None:
    prompt = "Notebook 7 streams the answer."
    expected = "".join(fake_answer(prompt, TOKENS))
    root = tmp_path / "root"
    write_notebook(root / "nb7.ipynb", _cells(prompt, block=True))
    env = rtq_lab_env(tmp_path / "nb7" / "env", redis_url, ROOT)
    started = time.monotonic()
    with (
        JupyterLabSession(
            root,
            tmp_path / "nb7",
            env=env,
            app_module="notebook",
            extra_args=["--JupyterNotebookApp.expose_app_in_browser=True"],
        ) as nb7,
        _open_page(nb7, "notebooks/nb7.ipynb", _NB7_KERNEL_IDLE, 60) as page,
    ):
        page.run_all_cells()
        page.wait_for_probe_text(expected[-40:], timeout_s=60)
        page.wait_for(BADGE_DONE, timeout_s=30)
        page.wait_for("window.__runAll === 'ok'", timeout_s=30)
        shot = page.screenshot(_artifacts(tmp_path) / "nb7-stream.png")
        samples = page.samples()
        final_text = page.probe_text() or ""
        outputs = page.page.locator(".jp-OutputArea-output").all_inner_texts()

    assert final_text == expected
    report = check_monotonic_growth(samples, expected[-40:], min_intermediate=5)
    assert any(f"NB-DONE done {len(expected)}" in o for o in outputs), outputs
    assert shot.stat().st_size > 0
    print(
        f"\n[notebook 7] {report.states} distinct states over {report.span_s:.2f} s "
        f"({report.intermediate} intermediate), badge done; {time.monotonic() - started:.1f} s; "
        f"{shot}"
    )


# --------------------------------------------------------------------------- Voila
class VoilaServer:
    """``python -m voila <notebook>`` on a free 127.0.0.1 port with a token; the notebook runs
    when its page is requested (so readiness is the port accepting, not a GET of ``/``)."""

    def __init__(self, notebook: Path, work_dir: Path, env: dict[str, str]) -> None:
        self.notebook, self.work_dir, self.env = notebook, work_dir, env
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.token = os.urandom(16).hex()
        self.port = 0
        self.log_path = work_dir / "voila.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"

    def log_tail(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def __enter__(self) -> VoilaServer:
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "voila",
            str(self.notebook),
            "--no-browser",
            f"--port={self.port}",
            "--Voila.ip=127.0.0.1",
            "--Voila.port_retries=0",
            f"--token={self.token}",
        ]
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self._proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=self.notebook.parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self._proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"voila exited:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise TimeoutError(f"voila not listening:\n{self.log_tail()}") from None
                time.sleep(0.1)  # polling process readiness, not synchronising test logic

    def __exit__(self, *exc_info: object) -> None:
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(15)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def test_stream_view_renders_in_voila(redis_url: str, tmp_path: Path) -> None:
    prompt = "Voila shows only the outputs."
    expected = "".join(fake_answer(prompt, TOKENS))
    nb = write_notebook(tmp_path / "root" / "voila.ipynb", _cells(prompt, block=False))
    env = rtq_lab_env(tmp_path / "voila" / "env", redis_url, ROOT)
    started = time.monotonic()
    with (
        VoilaServer(nb, tmp_path / "voila", env) as voila,
        _open_page(voila, "", f"document.querySelector('.{STREAM_CLASS}')", 60) as page,
    ):
        page.wait_for_probe_text(expected[-40:], timeout_s=60)
        page.wait_for(BADGE_DONE, timeout_s=30)
        shot = page.screenshot(_artifacts(tmp_path) / "voila-stream.png")
        samples = page.samples()
        final_text = page.probe_text() or ""
        code_cells = page.page.locator(".jp-InputArea, .jp-CodeMirrorEditor").count()
        syncs = sum(_is_sync(payload) for _, _, payload in page.ws_frames)

    assert final_text == expected
    report = check_monotonic_growth(samples, expected[-40:], min_intermediate=0)
    assert code_cells == 0, "Voila showed code"
    assert syncs >= 1, "the view did not catch up with a sync (text was sent before it rendered)"
    assert shot.stat().st_size > 0
    first = next(str(s["text"]) for s in samples if str(s["text"]).strip())
    print(
        f"\n[voila] {report.states} distinct states over {report.span_s:.2f} s "
        f"({report.intermediate} intermediate; the first {len(first)} of {len(expected)} "
        f"chars, {syncs} sync message(s)), badge done; {time.monotonic() - started:.1f} s; "
        f"{shot}"
    )


def _is_sync(payload: str | bytes) -> bool:
    raw = payload.encode() if isinstance(payload, str) else payload
    return b'"t": "sync"' in raw or b'"t":"sync"' in raw
