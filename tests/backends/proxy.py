"""A recording reverse proxy in front of the engine: llama-server logs no request bodies, so to
check what the engine received (``max_tokens``, ``priority``, ``stream_options``, headers), point
the backend at the proxy's ``base_url`` and read ``proxy.requests``.

Each client connection carries one request: the proxy reads it whole, records it, opens a fresh
connection to the engine, forwards it (with ``Connection: close``), and relays the engine's
response byte for byte (status line, headers, chunked SSE body) until it is complete (by its
Content-Length or chunked framing) or the engine closes; then it closes both sides. When
the client hangs up first, the proxy closes the engine connection at once, so the engine sees
the disconnect and stops generating (``Recorded.outcome == "client_closed"``).
"""

from __future__ import annotations

import asyncio
import contextlib

from tests.backends.httpio import LocalHTTPServer, Recorded, read_request, wait_for

__all__ = ["BodyEnd", "RecordingProxy", "until_eof"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "content-length",
}


class BodyEnd:
    """Tells, fed the response bytes as they pass, when the response is complete: by its
    Content-Length or its chunked framing (else only the upstream's EOF ends it)."""

    def __init__(self) -> None:
        self.head = b""
        self.mode = ""  # "" until the head is in; then "length", "chunked", "none" or "eof"
        self.status = 0
        self.left = 0  # bytes of the body (length) or of the current chunk + CRLF (chunked)
        self.buf = b""
        self.last_chunk = False
        self.complete = False

    def feed(self, data: bytes) -> bool:
        if not self.mode:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = self.head[:end].decode("latin-1").split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            hdrs = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            data, self.head = self.head[end + 4 :], b""
            if self.status in (204, 304) or 100 <= self.status < 200:
                self.mode = "none"
            elif "chunked" in hdrs.get("transfer-encoding", "").lower():
                self.mode = "chunked"
            elif "content-length" in hdrs:
                self.mode, self.left = "length", int(hdrs["content-length"])
            else:
                self.mode = "eof"
        if self.mode == "none":
            return True
        if self.mode == "length":
            self.left -= len(data)
            return self.left <= 0
        if self.mode == "eof":
            return False
        self.buf += data
        while True:
            if self.left:
                n = min(self.left, len(self.buf))
                self.buf, self.left = self.buf[n:], self.left - n
                if self.left:
                    return False
            if self.last_chunk:  # after "0\r\n": optional trailers, then an empty line
                return self.buf.startswith(b"\r\n") or b"\r\n\r\n" in self.buf
            i = self.buf.find(b"\r\n")
            if i < 0:
                return False
            size = int(self.buf[:i].split(b";")[0], 16)
            self.buf = self.buf[i + 2 :]
            if size == 0:
                self.last_chunk = True
            else:
                self.left = size + 2


async def until_eof(reader: asyncio.StreamReader) -> None:
    """Return when the peer has closed (EOF or a reset); discards anything it sends."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass


class RecordingProxy(LocalHTTPServer):
    """``base_url``/``root_url``: where clients connect; ``requests``: a ``Recorded`` per request
    in arrival order (``method``, ``path``, ``headers``, ``body``, ``json``, ``status``,
    ``outcome``, ``wait_done()``)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        super().__init__("rtq-engine-proxy")

    # -- what the tests read -------------------------------------------------------------------

    def bodies(self, path_suffix: str = "/completions") -> list[dict[str, object]]:
        """The JSON bodies of the requests whose path ends with ``path_suffix``."""
        with self._lock:
            return [r.json for r in self.requests if r.path.split("?")[0].endswith(path_suffix)]

    def wait_requests(self, n: int, timeout: float = 15.0) -> list[Recorded]:
        """Wait until at least ``n`` requests arrived; return all of them."""
        return wait_for(f"{n} requests through the proxy", lambda: self._at_least(n), timeout)

    def _at_least(self, n: int) -> list[Recorded] | None:
        with self._lock:
            return list(self.requests) if len(self.requests) >= n else None

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- the proxy -----------------------------------------------------------------------------

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await read_request(cr)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            if head is None:
                return
            rec = Recorded.of(head)
            with self._lock:
                self.requests.append(rec)
            try:
                ur, uw = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                msg = f"proxy: engine unreachable: {exc}".encode()
                rec.status = 502
                cw.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(msg)}\r\nConnection: close\r\n\r\n".encode()
                    + msg
                )
                rec.finish("upstream_error")
                return
            try:
                lines = [f"{head.method} {head.target} {head.version}"]
                lines += [f"{k}: {v}" for k, v in head.headers if k.lower() not in _HOP_BY_HOP]
                lines += [f"Content-Length: {len(head.body)}", "Connection: close", "", ""]
                uw.write("\r\n".join(lines).encode("latin-1") + head.body)
                body_end = BodyEnd()
                relay = asyncio.ensure_future(self._relay(ur, cw, rec, body_end))
                gone = asyncio.ensure_future(until_eof(cr))
                await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
                if relay.done():
                    outcome = relay.result()
                else:  # the client hung up: drop the engine connection now
                    relay.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await relay
                    # (a client may close right after the last byte: that exchange completed)
                    outcome = "complete" if body_end.complete else "client_closed"
                gone.cancel()
                rec.finish(outcome)
            finally:
                uw.close()
        finally:
            cw.close()

    async def _relay(
        self, ur: asyncio.StreamReader, cw: asyncio.StreamWriter, rec: Recorded, end: BodyEnd
    ) -> str:
        while True:
            try:
                data = await ur.read(65536)
            except (ConnectionError, OSError):
                return "upstream_error"
            if not data:  # the engine closed: complete only if the framing says so
                return "complete" if end.complete or end.mode == "eof" else "upstream_error"
            try:
                end.complete = end.feed(data)
            except (ValueError, IndexError):
                return "upstream_error"
            rec.status = end.status
            try:
                cw.write(data)
                await cw.drain()
            except (ConnectionError, OSError):
                return "complete" if end.complete else "client_closed"
            if end.complete:
                return "complete"
