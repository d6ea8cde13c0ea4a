"""Reading a queue's state: counts, workers, clients, pending requests, history, and the
snapshot the queue monitor shows. Every read returns models from :mod:`rtq_nb.protocol`; the
pandas views and widgets are built on these and nothing else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtq_nb.client.snapshot import (
    FinishedSample,
    QueueSnapshot,
    by_priority,
    ends,
    pending_span,
    server_ms,
    snapshot,
)
from rtq_nb.errors import MalformedRecord, UnknownQueue
from rtq_nb.protocol.history import HISTORY_FIELDS, UNSUCCESSFUL, history_row, lenient_int
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
from rtq_nb.protocol.shards import Layout
from rtq_nb.protocol.stream import pairs
from rtq_nb.security.results import ResultCheck
from rtq_nb.transport.base import Transport
from rtq_nb.transport.resp import Command

__all__ = ["FinishedSample", "Inspection", "PendingRequest", "QueueSnapshot"]

log = logging.getLogger("rtq_nb.client")
PAGE = 1000  # record reads per round trip


@dataclass(frozen=True)
class PendingRequest:
    id: str
    priority: int
    created_ms: int | None


class Inspection:
    """Reads of a queue's state (mixed into :class:`~rtq_nb.AsyncClient`)."""

    reads: Transport  # rides out outages within reconnect_timeout
    prefix: str
    _announced: set[str]
    check: ResultCheck  # verifies stored outcomes and opens sealed values (security/)

    if TYPE_CHECKING:

        def keys(self, queue: str | None = None) -> Keys: ...

        async def layout(self, queue: str | None = None) -> Layout: ...

        _layouts: dict[str, Layout]

    async def server_ms(self) -> int:
        """The Redis server's clock (ms since the epoch): what records' times are in."""
        return server_ms(await self.reads.call("TIME"))

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
        """Pending requests a request of ``score`` waits behind (on a sharded queue: those of
        its shard, and those of a higher priority in the others)."""
        if score is None:
            return 0
        cmds: list[Command] = [("ZCOUNT", keys.pending, f"({score}", "+inf")]
        layout = self._layouts.get(keys.queue)
        if layout is not None and layout.sharded:
            higher = priority_bounds(decode_priority(score) + 1)[0]
            cmds += [("ZCOUNT", k.pending, higher, "+inf") for k in layout.all if k != keys]
        return sum(int(n) for n in await self.reads.pipeline(cmds))

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
        """Requests waiting in the queue (1 round trip; of every shard of a sharded queue)."""
        k = await self._check_queue(queue)
        shards = (await self.layout(k.queue)).all
        return sum(
            int(n) for n in await self.reads.pipeline([("ZCARD", s.pending) for s in shards])
        )

    async def pending_by_priority(self, queue: str | None = None) -> dict[int, int]:
        """{priority: pending count}, highest priority first: plain reads (a read-only ACL
        user may call it), 2 round trips unless the pending priorities span more than
        ``BAND_TRIP`` (see :func:`~rtq_nb.client.snapshot.by_priority`); per shard."""
        k = await self._check_queue(queue)
        total: dict[int, int] = {}
        for s in (await self.layout(k.queue)).all:
            top, bottom = await self.reads.pipeline(ends(s))
            for p, n in (await by_priority(self.reads, s, pending_span(top, bottom, s.pending)))[
                0
            ].items():
                total[p] = total.get(p, 0) + n
        return dict(sorted(total.items(), reverse=True))

    async def workers(self, queue: str | None = None) -> list[WorkerInfo]:
        """Live workers of the queue (registry entries whose heartbeat TTL has not run out)."""
        k = await self._check_queue(queue)
        return (await self.registered_workers(k.queue))[1]

    async def registered_workers(self, queue: str | None = None) -> tuple[int, list[WorkerInfo]]:
        """(server time ms, live workers) in 2 round trips, for any queue name."""
        k = self.keys(queue)
        now, ids = await self.reads.pipeline([("TIME",), ("ZRANGE", k.workers, 0, -1)])
        if not ids:
            return server_ms(now), []
        replies = await self.reads.pipeline([("HGETALL", k.worker(w)) for w in ids])
        return server_ms(now), parse_workers(ids, [pairs(r) for r in replies])

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
        return server_ms(now), infos

    async def pending_requests(
        self, queue: str | None = None, *, limit: int = 1000
    ) -> tuple[int, list[PendingRequest]]:
        """(server time ms, the first ``limit`` pending requests in the order workers take
        them; a sharded queue's by priority, then age)."""
        shards = (await self.layout(queue)).all
        now, *flats = await self.reads.pipeline(
            [("TIME",)]
            + [("ZREVRANGE", k.pending, 0, max(0, limit - 1), "WITHSCORES") for k in shards]
        )
        out: list[PendingRequest] = []
        for k, flat in zip(shards, flats, strict=True):
            ids = flat[::2] if limit else []
            cmds = [("HGET", k.request(r), "created_ms") for r in ids]
            created = await self.reads.pipeline(cmds) if ids else []
            out += [
                PendingRequest(rid, decode_priority(float(score)), lenient_int(c))
                for rid, score, c in zip(ids, flat[1::2], created, strict=False)
            ]
        if len(shards) > 1:
            out.sort(key=lambda r: (-r.priority, r.created_ms or 0))
        return server_ms(now), out[:limit]

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
        first: ids from the history zset (``statuses`` all failed, expired or cancelled: from
        the unsuccessful history, O(matches)), then the shown fields of each record (HMGET),
        1000 per round trip. Records whose TTL ran out are skipped; malformed ones are rows
        with ``parse_error``."""
        lo = "-inf" if since_ms is None else str(since_ms)
        hi = "+inf" if until_ms is None else str(until_ms)
        rows: list[list[Any]] = []
        parts = [k for name in queues for k in (await self.layout(name)).all]
        indexed = statuses is not None and statuses <= UNSUCCESSFUL
        for k in parts:
            ids = k.unsuccessful if indexed else k.history
            rows += await _history_rows(self.reads, k, ids, lo, hi, statuses, limit, self.check)
        if len(parts) > 1:
            rows.sort(key=lambda r: r[6] if r[6] is not None else -1, reverse=True)
        return rows[:limit]

    async def snapshot(self, queue: str | None = None, *, sample: int = 2000) -> QueueSnapshot:
        """What the queue monitor shows, in 2 round trips of plain reads per shard (a read-only
        ACL user may call it): pending by priority, running, workers, and the timing fields of
        the ``sample`` most recent requests."""
        return await snapshot(self.reads, await self.layout(queue), sample)

    async def estimated_wait(self, priority: int = 0, queue: str | None = None) -> float:
        """Seconds a new request of ``priority`` would wait before a worker starts it:
        requests ahead x recent service time (EWMA) / total worker concurrency."""
        k = await self._check_queue(queue)
        check_priority(priority)
        lo = priority * SEQ_SPAN - (SEQ_SPAN - 1)
        hi = (PRIORITY_MAX + 1) * SEQ_SPAN
        shards = (await self.layout(k.queue)).all
        counts = await self.reads.pipeline([("ZCOUNT", s.pending, lo, hi) for s in shards])
        ahead = sum(int(n) for n in counts)
        workers = [w for w in await self.workers(queue) if w.alive]
        slots = sum(max(1, w.concurrency) * max(1, w.batch_size) for w in workers)
        if not slots:
            return float("inf") if ahead else 0.0
        service_ms = sum(w.service_ms_ewma for w in workers) / len(workers)
        return ahead * service_ms / 1000 / slots

    async def stats(self, queue: str | None = None) -> dict[str, float]:
        """Counters of the queue: completed, failed, pending, running."""
        k = await self._check_queue(queue)
        out: dict[str, float] = {}
        pending = running = 0
        for s in (await self.layout(k.queue)).all:
            raw, p, r = await self.reads.pipeline(
                [("HGETALL", s.stats), ("ZCARD", s.pending), ("ZCARD", s.running)]
            )
            pending, running = pending + int(p), running + int(r)
            for name, val in pairs(raw).items():
                try:
                    out[name] = out.get(name, 0.0) + float(val)
                except ValueError:
                    log.warning("ignoring malformed stats field %s=%r in %s", name, val, s.stats)
        out.update(pending=pending, running=running)
        return out


async def _history_rows(
    conn: Transport,
    keys: Keys,
    ids: str,
    lo: str,
    hi: str,
    statuses: frozenset[str] | None,
    limit: int,
    check: ResultCheck,
) -> list[list[Any]]:
    """Pages of up to ``PAGE`` ids of the zset ``ids`` by score, newest first; each page
    starts at the last page's lowest score, past the ids of that score already read (keyset
    paging: O(log n + PAGE) per page however deep the scan goes, where an offset costs every
    id it skips).
    Memory: one page of ids, and the rows kept."""
    rows: list[list[Any]] = []
    active = check.verifies or check.sealer is not None
    fields = (*HISTORY_FIELDS, "res_sig") if active else HISTORY_FIELDS
    page = min(PAGE, limit)
    skip = 0  # ids scored ``hi`` already read
    while len(rows) < limit:
        flat = await conn.call("ZREVRANGEBYSCORE", ids, hi, lo, "WITHSCORES", "LIMIT", skip, page)
        part = flat[::2]
        if not part:
            break
        last = flat[-1]
        same = 0
        for score in reversed(flat[1::2]):
            if score != last:
                break
            same += 1
        skip = skip + same if float(last) == float(hi) else same  # still at score hi: deeper
        hi = last
        rows += await _rows_of(conn, keys, part, fields, statuses, active, check)
        if len(part) < page:
            break
    return rows[:limit]


async def _rows_of(
    conn: Transport,
    keys: Keys,
    part: list[str],
    fields: tuple[str, ...],
    statuses: frozenset[str] | None,
    active: bool,
    check: ResultCheck,
) -> list[list[Any]]:
    """The history rows of one page of ids (1 round trip; 2 when some record is missing)."""
    rows: list[list[Any]] = []
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
    return rows
