"""pandas views of a queue: typed DataFrames pulled from Redis (an adapter; imports pandas lazily).

::

    from rtq_nb import views
    views.history(client)                          # newest first, up to 1000 rows
    views.history(client, status="failed", since=timedelta(minutes=10))
    views.workers(client); views.clients(client)
    views.pending(client)                          # priority, count
    views.pending(client, by_priority=False)       # the pending requests themselves

``client`` is a :class:`rtq_nb.Client` (its connection on rtq_nb's loop thread is reused) or an
:class:`rtq_nb.AsyncClient` (a short-lived connection is opened on that loop thread, so a client
living on another event loop is never touched). Reads are pipelined: ``history`` fetches ids with
one ``ZREVRANGEBYSCORE`` and the shown fields of each record with ``HMGET``, 1000 per round
trip (pipelined).
A record that does not follow the wire format becomes a row with ``parse_error`` set; records
whose TTL ran out (ids still in the lazily trimmed history) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from rtq_nb.client.core import AsyncClient
from rtq_nb.errors import ConfigurationError, MalformedRecord
from rtq_nb.protocol.keys import WIRE_VERSION, Keys
from rtq_nb.protocol.records import RequestRecord, Status
from rtq_nb.protocol.registry import WorkerInfo, parse_workers
from rtq_nb.protocol.scores import decode_priority
from rtq_nb.transport.aio import Conn, pairs

if TYPE_CHECKING:
    import pandas as pd

    from rtq_nb.client.sync import Client

T = TypeVar("T")
TimeBound = datetime | timedelta | float | int | str | None

PAGE = 1000  # record reads per round trip
PREVIEW = 80  # characters kept in input_preview / output_preview

HISTORY_COLUMNS: dict[str, str] = {
    "id": "string",
    "client": "string",
    "worker": "string",
    "queue": "string",
    "priority": "Int64",
    "status": "string",
    "created": "datetime64[ms, UTC]",
    "queue_wait_ms": "Int64",
    "ttft_ms": "Int64",
    "duration_ms": "Int64",
    "chunks": "Int64",
    "attempts": "Int64",
    "error": "string",
    "input_preview": "string",
    "output_preview": "string",
    "parse_error": "string",
}
_STATUSES = frozenset(s.value for s in Status)
_WIRE = str(WIRE_VERSION)
_INT_FIELDS = (
    "priority",
    "created_ms",
    "queue_wait_ms",
    "ttfc_ms",
    "duration_ms",
    "chunks",
    "attempts",
)


# ---- plumbing ------------------------------------------------------------------------------
async def _arun(client: Client | AsyncClient, fn: Callable[[Conn, AsyncClient], Awaitable[T]]) -> T:
    """``fn(conn, async_client)`` on the calling loop (must be rtq_nb's loop thread)."""
    from rtq_nb.client.sync import Client

    if isinstance(client, Client):
        ac = client.async_client
        return await fn(ac._conn, ac)
    if isinstance(client, AsyncClient):
        return await _private(fn, client)
    raise TypeError(f"expected an rtq_nb Client or AsyncClient, got {type(client).__name__}")


def _run(client: Client | AsyncClient, fn: Callable[[Conn, AsyncClient], Awaitable[T]]) -> T:
    """Run ``fn(conn, async_client)`` on rtq_nb's loop thread and return its result."""
    from rtq_nb.loop import portal

    return portal().call(_arun(client, fn))


async def _private(fn: Callable[[Conn, AsyncClient], Awaitable[T]], ac: AsyncClient) -> T:
    conn = Conn(ac.url)
    try:
        return await fn(conn, ac)
    finally:
        await conn.aclose()


async def _server_ms(conn: Conn) -> int:
    sec, usec = (await conn.pipeline([("TIME",)]))[0]
    return int(sec) * 1000 + int(usec) // 1000


def _to_ms(value: TimeBound, now_ms: int, what: str) -> int | None:
    """A time bound as ms since the epoch. datetime (naive = UTC) / pandas Timestamp / ISO str /
    epoch seconds (int, float) / timedelta (that long before now)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return now_ms - int(value.total_seconds() * 1000)
    if isinstance(value, str):
        import pandas as pd

        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return round(value.timestamp() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(value * 1000)
    raise ConfigurationError(
        f"{what} must be a datetime, pandas Timestamp, ISO string, timedelta (before now) or "
        f"epoch seconds, got {value!r}"
    )


def _typed(columns: dict[str, list[Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    import pandas as pd

    data: dict[str, Any] = {}
    dtype: Any
    for name, dtype in dtypes.items():
        values = columns[name]
        if dtype.startswith("datetime64"):
            ms = pd.array(values, dtype="Int64")
            data[name] = pd.to_datetime(ms, unit="ms", utc=True).astype(dtype)
        elif dtype.startswith("timedelta64"):
            data[name] = pd.to_timedelta(pd.array(values, dtype="Int64"), unit="ms").astype(dtype)
        else:
            data[name] = pd.array(values, dtype=dtype)
    frame: pd.DataFrame = pd.DataFrame(data)
    return frame


def _int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return None
        return int(f) if f == f and f not in (float("inf"), float("-inf")) else None


# ---- history -------------------------------------------------------------------------------
def _preview(raw: str) -> tuple[str | None, str | None]:
    """(preview text, problem) of a JSON field value."""
    if raw == "":
        return None, None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return raw[:PREVIEW], f"not valid JSON: {exc}"
    text = value if isinstance(value, str) else raw
    return (text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"), None


_FIELDS = (
    "v",
    "id",
    "client",
    "worker",
    "queue",
    "status",
    "error",
    "input",
    "result",
    "params",
    *_INT_FIELDS,
)  # read with HMGET: only what the view shows (not the whole hash)


def _history_row(
    rid: str,
    values: list[str | None],
    key: str,
    whole: dict[str, str] | None = None,
) -> list[Any]:
    """One history row from the HMGET values of ``_FIELDS``; problems (if any) go to
    parse_error, never raise. The hot loop of :func:`history`: positional values, no pydantic
    unless the record looks malformed (then ``whole``, the full hash if known, is validated for
    the canonical message)."""
    v, rec_id, client, worker, queue, status, error, inp_raw, res_raw, params, *raw_ints = values
    problems: list[str] = []
    ints: list[int | None] = []
    for name, raw in zip(_INT_FIELDS, raw_ints, strict=True):
        if not raw:
            ints.append(None)
            continue
        try:
            ints.append(int(raw))
        except ValueError:
            value = _int(raw)
            ints.append(value)
            if value is None:
                problems.append(f"{name}: not a number ({raw[:30]!r})")
    priority, created, wait, ttft, duration, chunks, attempts = ints
    if v != _WIRE or rec_id != rid or status not in _STATUSES or priority is None:
        problems.append("bad header fields (v, id, status or priority)")
    if not client or not queue:
        problems.append("missing client or queue")
    inp, bad = _preview(inp_raw or "")
    if bad:
        problems.append(f"input: {bad}")
    out, bad = _preview(res_raw or "")
    if bad:
        problems.append(f"result: {bad}")
    if params and params != "{}":
        try:
            if not isinstance(json.loads(params), dict):
                problems.append("params: not a JSON object")
        except ValueError as exc:
            problems.append(f"params: not valid JSON: {exc}")
    parse_error = None
    if problems:
        fields = whole or {n: x for n, x in zip(_FIELDS, values, strict=True) if x is not None}
        try:  # the canonical message, when the model agrees the record is malformed
            RequestRecord.from_redis(fields, key=key)
            parse_error = "; ".join(problems)
        except MalformedRecord as exc:
            parse_error = str(exc)
    return [
        rid,
        client or None,
        worker or None,
        queue or None,
        priority,
        status or None,
        created,
        wait,
        ttft,
        duration,
        chunks,
        attempts,
        error or None,
        inp,
        out,
        parse_error,
    ]


def _statuses(status: str | Status | Iterable[str | Status] | None) -> frozenset[str] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, Status)) else list(status)
    values = frozenset(s.value if isinstance(s, Status) else str(s) for s in items)
    unknown = values - _STATUSES
    if unknown:
        raise ConfigurationError(
            f"unknown status {', '.join(sorted(unknown))}: use {', '.join(sorted(_STATUSES))}"
        )
    return values


async def _history_rows(
    conn: Conn,
    keys: Keys,
    lo: str,
    hi: str,
    statuses: frozenset[str] | None,
    limit: int,
) -> list[list[Any]]:
    rows: list[list[Any]] = []
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
            replies = await conn.pipeline([("HMGET", keys.request(r), *_FIELDS) for r in part])
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
                row = _history_row(rid, values, keys.request(rid), whole.get(rid))
                if statuses is None or row[5] in statuses:
                    rows.append(row)
            if len(rows) >= limit:
                break
        if len(ids) < page:
            break
    return rows[:limit]


def history(
    client: Client | AsyncClient,
    *,
    status: str | Status | Iterable[str | Status] | None = None,
    since: TimeBound = None,
    until: TimeBound = None,
    queue: str | Sequence[str] | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Request history, newest first, as a typed DataFrame (columns: see ``HISTORY_COLUMNS``).

    ``status``: one status or several; ``since``/``until``: creation-time bounds (datetime,
    ISO string, epoch seconds, or a timedelta meaning "that long ago"); ``queue``: the client's
    queue by default, a name, a list of names, or ``"*"`` for every known queue; ``limit``:
    at most this many rows (after filtering). ``ttft_ms`` is time to first token from
    submission (the record's ``ttfc_ms``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}")
    statuses = _statuses(status)

    async def fetch(conn: Conn, ac: AsyncClient) -> list[list[Any]]:
        now = await _server_ms(conn)
        lo_ms, hi_ms = _to_ms(since, now, "since"), _to_ms(until, now, "until")
        lo = "-inf" if lo_ms is None else str(lo_ms)
        hi = "+inf" if hi_ms is None else str(hi_ms)
        if queue == "*":
            names = sorted((await conn.pipeline([("SMEMBERS", ac.keys().queues)]))[0])
        elif queue is None or isinstance(queue, str):
            names = [ac.keys(queue).queue]
        else:
            names = list(queue)
        rows: list[list[Any]] = []
        for name in names:
            rows += await _history_rows(conn, ac.keys(name), lo, hi, statuses, limit)
        if len(names) > 1:
            rows.sort(key=lambda r: r[6] if r[6] is not None else -1, reverse=True)
        return rows[:limit]

    rows = _run(client, fetch) if limit else []
    transposed = list(zip(*rows, strict=True)) if rows else [()] * len(HISTORY_COLUMNS)
    columns = {name: list(col) for name, col in zip(HISTORY_COLUMNS, transposed, strict=True)}
    return _typed(columns, HISTORY_COLUMNS)


# ---- workers, clients, pending ------------------------------------------------------------
WORKER_COLUMNS: dict[str, str] = {
    "id": "string",
    "queue": "string",
    "host": "string",
    "pid": "Int64",
    "status": "string",
    "concurrency": "Int64",
    "batch_size": "Int64",
    "in_flight": "Int64",
    "processed": "Int64",
    "failed": "Int64",
    "started": "datetime64[ms, UTC]",
    "last_heartbeat": "datetime64[ms, UTC]",
    "heartbeat_age_s": "Float64",
    "service_ms_ewma": "Float64",
    "error": "string",
}


async def fetch_workers(conn: Conn, keys: Keys) -> tuple[int, list[WorkerInfo]]:
    """(server time ms, live workers of a queue) in 2 round trips (used by QueueMonitor too)."""
    (sec, usec), ids = await conn.pipeline([("TIME",), ("ZRANGE", keys.workers, 0, -1)])
    now = int(sec) * 1000 + int(usec) // 1000
    if not ids:
        return now, []
    replies = await conn.pipeline([("HGETALL", keys.worker(w)) for w in ids])
    return now, parse_workers(ids, [pairs(r) for r in replies])


def workers(client: Client | AsyncClient, *, queue: str | None = None) -> pd.DataFrame:
    """Live workers of the queue: one row per registry entry (malformed entries have ``error``)."""

    async def fetch(conn: Conn, ac: AsyncClient) -> tuple[int, list[WorkerInfo]]:
        return await fetch_workers(conn, ac.keys(queue))

    now, infos = _run(client, fetch)
    cols: dict[str, list[Any]] = {name: [] for name in WORKER_COLUMNS}
    for w in sorted(infos, key=lambda w: w.id):
        seen = w.last_seen_ms or None
        for name, value in (
            ("id", w.id),
            ("queue", w.queue or None),
            ("host", w.host or None),
            ("pid", w.pid or None),
            ("status", w.status),
            ("concurrency", w.concurrency),
            ("batch_size", w.batch_size),
            ("in_flight", w.in_flight),
            ("processed", w.processed),
            ("failed", w.failed),
            ("started", w.started_ms or None),
            ("last_heartbeat", seen),
            ("heartbeat_age_s", None if seen is None else max(0, now - seen) / 1000),
            ("service_ms_ewma", w.service_ms_ewma),
            ("error", w.error),
        ):
            cols[name].append(value)
    return _typed(cols, WORKER_COLUMNS)


CLIENT_COLUMNS: dict[str, str] = {
    "id": "string",
    "queue": "string",
    "host": "string",
    "pid": "Int64",
    "submitted": "Int64",
    "last_seen": "datetime64[ms, UTC]",
    "last_seen_age_s": "Float64",
    "alive": "boolean",
}


def clients(client: Client | AsyncClient, *, queue: str | None = None) -> pd.DataFrame:
    """Clients seen on the queue (clients zset + registry hashes), most recent first.
    ``alive`` is False once a client's registry hash has expired (TTL = retention)."""

    async def fetch(conn: Conn, ac: AsyncClient) -> tuple[int, list[Any], list[Any]]:
        k = ac.keys(queue)
        (sec, usec), flat = await conn.pipeline(
            [
                ("TIME",),
                ("ZREVRANGE", k.clients, 0, -1, "WITHSCORES"),
            ]
        )
        ids = flat[::2]
        hashes = await conn.pipeline([("HGETALL", k.client(c)) for c in ids]) if ids else []
        return int(sec) * 1000 + int(usec) // 1000, flat, hashes

    now, flat, hashes = _run(client, fetch)
    cols: dict[str, list[Any]] = {name: [] for name in CLIENT_COLUMNS}
    for cid, score, raw in zip(flat[::2], flat[1::2], hashes, strict=True):
        f = pairs(raw)
        seen = _int(f.get("last_seen_ms")) or _int(score)
        for name, value in (
            ("id", cid),
            ("queue", f.get("queue") or None),
            ("host", f.get("host") or None),
            ("pid", _int(f.get("pid"))),
            ("submitted", _int(f.get("submitted"))),
            ("last_seen", seen),
            ("last_seen_age_s", None if seen is None else max(0, now - seen) / 1000),
            ("alive", bool(f)),
        ):
            cols[name].append(value)
    return _typed(cols, CLIENT_COLUMNS)


PENDING_COLUMNS: dict[str, str] = {
    "id": "string",
    "priority": "Int64",
    "created": "datetime64[ms, UTC]",
    "age": "timedelta64[ms]",
}


def pending(
    client: Client | AsyncClient,
    *,
    by_priority: bool = True,
    queue: str | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Pending requests. ``by_priority=True``: columns priority, count (highest first; one
    script call, no scan). ``False``: the requests themselves in the order workers will take
    them (id, priority, created, age), at most ``limit``."""
    import pandas as pd

    if by_priority:

        async def counts(conn: Conn, ac: AsyncClient) -> list[Any]:
            return list(await conn.script("pending_by_priority", [ac.keys(queue).pending], []))

        flat = _run(client, counts)
        frame: pd.DataFrame = pd.DataFrame(
            {
                "priority": pd.array([int(p) for p in flat[::2]], dtype="int64"),
                "count": pd.array([int(c) for c in flat[1::2]], dtype="int64"),
            }
        )
        return frame

    async def requests(conn: Conn, ac: AsyncClient) -> tuple[int, list[Any], list[Any]]:
        k = ac.keys(queue)
        (sec, usec), flat = await conn.pipeline(
            [
                ("TIME",),
                ("ZREVRANGE", k.pending, 0, max(0, limit - 1), "WITHSCORES"),
            ]
        )
        ids = flat[::2] if limit else []
        created = (
            await conn.pipeline([("HGET", k.request(r), "created_ms") for r in ids]) if ids else []
        )
        return int(sec) * 1000 + int(usec) // 1000, flat, created

    now, flat, created = _run(client, requests)
    cols: dict[str, list[Any]] = {name: [] for name in PENDING_COLUMNS}
    for rid, score, c in zip(flat[::2], flat[1::2], created, strict=True):
        ms = _int(c)
        cols["id"].append(rid)
        cols["priority"].append(decode_priority(float(score)))
        cols["created"].append(ms)
        cols["age"].append(None if ms is None else max(0, now - ms))
    return _typed(cols, PENDING_COLUMNS)


__all__ = ["HISTORY_COLUMNS", "clients", "history", "pending", "workers"]
