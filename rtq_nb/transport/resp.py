"""RESP2 encoding: commands packed by hiredis (C), and templates for hot commands encoded once
with a few holes filled per use. Replies are parsed by hiredis in the links."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis

from rtq_nb.protocol.scripts import Hole

__all__ = ["Command", "Packed", "Template", "pack"]


def _arg(a: Any) -> bytes:
    t = type(a)
    if t is str:
        return a.encode()  # type: ignore[no-any-return]
    if t is int:
        return b"%d" % a
    if t is bytes:
        return a  # type: ignore[no-any-return]
    if t is float:
        return repr(a).encode()
    raise TypeError(f"cannot send {type(a).__name__} to Redis: {a!r}")


def _pack_python(cmd: tuple[Any, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(cmd)]
    for a in cmd:
        b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def _pack_command(cmd: tuple[Any, ...]) -> bytes:
    return hiredis.pack_command(cmd if type(cmd) is tuple else tuple(cmd))  # type: ignore[no-any-return]


class Packed(bytes):
    """Commands already RESP-encoded by :func:`pack`; ``n`` is how many (replies to read)."""

    n: int


Command = tuple[Any, ...] | Packed


def pack(commands: Sequence[Command]) -> Packed:
    """RESP2-encode commands (tuples of str/bytes/int/float) into one buffer. A
    :class:`Packed` item is inserted as is (constant commands are packed once, reused).
    Each command is encoded by hiredis (C); a value of another type raises TypeError."""
    out: list[bytes] = []
    n = 0
    for cmd in commands:
        if isinstance(cmd, Packed):
            out.append(cmd)
            n += cmd.n
            continue
        n += 1
        try:
            out.append(_pack_command(cmd))
        except TypeError:
            out.append(_pack_python(cmd))  # names the offending value, or raises
    packed = Packed(b"".join(out))
    packed.n = n
    return packed


class Template:
    """One command whose arguments are constant but for a few :class:`Hole` s, RESP-encoded
    once. :meth:`fill` splices the values in: a hot command (a client's submit) is not
    re-encoded argument by argument on every call."""

    __slots__ = ("_holes", "_parts")

    def __init__(self, cmd: Sequence[Any]) -> None:
        self._parts: list[bytes] = []  # constant runs around the holes (len = holes + 1)
        self._holes: list[Hole] = []
        run = [b"*%d\r\n" % len(cmd)]
        for a in cmd:
            if isinstance(a, Hole):
                self._parts.append(b"".join(run))
                self._holes.append(a)
                run = []
            else:
                b = _arg(a)
                run.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self._parts.append(b"".join(run))

    def fill(self, *values: str) -> Packed:
        """The packed command with each hole's value (str) in place."""
        parts = self._parts
        out = [parts[0]]
        for i, hole in enumerate(self._holes, 1):
            b = hole.prefix + values[hole.index].encode()
            out.append(b"$%d\r\n%b\r\n%b" % (len(b), b, parts[i]))
        packed = Packed(b"".join(out))
        packed.n = 1
        return packed
