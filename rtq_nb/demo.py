"""Demo handlers: a deterministic fake LLM that streams at a set token rate, and an echo.

Used by ``rtq-nb demo``, the tests, the benchmark and the notebooks; no model download.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

from rtq_nb.protocol.records import Request

__all__ = ["aecho", "echo", "fail", "fake_answer", "fake_llm", "sleepy", "tokens"]

_TEXT = (
    "Redis makes a fine queue for real-time inference. Clients write a request record, add "
    "its id to a sorted set scored by priority, and block on a list for the answer. Workers "
    "next to the GPU pop the most urgent request, run the model and push the result back, "
    "whole or token by token. Because every step is a single Redis command, latency stays "
    "low, and because workers pull work, the queue absorbs bursts and survives slow nodes. "
    "Streams let a second viewer follow along, and leases make sure nothing is lost when a "
    "worker dies mid-answer."
)
_WORDS = _TEXT.split(" ")


_STARTS = [0] + [i + 1 for i, w in enumerate(_WORDS[:-1]) if w.endswith(".")]


def fake_answer(prompt: str, tokens: int) -> list[str]:
    """The deterministic token list the fake LLM produces for ``prompt`` (it starts at a
    sentence, chosen by the prompt)."""
    start = _STARTS[int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % len(_STARTS)]
    out = []
    for i in range(tokens):
        w = _WORDS[(start + i) % len(_WORDS)]
        out.append(w if i == 0 else " " + w)
    return out


async def fake_llm(request: Request) -> AsyncIterator[str]:
    """Streams ``params['tokens']`` tokens (default 40) at ``params['rate']`` tokens/s
    (default 50; 0 = as fast as possible). ``params['fail_at']`` raises at that token."""
    p: dict[str, Any] = request.params
    n = int(p.get("tokens", 40))
    rate = float(p.get("rate", 50.0))
    fail_at = p.get("fail_at")
    delay = 1.0 / rate if rate > 0 else 0.0
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i, tok in enumerate(fake_answer(str(request.input), n)):
        if fail_at is not None and i == int(fail_at):
            raise RuntimeError(f"fake model failure at token {i}")
        if delay:
            # sleep until this token's due time (simulates the model's generation pace)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * delay - loop.time()))
        yield tok


def echo(request: Request) -> Any:
    """Returns the input unchanged (the benchmark's round trip)."""
    return request.input


async def aecho(request: Request) -> Any:
    """Async echo: no thread hop, the cheapest possible handler."""
    return request.input


def tokens(request: Request) -> Any:
    """Sync generator: yields ``params['tokens']`` tiny tokens (default 2000) as fast as
    possible (the tiny-token streaming benchmark)."""
    for i in range(int(request.params.get("tokens", 2000))):
        yield f"t{i} "


def fail(request: Request) -> Any:
    """Always raises (tests and demos of failure handling)."""
    raise ValueError(f"cannot handle {request.input!r}")


async def sleepy(request: Request) -> Any:
    """Echo after ``params['delay']`` seconds (default 0.005): simulated model time, so that
    fault tests find requests in flight when they kill a worker."""
    await asyncio.sleep(float(request.params.get("delay", 0.005)))
    return request.input
