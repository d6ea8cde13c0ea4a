"""A real OpenAI-compatible engine for the backend tests: llama.cpp's own ``llama-server``
(built by ``.ci/build-llama-server`` into a cache dir outside the checkout) serving the tiny
random-weight model of ``tiny_model.py`` on a loopback port.

The engine is real: the OpenAI chat and completion endpoints, SSE streaming with
``stream_options.include_usage``, ``-np`` parallel slots with continuous batching, and
generation stops when the client disconnects (``/slots`` shows the slot idle again, the log
says ``cancel task``). Only the text is gibberish. Every wait polls a condition the server
reports (``/health``, ``/slots``), never a bare sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rtq_nb.transport.embedded import free_port
from tests.backends.httpio import wait_for

__all__ = [
    "BUILD_HINT",
    "Engine",
    "EngineStartError",
    "engine_required",
    "llama_server_path",
    "llm_home",
]

BUILD_HINT = "build it with `.ci/build-llama-server` (about 6-7 min on 2 cores, once per machine)"


def llm_home() -> Path:
    """The engine cache dir: ``$RTQ_LLM_HOME``, else ``${XDG_CACHE_HOME:-~/.cache}/rtq-llm``."""
    if os.environ.get("RTQ_LLM_HOME"):
        return Path(os.environ["RTQ_LLM_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "rtq-llm"


def llama_server_path() -> Path:
    """``$RTQ_LLAMA_SERVER`` if set, else ``<llm_home()>/bin/llama-server``."""
    override = os.environ.get("RTQ_LLAMA_SERVER")
    return Path(override) if override else llm_home() / "bin" / "llama-server"


def engine_required() -> bool:
    """In CI (``CI`` set and not ``0``/``false``) or with ``RTQ_REQUIRE_ENGINE=1`` a missing
    engine fails the tests instead of skipping them."""
    ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    return ci or os.environ.get("RTQ_REQUIRE_ENGINE") == "1"


class EngineStartError(RuntimeError):
    """The engine exited during start-up or was not healthy in time (the message has its log)."""


class Engine:
    """One ``llama-server`` process on ``127.0.0.1:port`` and what the tests ask it.

    Attributes: ``base_url`` (``http://127.0.0.1:PORT/v1``, for OpenAI clients), ``root_url``
    (``http://127.0.0.1:PORT``, for ``/health``, ``/slots``, ``/metrics``), ``host``, ``port``,
    ``model`` (the alias to send as ``"model"``), ``model_path``, ``binary``, ``n_parallel``
    (slots), ``ctx_per_slot`` (prompt + max_tokens must fit), ``proc`` (the current
    ``subprocess.Popen``; a new one after ``restart()``), ``log_path`` (stdout and stderr of
    every run, appended), ``starts`` (how many times it was started), ``ready_after`` (seconds
    from spawn to a healthy ``/health`` on the last start).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        binary: Path,
        model_path: Path,
        log_path: Path,
        *,
        port: int | None = None,
        model: str = "tiny-llama",
        n_parallel: int = 4,
        ctx_per_slot: int = 4096,
        threads: int = 1,
        seed: int = 42,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.binary = binary
        self.model_path = model_path
        self.log_path = log_path
        self.port = port or free_port()
        self.model = model
        self.n_parallel = n_parallel
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads
        self.seed = seed
        self.extra_args = extra_args
        self.root_url = f"http://{self.host}:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_after = 0.0

    # -- the process ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        # -c is the TOTAL context, split across the -np slots. -t 1: with 2 threads on a busy
        # 2-core box ggml's spin barriers make throughput swing tenfold. --no-webui: no UI built.
        return [
            str(self.binary),
            "-m", str(self.model_path),
            "--host", self.host,
            "--port", str(self.port),
            "-np", str(self.n_parallel),
            "-c", str(self.n_parallel * self.ctx_per_slot),
            "-t", str(self.threads),
            "-s", str(self.seed),
            "--alias", self.model,
            "--metrics", "--slots", "--no-webui",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> float:
        """Spawn the server and wait until ``/health`` answers 200; return the seconds it took.
        Raises ``EngineStartError`` (with the log's tail) if it exits or is not ready in time."""
        if self.running:
            raise RuntimeError("the engine is already running")
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"==== start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal goes to pytest, not the engine
            )
        self.starts += 1
        end = t0 + timeout
        while self.health() != 200:
            if self.proc.poll() is not None:
                raise EngineStartError(
                    f"llama-server exited with {self.proc.returncode} during start-up:\n"
                    + self.log_tail()
                )
            if time.monotonic() > end:
                self.kill()
                raise EngineStartError(
                    f"llama-server not healthy after {timeout} s:\n" + self.log_tail()
                )
            time.sleep(0.02)  # polling /health, the condition the server reports
        self.ready_after = time.monotonic() - t0
        return self.ready_after

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self) -> None:
        """SIGKILL the server (an engine crash) and reap it. The port stops answering."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a graceful shutdown), SIGKILL after ``timeout`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, graceful: bool = False, timeout: float = 60.0) -> float:
        """Kill the server (SIGKILL, or SIGTERM with ``graceful=True``) and start it again on the
        same port; return the seconds until healthy. Streams open at the kill break off (the
        client sees the connection closed mid-stream); slots and KV cache start empty."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout)

    # -- the log -------------------------------------------------------------------------------

    def log(self) -> str:
        """Everything the server wrote (all runs), as text."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_mark(self) -> int:
        """A position in the log, for ``log_since``."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        """What the server wrote after ``mark`` (for example the ``cancel task`` line)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(mark)
            return fh.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- what the server reports ---------------------------------------------------------------

    def _get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.root_url + path, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> int:
        """The status of ``GET /health``: 200 ready, 503 loading, 0 not reachable."""
        try:
            return self._get("/health", timeout=2.0)[0]
        except OSError:
            return 0

    def slots(self) -> list[dict[str, Any]]:
        """``GET /slots``: one dict per slot, with ``id``, ``is_processing``, ``n_ctx``, and for a
        slot that ran a task ``id_task``, ``params`` (the sampling parameters the engine used,
        ``n_predict`` among them), ``next_token[0]["n_decoded"]`` (tokens generated so far)."""
        status, body = self._get("/slots")
        if status != 200:
            raise AssertionError(f"GET /slots: {status} {body[:200]!r}")
        slots: list[dict[str, Any]] = json.loads(body)
        return slots

    def busy_slots(self) -> list[int]:
        """The ids of the slots generating (or processing a prompt) right now."""
        return [s["id"] for s in self.slots() if s.get("is_processing")]

    def wait_idle(self, timeout: float = 15.0) -> float:
        """Wait until no slot is processing; return the seconds it took."""
        t0 = time.monotonic()
        wait_for("all llama-server slots idle", lambda: not self.busy_slots(), timeout)
        return time.monotonic() - t0

    def wait_busy(self, n: int = 1, timeout: float = 15.0) -> list[int]:
        """Wait until at least ``n`` slots are processing; return their ids."""
        return wait_for(
            f"{n} busy llama-server slots",
            lambda: (lambda b: b if len(b) >= n else None)(self.busy_slots()),
            timeout,
        )

    def metrics(self) -> dict[str, float]:
        """``GET /metrics`` (Prometheus text) as ``{name: value}`` with the ``llamacpp:`` prefix
        dropped: ``requests_processing``, ``requests_deferred``, ``tokens_predicted_total``,
        ``prompt_tokens_total``, ``n_decode_total``, ``n_busy_slots_per_decode``, ..."""
        status, body = self._get("/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics: {status} {body[:200]!r}")
        out: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name.removeprefix("llamacpp:")] = float(value)
        return out

    def __repr__(self) -> str:
        return f"<Engine {self.base_url} model={self.model!r} pid={self.pid}>"
