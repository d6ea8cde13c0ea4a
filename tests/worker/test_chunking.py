"""Granularity and coalescing on the worker (pure: no Redis)."""

from __future__ import annotations

import pytest

from rtq_nb.errors import ConfigurationError
from rtq_nb.worker.chunking import (
    Coalescer,
    FixedChunker,
    SentenceChunker,
    TokenChunker,
    make_chunker,
)


def test_sentence_chunker() -> None:
    c = SentenceChunker()
    out = []
    for piece in ["Hello wor", "ld. How are", " you? Fine", "!\nOk"]:
        out += c.feed(piece)
    out += c.flush()
    assert out == ["Hello world. ", "How are you? ", "Fine!\n", "Ok"]
    assert "".join(out) == "Hello world. How are you? Fine!\nOk"


def test_fixed_and_token_chunkers() -> None:
    f = FixedChunker(4)
    assert f.feed("abcdefghij") == ["abcd", "efgh"]
    assert f.feed("k") == []
    assert f.flush() == ["ijk"]
    assert TokenChunker().feed("") == [] and TokenChunker().feed("x") == ["x"]
    assert isinstance(make_chunker("fixed:3"), FixedChunker)
    with pytest.raises(ConfigurationError, match="granularity"):
        make_chunker("paragraphs")


def test_custom_chunker_factory() -> None:
    class Upper:
        def feed(self, text: str) -> list[str]:
            return [text.upper()]

        def flush(self) -> list[str]:
            return []

    assert make_chunker(Upper).feed("a") == ["A"]


def test_coalescer_first_piece_immediately_then_interval() -> None:
    co = Coalescer(interval=0.02)
    assert co.due_at() == float("inf")
    co.add("a")
    assert co.due_at() == float("-inf")  # never flushed: due at once
    [e] = co.take(now=10.0)
    assert (e.seq, e.pieces, e.text) == (0, 1, "a")
    for t in "bcd":
        co.add(t)
    assert co.due_at() == pytest.approx(10.02)
    [e] = co.take(now=10.02)
    assert (e.seq, e.pieces, e.text) == (1, 3, "bcd")
    assert co.take(now=11) == []


def test_coalescer_without_merge_keeps_pieces_apart() -> None:
    co = Coalescer(interval=1.0, merge=False)
    for t in ["One. ", "Two. "]:
        co.add(t)
    assert [(e.seq, e.pieces, e.text) for e in co.take(0.0)] == [(0, 1, "One. "), (1, 1, "Two. ")]


def test_coalescer_size_cap_flushes_at_once() -> None:
    co = Coalescer(interval=10, max_chars=5)
    co.add("x")
    co.take(0.0)
    co.add("123456")
    assert co.due_at() == float("-inf")
