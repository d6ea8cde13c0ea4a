"""``rtq-nb demo`` and ``rtq-nb bench``: the commands that run things end to end."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.endpoint import safe_url

__all__ = ["add_bench_args", "cmd_bench", "cmd_demo"]


def cmd_demo(a: argparse.Namespace) -> int:
    from rtq_nb.client.sync import Client
    from rtq_nb.demo import fake_llm
    from rtq_nb.worker.worker import Worker

    handler: Any = fake_llm
    params: dict[str, Any] = {"tokens": a.tokens, "rate": a.rate}
    short: dict[str, Any] = {"tokens": 8, "rate": 0}
    if a.base_url or a.model:
        from rtq_nb.cli.backend import engine_backend

        handler, params, short = (
            engine_backend(a.base_url, a.model),
            {"max_tokens": a.tokens},
            {"max_tokens": 8},
        )
    client = Client(a.url, queue=a.queue, timeout=a.timeout)
    print(f"rtq-nb demo: Redis at {safe_url(client.url)}", file=sys.stderr)
    with Worker(handler, client.url, queue=a.queue, concurrency=8):
        print(f"prompt> {a.prompt}\n", file=sys.stderr)
        s = client.stream(a.prompt, params=params)
        for chunk in s:
            print(chunk, end="", flush=True)
        r = s.final()
        print("\n", file=sys.stderr)
        answer = client.call("What is 2+2?", params=short)
        print(f"non-streaming call -> {answer!r}", file=sys.stderr)
        usage = (
            f"; usage {r.usage.prompt_tokens}+{r.usage.completion_tokens} tokens" if r.usage else ""
        )
        print(
            f"summary: {r.pieces} tokens, time to first token {1000 * (r.ttft_s or 0):.1f} ms, "
            f"{r.tokens_per_s:.0f} tokens/s, total {r.duration_s:.2f} s{usage}; pending now "
            f"{client.pending_count()}; workers {len(client.workers())}",
            file=sys.stderr,
        )
    client.close()
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from rtq_nb.cli.bench import run_bench

    result = run_bench(a.url, quick=a.quick)
    if a.security:
        from rtq_nb.cli.bench_security import run_security_bench

        result["security"] = run_security_bench(result["url"], quick=a.quick)
    if a.capacity:
        from rtq_nb.cli.bench_capacity import run_capacity

        result["capacity"] = [run_capacity(result["url"], flush_ms=f) for f in (20.0, 100.0)]
        from rtq_nb.cli.bench_capacity import run_idle_workers

        result["idle_workers"] = run_idle_workers(result["url"], idle=200 if a.quick else 1000)
    if a.scale:
        from rtq_nb.cli.bench_scale import run_scale

        result["scale"] = run_scale(a.url)  # private server unless --url; RTQ_BENCH_SCALE=small
    if a.cluster:
        from rtq_nb.cli.bench_cluster import run_cluster_bench

        result["cluster"] = run_cluster_bench(quick=a.quick)
    if a.backend_url:
        from rtq_nb.cli.bench_backend import run_backend_bench

        if not a.model:
            raise ConfigurationError("--backend-url needs --model NAME (the engine's model)")
        rounds = 6 if a.quick else 20
        result["backend"] = run_backend_bench(a.backend_url, a.model, rounds=rounds)
    if a.payloads:
        from rtq_nb.cli.bench_payloads import run_payload_bench

        result["payloads"] = run_payload_bench(result["url"], rounds=2 if a.quick else 3)
    if a.scripts:
        from rtq_nb.cli.bench_scripts import run_script_costs

        result["scripts"] = run_script_costs(result["url"], n=1000 if a.quick else 3000)
    if a.json:
        print(json.dumps(result))
    else:
        from rtq_nb.cli.bench import format_table
        from rtq_nb.cli.bench_security import format_security

        print(format_table(result))
        if a.security:
            print(format_security(result["security"]))
        if a.scale:
            from rtq_nb.cli.bench_scale import format_scale

            print(format_scale(result["scale"]))
        if a.cluster:
            from rtq_nb.cli.bench_cluster import format_cluster

            print(format_cluster(result["cluster"]))
        if a.backend_url:
            from rtq_nb.cli.bench_backend import format_backend

            print(format_backend(result["backend"]))
        if a.payloads:
            from rtq_nb.cli.bench_payloads import format_payloads

            print(format_payloads(result["payloads"]))
        if a.scripts:
            from rtq_nb.cli.bench_scripts import format_script_costs

            print("\n".join(format_script_costs(result["scripts"])))
        if "idle_workers" in result:
            h = result["idle_workers"]
            print(
                f"with {h['idle']} idle fetchers blocked on the queue: {h['commands']:.1f} "
                f"commands and {h['redis_cpu_us']:.0f} us Redis CPU per call (no herd)"
            )
        for cap in result.get("capacity", []):
            print(
                f"capacity (flush {cap['flush_ms']:g} ms): call "
                f"{cap['call']['redis_cpu_us']:.0f} us Redis CPU, {cap['call']['commands']:.1f} "
                f"commands, {cap['call']['retained_bytes']:.0f} bytes retained; "
                f"stream of {cap['tokens']} tokens at {cap['rate']:g}/s "
                f"{cap['stream']['redis_cpu_us']:.0f} us, {cap['stream']['commands']:.1f} commands"
            )
    return 0


def add_bench_args(b: argparse.ArgumentParser) -> None:
    b.add_argument("--quick", action="store_true", help="about 30 s on 2 cores")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument(
        "--security",
        action="store_true",
        help="also measure Ed25519-signed and signed+encrypted rtq_nb against unsigned "
        "(latency 1x1, throughput 4x2; ratios in the same run)",
    )
    b.add_argument(
        "--capacity",
        action="store_true",
        help="also measure Redis CPU and commands per call and per stream (flush 20 and "
        "100 ms): what one shard carries (README, Capacity)",
    )
    b.add_argument(
        "--scale",
        action="store_true",
        help="also measure whether costs stay flat as the work grows: submit and pop with "
        "1,000,000 pending, 10,000 streams read at once, history views over 1,000,000 records, "
        "Redis memory per retained request; ratios to the small case (private server unless "
        "--url; 3-4 minutes on 2 cores; RTQ_BENCH_SCALE=small for a quick look)",
    )
    b.add_argument(
        "--cluster",
        action="store_true",
        help="also measure a 3-master Redis Cluster and sharded queues (1 and 3 shards) "
        "against a single Redis: round trip, throughput, Redis CPU per request (private "
        "servers started for it; README, Sharded queues)",
    )
    b.add_argument(
        "--backend-url",
        default=None,
        help="also stream from this OpenAI-compatible engine directly vs through rtq_nb "
        "(TTFT added, tokens/s kept; needs --model and rtq-nb[openai])",
    )
    b.add_argument("--model", default=None, help="the engine's model (with --backend-url)")
    b.add_argument(
        "--scripts",
        action="store_true",
        help="also measure each hot-path Lua script (submit, pop, append, complete) in "
        "isolation: Redis microseconds per call and its inner commands (INFO commandstats "
        "deltas; README, Capacity)",
    )
    b.add_argument(
        "--payloads",
        action="store_true",
        help="also measure a 50 MB result inline vs by reference (file:// and an "
        "S3-compatible server when moto is installed): latency and Redis memory",
    )
