"""Helpers for tests that run notebooks in real kernels and drive JupyterLab in Chromium.

Three levels of proof are supported:

* :func:`run_notebook` executes a notebook with nbclient in a real kernel and records every
  comm message the kernel sends (widget ``update`` messages with timestamps).
* :class:`JupyterLabSession` + :func:`open_lab_page` run a real ``jupyter lab`` server and a
  headless Debian Chromium (Playwright, sync API) that records every distinct text of a probe
  element, so tests can prove that a widget visibly streams.
* :func:`check_monotonic_growth` turns those recorded texts into a pass/fail verdict.

Everything runs under :func:`isolated_jupyter_env` so runs never share Jupyter/IPython state.
No pytest fixtures live here; tests build their own from these functions.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

CHROMIUM = "/usr/bin/chromium"
#: Flags proven on a headless root box; ``--user-data-dir`` is set via a persistent context.
CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NON_LOCAL_URL = re.compile(r"^https?://(?!(127\.0\.0\.1|localhost)[:/])")


# --------------------------------------------------------------------------- environment
def chromium_path() -> str | None:
    """Return the path of the Debian Chromium binary, or None when it is not installed."""
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else None


def skip_reason() -> str | None:
    """Return why browser tests cannot run here (for ``pytest.skip``), or None if they can."""
    if chromium_path() is None:
        return f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests need the 'playwright' Python package"
    return None


def isolated_jupyter_env(tmp_path: Path) -> dict[str, str]:
    """Build an environment whose Jupyter/IPython state lives entirely under ``tmp_path``.

    HOME, JUPYTER_CONFIG_DIR, JUPYTER_DATA_DIR, JUPYTER_RUNTIME_DIR and IPYTHONDIR point into
    ``tmp_path``; the current interpreter's bin dir is put first on PATH, and a ``python3``
    kernelspec whose argv starts with ``sys.executable`` is written into the isolated data dir,
    which is also the only JUPYTER_PATH entry, so it wins over any venv/system kernelspec.
    """
    home = Path(tmp_path).resolve() / "home"
    data_dir = home / ".local" / "share" / "jupyter"
    dirs = {
        "HOME": home,
        "JUPYTER_CONFIG_DIR": home / ".jupyter",
        "JUPYTER_DATA_DIR": data_dir,
        "JUPYTER_RUNTIME_DIR": data_dir / "runtime",
        "IPYTHONDIR": home / ".ipython",
    }
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    spec_dir = data_dir / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")

    env = dict(os.environ)
    env.update({name: str(path) for name, path in dirs.items()})
    bin_dir = os.path.dirname(sys.executable)  # no resolve(): keep the venv's bin, not /usr/bin
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")]).rstrip(os.pathsep)
    env["JUPYTER_PATH"] = str(data_dir)
    env["JUPYTER_PREFER_ENV_PATH"] = "0"
    env["JUPYTER_PLATFORM_DIRS"] = "1"  # silences jupyter_core's platformdirs deprecation notice
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_notebook(path: Path, sources: Sequence[str], kernel_name: str = "python3") -> Path:
    """Write a notebook made of one code cell per entry of ``sources``; return its path."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.metadata["kernelspec"] = {
        "name": kernel_name,
        "display_name": "Python 3",
        "language": "python",
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# --------------------------------------------------------------------------- nbclient level
@dataclass(frozen=True)
class CommMessage:
    """One comm message sent by the kernel (``comm_open``, ``comm_msg`` or ``comm_close``)."""

    msg_type: str
    comm_id: str
    data: dict[str, Any]
    kernel_time: datetime  # header date stamped by the kernel
    received: float  # time.monotonic() when nbclient handled it

    @property
    def method(self) -> str | None:
        """The widget protocol method (``update``, ``echo_update``...), if any."""
        return self.data.get("method")

    @property
    def state(self) -> dict[str, Any]:
        """The widget state carried by the message (empty for custom messages)."""
        return self.data.get("state") or {}


class NotebookExecutionError(RuntimeError):
    """A notebook cell failed; the message names the cell and carries its traceback."""

    def __init__(
        self, path: Path, cell_index: int | None, source: str, detail: str, notebook: NotebookNode
    ) -> None:
        self.path, self.cell_index, self.source = path, cell_index, source
        self.traceback = _ANSI.sub("", detail)
        self.notebook = notebook  # partially executed, for inspecting earlier outputs
        super().__init__(
            f"{path}: cell {cell_index} failed\n--- source ---\n{source}\n"
            f"--- traceback ---\n{self.traceback}"
        )


@dataclass
class NotebookRun:
    """Result of :func:`run_notebook`: the executed notebook and the recorded comm traffic."""

    notebook: NotebookNode
    comm_messages: list[CommMessage] = field(default_factory=list)
    duration_s: float = 0.0

    def widget_states(self) -> dict[str, dict[str, Any]]:
        """Final widget states saved by nbclient (``store_widget_state``), by model id."""
        saved = self.notebook.metadata.get("widgets", {}).get(_WIDGET_STATE_MIME, {})
        return {mid: dict(m["state"]) for mid, m in saved.get("state", {}).items()}

    def model_ids_with_class(self, css_class: str) -> list[str]:
        """Model ids of widgets whose final ``_dom_classes`` include ``css_class``."""
        return [
            mid
            for mid, st in self.widget_states().items()
            if css_class in st.get("_dom_classes", [])
        ]

    def updates(self, model_id: str, key: str | None = None) -> list[CommMessage]:
        """``update`` comm messages for ``model_id`` (only those touching ``key`` if given)."""
        return [
            m
            for m in self.comm_messages
            if m.comm_id == model_id
            and m.msg_type == "comm_msg"
            and m.method == "update"
            and (key is None or key in m.state)
        ]

    def updates_per_second(self, model_id: str, key: str | None = None) -> float:
        """Mean update rate between the first and last update (kernel clock); 0 if < 2."""
        msgs = self.updates(model_id, key)
        if len(msgs) < 2:
            return 0.0
        span = (msgs[-1].kernel_time - msgs[0].kernel_time).total_seconds()
        return (len(msgs) - 1) / span if span > 0 else float("inf")

    def peak_updates_per_second(self, model_id: str, key: str | None = None) -> int:
        """Largest number of updates inside any 1-second window (kernel clock)."""
        times = [m.kernel_time for m in self.updates(model_id, key)]
        peak, start = 0, 0
        for end, t_end in enumerate(times):
            while (t_end - times[start]).total_seconds() >= 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        return peak


class _RecordingClient(NotebookClient):
    """NotebookClient that pins the kernelspec dirs, records comms and tracks the cell index."""

    def __init__(
        self, nb: NotebookNode, kernel_dirs: list[str], record_comm: bool, **kw: Any
    ) -> None:
        super().__init__(nb, **kw)
        self._kernel_dirs, self._record_comm = kernel_dirs, record_comm
        self.recorded: list[CommMessage] = []
        self.current_cell: int | None = None

    def create_kernel_manager(self) -> Any:
        """Create the kernel manager; only our kernel dirs (or the native spec) are searched."""
        ksm = KernelSpecManager(kernel_dirs=self._kernel_dirs)
        self.km = self.kernel_manager_class(
            kernel_name=self.kernel_name, config=self.config, kernel_spec_manager=ksm
        )
        return self.km

    async def async_execute_cell(
        self, cell: NotebookNode, cell_index: int, *args: Any, **kwargs: Any
    ) -> NotebookNode:
        """Remember which cell runs, so errors can name it."""
        self.current_cell = cell_index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    def handle_comm_msg(
        self, outs: list[NotebookNode], msg: dict[str, Any], cell_index: int
    ) -> None:
        """Record the comm message, then let nbclient store the widget state as usual."""
        if self._record_comm:
            date = msg["header"]["date"]
            self.recorded.append(
                CommMessage(
                    msg_type=msg["msg_type"],
                    comm_id=msg["content"].get("comm_id", ""),
                    data=msg["content"].get("data") or {},
                    kernel_time=date
                    if isinstance(date, datetime)
                    else datetime.fromisoformat(date),
                    received=time.monotonic(),
                )
            )
        super().handle_comm_msg(outs, msg, cell_index)


def run_notebook(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
    record_comm: bool = True,
    kernel_name: str = "python3",
    output_path: Path | None = None,
) -> NotebookRun:
    """Execute ``path`` in a real kernel with nbclient and return the executed notebook.

    ``env`` (e.g. from :func:`isolated_jupyter_env`) is the kernel's environment and its
    ``JUPYTER_DATA_DIR/kernels`` is the only kernelspec dir searched (without ``env``, only
    ipykernel's native ``python3`` spec, i.e. ``sys.executable``); ``cwd`` defaults to the
    notebook's folder; ``timeout`` applies per cell. Widget state is stored in the notebook
    metadata. With ``record_comm`` every comm message is kept in ``NotebookRun.comm_messages``.
    The executed notebook is written to ``output_path`` when given. Any cell error, timeout or
    kernel death raises :class:`NotebookExecutionError` naming the cell and its traceback.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    run_env = dict(env) if env is not None else dict(os.environ)
    data_dir = run_env.get("JUPYTER_DATA_DIR")
    kernel_dirs = [str(Path(data_dir) / "kernels")] if env is not None and data_dir else []
    client = _RecordingClient(
        nb,
        kernel_dirs,
        record_comm,
        timeout=int(timeout),
        kernel_name=kernel_name,
        store_widget_state=True,
        resources={"metadata": {"path": str(cwd or path.parent)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=run_env)
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        index = client.current_cell
        source = nb.cells[index].source if index is not None else ""
        raise NotebookExecutionError(path, index, source, str(exc), nb) from exc
    if output_path is not None:
        nbformat.write(nb, output_path)
    return NotebookRun(nb, client.recorded, time.monotonic() - started)


# --------------------------------------------------------------------------- JupyterLab level
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class JupyterLabSession:
    """A ``jupyter lab`` server on a free 127.0.0.1 port, serving ``root_dir``.

    Workspaces, user settings (with the news toast disabled), the server log and the Jupyter
    environment all live under ``work_dir``. ``websocket_compression`` (default on, as in
    ``rtq-nb lab``) turns on permessage-deflate for the kernel websockets. Use as a context
    manager; on exit the server is stopped through its own process handle (terminate, then
    kill after ``stop_timeout``). ``app_module`` is the module run with ``python -m``
    (``"notebook"``: a Notebook 7 server) and ``extra_args`` are appended to its command line.
    """

    def __init__(
        self,
        root_dir: Path,
        work_dir: Path,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60,
        stop_timeout: float = 15,
        websocket_compression: bool = True,
        app_module: str = "jupyterlab",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.app_module, self.extra_args = app_module, tuple(extra_args)
        self.root_dir, self.work_dir = Path(root_dir).resolve(), Path(work_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env) if env is not None else isolated_jupyter_env(self.work_dir / "env")
        self.token = secrets.token_hex(16)
        self.port = 0
        self.log_path = self.work_dir / "jupyter-lab.log"
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.websocket_compression = websocket_compression
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        """Absolute URL of ``path`` on the server, with the token attached."""
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}/{path.lstrip('/')}{sep}token={self.token}"

    def log_tail(self, max_chars: int = 4000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and block until ``/api/status`` answers 200."""
        settings = self.work_dir / "settings"
        notif = settings / "@jupyterlab" / "apputils-extension"
        notif.mkdir(parents=True, exist_ok=True)
        (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
        self.port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            self.app_module,
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.expose_app_in_browser=True",
            f"--LabApp.workspaces_dir={self.work_dir / 'workspaces'}",
            f"--LabApp.user_settings_dir={settings}",
        ]
        if self.websocket_compression:  # permessage-deflate on the kernel websockets
            cmd.append("--ServerApp.websocket_compression_options={}")
        cmd += self.extra_args
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            cmd,
            env=self.env,
            cwd=self.root_dir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        status = self.url("api/status")
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"jupyter lab exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(status, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)  # polling process readiness, not synchronising test logic
        raise TimeoutError(
            f"jupyter lab not ready after {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server (terminate, then kill) and close its log; safe to call twice."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(self.stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(self.stop_timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> JupyterLabSession:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


_SAMPLER_JS = """
(() => {
  const cls = %s;
  window.__samples = [];
  const record = () => {
    const el = document.getElementsByClassName(cls)[0];
    if (!el) return;
    const text = el.textContent, s = window.__samples;
    if (!s.length || s[s.length - 1].text !== text)
      s.push({t: performance.now(), wall: Date.now(), text});
  };
  new MutationObserver(record).observe(document, {subtree: true, childList: true,
      characterData: true, attributes: true, attributeFilter: ['class']});
})();
"""


class LabPage:
    """A JupyterLab notebook page in Chromium, with a recorder on a probe CSS class."""

    def __init__(self, page: Any, session: JupyterLabSession, probe_css_class: str) -> None:
        self.page = page  # playwright.sync_api.Page, for anything not wrapped here
        self.session, self.probe_css_class = session, probe_css_class
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}"))
        #: every websocket frame the page received: (time.monotonic(), socket number, payload);
        #: ``ws_urls[n]`` is socket n's URL (JupyterLab may open more than one per kernel)
        self.ws_frames: list[tuple[float, int, str | bytes]] = []
        self.ws_urls: list[str] = []
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: Any) -> None:
        n = len(self.ws_urls)
        self.ws_urls.append(str(ws.url))
        ws.on("framereceived", lambda data: self.ws_frames.append((time.monotonic(), n, data)))

    def run_all_cells(self) -> None:
        """Start running every cell (JupyterLab command registry) and return at once.

        The command's promise only settles when execution ends, so it is not awaited here;
        its outcome lands in ``window.__runAll`` ("ok" or the error text) for diagnostics.
        """
        self.page.evaluate("""() => {
            window.__runAll = null;
            window.jupyterapp.commands.execute('notebook:run-all-cells').then(
                () => { window.__runAll = 'ok'; }, (e) => { window.__runAll = String(e); });
        }""")

    def run_all_status(self) -> str | None:
        """None while the last :meth:`run_all_cells` runs, then "ok" or the error text."""
        status = self.page.evaluate("window.__runAll ?? null")
        return None if status is None else str(status)

    def wait_for(self, js_condition: str, timeout_s: float = 60) -> None:
        """Wait until the JS expression is truthy; on timeout raise with page/server context."""
        try:
            self.page.wait_for_function(js_condition, timeout=timeout_s * 1000)
        except Exception as exc:
            raise TimeoutError(
                f"condition not met in {timeout_s}s: {js_condition}\n"
                f"probe text: {self.probe_text()!r}\nrun-all: {self.run_all_status()!r}\n"
                f"last console: {self.console[-10:]}\n"
                f"server log tail:\n{self.session.log_tail(2000)}"
            ) from exc

    def wait_for_probe_text(self, fragment: str, timeout_s: float = 60) -> None:
        """Wait until the probe element's text contains ``fragment``."""
        sel = json.dumps(self.probe_css_class)
        self.wait_for(
            f"document.getElementsByClassName({sel})[0]?.textContent"
            f".includes({json.dumps(fragment)})",
            timeout_s,
        )

    def probe_text(self) -> str | None:
        """Current text of the first probe element, or None if absent."""
        sel = json.dumps(self.probe_css_class)
        text = self.page.evaluate(f"document.getElementsByClassName({sel})[0]?.textContent ?? null")
        return None if text is None else str(text)

    def samples(self) -> list[dict[str, Any]]:
        """Distinct probe texts seen so far: ``{"t": perf ms, "wall": epoch ms, "text": str}``."""
        return list(self.page.evaluate("window.__samples || []"))

    def screenshot(self, path: Path, scroll_to_probe: bool = True) -> Path:
        """Save a PNG screenshot of the page (probe scrolled into view); return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = self.page.locator(f".{self.probe_css_class}").first
        if scroll_to_probe and probe.count():
            probe.scroll_into_view_if_needed()
        self.page.screenshot(path=str(path))
        return path


@contextmanager
def chromium_page(
    server: Any, path: str, probe_css_class: str, *, wait_until: str = "load"
) -> Iterator[LabPage]:
    """Open ``server.url(path)`` in headless Chromium: a fresh persistent profile under the
    server's work dir, every non-local request aborted, a MutationObserver recording each
    distinct text of the first element with ``probe_css_class``. ``server`` is a
    :class:`JupyterLabSession` or any server with ``work_dir`` and ``url(path)``."""
    from playwright.sync_api import sync_playwright

    binary = chromium_path()
    if binary is None:
        raise RuntimeError(skip_reason() or "chromium missing")
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=server.work_dir)
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile,
            executable_path=binary,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport={"width": 1280, "height": 720},
        )
        try:
            ctx.route(_NON_LOCAL_URL, lambda route: route.abort())
            page = ctx.new_page()
            lab_page = LabPage(page, server, probe_css_class)
            page.add_init_script(_SAMPLER_JS % json.dumps(probe_css_class))
            page.goto(server.url(path), wait_until=wait_until)
            yield lab_page
        finally:
            ctx.close()
            shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def open_lab_page(
    session: JupyterLabSession,
    notebook_name: str,
    probe_css_class: str,
    ready_timeout_s: float = 90,
) -> Iterator[LabPage]:
    """Open ``notebook_name`` (relative to the session root) in headless Chromium
    (:func:`chromium_page`) and return once the status bar shows the kernel ``| Idle`` (the
    toolbar indicator says idle before a kernel exists, and a Run All then is dropped)."""
    with chromium_page(session, f"lab/tree/{notebook_name}", probe_css_class) as lab_page:
        try:
            lab_page.page.locator("#jp-main-statusbar").get_by_text("| Idle").wait_for(
                timeout=ready_timeout_s * 1000
            )
        except Exception as exc:
            raise TimeoutError(
                f"kernel not idle in {ready_timeout_s}s\nconsole: "
                f"{lab_page.console[-10:]}\n{session.log_tail(2000)}"
            ) from exc
        yield lab_page


# --------------------------------------------------------------------------- wire bytes
_KERNEL_WS = re.compile(rb"^GET (/[^ ]*?)?/api/kernels/[^/ ]+/channels[ ?]")


@dataclass(frozen=True)
class WireMessage:
    """One websocket message the server sent on a kernel socket, as :class:`CountingProxy`
    saw it: ``wire`` bytes on the TCP stream (frame headers + the payload as sent, deflated
    when permessage-deflate is on) and ``payload``, the message itself (inflated: what the
    browser, and CDP's frame events, see)."""

    t: float  # time.monotonic() when its last byte passed the proxy
    wire: int
    payload: bytes
    compressed: bool


@dataclass
class ProxiedConnection:
    """One browser connection through a :class:`CountingProxy`: its first request line, bytes
    each way (``up``: browser -> server, ``down``: server -> browser) and, for a kernel
    websocket, the ``extensions`` the server agreed to and every message it sent."""

    request: str
    kernel_ws: bool
    up: int = 0
    down: int = 0
    extensions: str = ""
    messages: list[WireMessage] = field(default_factory=list)


class _DownParser:
    """Server -> browser stream of a kernel websocket: the HTTP 101 head, then frames
    (RFC 6455; unmasked), fragments joined, permessage-deflate inflated (RFC 7692)."""

    def __init__(self, conn: ProxiedConnection) -> None:
        self.conn, self.buf, self.head_done = conn, bytearray(), False
        self.parts: list[bytes] = []
        self.part_wire, self.part_rsv1 = 0, False
        self.inflater: Any = None
        self.reset_each = False

    def feed(self, data: bytes) -> None:
        import zlib

        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            del self.buf[: end + 4]
            self.head_done = True
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions":
                    self.conn.extensions = value.strip()
            self.reset_each = "server_no_context_takeover" in self.conn.extensions
            self.inflater = zlib.decompressobj(-15)
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            size, at = b1 & 0x7F, 2
            if size == 126:
                if len(self.buf) < 4:
                    return
                size, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif size == 127:
                if len(self.buf) < 10:
                    return
                size, at = int.from_bytes(self.buf[2:10], "big"), 10
            if b1 & 0x80:
                at += 4  # a masked frame (not from a server, but parse it anyway)
            if len(self.buf) < at + size:
                return
            payload = bytes(self.buf[at : at + size])
            del self.buf[: at + size]
            opcode = b0 & 0x0F
            if opcode >= 8:  # control frames: close, ping, pong
                continue
            if opcode != 0:
                self.part_rsv1 = bool(b0 & 0x40)
            self.parts.append(payload)
            self.part_wire += at + size
            if b0 & 0x80:  # FIN
                self._message()

    def _message(self) -> None:
        import zlib

        body = b"".join(self.parts)
        if self.part_rsv1:
            if self.reset_each:
                self.inflater = zlib.decompressobj(-15)
            body = self.inflater.decompress(body + b"\x00\x00\xff\xff")
        self.conn.messages.append(
            WireMessage(time.monotonic(), self.part_wire, body, self.part_rsv1)
        )
        self.parts, self.part_wire = [], 0


class CountingProxy:
    """A TCP proxy on a free 127.0.0.1 port in front of a :class:`JupyterLabSession`, counting
    the bytes that really cross the wire: open the page through it (``open_lab_page(proxy,
    ...)``: it has the ``url``/``work_dir``/``log_tail`` the page needs) and every connection
    is counted; kernel websockets (``/api/kernels/<id>/channels``) also get each server
    message's wire size and inflated payload. CDP's frame events report payloads after
    permessage-deflate is undone; this sees the compressed bytes. Threads; a context manager."""

    def __init__(self, session: JupyterLabSession) -> None:
        self.session = session
        self.work_dir = session.work_dir
        self.connections: list[ProxiedConnection] = []
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        """The session's URL for ``path``, through the proxy."""
        return self.session.url(path).replace(self.session.base_url, self.base_url, 1)

    def log_tail(self, max_chars: int = 4000) -> str:
        return self.session.log_tail(max_chars)

    def kernel_sockets(self) -> list[ProxiedConnection]:
        """The kernel websocket connections so far (their ``messages`` may still grow)."""
        with self._lock:
            return [c for c in self.connections if c.kernel_ws]

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener, self.port = listener, int(listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="counting-proxy").start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def __enter__(self) -> CountingProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while self._listener is not None:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.session.port))
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = b""
        while b"\r\n" not in first:
            data = client.recv(65536)
            if not data:
                client.close()
                upstream.close()
                return
            first += data
        conn = ProxiedConnection(
            first.split(b"\r\n", 1)[0].decode("latin-1"), bool(_KERNEL_WS.match(first))
        )
        with self._lock:
            self.connections.append(conn)
        conn.up += len(first)
        upstream.sendall(first)
        parser: _DownParser | bool = _DownParser(conn) if conn.kernel_ws else True
        down = threading.Thread(
            target=self._pump, args=(upstream, client, conn, parser), daemon=True
        )
        down.start()
        self._pump(client, upstream, conn, None)
        down.join()
        for s in (client, upstream):
            s.close()

    @staticmethod
    def _pump(
        src: socket.socket,
        dst: socket.socket,
        conn: ProxiedConnection,
        parser: _DownParser | bool | None,
    ) -> None:
        """Copy ``src`` to ``dst``, counting: ``parser`` None means browser -> server, else
        server -> browser (a kernel websocket's stream goes through its parser). On EOF or an
        error both directions are shut down."""
        up = parser is None
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if up:
                    conn.up += len(data)
                else:
                    conn.down += len(data)
                    if isinstance(parser, _DownParser):
                        parser.feed(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class GrowthReport:
    """Summary of a verified stream: distinct states, intermediate ones, and time span."""

    states: int
    intermediate: int
    span_s: float


def check_monotonic_growth(
    samples: Sequence[Mapping[str, Any]], final_marker: str, min_intermediate: int = 5
) -> GrowthReport:
    """Assert the samples show live growth and return counts and span.

    ``samples`` are dicts with ``text`` and ``t`` (milliseconds), as from
    :meth:`LabPage.samples`. Blank texts are ignored. Passes when every state is a strict
    prefix of the next, the last one contains ``final_marker`` and at least
    ``min_intermediate`` states precede it. Raises AssertionError otherwise.
    """
    kept = [s for s in samples if str(s["text"]).strip()]
    texts = [str(s["text"]) for s in kept]
    if not texts:
        raise AssertionError("no non-empty samples recorded")
    if final_marker not in texts[-1]:
        raise AssertionError(f"last state lacks {final_marker!r}: {texts[-1][-200:]!r}")
    for i, (prev, nxt) in enumerate(itertools.pairwise(texts)):
        if not (nxt.startswith(prev) and len(nxt) > len(prev)):
            raise AssertionError(
                f"state {i + 1} is not a strict extension of state {i}: "
                f"{prev[-80:]!r} -> {nxt[-80:]!r}"
            )
    intermediate = len(texts) - 1
    if intermediate < min_intermediate:
        raise AssertionError(
            f"only {intermediate} intermediate states (< {min_intermediate}): "
            f"output was not live: {texts!r}"[:2000]
        )
    span = (float(kept[-1]["t"]) - float(kept[0]["t"])) / 1000.0
    return GrowthReport(states=len(texts), intermediate=intermediate, span_s=span)


def rtq_lab_env(base: Path, redis_url: str, root: Path) -> dict[str, str]:
    """The isolated Jupyter environment of a browser test whose kernels reach ``redis_url``
    (``RTQ_REDIS_URL``; any ``REDIS_URL`` dropped) and import rtq_nb from ``root``."""
    env = isolated_jupyter_env(base)
    env.pop("REDIS_URL", None)
    env["RTQ_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    return env
