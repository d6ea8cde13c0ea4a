"""``rtq-nb``: the command line (a thin layer over the library).

rtq-nb demo     stream a fake LLM answer through an embedded Redis and an in-process worker
rtq-nb worker   serve a queue with package.module:handler
rtq-nb bench    measure rtq_nb against a raw redis-py floor in the same run
rtq-nb redis    run an embedded redis-server in the foreground and print its URLs
rtq-nb status   pending counts, workers and counters of a queue
rtq-nb lab      JupyterLab on the sample notebooks, with a Redis available
rtq-nb acl      the ACL SETUSER line of a least-privilege Redis user (client, worker, monitor)
rtq-nb keygen   make a signing (Ed25519, HMAC) or encryption (AES-GCM) key
rtq-nb metrics  Prometheus metrics of queues and the autoscaling signal (recommended workers)

Exit codes: 0 stopped as asked, 2 bad configuration, 3 Redis unreachable, 4 access denied (ACL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import signal
import sys
from typing import Any

from rtq_nb.cli import acl, keys, ops
from rtq_nb.cli.backend import add_backend_args, backend_handler
from rtq_nb.cli.runs import add_bench_args, cmd_bench, cmd_demo
from rtq_nb.errors import ConfigurationError, RtqError
from rtq_nb.loop import run
from rtq_nb.payloads import payload_store
from rtq_nb.protocol.defaults import DEFAULT_RETENTION
from rtq_nb.transport.endpoint import safe_url

__all__ = ["build_parser", "load_handler", "main"]

URL_HELP = (
    "Redis URL (redis://host:port/db, rediss:// for TLS, unix:///path.sock). Default: "
    "$RTQ_REDIS_URL, else $REDIS_URL, else an embedded redis-server started for this command"
)


def load_handler(spec: str) -> Any:
    """Import ``package.module:attribute``; errors say what to fix."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigurationError(f"handler {spec!r} must look like package.module:function")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import module {mod_name!r} for handler {spec!r}: {exc}. Is it on PYTHONPATH?"
        ) from exc
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigurationError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigurationError(f"{spec!r} is not callable")
    return obj


def cmd_worker(a: argparse.Namespace) -> int:
    from rtq_nb.worker.worker import Worker

    handler = backend_handler(a) if a.backend else None
    if handler is None:
        if not a.handler:
            raise ConfigurationError(
                "give a handler (package.module:function) or a backend (--backend openai "
                "--base-url URL --model NAME)"
            )
        handler = load_handler(a.handler)
    w = Worker(
        handler,
        a.url,
        queue=a.queue,
        prefix=a.prefix,
        concurrency=a.concurrency,
        batch_size=a.batch_size,
        batch_wait=a.batch_wait,
        granularity=a.granularity,
        flush_interval=a.flush_ms / 1000,
        lease=a.lease,
        heartbeat=a.heartbeat,
        retention=a.retention,
        worker_id=a.worker_id,
        reconnect_timeout=a.reconnect_timeout,
        security=keys.worker_security(a),
        min_replicas=a.min_replicas,
        replica_timeout=a.replica_timeout,
        shards=a.shards,
        tracing=a.tracing,
        payloads=payload_store(a.payload_url, a.payload_threshold),
    )

    async def main(on_ready: Any) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(w.astop(a.drain_timeout)))
        await w.run(on_ready=on_ready)

    logging.getLogger("rtq_nb").info("worker for %s on %s", a.handler, safe_url(w.url))
    with ops.worker_ops(a, w) as on_ready:
        run(main(on_ready))
    return 0


def cmd_redis(a: argparse.Namespace) -> int:
    from rtq_nb.transport.embedded import EmbeddedRedis

    with EmbeddedRedis(tcp=True, port=a.port or None) as srv:
        print(f"RTQ_REDIS_URL={srv.tcp_url}\n# or, same machine: {srv.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


def cmd_lab(a: argparse.Namespace) -> int:
    from rtq_nb.cli.lab import run_lab

    return run_lab(a.url, a.dir, a.port, not a.no_browser)


def cmd_status(a: argparse.Namespace) -> int:
    from rtq_nb.client.sync import Client

    c = Client(a.url, queue=a.queue, prefix=a.prefix, reconnect_timeout=a.reconnect_timeout)
    out = {
        "url": safe_url(c.url),
        "queue": a.queue,
        "pending": c.pending_count(),
        "pending_by_priority": c.pending_by_priority(),
        "stats": c.stats(),
        "estimated_wait_s": c.estimated_wait(),
        "workers": [w.__dict__ | {"raw": None} for w in c.workers()],
    }
    print(json.dumps(out, indent=2, default=str))
    c.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rtq-nb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--url", default=None, help=URL_HELP)
        sp.add_argument("--queue", default="default", help="queue name (default: %(default)s)")
        sp.add_argument("--prefix", default="rtq", help="key prefix (default: %(default)s)")

    d = sub.add_parser(
        "demo",
        help="stream a fake LLM answer (or a real engine's) end to end (embedded Redis)",
        description="Start Redis (embedded unless --url) and an in-process worker "
        "serving a deterministic fake LLM (or, with --base-url and --model, a real "
        "OpenAI-compatible engine), stream a prompt's tokens to the terminal as they "
        "arrive, then print a summary.",
    )
    common(d)
    d.add_argument("--prompt", default="Explain a Redis inference queue.", help="the prompt")
    d.add_argument("--tokens", type=int, default=60, help="tokens to generate (default 60)")
    d.add_argument("--rate", type=float, default=40.0, help="tokens per second (default 40)")
    d.add_argument("--timeout", type=float, default=60.0, help="request timeout, s")
    d.add_argument(
        "--base-url",
        default=None,
        help="stream from a real OpenAI-compatible engine instead of the fake model (e.g. "
        "http://127.0.0.1:8000/v1; needs rtq-nb[openai]); --tokens becomes max_tokens",
    )
    d.add_argument("--model", default=None, help="the engine's model name (with --base-url)")
    d.set_defaults(fn=cmd_demo)

    w = sub.add_parser(
        "worker",
        help="serve a queue with a handler",
        description="Serve a queue: pop requests by priority, call HANDLER "
        "(package.module:function; plain, async, generator or async generator), "
        "deliver results or streams. SIGTERM/Ctrl-C stop gracefully.",
    )
    w.add_argument(
        "handler",
        nargs="?",
        help="package.module:function, e.g. rtq_nb.demo:fake_llm (or use --backend)",
    )
    common(w)
    w.add_argument("--concurrency", "-c", type=int, default=1, help="requests at once (default 1)")
    w.add_argument(
        "--batch-size", type=int, default=1, help="requests per handler call (default 1)"
    )
    w.add_argument("--batch-wait", type=float, default=0.005, help="max s to gather a batch")
    w.add_argument("--granularity", default="token", help="token | sentence | fixed:N")
    w.add_argument("--flush-ms", type=float, default=20.0, help="stream coalescing window, ms")
    w.add_argument(
        "--lease",
        type=float,
        default=6.0,
        help="lease seconds: a dead worker's requests are requeued this long after "
        "its last heartbeat (default 6)",
    )
    w.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to finish in-flight work before handing it back "
        "to the queue (default 30)",
    )
    w.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat seconds (default 2)")
    w.add_argument(
        "--retention",
        type=float,
        default=DEFAULT_RETENTION,
        help="seconds records, results and streams stay in Redis after a request ends "
        "(default %(default)g = 24 h; at least 1)",
    )
    w.add_argument("--worker-id", default=None, help="worker id (default host-pid-random)")
    w.add_argument(
        "--min-replicas",
        type=int,
        default=0,
        help="WAIT for this many replicas to have each completion before taking more work, "
        "so a delivered result survives a failover (default 0: off)",
    )
    w.add_argument("--replica-timeout", type=float, default=1.0, help="s WAIT may take (1)")
    w.add_argument(
        "--shards",
        type=int,
        default=None,
        help="serve a sharded queue of N shards (recorded in Redis if the queue has no layout "
        "yet; a different recorded count is an error). Default: as recorded (1 if none). "
        "See README, Sharded queues",
    )
    w.add_argument(
        "--tracing",
        action="store_const",
        const=True,
        default=None,
        help="OpenTelemetry spans per request (queue wait, run, delivery) on the global tracer "
        "provider; needs rtq-nb[tracing] (default: $RTQ_TRACING)",
    )
    add_backend_args(w)
    w.add_argument(
        "--payload-url",
        default=None,
        help="store inputs and results above --payload-threshold in object storage (fsspec: "
        "s3://bucket/prefix, gs://..., file:///dir); default $RTQ_PAYLOAD_URL; needs "
        "rtq-nb[payloads] (README, Large inputs and results)",
    )
    w.add_argument(
        "--payload-threshold",
        type=int,
        default=None,
        help="bytes of JSON above which a value goes by reference (default 1 MiB)",
    )
    keys.add_security_args(w)
    ops.add_worker_ops_args(w)
    w.set_defaults(fn=cmd_worker)

    b = sub.add_parser(
        "bench",
        help="benchmark against a raw redis-py floor",
        description="Latency (1 client x 1 worker, 100-byte echo), throughput "
        "(clients x worker processes) and tiny-token streaming, each measured "
        "for rtq_nb and for a minimal raw redis-py implementation in the same run. "
        "Compare the ratios, not absolute times.",
    )
    b.add_argument("--url", default=None, help=URL_HELP)
    add_bench_args(b)
    b.set_defaults(fn=cmd_bench)

    r = sub.add_parser("redis", help="run an embedded redis-server until Ctrl-C")
    r.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    r.set_defaults(fn=cmd_redis)

    lab = sub.add_parser(
        "lab",
        help="JupyterLab on the sample notebooks, with a Redis available",
        description="Open JupyterLab on the sample notebooks. Kernels get "
        "RTQ_REDIS_URL: the --url given, else $RTQ_REDIS_URL/$REDIS_URL, else "
        "an embedded redis-server that lives as long as JupyterLab.",
    )
    lab.add_argument("--url", default=None, help=URL_HELP)
    lab.add_argument(
        "--notebooks",
        "--dir",
        dest="dir",
        metavar="DIR",
        default=None,
        help="notebook folder (default: the sample notebooks shipped with rtq_nb, from any "
        "directory)",
    )
    lab.add_argument("--port", type=int, default=None, help="JupyterLab port (default: free)")
    lab.add_argument("--no-browser", action="store_true", help="do not open a browser")
    lab.set_defaults(fn=cmd_lab)

    s = sub.add_parser("status", help="print a queue's pending counts, workers and counters")
    common(s)
    s.add_argument(
        "--reconnect-timeout",
        type=float,
        default=5.0,
        help="seconds to ride out an unreachable or restarting Redis (default %(default)g)",
    )
    s.set_defaults(fn=cmd_status)
    acl.add_parser(sub)
    keys.add_keygen_parser(sub)
    ops.add_metrics_parser(sub, URL_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.fn(args))
    except RtqError as exc:
        print(f"rtq-nb: error: {exc}", file=sys.stderr)
        return ops.exit_code(exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
