"""What the recording proxy and the stub server share: an asyncio event loop on a daemon thread,
reading one HTTP/1.1 request off a stream, and the record of a request as the server got it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "LoopThread",
    "Recorded",
    "RequestHead",
    "close_server",
    "read_request",
    "sse_data",
    "wait_for",
]

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)  # polling a condition a server reports, not standing in for one


@dataclass
class RequestHead:
    """One request's line and headers (names as sent, in order) and its whole body."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


@dataclass
class Recorded:
    """A request as the server (the stub, or the engine behind the proxy) received it.

    ``outcome`` is filled in when the exchange ends: ``"complete"`` (the whole response was
    sent), ``"client_closed"`` (the client hung up before the response ended: the proxy then
    closed its upstream connection, so the engine saw the disconnect too), ``"dropped"`` (the
    stub dropped the connection on purpose) or ``"upstream_error"`` (proxy: the engine was
    unreachable or broke off). ``status`` is the response's status code (0 if none was sent)."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float = field(default_factory=time.monotonic)
    status: int = 0
    outcome: str = ""
    ended_at: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def json(self) -> Any:
        """The body parsed as JSON (``None`` when it is empty)."""
        return json.loads(self.body) if self.body else None

    def finish(self, outcome: str) -> None:
        if not self.done.is_set():
            self.outcome = outcome
            self.ended_at = time.monotonic()
            self.done.set()

    def wait_done(self, timeout: float = 15.0) -> str:
        """Block until the exchange ended; return its ``outcome``."""
        if not self.done.wait(timeout):
            raise AssertionError(
                f"{self.method} {self.path}: exchange still open after {timeout} s"
            )
        return self.outcome

    @classmethod
    def of(cls, head: RequestHead) -> Recorded:
        return cls(
            method=head.method,
            path=head.target,
            headers={k.lower(): v for k, v in head.headers},
            body=head.body,
        )


async def read_request(reader: asyncio.StreamReader) -> RequestHead | None:
    """Read one request; ``None`` on a clean EOF before any byte (keep-alive connection closed).
    The body is read by Content-Length or de-chunked (Transfer-Encoding: chunked)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    head = RequestHead(method, target, version, headers, b"")
    if (head.header("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass  # trailers
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        head.body = bytes(body)
    else:
        head.body = await reader.readexactly(int(head.header("content-length") or 0))
    return head


async def close_server(server: asyncio.Server) -> None:
    """Stop listening (run it on the server's loop: asyncio servers are not thread-safe)."""
    server.close()


class LoopThread:
    """An asyncio event loop running on a daemon thread (for servers the tests run in-process
    next to synchronous test code)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(_cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LocalHTTPServer:
    """An HTTP server on ``127.0.0.1:<free port>`` served by ``_handle`` on its own
    :class:`LoopThread`: ``port``, ``root_url``, ``base_url`` (``.../v1``), ``requests`` (a
    :class:`Recorded` per request, guarded by ``_lock``), ``close()``."""

    host = "127.0.0.1"

    def __init__(self, thread_name: str) -> None:
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._lt = LoopThread(thread_name)
        self._server: asyncio.Server = self._lt.call(self._start())
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.root_url = f"http://{self.host}:{self.port}"
        self.base_url = f"{self.root_url}/v1"

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, self.host, 0)

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._lt.call(close_server(self._server))
        self._lt.close()


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-events stream given line by line (comments such as
    llama-server's ``:`` pings and other fields are skipped); ``"[DONE]"`` included."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].strip()
