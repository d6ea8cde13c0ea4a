"""``rtq-nb bench --security``: what signing and encryption cost, as ratios to unsigned rtq_nb
in the same run.

Four variants of the same processes (1-client x 1-worker echo latency, 4 x 2 throughput):
``unsigned``; ``hmac`` (HMAC-SHA256 both ways: what signing costs besides the signature
algorithm); ``signed`` (Ed25519: clients sign requests, workers check them and sign results,
clients check those); ``signed+encrypted`` (the same plus AES-256-GCM of inputs and
outputs). Keys are made for this run and handed to the processes through the ``RTQ_*``
environment variables (what users do). Rounds alternate between variants.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import uuid
from collections.abc import Iterator
from typing import Any

from rtq_nb.cli.bench import _Clients, _Workers
from rtq_nb.security.keys import SigningKey
from rtq_nb.security.sealing import SealKey

__all__ = ["VARIANTS", "run_security_bench"]

VARIANTS = ("unsigned", "hmac", "signed", "signed+encrypted")


def _envs() -> dict[str, dict[str, str]]:
    ck, wk = SigningKey.generate("bench-c"), SigningKey.generate("bench-w")
    signed = {
        "RTQ_CLIENT_SIGNING_KEY": ck.to_text(),
        "RTQ_TRUSTED_WORKER_KEYS": wk.public().to_text(),
        "RTQ_WORKER_SIGNING_KEY": wk.to_text(),
        "RTQ_TRUSTED_CLIENT_KEYS": ck.public().to_text(),
    }
    sealed = {**signed, "RTQ_ENCRYPTION_KEYS": SealKey.generate("bench-e").to_text()}
    shared = SigningKey.generate("bench-h", "hmac").to_text()
    hmac = {
        "RTQ_CLIENT_SIGNING_KEY": shared,
        "RTQ_TRUSTED_WORKER_KEYS": shared,
        "RTQ_WORKER_SIGNING_KEY": shared,
        "RTQ_TRUSTED_CLIENT_KEYS": shared,
    }
    return {"unsigned": {}, "hmac": hmac, "signed": signed, "signed+encrypted": sealed}


_NAMES = (
    "RTQ_CLIENT_SIGNING_KEY",
    "RTQ_TRUSTED_WORKER_KEYS",
    "RTQ_WORKER_SIGNING_KEY",
    "RTQ_TRUSTED_CLIENT_KEYS",
    "RTQ_ENCRYPTION_KEYS",
)


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The variant's keys in the environment while its processes start (spawn copies it)."""
    saved = {n: os.environ.pop(n) for n in _NAMES if n in os.environ}
    os.environ.update(values)
    try:
        yield
    finally:
        for n in _NAMES:
            os.environ.pop(n, None)
        os.environ.update(saved)


def _start(url: str, tag: str, clients: int, workers: int) -> dict[str, tuple[_Workers, _Clients]]:
    out = {}
    for i, (name, env) in enumerate(_envs().items()):
        with _environment(env):
            ns = f"bs{tag}v{i}c{clients}w{workers}"
            w = _Workers("rtq", url, ns, workers, "rtq_nb.demo:aecho")
            out[name] = (w, _Clients("rtq", url, ns, clients))
    return out


def _stop(sides: dict[str, tuple[_Workers, _Clients]]) -> None:
    for w, c in sides.values():
        c.close()
        w.stop()


def _orders(rounds: int) -> list[tuple[str, ...]]:
    return [VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS)) for i in range(rounds)]


def run_security_bench(url: str, *, quick: bool = False) -> dict[str, Any]:
    """Latency (1 x 1) and throughput (4 x 2) of each variant, and ratios to unsigned."""
    tag = uuid.uuid4().hex[:6]
    lat_rounds, lat_n = (10, 50) if quick else (20, 100)
    tp_rounds, tp_dur = (2, 1.0) if quick else (4, 1.25)
    sides = _start(url, tag, 1, 1)
    lat: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        for order in _orders(lat_rounds):
            for v in order:
                lat[v] += sides[v][1].round(n=lat_n)[0]
    finally:
        _stop(sides)
    sides = _start(url, tag, 4, 2)
    done = {v: 0 for v in VARIANTS}
    try:
        for order in _orders(tp_rounds):
            for v in order:
                done[v] += sum(len(x) for x in sides[v][1].round(duration=tp_dur))
    finally:
        _stop(sides)
    p50 = {v: statistics.median(lat[v]) * 1e6 for v in VARIANTS}
    rps = {v: done[v] / (tp_rounds * tp_dur) for v in VARIANTS}
    return {
        v: {
            "p50_us": round(p50[v], 1),
            "latency_ratio": round(p50[v] / p50["unsigned"], 3),
            "rps_4x2": round(rps[v], 1),
            "throughput_ratio": round(rps[v] / rps["unsigned"], 3),
        }
        for v in VARIANTS
    }


def format_security(r: dict[str, Any]) -> str:
    lines = [
        "",
        "security: Ed25519 signing of requests and results (+ AES-GCM), vs unsigned",
        f"  {'variant':<17} {'p50 1x1':>9} {'ratio':>6} {'req/s 4x2':>10} {'ratio':>6}",
    ]
    for v in VARIANTS:
        x = r[v]
        lines.append(
            f"  {v:<17} {x['p50_us']:>7.0f}us {x['latency_ratio']:>6.2f} "
            f"{x['rps_4x2']:>10.0f} {x['throughput_ratio']:>6.2f}"
        )
    lines.append("  (targets for signed: latency <= 1.15x, throughput >= 0.85x)")
    return "\n".join(lines)
