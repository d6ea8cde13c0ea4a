"""``rtq-nb worker --backend openai ...``: serve a model engine with no code (the worker's
backend options, the engine check at start)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from typing import Any

from rtq_nb.errors import ConfigurationError

__all__ = ["add_backend_args", "backend_handler", "engine_backend"]

log = logging.getLogger("rtq_nb.cli")


def add_backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "model backend (instead of a handler; needs rtq-nb[openai])",
        "Serve an OpenAI-compatible engine (vLLM, SGLang, Ollama, llama.cpp's llama-server, "
        "TGI): requests' inputs are prompts or message lists, params go into the body, text "
        "is streamed back, usage is recorded. Use --concurrency for continuous batching "
        "(e.g. 32).",
    )
    g.add_argument("--backend", choices=["openai"], default=None, help="the engine's API")
    g.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8000/v1")
    g.add_argument("--model", default=None, help="the model name the engine serves")
    g.add_argument(
        "--api", choices=["chat", "completions"], default="chat", help="endpoint (default chat)"
    )
    g.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="read the engine's API key from this environment variable (never printed)",
    )
    g.add_argument(
        "--send-priority",
        action="store_true",
        help="pass each request's priority to the engine (vLLM with --scheduling-policy "
        "priority; sent negated: lower runs first there)",
    )
    g.add_argument(
        "--wait-for-engine",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="at start, wait this long for the engine to answer (default 0: fail at once "
        "with a clear error)",
    )


def backend_handler(a: argparse.Namespace) -> Any:
    """The backend handler the options name, after checking that its engine answers."""
    from rtq_nb.backends.openai_compat import OpenAIBackend

    if not a.base_url or not a.model:
        raise ConfigurationError("--backend openai needs --base-url URL and --model NAME")
    key = None
    if a.api_key_env:
        key = os.environ.get(a.api_key_env)
        if not key:
            raise ConfigurationError(f"environment variable {a.api_key_env} is not set or empty")
    backend = OpenAIBackend(
        a.base_url, a.model, api=a.api, api_key=key, send_priority=a.send_priority
    )
    models = asyncio.run(_ready(backend, a.wait_for_engine))
    if models and a.model not in models:
        log.warning("the engine serves %s, not %r: requests may fail", models, a.model)
    log.info("backend %r ready", backend)
    return backend


def engine_backend(base_url: str | None, model: str | None, wait: float = 0.0) -> Any:
    """An OpenAI-compatible backend for ``rtq-nb demo``, its engine checked first."""
    from rtq_nb.backends.openai_compat import OpenAIBackend

    if not base_url or not model:
        raise ConfigurationError("a real engine needs both --base-url URL and --model NAME")
    backend = OpenAIBackend(base_url, model)
    asyncio.run(_ready(backend, wait))
    return backend


async def _ready(backend: Any, wait: float) -> list[str]:
    try:
        return list(await backend.ready(wait))
    finally:
        await backend.aclose()
