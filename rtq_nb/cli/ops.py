"""``rtq-nb metrics`` and the process-manager side of ``rtq-nb worker``: a ready line on
stdout, ``--ready-file``, a metrics port with ``/healthz`` and ``/readyz``, exit codes.

Exit codes of ``rtq-nb`` commands: 0 stopped as asked (SIGTERM/SIGINT: graceful), 2 bad
configuration or arguments, 3 Redis unreachable (or not accepting writes) within the
reconnect timeout, 4 the Redis user lacks a permission (see ``rtq-nb acl``), 5 the model
engine (``--backend``) is not answering, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rtq_nb.errors import (
    AccessDenied,
    ConfigurationError,
    EngineError,
    RedisUnavailable,
    RtqError,
)

__all__ = [
    "EXIT_ACCESS",
    "EXIT_CONFIG",
    "EXIT_ENGINE",
    "EXIT_UNREACHABLE",
    "add_metrics_parser",
    "add_worker_ops_args",
    "exit_code",
    "worker_ops",
]

log = logging.getLogger("rtq_nb.cli")

EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_ACCESS, EXIT_ENGINE = 2, 3, 4, 5


def exit_code(exc: RtqError) -> int:
    """The exit code that says why a command stopped (see the module docstring)."""
    if isinstance(exc, AccessDenied):
        return EXIT_ACCESS
    if isinstance(exc, RedisUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(exc, EngineError):
        return EXIT_ENGINE
    return EXIT_CONFIG


def _need_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ConfigurationError(
            "metrics need prometheus_client: pip install 'rtq-nb[metrics]'"
        ) from None


def add_worker_ops_args(w: argparse.ArgumentParser) -> None:
    g = w.add_argument_group("process managers and Kubernetes")
    g.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics (this worker's counters), /healthz (heartbeats succeeding) and "
        "/readyz (registered and fetching) on this port (0: a free one, printed on the "
        "ready line)",
    )
    g.add_argument("--metrics-host", default="0.0.0.0", help="address to serve them on")
    g.add_argument(
        "--ready-file",
        default=None,
        help="write this file once the worker is registered and fetching; removed on exit",
    )
    g.add_argument(
        "--reconnect-timeout",
        type=float,
        default=30.0,
        help="seconds to keep trying to reach Redis at start (then exit code 3)",
    )


@contextlib.contextmanager
def worker_ops(a: argparse.Namespace, worker: Any) -> Iterator[Any]:
    """Around a worker's run: yields the ``on_ready`` callback (ready line, ready file,
    metrics endpoint); cleans up on exit."""
    endpoint = None
    ready_file = Path(a.ready_file) if a.ready_file else None
    if a.metrics_port is not None:
        _need_prometheus()
        from prometheus_client.registry import CollectorRegistry

        from rtq_nb.ops.http import serve
        from rtq_nb.ops.metrics import WorkerCollector

        registry = CollectorRegistry()
        registry.register(WorkerCollector(worker.health))
        endpoint = serve(
            registry,
            a.metrics_port,
            a.metrics_host,
            live=lambda: bool(worker.health()["live"]),
            ready=lambda: bool(worker.health()["ready"]),
        )

    def on_ready() -> None:
        line = f"READY worker={worker.id} queue={worker.keys.queue}"
        if endpoint is not None:
            line += f" metrics={endpoint.url}/metrics"
        if ready_file is not None:  # first: whoever reads the line may look for the file
            ready_file.write_text(line + "\n")
        print(line, flush=True)

    try:
        yield on_ready
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        if endpoint is not None:
            endpoint.close()


METRICS_DESCRIPTION = """\
Serve Prometheus metrics of queues on --port: pending (by priority), running, live workers
and their slots, arrival rate and service time, requests ended by outcome (completed, failed,
unauthenticated), dead letters, histograms of queue wait, duration and time to first token,
and rtq_recommended_workers: the workers needed to keep up and keep the queue wait under
--target-wait (Little's law; client.recommend_workers() gives the same number). Read-only
(2 round trips of plain reads per queue per scrape): a monitor user from `rtq-nb acl --role
monitor` is enough. /healthz and /readyz answer too.
"""


def add_metrics_parser(sub: Any, url_help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "metrics",
        help="serve Prometheus metrics of queues (and the autoscaling signal)",
        description=METRICS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=None, help=url_help)
    p.add_argument("--prefix", default="rtq", help="key prefix (default rtq)")
    p.add_argument("--queue", action="append", default=None, help="a queue (repeat; default: all)")
    p.add_argument("--port", type=int, default=9108, help="port (default 9108; 0: a free one)")
    p.add_argument("--host", default="0.0.0.0", help="address (default 0.0.0.0)")
    p.add_argument("--target-wait", type=float, default=5.0, help="s (default 5)")
    p.add_argument("--window", type=float, default=60.0, help="rate window, s (default 60)")
    p.add_argument(
        "--sample", type=int, default=2000, help="recent requests read per scrape (2000)"
    )
    p.set_defaults(fn=cmd_metrics)
    return p


def cmd_metrics(a: argparse.Namespace) -> int:
    _need_prometheus()
    from prometheus_client.registry import CollectorRegistry

    from rtq_nb.client.sync import Client
    from rtq_nb.ops.http import serve
    from rtq_nb.ops.metrics import QueueCollector

    client = Client(a.url, prefix=a.prefix)
    client.queues()  # fails (exit code 3) when Redis stays unreachable
    registry = CollectorRegistry()
    registry.register(
        QueueCollector(
            lambda q: client.snapshot(q, sample=a.sample),
            lambda: a.queue or client.queues(),
            target_wait=a.target_wait,
            window=a.window,
        )
    )
    endpoint = serve(registry, a.port, a.host)
    print(f"READY metrics={endpoint.url}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    endpoint.close()
    client.close()
    print("stopped", file=sys.stderr)
    return 0
