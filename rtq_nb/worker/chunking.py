"""Streaming granularity and coalescing (pure logic, no I/O, unit-tested without Redis).

Vocabulary: a *piece* is one unit of a handler's output after cutting (a token, a sentence, a
fixed-size slice); a *chunk* is what is written to the stream and what a client receives: one
or more pieces of one flush window; an *entry* is a Redis stream entry (a chunk or a marker).

A *chunker* cuts what a handler yields into pieces (tokens, sentences, fixed-size, or custom).
The *coalescer* merges the pieces produced within one flush interval into one chunk, so a model
that yields one token at a time does not pay one Redis round trip per token.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

from rtq_nb.errors import ConfigurationError

__all__ = [
    "ChunkData",
    "Chunker",
    "ChunkerSpec",
    "Coalescer",
    "FixedChunker",
    "SentenceChunker",
    "TokenChunker",
    "make_chunker",
]


@runtime_checkable
class Chunker(Protocol):
    """Cuts a stream of text into chunks: ``feed`` returns ready chunks, ``flush`` the rest."""

    def feed(self, text: str) -> list[str]: ...

    def flush(self) -> list[str]: ...


class TokenChunker:
    """Every non-empty piece the handler yields is one chunk (the default)."""

    def feed(self, text: str) -> list[str]:
        return [text] if text else []

    def flush(self) -> list[str]:
        return []


class SentenceChunker:
    """Emits whole sentences (ending in . ! ? or a newline, plus trailing spaces)."""

    _END = re.compile(r"[.!?\u2026]+[\"')\]]*\s+|\n+")

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        start = 0
        for m in self._END.finditer(self._buf):
            out.append(self._buf[start : m.end()])
            start = m.end()
        self._buf = self._buf[start:]
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, ""
        return [rest] if rest else []


class FixedChunker:
    """Emits chunks of exactly ``size`` characters (the last one may be shorter)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ConfigurationError(f"fixed chunk size must be >= 1, got {size}")
        self.size = size
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        self._buf += text
        n = len(self._buf) // self.size * self.size
        out = [self._buf[i : i + self.size] for i in range(0, n, self.size)]
        self._buf = self._buf[n:]
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, ""
        return [rest] if rest else []


ChunkerSpec = str | Chunker | Callable[[], Chunker] | None


def make_chunker(spec: ChunkerSpec) -> Chunker:
    """``"token"`` (default), ``"sentence"``, ``"fixed:N"``, a Chunker, or a factory of one."""
    if spec is None or spec == "token":
        return TokenChunker()
    if spec == "sentence":
        return SentenceChunker()
    if isinstance(spec, str):
        if spec.startswith("fixed:") and spec[6:].isdigit():
            return FixedChunker(int(spec[6:]))
        raise ConfigurationError(
            f"unknown granularity {spec!r}: use 'token', 'sentence', 'fixed:N' "
            "or an object with feed(text)->list[str] and flush()->list[str]"
        )
    if isinstance(spec, Chunker) and not isinstance(spec, type):
        return spec
    if callable(spec):
        made = spec()
        if isinstance(made, Chunker):
            return made
    raise ConfigurationError(f"granularity {spec!r} is not a chunker or a chunker factory")


class ChunkData(NamedTuple):
    """One chunk to write: pieces ``seq .. seq+pieces-1`` merged into ``text``."""

    seq: int
    pieces: int
    text: str


class Coalescer:
    """Buffers pieces and says when to flush: at once if the last flush is older than
    ``interval`` seconds (so the first token goes out immediately), else at
    ``last_flush + interval``; a buffer above ``max_chars`` is due at once.

    ``merge=True`` (token granularity) joins the buffered pieces into one entry; with
    ``merge=False`` (sentences, fixed chunks, custom) each piece stays its own entry and
    only the round trip is shared."""

    def __init__(self, interval: float, max_chars: int = 65536, *, merge: bool = True) -> None:
        self.merge = merge
        if interval < 0:
            raise ConfigurationError(f"flush interval must be >= 0 seconds, got {interval}")
        self.interval = interval
        self.max_chars = max_chars
        self._pieces: list[str] = []
        self._chars = 0
        self._next_seq = 0
        self._last_flush = float("-inf")

    def add(self, text: str) -> None:
        if text:
            self._pieces.append(text)
            self._chars += len(text)

    def __len__(self) -> int:
        return len(self._pieces)

    @property
    def pieces_total(self) -> int:
        """Pieces taken so far (the next entry's ``seq``)."""
        return self._next_seq

    def due_at(self) -> float:
        """Monotonic time at which the buffer should be flushed (inf when empty)."""
        if not self._pieces:
            return float("inf")
        if self._chars >= self.max_chars:
            return float("-inf")
        return self._last_flush + self.interval

    def skip(self, pieces: int, now: float) -> None:
        """``pieces`` were written elsewhere at ``now`` (a generator's first piece, sent from
        its thread): the next entry's ``seq`` follows them, the next flush is due as if this
        coalescer had flushed them."""
        self._next_seq += pieces
        self._last_flush = now

    def take(self, now: float) -> list[ChunkData]:
        """Everything buffered, as entries (one merged, or one per piece); marks ``now`` as
        the flush time. Empty list when nothing is buffered."""
        if not self._pieces:
            return []
        seq = self._next_seq
        if self.merge:
            entries = [ChunkData(seq, len(self._pieces), "".join(self._pieces))]
        else:
            entries = [ChunkData(seq + i, 1, p) for i, p in enumerate(self._pieces)]
        self._next_seq += len(self._pieces)
        self._pieces, self._chars = [], 0
        self._last_flush = now
        return entries
