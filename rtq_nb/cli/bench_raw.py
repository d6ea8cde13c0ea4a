"""The raw floor ``rtq-nb bench`` measures beside the redis-py one: blocking sockets and hiredis,
nothing else. The client writes ``HSET`` record + ``ZADD`` pending + ``BLPOP`` its result in ONE
write and reads the three replies; the worker ``BZPOPMAX``es, then writes ``HGET`` input +
``LPUSH`` result in one write. No Lua, no history, no leases: the physical floor of this round
trip on one Redis."""

from __future__ import annotations

import socket
import urllib.parse
import uuid
from typing import Any

import hiredis

__all__ = ["RawConn", "pack", "raw_client", "raw_worker"]

PAYLOAD = "x" * 100


def pack(cmd: tuple[Any, ...]) -> bytes:
    packed: bytes = hiredis.pack_command(cmd)
    return packed


class RawConn:
    """One blocking socket with a hiredis reader (no AUTH/TLS: the bench's own servers)."""

    def __init__(self, url: str) -> None:
        u = urllib.parse.urlparse(url)
        if u.scheme == "unix":
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(u.path)
        else:
            self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader(encoding="utf-8")
        db = (u.path or "/0").strip("/") if u.scheme != "unix" else ""
        if db and db != "0":
            self.request(pack(("SELECT", db)), 1)

    def request(self, data: bytes, n: int) -> list[Any]:
        self.sock.sendall(data)
        out: list[Any] = []
        while len(out) < n:
            reply = self.reader.gets()
            if reply is False:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                self.reader.feed(chunk)
                continue
            out.append(reply)
        return out


def raw_worker(url: str, ns: str, stop_key: str) -> None:
    c = RawConn(url)
    c.request(pack(("LPUSH", f"{ns}:ready", "1")), 1)
    pop = pack(("BZPOPMAX", f"{ns}:pending", stop_key, 0))
    while True:
        key, rid, _ = c.request(pop, 1)[0]
        if key == stop_key:
            return
        work = pack(("HGET", f"{ns}:req:{rid}", "input"))
        work += pack(("LPUSH", f"{ns}:res:{rid}", PAYLOAD))
        c.request(work, 2)


def raw_client(url: str, ns: str, conn: Any) -> None:
    from rtq_nb.cli.bench_sides import serve_rounds

    c = RawConn(url)
    cid, i = uuid.uuid4().hex[:8], 0
    pending = f"{ns}:pending"

    def call() -> None:
        nonlocal i
        i += 1
        rid = f"{cid}-{i}"
        data = pack(("HSET", f"{ns}:req:{rid}", "id", rid, "input", PAYLOAD, "status", "pending"))
        data += pack(("ZADD", pending, 0, rid))
        data += pack(("BLPOP", f"{ns}:res:{rid}", 30))
        c.request(data, 3)

    serve_rounds(call, conn)
