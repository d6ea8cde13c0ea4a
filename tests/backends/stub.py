"""A hand-written OpenAI-compatible stub server for the failure cases the real engine cannot
produce on demand: 429 with ``Retry-After``, 503, a stream whose connection drops mid-way, a
slow stream, a server that never answers. It does not replace the real engine (``engine.py``).

The stub answers ``POST /v1/chat/completions`` and ``POST /v1/completions`` with the next
scripted behaviour (``stub.script(...)``), else with ``stub.default`` (a normal reply);
``GET /v1/models`` and ``GET /health`` answer as a server would. Every request is recorded in
``stub.requests`` (``Recorded``: method, path, headers, body, ``json``, status, outcome).

Streams are SSE over chunked transfer, in the OpenAI format (``chat.completion.chunk`` or
``text_completion`` chunks, a final chunk with ``finish_reason``, a usage chunk when the request
asks for ``stream_options.include_usage``, then ``data: [DONE]``). Connections are kept alive.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tests.backends.httpio import (
    LocalHTTPServer,
    Recorded,
    RequestHead,
    read_request,
    wait_for,
)
from tests.backends.proxy import until_eof

__all__ = [
    "Drop",
    "Fail",
    "Hang",
    "Reply",
    "StubServer",
    "drop_after",
    "hang",
    "rate_limited",
    "slow",
    "unavailable",
]


@dataclass(frozen=True)
class Reply:
    """A normal answer: ``tokens`` (one SSE chunk each when streaming), ``delay`` seconds before
    each chunk (a slow stream), then ``finish_reason``; ``usage`` is counted from the tokens."""

    tokens: tuple[str, ...] = ("Hello", " from", " the", " stub", ".")
    finish_reason: str = "stop"
    delay: float = 0.0
    prompt_tokens: int = 7


@dataclass(frozen=True)
class Fail:
    """An error response: ``status`` with ``headers`` and an OpenAI-style error body."""

    status: int = 500
    headers: tuple[tuple[str, str], ...] = ()
    message: str = "stub error"


@dataclass(frozen=True)
class Drop:
    """Stream ``after_chunks`` content chunks, then close the connection abruptly (no final
    chunk, no ``[DONE]``, no terminating zero-length chunk). A non-streaming request gets the
    status line, headers and half of a JSON body. ``before_headers=True``: close right after
    reading the request, before any response byte."""

    after_chunks: int = 3
    before_headers: bool = False


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer (until the client gives up and disconnects)."""


Behaviour = Reply | Fail | Drop | Hang


def rate_limited(retry_after: str = "1") -> Fail:
    """429 Too Many Requests with ``Retry-After`` (seconds, as vLLM and OpenAI send it)."""
    return Fail(429, (("Retry-After", retry_after),), "rate limit reached: retry later")


def unavailable(retry_after: str | None = None) -> Fail:
    """503 Service Unavailable (an engine still loading, or overloaded)."""
    headers = (("Retry-After", retry_after),) if retry_after else ()
    return Fail(503, headers, "service unavailable: loading model")


def drop_after(n: int = 3) -> Drop:
    """A stream that sends ``n`` content chunks and then drops the connection."""
    return Drop(after_chunks=n)


def slow(n: int = 50, delay: float = 0.1) -> Reply:
    """A stream of ``n`` tokens, ``delay`` seconds apart."""
    return Reply(tokens=tuple(f" t{i}" for i in range(n)), finish_reason="length", delay=delay)


def hang() -> Hang:
    return Hang()


@dataclass
class _Exchange:
    rec: Recorded
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def chat(self) -> bool:
        return self.rec.path.split("?")[0].endswith("/chat/completions")

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        opts = self.body.get("stream_options") or {}
        return bool(isinstance(opts, dict) and opts.get("include_usage"))


class StubServer(LocalHTTPServer):
    """The stub on ``127.0.0.1:port``: ``base_url`` (``.../v1``), ``root_url``, ``model``,
    ``requests``, ``default`` (the behaviour when the script is empty), ``script()``,
    ``wait_requests()``, ``clear()``, ``close()``."""

    model = "stub-model"

    def __init__(self) -> None:
        self.default: Behaviour = Reply()
        self._script: deque[Behaviour] = deque()
        super().__init__("rtq-openai-stub")

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next completion requests, one each, in order."""
        with self._lock:
            self._script.extend(behaviours)

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def completions(self) -> list[Recorded]:
        """The recorded completion requests (chat and text), in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0].endswith("/completions")]

    def wait_requests(self, n: int, timeout: float = 15.0) -> list[Recorded]:
        """Wait until at least ``n`` completion requests arrived; return them."""
        return wait_for(
            f"{n} completion requests at the stub",
            lambda: (lambda c: c if len(c) >= n else None)(self.completions()),
            timeout,
        )

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self._script.clear()

    # -- the server ----------------------------------------------------------------------------

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await read_request(r)
                except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                    return
                if head is None:
                    return
                rec = Recorded.of(head)
                with self._lock:
                    self.requests.append(rec)
                keep = await self._respond(head, rec, r, w)
                if not keep or (head.header("connection") or "").lower() == "close":
                    return
        except (ConnectionError, OSError):
            return
        finally:
            w.close()

    async def _respond(
        self, head: RequestHead, rec: Recorded, r: asyncio.StreamReader, w: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must close."""
        path = head.target.split("?")[0]
        if head.method == "GET" and path in ("/health", "/v1/health"):
            return await self._json(w, rec, 200, {"status": "ok"})
        if head.method == "GET" and path == "/v1/models":
            data = [{"id": self.model, "object": "model", "created": 0, "owned_by": "stub"}]
            return await self._json(w, rec, 200, {"object": "list", "data": data})
        if head.method != "POST" or not path.endswith("/completions"):
            return await self._json(w, rec, 404, _error(404, f"no route {head.method} {path}"))
        try:
            ex = _Exchange(rec, json.loads(head.body or b"{}"))
        except ValueError:
            return await self._json(w, rec, 400, _error(400, "body is not JSON"))
        b = self._next()
        if isinstance(b, Fail):
            return await self._json(w, rec, b.status, _error(b.status, b.message), b.headers)
        if isinstance(b, Hang):
            await until_eof(r)
            rec.finish("client_closed")
            return False
        if isinstance(b, Drop):
            if b.before_headers:
                rec.finish("dropped")
                return False
            if not ex.stream:
                hdrs = [("Content-Type", "application/json"), ("Content-Length", "1000")]
                rec.status = 200
                w.write(_head(200, hdrs) + b'{"id": "stub-dropped", "obj')
                await w.drain()
                rec.finish("dropped")
                w.transport.abort()
                return False
            tokens = tuple(f" t{i}" for i in range(b.after_chunks))
            return await self._stream(w, r, rec, ex, tokens, Reply(), drop=True)
        if ex.stream:
            return await self._stream(w, r, rec, ex, b.tokens, b)
        if b.delay:
            await asyncio.sleep(b.delay * len(b.tokens))
        return await self._json(w, rec, 200, _completion(ex, b))

    async def _json(
        self,
        w: asyncio.StreamWriter,
        rec: Recorded,
        status: int,
        obj: dict[str, Any],
        headers: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        body = json.dumps(obj).encode()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers]
        rec.status = status  # before the client can have the response
        w.write(_head(status, hdrs) + body)
        await w.drain()
        rec.finish("complete")
        return True

    async def _stream(
        self,
        w: asyncio.StreamWriter,
        r: asyncio.StreamReader,
        rec: Recorded,
        ex: _Exchange,
        tokens: tuple[str, ...],
        b: Reply,
        drop: bool = False,
    ) -> bool:
        hdrs = [
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("Transfer-Encoding", "chunked"),
        ]
        rec.status = 200
        gone = asyncio.ensure_future(until_eof(r))  # notices a client that hangs up mid-stream
        try:
            w.write(_head(200, hdrs))
            await w.drain()
            cid = f"stub-{int(time.time() * 1000)}"
            for i, tok in enumerate(tokens):
                if b.delay:
                    await asyncio.wait({gone}, timeout=b.delay)
                if gone.done():
                    rec.finish("client_closed")
                    return False
                first = i == 0
                w.write(_sse_chunk(_chunk(ex, cid, tok, None, first=first)))
                await w.drain()
            if drop:
                rec.finish("dropped")
                w.transport.abort()  # no terminating chunk: the client sees an incomplete body
                return False
            w.write(_sse_chunk(_chunk(ex, cid, None, b.finish_reason)))
            if ex.include_usage:
                w.write(_sse_chunk(_usage_chunk(ex, cid, b.prompt_tokens, len(tokens))))
            w.write(_sse_chunk("[DONE]") + b"0\r\n\r\n")
            await w.drain()
            rec.finish("complete")
            return True
        except (ConnectionError, OSError):
            rec.finish("client_closed")
            return False
        finally:
            gone.cancel()


def _head(status: int, headers: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> bytes:
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Status")
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _error(status: int, message: str) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 503: "unavailable_error", 404: "not_found_error"}
    return {"error": {"message": message, "type": kind.get(status, "server_error"), "code": status}}


def _sse_chunk(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    event = f"data: {payload}\n\n".encode()
    return f"{len(event):x}\r\n".encode() + event + b"\r\n"


def _chunk(
    ex: _Exchange, cid: str, token: str | None, finish: str | None, first: bool = False
) -> dict[str, Any]:
    model = ex.body.get("model") or StubServer.model
    if ex.chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if token is not None:
            delta["content"] = token
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": token or "", "finish_reason": finish}
        obj = "text_completion"
    return {
        "id": cid,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _usage_chunk(ex: _Exchange, cid: str, prompt: int, completion: int) -> dict[str, Any]:
    out = _chunk(ex, cid, None, None)
    out["choices"] = []
    out["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return out


def _completion(ex: _Exchange, b: Reply) -> dict[str, Any]:
    text = "".join(b.tokens)
    if ex.chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": b.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": b.finish_reason}
        obj = "text_completion"
    n = len(b.tokens)
    return {
        "id": f"stub-{int(time.time() * 1000)}",
        "object": obj,
        "created": int(time.time()),
        "model": ex.body.get("model") or StubServer.model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": n,
            "total_tokens": b.prompt_tokens + n,
        },
    }
