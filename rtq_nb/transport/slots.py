"""Redis Cluster routing, pure: key -> hash slot (CRC16 with hash tags), the key of a command
(tuples or RESP-packed buffers), and the redirections a node answers with.

No I/O here; :mod:`rtq_nb.transport.cluster` sends what this decides.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "SLOTS",
    "Redirect",
    "command_key",
    "key_slot",
    "redirect",
    "split_packed",
]

SLOTS = 16384


def _table() -> list[int]:
    out = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        out.append(crc & 0xFFFF)
    return out


_CRC = _table()


def _crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC[((crc >> 8) ^ b) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key``: only the part inside the first non-empty ``{...}`` counts."""
    k = key.encode() if isinstance(key, str) else key
    start = k.find(b"{")
    if start >= 0:
        end = k.find(b"}", start + 1)
        if end > start + 1:
            k = k[start + 1 : end]
    return _crc16(k) % SLOTS


# Commands rtq_nb sends that carry no key: they go with their neighbours (WAIT must follow
# its writes on the same connection; TIME reads the clock of the node the reads go to).
_KEYLESS = frozenset(
    {
        "PING",
        "TIME",
        "INFO",
        "WAIT",
        "SCRIPT",
        "CLIENT",
        "CLUSTER",
        "CONFIG",
        "DBSIZE",
        "ECHO",
        "SLOWLOG",
        "COMMAND",
        "LATENCY",
        "ACL",
        "HELLO",
        "AUTH",
        "SELECT",
        "FLUSHALL",
        "FLUSHDB",
        "MULTI",
        "EXEC",
        "ASKING",
        "READONLY",
    }
)


def _text(a: Any) -> str:
    if isinstance(a, bytes):
        return a.decode("utf-8", "replace")
    return str(a)


def command_key(cmd: tuple[Any, ...] | list[Any]) -> Any | None:
    """The key a command is routed by (the first key), or None for a keyless command.
    ``EVALSHA``/``EVAL``/``FCALL``: the first declared key; ``XREAD``/``XREADGROUP``: the
    first stream after ``STREAMS``; anything else: its first argument."""
    if not cmd:
        return None
    name = _text(cmd[0]).upper()
    if name in _KEYLESS:
        return None
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"):
        return cmd[3] if len(cmd) > 3 and int(_text(cmd[2])) > 0 else None
    if name in ("XREAD", "XREADGROUP"):
        for i, a in enumerate(cmd):
            if _text(a).upper() == "STREAMS" and i + 1 < len(cmd):
                return cmd[i + 1]
        return None
    return cmd[1] if len(cmd) > 1 else None


def split_packed(data: bytes) -> list[tuple[bytes, list[bytes]]]:
    """The commands of a RESP-packed buffer: (its bytes, its arguments), in order."""
    out: list[tuple[bytes, list[bytes]]] = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        if data[pos : pos + 1] != b"*":
            raise ValueError(f"not a RESP command at byte {pos}")
        eol = data.index(b"\r\n", pos)
        count = int(data[pos + 1 : eol])
        pos = eol + 2
        args: list[bytes] = []
        for _ in range(count):
            eol = data.index(b"\r\n", pos)
            size = int(data[pos + 1 : eol])
            pos = eol + 2
            args.append(data[pos : pos + size])
            pos += size + 2
        out.append((data[start:pos], args))
    return out


class Redirect(NamedTuple):
    """A cluster node's answer that the command belongs elsewhere (or later)."""

    kind: str  # "MOVED", "ASK", "TRYAGAIN" or "CLUSTERDOWN"
    slot: int
    address: tuple[str, int] | None


def redirect(reply: Any) -> Redirect | None:
    """The redirection an error reply (an exception object) names, or None."""
    if not isinstance(reply, Exception):
        return None
    text = str(reply)
    if text.startswith(("MOVED ", "ASK ")):
        kind, slot, where = text.split(" ", 2)
        host, _, port = where.strip().rpartition(":")
        return Redirect(kind, int(slot), (host, int(port)))
    if text.startswith(("TRYAGAIN", "CLUSTERDOWN")):
        return Redirect(text.split(" ", 1)[0], -1, None)
    return None
