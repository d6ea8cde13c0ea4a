"""``rtq-nb lab``: JupyterLab on the sample notebooks, attached to one Redis.

:func:`run_lab` makes sure a Redis is available (the given URL, else ``$RTQ_REDIS_URL`` /
``$REDIS_URL``, else a private embedded ``redis-server`` on a free TCP port), exports it as
``RTQ_REDIS_URL`` to the JupyterLab process, so every kernel it starts (and every worker
process those kernels spawn) talks to that same Redis, then runs ``python -m jupyterlab`` on
the notebooks folder in the foreground and returns its exit code.

Ctrl-C is JupyterLab's: its first Ctrl-C asks for confirmation, and the embedded Redis (started
with SIGINT blocked, so the terminal's Ctrl-C does not reach it) keeps running until JupyterLab
has exited; then it is stopped. SIGTERM to this process is passed on to JupyterLab.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.endpoint import configured_url


def bundled_notebooks() -> Path | None:
    """The sample notebooks' folder shipped with rtq_nb: ``notebooks/`` next to the ``rtq_nb``
    package (a source checkout or an editable install), whatever the current directory; None
    when this install has none (a wheel does not ship them)."""
    folder = Path(__file__).resolve().parents[2] / "notebooks"
    return folder if any(folder.glob("*.ipynb")) else None


def notebook_folder(given: str | None) -> Path:
    """The folder ``rtq-nb lab`` opens: ``given`` (relative to the current directory) if set,
    else :func:`bundled_notebooks`; raises ConfigurationError naming ``--notebooks DIR`` when
    there is none."""
    if given is None:
        found = bundled_notebooks()
        if found is None:
            raise ConfigurationError(
                "this rtq_nb install has no sample notebooks folder: pass one with "
                "`rtq-nb lab --notebooks DIR`"
            )
        return found
    root = Path(given).expanduser().resolve()
    if not root.is_dir():
        raise ConfigurationError(
            f"notebook folder {str(root)!r} does not exist (`rtq-nb lab --notebooks DIR`)"
        )
    return root


#: permessage-deflate on the kernel websockets: every comm message carries a ~550-byte JSON
#: envelope that deflates to a few dozen bytes, so the stream widget can update the page
#: 50 times a second for about the bytes of its text (README, Notebook layer). The value must
#: be exactly ``{}`` on a command line (traitlets passes it as a string, which tornado reads
#: as "no options"); options such as ``compression_level`` need a config file.
WEBSOCKET_COMPRESSION = "--ServerApp.websocket_compression_options={}"


def lab_command(notebook_dir: str, port: int | None, open_browser: bool) -> list[str]:
    """The ``python -m jupyterlab`` command line :func:`run_lab` runs (websocket compression
    on: :data:`WEBSOCKET_COMPRESSION`)."""
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        f"--ServerApp.root_dir={notebook_dir}",
        WEBSOCKET_COMPRESSION,
    ]
    if port is not None:
        cmd += [f"--port={port}", "--ServerApp.port_retries=0"]
    if not open_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers often run as root; JupyterLab refuses otherwise
    return cmd


def run_lab(url: str | None, notebook_dir: str | None, port: int | None, open_browser: bool) -> int:
    """Run JupyterLab on ``notebook_dir`` with ``RTQ_REDIS_URL`` set for its kernels.

    ``notebook_dir``: the folder to open; None: the bundled sample notebooks
    (:func:`notebook_folder`), so the command works from any directory.

    ``url``: a Redis URL; None means ``$RTQ_REDIS_URL`` / ``$REDIS_URL``, else an embedded
    redis-server (TCP, free port) owned by this call and stopped when JupyterLab exits.
    ``port``: JupyterLab's port (None: its default, 8888 or the next free one).
    ``open_browser``: let JupyterLab open a browser tab.
    Returns JupyterLab's exit code (0 after a normal shutdown).
    """
    root = notebook_folder(notebook_dir)
    if importlib.util.find_spec("jupyterlab") is None:
        raise ConfigurationError("JupyterLab is not installed: pip install 'rtq-nb[notebook]'")

    server = None
    redis_url = configured_url(url)
    if redis_url is None:
        from rtq_nb.transport.embedded import EmbeddedRedis

        server = EmbeddedRedis(tcp=True)
        # Block SIGINT while the server starts: the child inherits the mask, so a Ctrl-C in
        # the terminal (sent to the whole process group) leaves Redis to JupyterLab's prompt.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            server.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        redis_url = server.tcp_url
    print(
        f"rtq-nb lab: RTQ_REDIS_URL={redis_url}"
        + (" (embedded redis-server, stopped with JupyterLab)" if server else ""),
        file=sys.stderr,
        flush=True,
    )

    env = dict(os.environ, RTQ_REDIS_URL=redis_url)
    proc: subprocess.Popen[bytes] | None = None

    def forward_term(signum: int, frame: FrameType | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.terminate()

    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # JupyterLab handles Ctrl-C itself
    old_term = signal.signal(signal.SIGTERM, forward_term)
    try:
        proc = subprocess.Popen(lab_command(str(root), port, open_browser), env=env, cwd=root)
        return proc.wait()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()


__all__ = ["bundled_notebooks", "lab_command", "notebook_folder", "run_lab"]
