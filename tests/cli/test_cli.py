"""The rtq-nb command line, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from rtq_nb import Client
from rtq_nb.errors import EmbeddedRedisError
from rtq_nb.transport.embedded import EmbeddedRedis

CLI = [sys.executable, "-m", "rtq_nb.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_explains_every_command() -> None:
    out = run("--help").stdout
    for cmd in ("demo", "worker", "bench", "redis", "status"):
        assert cmd in out
    w = run("worker", "--help").stdout
    assert "package.module:function" in w and "--concurrency" in w and "--url" in w


def test_demo_streams_on_embedded_redis() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RTQ_REDIS_URL", "REDIS_URL")}
    p = run("demo", "--tokens", "12", "--rate", "200", env=env)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.split()) == 12  # the streamed answer, on stdout
    assert "summary: 12 tokens" in p.stderr and "time to first token" in p.stderr


def test_worker_command_serves_and_bad_handler_is_explained(
    url: str, prefix: str, worker_process: Any
) -> None:
    worker_process("rtq_nb.demo:aecho")
    with Client(url, prefix=prefix) as c:
        assert c.call("via cli worker", timeout=30) == "via cli worker"
    p = run("worker", "no_such_module:fn", "--url", url)
    assert p.returncode == 2 and "cannot import module 'no_such_module'" in p.stderr
    p = run("worker", "rtq_nb.demo", "--url", url)
    assert p.returncode == 2 and "package.module:function" in p.stderr


def test_status_command(url: str, prefix: str, client: Client) -> None:
    client.submit("x")
    p = run("status", "--url", url, "--prefix", prefix)
    assert p.returncode == 0 and '"pending": 1' in p.stdout


def test_missing_redis_server_binary_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    import rtq_nb.transport.embedded as emb

    monkeypatch.setattr(emb, "find_redis_server", lambda: None)
    with pytest.raises(EmbeddedRedisError, match=r"install one .*RTQ_REDIS_URL"):
        EmbeddedRedis()


def test_unreachable_redis_is_a_clear_error() -> None:
    """Reads ride out an outage for reconnect_timeout, then say where and how long."""
    from rtq_nb.errors import RedisUnavailable

    with (
        Client("redis://127.0.0.1:1/0", reconnect_timeout=0.3) as c,
        pytest.raises(
            RedisUnavailable,
            match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0: .* gave up after 0\.3 s",
        ),
    ):
        c.pending_count()
