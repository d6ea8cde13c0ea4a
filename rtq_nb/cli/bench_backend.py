"""``rtq-nb bench --backend-url URL --model NAME``: a stream from the engine directly versus the
same stream through rtq_nb (Redis, a worker with the OpenAI-compatible backend, a client), in
alternating rounds of the same run: time to first token and tokens/s (the engine's own token
count, ``usage.completion_tokens``, over the time after the first token)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

__all__ = ["format_backend", "run_backend_bench"]


async def _direct(c: Any, base_url: str, model: str, max_tokens: int) -> tuple[float, float]:
    """(TTFT s, tokens/s) of one stream read straight from the engine (``c``: an
    httpx.AsyncClient made once, as the backend's is)."""
    from httpx_sse import EventSource

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "bench"}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    first, tokens = None, 0
    async with c.stream("POST", base_url.rstrip("/") + "/chat/completions", json=body) as resp:
        events = EventSource(resp).aiter_sse()
        async for ev in events:
            if ev.data == "[DONE]":
                await events.aclose()
                break
            chunk = json.loads(ev.data)
            if chunk.get("usage"):
                tokens = int(chunk["usage"].get("completion_tokens") or 0)
            if first is None and any(
                (ch.get("delta") or {}).get("content") for ch in chunk.get("choices") or ()
            ):
                first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return first or total, max(0, tokens - 1) / max(total - (first or 0), 1e-9)


def _through(client: Any, max_tokens: int) -> tuple[float, float]:
    r = client.stream("bench", params={"max_tokens": max_tokens}).final()
    tokens = r.usage.completion_tokens if r.usage else r.pieces
    ttft = r.ttft_s or r.duration_s
    return ttft, max(0, tokens - 1) / max(r.duration_s - ttft, 1e-9)


def run_backend_bench(
    base_url: str, model: str, *, rounds: int = 10, max_tokens: int = 256, url: str | None = None
) -> dict[str, Any]:
    """Medians over ``rounds`` alternating direct / through-rtq_nb streams."""
    import httpx

    from rtq_nb.backends import OpenAIBackend
    from rtq_nb.client.sync import Client
    from rtq_nb.worker.worker import Worker

    client = Client(url, queue=f"bb{int(time.time() * 1000) % 10**7}", timeout=120)
    worker = Worker(OpenAIBackend(base_url, model), client.url, queue=client.queue).start()
    loop = asyncio.new_event_loop()  # the direct side's, kept across rounds (as the worker's)
    http = httpx.AsyncClient(timeout=120)
    rows: dict[str, list[tuple[float, float]]] = {"engine": [], "rtq": []}
    try:
        _through(client, 8)  # warm-up: connections, scripts, the engine's cache
        loop.run_until_complete(_direct(http, base_url, model, 8))
        for i in range(rounds):
            order = ("engine", "rtq") if i % 2 == 0 else ("rtq", "engine")
            for side in order:
                if side == "engine":
                    got = loop.run_until_complete(_direct(http, base_url, model, max_tokens))
                    rows[side].append(got)
                else:
                    rows[side].append(_through(client, max_tokens))
    finally:
        worker.stop()
        client.close()
        loop.run_until_complete(http.aclose())
        loop.close()
    out: dict[str, Any] = {"rounds": rounds, "max_tokens": max_tokens}
    for side, xs in rows.items():
        out[side] = {
            "ttft_ms": statistics.median(x[0] for x in xs) * 1000,
            "tokens_per_s": statistics.median(x[1] for x in xs),
        }
    out["ttft_added_ms"] = out["rtq"]["ttft_ms"] - out["engine"]["ttft_ms"]
    out["tokens_ratio"] = out["rtq"]["tokens_per_s"] / out["engine"]["tokens_per_s"]
    return out


def format_backend(r: dict[str, Any]) -> str:
    e, q = r["engine"], r["rtq"]
    return (
        f"backend ({r['rounds']} alternating streams of {r['max_tokens']} tokens, medians)\n"
        f"  engine directly   TTFT {e['ttft_ms']:7.2f} ms   {e['tokens_per_s']:8.0f} tokens/s\n"
        f"  through rtq_nb    TTFT {q['ttft_ms']:7.2f} ms   {q['tokens_per_s']:8.0f} tokens/s\n"
        f"  rtq_nb adds {r['ttft_added_ms']:+.2f} ms to TTFT (target <= 2), keeps "
        f"{r['tokens_ratio']:.2f}x the tokens/s (target >= 0.95)"
    )
