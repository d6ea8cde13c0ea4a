"""pandas views of a queue: typed DataFrames built from the client's public reads (an adapter:
no Redis calls here; pandas is imported lazily).

::

    from rtq_nb import views
    views.history(client)                          # newest first, up to 1000 rows
    views.history(client, status="failed", since=timedelta(minutes=10))
    views.workers(client); views.clients(client)
    views.pending(client)                          # priority, count
    views.pending(client, by_priority=False)       # the pending requests themselves

``client`` is a :class:`rtq_nb.Client` (its async core on rtq_nb's loop thread is used) or an
:class:`rtq_nb.AsyncClient` (a short-lived twin is made on that loop thread, so a client living
on another event loop is never touched). The reads are the client's (``history_rows``,
``registered_workers``, ``registered_clients``, ``pending_requests``): pipelined, 1000 records
per round trip.
A record that does not follow the wire format becomes a row with ``parse_error`` set; records
whose TTL ran out (ids still in the lazily trimmed history) are skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from rtq_nb.client import AsyncClient, Client
from rtq_nb.errors import ConfigurationError, UnknownQueue
from rtq_nb.loop import portal
from rtq_nb.protocol.history import STATUSES
from rtq_nb.protocol.records import Status

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")
TimeBound = datetime | timedelta | float | int | str | None

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
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
    "error": "string",
    "input_preview": "string",
    "output_preview": "string",
    "parse_error": "string",
}


# ---- plumbing ------------------------------------------------------------------------------
async def arun(client: Client | AsyncClient, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """``fn(async_client)`` on the calling loop (which must be rtq_nb's loop thread)."""
    if isinstance(client, Client):
        return await fn(client.async_client)
    if isinstance(client, AsyncClient):
        twin = AsyncClient(client.url, queue=client.queue, prefix=client.prefix)
        try:
            return await fn(twin)
        finally:
            await twin.aclose()
    raise TypeError(f"expected an rtq_nb Client or AsyncClient, got {type(client).__name__}")


def run(client: Client | AsyncClient, fn: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run ``fn(async_client)`` on rtq_nb's loop thread and return its result."""
    return portal().call(arun(client, fn))


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


def _frame(rows: Sequence[Sequence[Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    """A typed DataFrame of ``rows`` (each a sequence of values in ``dtypes``' order)."""
    transposed = list(zip(*rows, strict=True)) if rows else [()] * len(dtypes)
    return _typed({name: list(col) for name, col in zip(dtypes, transposed, strict=True)}, dtypes)


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


def _statuses(status: str | Status | Iterable[str | Status] | None) -> frozenset[str] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, Status)) else list(status)
    values = frozenset(s.value if isinstance(s, Status) else str(s) for s in items)
    unknown = values - STATUSES
    if unknown:
        raise ConfigurationError(
            f"unknown status {', '.join(sorted(unknown))}: use {', '.join(sorted(STATUSES))}"
        )
    return values


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

    async def fetch(ac: AsyncClient) -> list[list[Any]]:
        now = await ac.server_ms()
        if queue == "*":
            names = await ac.queues()
        elif queue is None or isinstance(queue, str):
            names = [ac.keys(queue).queue]
        else:
            names = list(queue)
        return await ac.history_rows(
            names,
            since_ms=_to_ms(since, now, "since"),
            until_ms=_to_ms(until, now, "until"),
            statuses=statuses,
            limit=limit,
        )

    return _frame(run(client, fetch) if limit else [], HISTORY_COLUMNS)


def _age(now_ms: int, ms: int | None) -> int | None:
    return None if ms is None else max(0, now_ms - ms)


def _age_s(now_ms: int, ms: int | None) -> float | None:
    age = _age(now_ms, ms)
    return None if age is None else age / 1000


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


def workers(client: Client | AsyncClient, *, queue: str | None = None) -> pd.DataFrame:
    """Live workers of the queue: one row per registry entry (malformed entries have ``error``)."""

    now, infos = run(client, lambda ac: ac.registered_workers(queue))
    rows = [
        (
            w.id,
            w.queue or None,
            w.host or None,
            w.pid or None,
            w.status,
            w.concurrency,
            w.batch_size,
            w.in_flight,
            w.processed,
            w.failed,
            w.started_ms or None,
            w.last_seen_ms or None,
            _age_s(now, w.last_seen_ms or None),
            w.service_ms_ewma,
            w.error,
        )
        for w in sorted(infos, key=lambda w: w.id)
    ]
    return _frame(rows, WORKER_COLUMNS)


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

    now, infos = run(client, lambda ac: ac.registered_clients(queue))
    rows = [
        (
            c.id,
            c.queue,
            c.host,
            c.pid,
            c.submitted,
            c.last_seen_ms,
            _age_s(now, c.last_seen_ms),
            c.alive,
        )
        for c in infos
    ]
    return _frame(rows, CLIENT_COLUMNS)


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
    """Pending requests. ``by_priority=True``: columns priority, count (highest first; plain
    reads, no scan). ``False``: the requests themselves in the order workers will take
    them (id, priority, created, age), at most ``limit``."""
    import pandas as pd

    if by_priority:

        async def counts(ac: AsyncClient) -> dict[int, int]:
            try:
                return await ac.pending_by_priority(queue)
            except UnknownQueue:
                return {}

        found = run(client, counts)
        frame: pd.DataFrame = pd.DataFrame(
            {
                "priority": pd.array(list(found), dtype="int64"),
                "count": pd.array(list(found.values()), dtype="int64"),
            }
        )
        return frame

    now, reqs = run(client, lambda ac: ac.pending_requests(queue, limit=limit))
    rows = [
        (
            r.id,
            r.priority,
            r.created_ms,
            None if r.created_ms is None else max(0, now - r.created_ms),
        )
        for r in reqs
    ]
    return _frame(rows, PENDING_COLUMNS)


__all__ = ["HISTORY_COLUMNS", "arun", "clients", "history", "pending", "run", "workers"]
