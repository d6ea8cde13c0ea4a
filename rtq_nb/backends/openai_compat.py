"""An OpenAI-compatible model engine as a worker handler: vLLM, SGLang, Ollama, llama.cpp's
``llama-server``, TGI (all serve ``/v1/chat/completions`` and ``/v1/completions``).

No code: ``rtq-nb worker --backend openai --base-url http://127.0.0.1:8000/v1 --model NAME
--concurrency 32``. In Python: ``Worker(OpenAIBackend(base_url, model), url, concurrency=32)``.

- **Input**: a prompt string, an OpenAI-style message list (``[{"role": ..., "content":
  ...}]``), or a whole request object (a dict with ``messages`` or ``prompt``). ``params`` pass
  through into the body (``temperature``, ``max_tokens``, ``stop``, ...).
- **Always streamed from the engine** (SSE), also for ``call()``: the worker can stop the
  generation at once. A cancelled request (or one whose lease is lost) closes the HTTP
  stream; engines abort a request whose client went away.
- **Usage**: asks for it (``stream_options.include_usage``) and records it in the request
  record (``prompt_tokens``, ``completion_tokens``).
- **Deadline and priority**: the request's remaining deadline bounds every HTTP wait and is
  sent as the ``X-Request-Timeout`` header (seconds); with
  ``send_priority`` the request's priority goes to engines that schedule by it (vLLM's
  ``priority``, lower first there: sent negated).
- **Busy or down engine**: 429, 502, 503, 504 and refused connections are retried with backoff
  (``Retry-After`` honoured) within the request's deadline (``retry_budget`` when it has
  none); then :class:`~rtq_nb.errors.EngineError` names the engine URL and the status. A
  connection lost after the first token fails the request (a stream cannot resume).

``httpx`` and ``httpx-sse`` are imported when a backend is made (the ``openai`` extra): a worker
without backends keeps its small dependency set.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from rtq_nb.errors import ConfigurationError, EngineError
from rtq_nb.protocol.records import Request, Usage

__all__ = ["DEADLINE_HEADER", "EngineOptions", "OpenAIBackend", "body_for", "retry_after"]

log = logging.getLogger("rtq_nb.backends")
RETRY_STATUS = frozenset({429, 502, 503, 504})
DEADLINE_HEADER = "x-request-timeout"  # seconds left of the request's deadline, per attempt
Api = Literal["chat", "completions"]
_OWN = frozenset({"stream", "stream_options"})  # body fields the backend sets itself


@dataclass(frozen=True)
class EngineOptions:
    """How to reach one engine (see :class:`OpenAIBackend`)."""

    base_url: str
    model: str
    api: Api = "chat"
    api_key: str | None = None
    send_priority: bool = False
    connect_timeout: float = 5.0
    retry_budget: float = 30.0  # s of retries when the request has no deadline
    no_deadline_timeout: float = 600.0  # s one request may take when it has no deadline

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"base_url {self.base_url!r} must start with http:// or https:// (e.g. "
                "http://127.0.0.1:8000/v1)"
            )
        if not self.model:
            raise ConfigurationError("model must name the engine's model (see GET /v1/models)")
        if self.api not in ("chat", "completions"):
            raise ConfigurationError(f"api must be 'chat' or 'completions', got {self.api!r}")

    @property
    def url(self) -> str:
        path = "/chat/completions" if self.api == "chat" else "/completions"
        return self.base_url.rstrip("/") + path


def body_for(request: Request, opts: EngineOptions) -> dict[str, Any]:
    """The JSON body for ``request`` (pure). Raises ConfigurationError for an input the API
    cannot take."""
    inp = request.input
    if isinstance(inp, dict) and ("messages" in inp or "prompt" in inp):
        body: dict[str, Any] = dict(inp)
    elif isinstance(inp, str):
        body = {"messages": [{"role": "user", "content": inp}]} if opts.api == "chat" else {}
        if opts.api == "completions":
            body["prompt"] = inp
    elif isinstance(inp, list) and all(isinstance(m, dict) and "role" in m for m in inp):
        if opts.api != "chat":
            raise ConfigurationError("a message list needs the chat API (api='chat')")
        body = {"messages": inp}
    else:
        raise ConfigurationError(
            "input must be a prompt string, a message list [{'role': ..., 'content': ...}] or "
            f"a request object with 'messages' or 'prompt'; got {type(inp).__name__}"
        )
    body.setdefault("model", opts.model)
    body.update({k: v for k, v in request.params.items() if k not in _OWN})
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if opts.send_priority:
        body["priority"] = -request.priority  # vLLM: lower runs first
    return body


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class OpenAIBackend:
    """A handler serving requests from an OpenAI-compatible engine (see the module docs)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "chat",
        api_key: str | None = None,
        send_priority: bool = False,
        retry_budget: float = 30.0,
    ) -> None:
        try:
            import httpx  # noqa: F401
            import httpx_sse  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(
                f"the OpenAI-compatible backend needs httpx and httpx-sse ({exc}): "
                "pip install 'rtq-nb[openai]'"
            ) from exc
        self.opts = EngineOptions(
            base_url, model, api, api_key, send_priority, retry_budget=retry_budget
        )
        self._client: Any = None  # httpx.AsyncClient, made on the worker's loop

    def __repr__(self) -> str:  # never shows the API key
        return f"<OpenAIBackend {self.opts.url} model={self.opts.model!r}>"

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.opts.api_key}"} if self.opts.api_key else {}
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
            self._client = httpx.AsyncClient(headers=headers, limits=limits)
        return self._client

    async def __call__(self, request: Request) -> Any:
        """A streaming request gets the text deltas as they come; a whole one the text."""
        if request.stream:
            return self.deltas(request)
        return "".join([d async for d in self.deltas(request)])

    async def deltas(self, request: Request) -> AsyncIterator[str]:
        """The engine's text deltas for ``request``; records its usage on ``request``."""
        import httpx

        body = body_for(request, self.opts)
        end = self._end(request)
        delay, attempt = 0.1, 0
        while True:
            attempt += 1
            left = end - time.monotonic()
            if left <= 0:
                raise EngineError(f"{self.opts.url}: no answer before the request's deadline")
            timeout = httpx.Timeout(left, connect=min(self.opts.connect_timeout, left))
            started = False
            try:
                headers = {DEADLINE_HEADER: f"{left:.3f}"}  # for engines and proxies that read it
                async with self._http().stream(
                    "POST", self.opts.url, json=body, timeout=timeout, headers=headers
                ) as resp:
                    if resp.status_code in RETRY_STATUS:
                        wait = retry_after(resp.headers.get("retry-after")) or delay
                        why = f"{resp.status_code} {resp.reason_phrase}"
                    elif resp.status_code >= 400:
                        text = (await resp.aread()).decode(errors="replace")[:300]
                        raise EngineError(
                            f"{self.opts.url}: {resp.status_code} {resp.reason_phrase}: {text}"
                        )
                    else:
                        async for delta in self._read(resp, request):
                            started = True
                            yield delta
                        return
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                wait, why = delay, f"cannot connect ({exc})"
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout) as exc:
                if started:
                    raise EngineError(f"{self.opts.url}: the stream broke off: {exc}") from exc
                wait, why = delay, f"no answer ({type(exc).__name__}: {exc})"
            left = end - time.monotonic()
            if wait >= left:
                raise EngineError(
                    f"{self.opts.url}: {why}; gave up after {attempt} attempt(s) within the "
                    "request's deadline"
                )
            log.info("engine %s: %s; retrying in %.2f s", self.opts.url, why, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, 2.0)

    def _end(self, request: Request) -> float:
        """Monotonic time by which the engine must have answered."""
        now = time.monotonic()
        if request.deadline_ms:
            return now + max(0.0, request.deadline_ms / 1000 - time.time())
        return now + self.opts.no_deadline_timeout

    async def _read(self, resp: Any, request: Request) -> AsyncIterator[str]:
        from httpx_sse import EventSource

        chat = self.opts.api == "chat"
        async for event in EventSource(resp).aiter_sse():
            if event.data == "[DONE]":
                return
            try:
                chunk = json.loads(event.data)
            except ValueError:
                log.warning("engine %s sent a non-JSON event: %.100r", self.opts.url, event.data)
                continue
            if not isinstance(chunk, dict):
                continue
            if "error" in chunk:
                raise EngineError(f"{self.opts.url}: the engine reported {chunk['error']!r}")
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                request.usage = Usage(
                    int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                )
            for choice in chunk.get("choices") or ():
                delta = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if delta:
                    yield delta
            if request.cancelled:  # closing the response tells the engine to stop
                return

    async def ready(self, wait: float = 0.0) -> list[str]:
        """The engine's model ids (``GET /models``), waiting up to ``wait`` seconds for it to
        come up; EngineError naming the URL otherwise."""
        import httpx

        url = self.opts.base_url.rstrip("/") + "/models"
        end, delay = time.monotonic() + wait, 0.2
        while True:
            try:
                async with httpx.AsyncClient(timeout=self.opts.connect_timeout) as c:
                    resp = await c.get(url, headers=self._http().headers)
                if resp.status_code < 400:
                    data = resp.json().get("data") or []
                    return [str(m.get("id")) for m in data if isinstance(m, dict)]
                why = f"{resp.status_code} {resp.reason_phrase}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > end:
                raise EngineError(
                    f"the engine at {url} is not answering ({why}): start it, check "
                    "--base-url, or let the worker wait for it (--wait-for-engine SECONDS)"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
