"""The queue monitor's snapshot and pending counts by priority band: plain reads (a read-only
ACL user may run them), never a scan; a sharded queue's snapshot merges its shards'."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rtq_nb.errors import MalformedRecord
from rtq_nb.protocol.history import lenient_int
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.registry import WorkerInfo, parse_workers
from rtq_nb.protocol.scores import decode_priority, priority_bounds
from rtq_nb.protocol.shards import Layout
from rtq_nb.protocol.stream import pairs
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command

__all__ = [
    "FinishedSample",
    "QueueSnapshot",
    "by_priority",
    "ends",
    "merge",
    "pending_span",
    "server_ms",
    "shard_snapshot",
    "snapshot",
]

SAMPLE_FIELDS = ("status", "finished_ms", "queue_wait_ms", "ttfc_ms", "duration_ms")
BAND_TRIP = 64  # priority bands counted per round trip (pending by priority)


@dataclass(frozen=True)
class FinishedSample:
    """Timing fields of one recent request (raw strings, parsed by whoever summarises)."""

    created_ms: int
    status: str | None
    finished_ms: str | None
    queue_wait_ms: str | None
    ttft_ms: str | None  # the record's ttfc_ms
    duration_ms: str | None
    id: str = ""


@dataclass(frozen=True)
class QueueSnapshot:
    """What a queue monitor shows, read in 2 round trips of plain reads (no scans; history
    sampled)."""

    queue: str
    now_ms: int
    pending: list[tuple[int, int]]  # (priority, count), highest first
    running: int
    workers: list[WorkerInfo]
    recent: list[FinishedSample]  # newest first
    truncated: bool  # the sample may not reach back as far as asked
    counters: dict[str, int] = field(default_factory=dict)  # the queue's stats (all time)
    dead: int = 0  # dead-lettered requests

    @property
    def pending_total(self) -> int:
        return sum(c for _, c in self.pending)


def server_ms(reply: list[Any]) -> int:
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


async def by_priority(
    reads: Transport, k: Keys, span: tuple[int, int] | None, extra: Sequence[Command] = ()
) -> tuple[dict[int, int], list[Any]]:
    """({priority: count}, highest first; ``extra``'s replies), given the (highest,
    lowest) pending priority: one ZCOUNT per priority band, ``BAND_TRIP`` bands per round
    trip, each trip also reading the highest score below its bands to skip empty ranges
    (at most one trip per distinct priority; O(log N) each, never a scan). ``extra``
    commands ride along in the first trip. Reads are not atomic: counts are a moment's
    view, as any monitor's."""
    counts: dict[int, int] = {}
    extra_replies: list[Any] | None = None
    while True:
        bands, cmds = band_reads(k, *span) if span else ([], [])
        batch = cmds if extra_replies is not None else [*cmds, *extra]
        replies = await reads.pipeline(batch) if batch else []
        if extra_replies is None:
            extra_replies = replies[len(cmds) :]
        for p, n in zip(bands, replies):
            if int(n):
                counts[p] = int(n)
        below = replies[len(bands)] if span and len(cmds) > len(bands) else []
        if not span or not below:
            return counts, extra_replies
        nxt = min(priority_of(below[1], k.pending), bands[-1] - 1)  # always progresses
        span = (nxt, span[1]) if nxt >= span[1] else None


async def shard_snapshot(reads: Transport, k: Keys, sample: int) -> QueueSnapshot:
    """One shard's snapshot (the home shard's with the workers): 2 round trips."""
    now, wids, top, bottom, running, hist, stats, dead = await reads.pipeline(
        [
            ("TIME",),
            ("ZRANGE", k.workers, 0, -1) if not k.shard else ("ZRANGE", k.workers, 1, 0),
            *ends(k),
            ("ZCARD", k.running),
            ("ZREVRANGEBYSCORE", k.history, "+inf", "-inf", "WITHSCORES", "LIMIT", 0, sample),
            ("HGETALL", k.stats),
            ("ZCARD", k.dead),
        ]
    )
    ids, created = hist[::2], [int(float(s)) for s in hist[1::2]]
    extra: list[Command] = [("HGETALL", k.worker(w)) for w in wids]
    extra += [("HMGET", k.request(r), *SAMPLE_FIELDS) for r in ids]
    by_prio, replies = await by_priority(reads, k, pending_span(top, bottom, k.pending), extra)
    recs = replies[len(wids) :]
    return QueueSnapshot(
        queue=k.queue,
        now_ms=server_ms(now),
        pending=list(by_prio.items()),
        running=int(running),
        workers=parse_workers(wids, [pairs(r) for r in replies[: len(wids)]]),
        recent=[
            FinishedSample(c, r[0], r[1], r[2], r[3], r[4], i)
            for i, c, r in zip(ids, created, recs, strict=True)
        ],
        truncated=len(ids) >= sample,
        counters={n: v for n, x in pairs(stats).items() if (v := lenient_int(x)) is not None},
        dead=int(dead),
    )


def merge(parts: Sequence[QueueSnapshot], sample: int) -> QueueSnapshot:
    """One snapshot of a sharded queue from its shards' (the first is the home shard's)."""
    first = parts[0]
    pending: dict[int, int] = {}
    counters: dict[str, int] = {}
    for s in parts:
        for p, n in s.pending:
            pending[p] = pending.get(p, 0) + n
        for name, v in s.counters.items():
            counters[name] = counters.get(name, 0) + v
    recent = sorted((r for s in parts for r in s.recent), key=lambda r: -r.created_ms)
    return QueueSnapshot(
        queue=first.queue,
        now_ms=first.now_ms,
        pending=sorted(pending.items(), reverse=True),
        running=sum(s.running for s in parts),
        workers=first.workers,
        recent=recent[:sample],
        truncated=any(s.truncated for s in parts) or len(recent) > sample,
        counters=counters,
        dead=sum(s.dead for s in parts),
    )


async def snapshot(reads: Transport, layout: Layout, sample: int) -> QueueSnapshot:
    """What the queue monitor shows: 2 round trips per shard."""
    parts = [await shard_snapshot(reads, k, sample) for k in layout.all]
    return parts[0] if len(parts) == 1 else merge(parts, sample)


def ends(k: Keys) -> list[Command]:
    """The highest and the lowest pending member, with their scores."""
    return [
        ("ZREVRANGE", k.pending, 0, 0, "WITHSCORES"),
        ("ZRANGE", k.pending, 0, 0, "WITHSCORES"),
    ]


def priority_of(score: Any, key: str) -> int:
    value = float(score)
    if not math.isfinite(value):
        raise MalformedRecord(f"a pending score is {score!r}, not a finite number", key=key)
    return decode_priority(value)


def pending_span(top: list[Any], bottom: list[Any], key: str) -> tuple[int, int] | None:
    """(highest, lowest) pending priority from :func:`_ends`' replies; None: none pending."""
    if not top or not bottom:
        return None
    return priority_of(top[1], key), priority_of(bottom[1], key)


def band_reads(k: Keys, hi: int, lo: int) -> tuple[list[int], list[Command]]:
    """(priorities, commands): ZCOUNT of the bands ``hi``, ``hi - 1``, ... (at most
    ``BAND_TRIP``, none below ``lo``), then, if bands remain below them, the highest pending
    member under the last band (where the next trip starts)."""
    bands = list(range(hi, max(lo, hi - BAND_TRIP + 1) - 1, -1))
    cmds: list[Command] = [("ZCOUNT", k.pending, *priority_bounds(p)) for p in bands]
    if bands[-1] > lo:
        floor = priority_bounds(bands[-1])[0]
        cmds.append(
            ("ZREVRANGEBYSCORE", k.pending, f"({floor}", "-inf", "WITHSCORES", "LIMIT", 0, 1)
        )
    return bands, cmds
