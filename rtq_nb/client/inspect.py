"""Reading a queue's state: counts, workers, clients, pending requests, history, and the
snapshot the queue monitor shows. Every read returns models from :mod:`rtq_nb.protocol`; the
pandas views and widgets are built on these and nothing else."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtq_nb.errors import MalformedRecord, UnknownQueue
from rtq_nb.protocol.history import HISTORY_FIELDS, history_row, lenient_int
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.records import RequestRecord
from rtq_nb.protocol.registry import ClientInfo, WorkerInfo, parse_workers
from rtq_nb.protocol.scores import (
    PRIORITY_MAX,
    SEQ_SPAN,
    check_priority,
    decode_priority,
    priority_bounds,
)
from rtq_nb.protocol.stream import pairs
from rtq_nb.security.results import ResultCheck
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command

__all__ = ["FinishedSample", "Inspection", "PendingRequest", "QueueSnapshot"]

log = logging.getLogger("rtq_nb.client")
PAGE = 1000  # record reads per round trip
SAMPLE_FIELDS = ("status", "finished_ms", "queue_wait_ms", "ttfc_ms", "duration_ms")
BAND_TRIP = 64  # priority bands counted per round trip (pending by priority)


@dataclass(frozen=True)
class PendingRequest:
    id: str
    priority: int
    created_ms: int | None


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


def _ms(reply: list[Any]) -> int:
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


class Inspection:
    """Reads of a queue's state (mixed into :class:`~rtq_nb.AsyncClient`)."""

    reads: Transport  # rides out outages within reconnect_timeout
    prefix: str
    _announced: set[str]
    check: ResultCheck  # verifies stored outcomes and opens sealed values (security/)

    if TYPE_CHECKING:

        def keys(self, queue: str | None = None) -> Keys: ...

    async def server_ms(self) -> int:
        """The Redis server's clock (ms since the epoch): what records' times are in."""
        return _ms(await self.reads.call("TIME"))

    async def find_record(self, keys: Keys, request_id: str) -> RequestRecord | None:
        """The record of a request, or None (MalformedRecord if it is not well formed)."""
        key = keys.request(request_id)
        try:
            flat = await self.reads.call("HGETALL", key)
        except MalformedRecord as exc:
            raise MalformedRecord(f"the record is not a hash: {exc}", key=key) from exc
        fields = self.check.record_fields(pairs(flat), request_id) if flat else None
        return RequestRecord.from_redis(fields, key=key) if fields else None

    async def ahead_of(self, keys: Keys, score: int | None) -> int:
        """Pending requests a request of ``score`` waits behind."""
        if score is None:
            return 0
        return int(await self.reads.call("ZCOUNT", keys.pending, f"({score}", "+inf"))

    async def _check_queue(self, queue: str | None) -> Keys:
        k = self.keys(queue)
        if k.queue in self._announced:
            return k
        if not await self.reads.call("SISMEMBER", k.queues, k.queue):
            known = sorted(await self.reads.call("SMEMBERS", k.queues))
            raise UnknownQueue(
                f"unknown queue {k.queue!r} under prefix {self.prefix!r}: no client or worker "
                f"has used it. Known queues: {', '.join(known) or '(none yet)'}"
            )
        return k

    async def queues(self) -> list[str]:
        """Names of the queues seen under this prefix."""
        return sorted(await self.reads.call("SMEMBERS", self.keys().queues))

    async def pending_count(self, queue: str | None = None) -> int:
        """Requests waiting in the queue (1 round trip)."""
        k = await self._check_queue(queue)
        return int(await self.reads.call("ZCARD", k.pending))

    async def pending_by_priority(self, queue: str | None = None) -> dict[int, int]:
        """{priority: pending count}, highest priority first: plain reads (a read-only ACL
        user may call it), 2 round trips unless the pending priorities span more than
        ``BAND_TRIP`` (see :meth:`_by_priority`)."""
        k = await self._check_queue(queue)
        top, bottom = await self.reads.pipeline(_ends(k))
        return (await self._by_priority(k, _span(top, bottom, k.pending)))[0]

    async def _by_priority(
        self, k: Keys, span: tuple[int, int] | None, extra: Sequence[Command] = ()
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
            bands, cmds = _band_reads(k, *span) if span else ([], [])
            batch = cmds if extra_replies is not None else [*cmds, *extra]
            replies = await self.reads.pipeline(batch) if batch else []
            if extra_replies is None:
                extra_replies = replies[len(cmds) :]
            for p, n in zip(bands, replies):
                if int(n):
                    counts[p] = int(n)
            below = replies[len(bands)] if span and len(cmds) > len(bands) else []
            if not span or not below:
                return counts, extra_replies
            nxt = min(_priority(below[1], k.pending), bands[-1] - 1)  # always progresses
            span = (nxt, span[1]) if nxt >= span[1] else None

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Live workers of the queue (registry entries whose heartbeat TTL has not run out)."""
        k = await self._check_queue(queue)
        return (await self.registered_workers(k.queue))[1]

    async def registered_workers(self, queue: str | None = None) -> tuple[int, list[WorkerInfo]]:
        """(server time ms, live workers) in 2 round trips, for any queue name."""
        k = self.keys(queue)
        now, ids = await self.reads.pipeline([("TIME",), ("ZRANGE", k.workers, 0, -1)])
        if not ids:
            return _ms(now), []
        replies = await self.reads.pipeline([("HGETALL", k.worker(w)) for w in ids])
        return _ms(now), parse_workers(ids, [pairs(r) for r in replies])

    async def registered_clients(self, queue: str | None = None) -> tuple[int, list[ClientInfo]]:
        """(server time ms, clients seen on the queue), most recent first."""
        k = self.keys(queue)
        now, flat = await self.reads.pipeline(
            [("TIME",), ("ZREVRANGE", k.clients, 0, -1, "WITHSCORES")]
        )
        ids = flat[::2]
        hashes = await self.reads.pipeline([("HGETALL", k.client(c)) for c in ids]) if ids else []
        infos = [
            ClientInfo.from_fields(cid, score, pairs(raw))
            for cid, score, raw in zip(ids, flat[1::2], hashes, strict=True)
        ]
        return _ms(now), infos

    async def pending_requests(
        self, queue: str | None = None, *, limit: int = 1000
    ) -> tuple[int, list[PendingRequest]]:
        """(server time ms, the first ``limit`` pending requests in the order workers take
        them)."""
        k = self.keys(queue)
        now, flat = await self.reads.pipeline(
            [("TIME",), ("ZREVRANGE", k.pending, 0, max(0, limit - 1), "WITHSCORES")]
        )
        ids = flat[::2] if limit else []
        cmds = [("HGET", k.request(r), "created_ms") for r in ids]
        created = await self.reads.pipeline(cmds) if ids else []
        out = [
            PendingRequest(rid, decode_priority(float(score)), lenient_int(c))
            for rid, score, c in zip(ids, flat[1::2], created, strict=False)
        ]
        return _ms(now), out

    async def history_rows(
        self,
        queues: list[str],
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        statuses: frozenset[str] | None = None,
        limit: int = 1000,
    ) -> list[list[Any]]:
        """History rows (:func:`rtq_nb.protocol.history.history_row`) of ``queues``, newest
        first: ids from the history zset, then the shown fields of each record (HMGET), 1000
        per round trip. Records whose TTL ran out are skipped; malformed ones are rows with
        ``parse_error``."""
        lo = "-inf" if since_ms is None else str(since_ms)
        hi = "+inf" if until_ms is None else str(until_ms)
        rows: list[list[Any]] = []
        for name in queues:
            rows += await _history_rows(
                self.reads, self.keys(name), lo, hi, statuses, limit, self.check
            )
        if len(queues) > 1:
            rows.sort(key=lambda r: r[6] if r[6] is not None else -1, reverse=True)
        return rows[:limit]

    async def snapshot(self, queue: str | None = None, *, sample: int = 2000) -> QueueSnapshot:
        """What the queue monitor shows, in 2 round trips of plain reads (a read-only ACL user
        may call it): pending by priority, running, workers, and the timing fields of the
        ``sample`` most recent requests."""
        k = self.keys(queue)
        now, wids, top, bottom, running, hist, stats, dead = await self.reads.pipeline(
            [
                ("TIME",),
                ("ZRANGE", k.workers, 0, -1),
                *_ends(k),
                ("ZCARD", k.running),
                ("ZREVRANGEBYSCORE", k.history, "+inf", "-inf", "WITHSCORES", "LIMIT", 0, sample),
                ("HGETALL", k.stats),
                ("ZCARD", k.dead),
            ]
        )
        ids, created = hist[::2], [int(float(s)) for s in hist[1::2]]
        extra: list[Command] = [("HGETALL", k.worker(w)) for w in wids]
        extra += [("HMGET", k.request(r), *SAMPLE_FIELDS) for r in ids]
        by_prio, replies = await self._by_priority(k, _span(top, bottom, k.pending), extra)
        recs = replies[len(wids) :]
        return QueueSnapshot(
            queue=k.queue,
            now_ms=_ms(now),
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

    async def estimated_wait(self, priority: int = 0, queue: str | None = None) -> float:
        """Seconds a new request of ``priority`` would wait before a worker starts it:
        requests ahead x recent service time (EWMA) / total worker concurrency."""
        k = await self._check_queue(queue)
        check_priority(priority)
        lo = priority * SEQ_SPAN - (SEQ_SPAN - 1)
        ahead = int(await self.reads.call("ZCOUNT", k.pending, lo, (PRIORITY_MAX + 1) * SEQ_SPAN))
        workers = [w for w in await self.workers(queue) if w.alive]
        slots = sum(max(1, w.concurrency) * max(1, w.batch_size) for w in workers)
        if not slots:
            return float("inf") if ahead else 0.0
        service_ms = sum(w.service_ms_ewma for w in workers) / len(workers)
        return ahead * service_ms / 1000 / slots

    async def stats(self, queue: str | None = None) -> dict[str, float]:
        """Counters of the queue: completed, failed, pending, running."""
        k = await self._check_queue(queue)
        raw, pending, running = await self.reads.pipeline(
            [("HGETALL", k.stats), ("ZCARD", k.pending), ("ZCARD", k.running)]
        )
        out: dict[str, float] = {}
        for name, val in pairs(raw).items():
            try:
                out[name] = float(val)
            except ValueError:
                log.warning("ignoring malformed stats field %s=%r in %s", name, val, k.stats)
        out.update(pending=int(pending), running=int(running))
        return out


def _ends(k: Keys) -> list[Command]:
    """The highest and the lowest pending member, with their scores."""
    return [
        ("ZREVRANGE", k.pending, 0, 0, "WITHSCORES"),
        ("ZRANGE", k.pending, 0, 0, "WITHSCORES"),
    ]


def _priority(score: Any, key: str) -> int:
    value = float(score)
    if not math.isfinite(value):
        raise MalformedRecord(f"a pending score is {score!r}, not a finite number", key=key)
    return decode_priority(value)


def _span(top: list[Any], bottom: list[Any], key: str) -> tuple[int, int] | None:
    """(highest, lowest) pending priority from :func:`_ends`' replies; None: none pending."""
    if not top or not bottom:
        return None
    return _priority(top[1], key), _priority(bottom[1], key)


def _band_reads(k: Keys, hi: int, lo: int) -> tuple[list[int], list[Command]]:
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


async def _history_rows(
    conn: Transport,
    keys: Keys,
    lo: str,
    hi: str,
    statuses: frozenset[str] | None,
    limit: int,
    check: ResultCheck,
) -> list[list[Any]]:
    rows: list[list[Any]] = []
    active = check.verifies or check.sealer is not None
    fields = (*HISTORY_FIELDS, "res_sig") if active else HISTORY_FIELDS
    offset = 0
    page = limit if statuses is None else max(PAGE, limit)
    while len(rows) < limit:
        ids = (
            await conn.pipeline(
                [
                    ("ZREVRANGEBYSCORE", keys.history, hi, lo, "LIMIT", offset, page),
                ]
            )
        )[0]
        if not ids:
            break
        offset += len(ids)
        for i in range(0, len(ids), PAGE):
            part = ids[i : i + PAGE]
            replies = await conn.pipeline([("HMGET", keys.request(r), *fields) for r in part])
            pairs_ = zip(part, replies, strict=True)
            empty = [r for r, vs in pairs_ if vs[1] is None and not any(vs)]
            whole: dict[str, dict[str, str]] = {}
            if empty:  # no field we read: a vanished record (TTL), or one with only garbage
                flats = await conn.pipeline([("HGETALL", keys.request(r)) for r in empty])
                whole = {r: pairs(f) for r, f in zip(empty, flats, strict=True) if f}
            gone = set(empty) - set(whole)
            for rid, values in zip(part, replies, strict=True):
                if rid in gone:
                    continue  # TTL ran out; the history zset is trimmed lazily
                if active:  # verified outcome, opened (or "(encrypted)") input and result
                    values = check.history_values(values, rid)
                row = history_row(rid, values, keys.request(rid), whole.get(rid))
                if statuses is None or row[5] in statuses:
                    rows.append(row)
            if len(rows) >= limit:
                break
        if len(ids) < page:
            break
    return rows[:limit]
