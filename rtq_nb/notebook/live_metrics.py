"""One stream's metrics from one clock, the Redis server's (pure: no I/O, no widgets), so the
widget, PromptLab, the views and the record agree, live and at the end:

- **queue wait**: ``started_ms - created_ms`` once a worker took it; while it is queued,
  ``now - created_ms`` (``now`` from the server: the newest chunk's or the record read's time);
- **time to first token**: the first chunk's stream entry time (set by Redis when the worker's
  write landed) minus ``created_ms``, replaced by the record's ``first_chunk_ms`` (the same
  moment, from the script's clock; it can differ from the entry id by a millisecond) once a
  record read has it, so the value at the end is the record's ``ttfc_ms`` exactly;
- **tokens/s**: the model's tokens after the first chunk over the time between the first and
  the newest chunk (entry times: when the worker wrote them, not when they reached the
  kernel, so a burst read late does not inflate it); the tokens are the chunks' pieces, or the
  engine's ``completion_tokens`` once the record has the usage;
- **usage**: the engine's, from the record, once it ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtq_nb.protocol.records import Chunk, RequestRecord, Usage

__all__ = ["LiveMetrics", "MetricsSnapshot"]


@dataclass(frozen=True)
class MetricsSnapshot:
    queue_wait_ms: int | None
    ttft_ms: int | None
    tokens: int
    tokens_per_s: float | None
    elapsed_ms: int | None
    usage: Usage | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_wait_ms": self.queue_wait_ms,
            "ttft_ms": self.ttft_ms,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_ms": self.elapsed_ms,
            "usage": self.usage,
        }


@dataclass
class LiveMetrics:
    """Feed it chunks (:meth:`on_chunk`) and record reads (:meth:`on_record`); read
    :meth:`snapshot` at any time."""

    created_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    first_ms: int | None = None  # the first chunk's entry time
    first_pieces: int = 0
    last_ms: int | None = None  # the newest chunk's entry time
    pieces: int = 0
    usage: Usage | None = None
    server_now_ms: int | None = None  # the newest server time seen
    _seen: set[str] = field(default_factory=set, repr=False)

    def on_chunk(self, chunk: Chunk) -> None:
        if chunk.entry_id and chunk.entry_id in self._seen:
            return
        if chunk.entry_id:
            self._seen.add(chunk.entry_id)
        ts = chunk.timestamp_ms or None
        self.pieces += chunk.pieces
        if ts is None:
            return
        if self.first_ms is None or ts < self.first_ms:
            self.first_ms, self.first_pieces = ts, chunk.pieces
        if self.last_ms is None or ts > self.last_ms:
            self.last_ms = ts
        self._now(ts)

    def on_record(self, rec: RequestRecord, server_now_ms: int | None = None) -> None:
        for name in ("created_ms", "started_ms", "finished_ms"):
            if (value := getattr(rec, name)) is not None:
                setattr(self, name, value)
        if (
            rec.first_chunk_ms is not None
        ):  # the record's first-chunk time wins: the stream entry's id can
            self.first_ms = rec.first_chunk_ms  # differ from it by a millisecond
        if rec.usage is not None:
            self.usage = rec.usage
        if server_now_ms is not None:
            self._now(server_now_ms)
        if rec.finished_ms is not None:
            self._now(rec.finished_ms)

    def reset(self) -> None:
        """A retry starts the stream over (the record's times are kept)."""
        self.first_ms = self.last_ms = None
        self.first_pieces = self.pieces = 0
        self._seen.clear()

    def _now(self, ms: int) -> None:
        if self.server_now_ms is None or ms > self.server_now_ms:
            self.server_now_ms = ms

    def snapshot(self) -> MetricsSnapshot:
        c, now = self.created_ms, self.server_now_ms
        wait = None
        if c is not None:
            if self.started_ms is not None:
                wait = max(0, self.started_ms - c)
            elif now is not None:
                wait = max(0, now - c)
        ttft = None if c is None or self.first_ms is None else max(0, self.first_ms - c)
        tokens = self.pieces
        if self.usage is not None and self.usage.completion_tokens:
            tokens = self.usage.completion_tokens
        tps = None
        if self.first_ms is not None and self.last_ms is not None and self.last_ms > self.first_ms:
            after_first = max(0, tokens - self.first_pieces)
            tps = after_first / ((self.last_ms - self.first_ms) / 1000)
        end = self.finished_ms or now
        elapsed = None if c is None or end is None else max(0, end - c)
        return MetricsSnapshot(wait, ttft, tokens, tps, elapsed, self.usage)
