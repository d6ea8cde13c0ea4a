"""``rtq-nb bench --payloads``: a large result inline versus by reference (README, Large inputs
and results): end-to-end latency of ``Client.call`` and the Redis memory the finished request
holds (``INFO memory`` used_memory after the call minus before it, while its record is kept).

One in-process worker whose handler returns a prepared string of ``size`` bytes for a tiny
input; variants ``inline`` (no payload store), ``file`` (a ``file://`` store in a temporary
folder) and, when moto is installed, ``s3`` (a moto S3 server process on a loopback port).
Rounds alternate between variants; each round's keys are deleted after it is measured.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import redis

from rtq_nb.client.sync import Client
from rtq_nb.payloads import PayloadStore
from rtq_nb.transport.embedded import EmbeddedRedis
from rtq_nb.worker.worker import Worker

__all__ = ["format_payloads", "moto_s3", "run_payload_bench"]

MB = 1024 * 1024


@contextlib.contextmanager
def moto_s3(bucket: str = "rtq-bench") -> Iterator[dict[str, Any] | None]:
    """fsspec storage options of a moto S3 server process (an S3-compatible server on a free
    loopback port) with ``bucket`` made (None: moto is not installed). Bench and tests."""
    try:
        import boto3
        import moto.server  # noqa: F401  (only checks that it is there)
    except ImportError:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.1)
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds).create_bucket(
            Bucket=bucket
        )
        yield {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    finally:
        proc.terminate()
        proc.wait(10)


def _drop(r: redis.Redis, prefix: str) -> None:
    keys = list(r.scan_iter(f"{prefix}*", count=1000))
    if keys:
        r.delete(*keys)


def _round(url: str, r: redis.Redis, store: PayloadStore | None, value: str) -> tuple[float, int]:
    """(seconds for one call, Redis bytes held after it) with a fresh prefix."""
    prefix = f"pb{uuid.uuid4().hex[:8]}"
    w = Worker(lambda req: value, url, prefix=prefix, payloads=store or "").start()
    try:
        with Client(url, prefix=prefix, timeout=120, payloads=store or "") as c:
            c.call("warm")  # connections, scripts
            _drop_results(r, prefix)
            before = int(r.info("memory")["used_memory"])
            t0 = time.perf_counter()
            got = c.call("go")
            took = time.perf_counter() - t0
            held = int(r.info("memory")["used_memory"]) - before
            assert len(got) == len(value)
    finally:
        w.stop()
        _drop(r, prefix)
    return took, held


def _drop_results(r: redis.Redis, prefix: str) -> None:
    """Forget the warm-up request's record, so the measured one starts from the same state."""
    for key in r.scan_iter(f"{prefix}*req*", count=1000):
        r.delete(key)


def run_payload_bench(
    url: str | None = None, *, size: int = 50 * MB, rounds: int = 3, threshold: int = MB
) -> dict[str, Any]:
    """Median latency (ms) and Redis memory held (MB) per variant for a ``size``-byte result."""
    value = "x" * (size - 2)  # its JSON text: size bytes
    with contextlib.ExitStack() as stack:
        if url is None:
            url = stack.enter_context(EmbeddedRedis(tcp=True)).url
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="rtq-bench-payloads-"))
        stores: dict[str, PayloadStore | None] = {
            "inline": None,
            "file": PayloadStore(f"file://{tmp}/p", threshold=threshold, sweep_interval=0),
        }
        s3 = stack.enter_context(moto_s3())
        if s3 is not None:
            stores["s3"] = PayloadStore(
                f"s3://rtq-bench/{uuid.uuid4().hex[:8]}",
                threshold=threshold,
                storage_options=s3,
                sweep_interval=0,
            )
        r = stack.enter_context(redis.Redis.from_url(url))
        times: dict[str, list[float]] = {k: [] for k in stores}
        held: dict[str, list[int]] = {k: [] for k in stores}
        for _ in range(rounds):
            for name, store in stores.items():
                took, mem = _round(url, r, store, value)
                times[name].append(took)
                held[name].append(mem)
    return {
        "size_mb": size / MB,
        "rounds": rounds,
        "variants": {
            name: {
                "latency_ms": 1000 * statistics.median(times[name]),
                "redis_mb": statistics.median(held[name]) / MB,
            }
            for name in times
        },
    }


def format_payloads(res: dict[str, Any]) -> str:
    """The payload rows of the bench table."""
    lines = [f"payloads: a {res['size_mb']:g} MB result (median of {res['rounds']} rounds)"]
    base = res["variants"]["inline"]["latency_ms"]
    for name, v in res["variants"].items():
        lines.append(
            f"  {name:7s} latency {v['latency_ms']:8.1f} ms ({v['latency_ms'] / base:4.2f}x "
            f"inline)   Redis memory held {v['redis_mb']:7.2f} MB"
        )
    return "\n".join(lines)
