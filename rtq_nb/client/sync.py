"""The synchronous facade: :class:`Client` and :class:`RequestHandle`.

Each method runs the matching :class:`~rtq_nb.AsyncClient` coroutine on rtq_nb's background
loop thread (see :mod:`rtq_nb.loop`), so it works in scripts, inside a running Jupyter kernel,
and from any thread. No logic lives here: it is one line per method, but for ``call()``, which
sends what ``AsyncClient.prepare`` built on a blocking socket first. Submissions are prepared
in the calling thread (no I/O), so that its tracing context is the parent of their spans.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from typing_extensions import Unpack

from rtq_nb.client.core import AsyncClient
from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.client.options import BatchOptions, ClientOptions, Prepared, SubmitOptions
from rtq_nb.client.streams import Stream
from rtq_nb.client.sync_reads import read_batches
from rtq_nb.errors import RedisUnavailable
from rtq_nb.loop import LoopThread, portal
from rtq_nb.protocol.records import Chunk
from rtq_nb.security.settings import Security
from rtq_nb.transport.blocking import SyncConn
from rtq_nb.transport.endpoint import safe_url

P = ParamSpec("P")
R = TypeVar("R")


def _facade(fn: Callable[Concatenate[Any, P], Awaitable[R]]) -> Callable[Concatenate[Any, P], R]:
    """Sync method that runs ``fn(self._async, ...)`` on the loop thread."""

    @functools.wraps(fn)
    def method(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._portal.call(fn(self._async, *args, **kwargs))  # type: ignore[no-any-return]

    return cast(Callable[Concatenate[Any, P], R], method)


def _close_quietly(loop: LoopThread, client: AsyncClient) -> None:
    if loop.thread.is_alive() and not loop.loop.is_closed():
        loop.submit(client.aclose())


def _after_first_slice(
    portal: LoopThread,
    h: AsyncRequestHandle,
    popped: Any,
    left: float | None,
    since: float,
    waited: bool,
) -> Any:
    """After a wait's first slice on the calling thread: its outcome if the envelope came
    (and is genuine), else the rest of the wait in the async core (``waited``: a whole slice
    passed: it reads the record first)."""
    if popped is not None and h.settle_envelope(popped[1]):
        return h.outcome()
    return portal.call(h.wait_envelope(left, since=since, recheck=waited))


class RequestHandle:
    """Sync view of one request: ``h.result()``, ``for chunk in h: ...``, ``h.cancel()``."""

    def __init__(
        self,
        handle: AsyncRequestHandle,
        loop: LoopThread,
        fast_conn: weakref.WeakMethod[Callable[[], SyncConn | None]] | None = None,
    ) -> None:
        self._async = handle
        self._portal = loop
        # the client's calling-thread connection, if it has one (weak: a handle does not keep
        # its client alive, so a client dropped without close() is still closed)
        self._fast_conn = fast_conn

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def queue(self) -> str:
        return self._async.queue

    @property
    def stream(self) -> bool:
        return self._async.stream

    @property
    def text(self) -> str:
        """Stream text received so far (no I/O)."""
        return self._async.text

    @property
    def done(self) -> bool:
        return self._async.done

    @property
    def state(self) -> str:
        """The truest status known without I/O (see ``AsyncRequestHandle.state``)."""
        return self._async.state

    @property
    def async_handle(self) -> AsyncRequestHandle:
        return self._async

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (rtq_nb's loop thread) the async handle lives on."""
        return self._portal.loop

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the result (see AsyncRequestHandle.result). As in ``Client.call()``, the
        first wait slice runs on the calling thread's connection; the rest (a longer wait,
        the record's checks, an outage) in the async core."""
        self._portal.refuse_own_thread()
        h = self._async
        conn = self._conn()
        if conn is None or h.done or h.stream or not h.placed:
            return self._portal.call(h.result(timeout))
        since, remaining = time.monotonic(), h.remaining(timeout)
        try:
            popped = conn.pipeline([h.wait_command(remaining)])[-1]
            waited = popped is None  # a whole slice: the async core reads the record first
        except RedisUnavailable:
            popped, waited = None, False
        left = None if remaining is None else max(remaining - (time.monotonic() - since), 0.0)
        return _after_first_slice(self._portal, h, popped, left, since, waited)

    def _conn(self) -> SyncConn | None:
        """The client's calling-thread connection (None: none, or the client is gone)."""
        get = None if self._fast_conn is None else self._fast_conn()
        return None if get is None else get()

    record = _facade(AsyncRequestHandle.record)
    status = _facade(AsyncRequestHandle.status)
    cancel = _facade(AsyncRequestHandle.cancel)

    def wait(self, timeout: float) -> Any:
        """Wait ``timeout`` more seconds, extending the request's deadline (recipe 1)."""
        return self._portal.call(self._async.wait(timeout))

    def resubmit(
        self, *, priority: int | None = None, timeout: float | None = None, cancel_old: bool = True
    ) -> RequestHandle:
        """Fresh copy with a new id, one priority step higher by default (recipe 2)."""
        h = self._portal.call(
            self._async.resubmit(priority=priority, timeout=timeout, cancel_old=cancel_old)
        )
        return RequestHandle(h, self._portal, self._fast_conn)

    def chunks(self, timeout: float | None = None) -> Iterator[Chunk]:
        """Iterate the stream's chunks (``str`` text deltas with ``.seq``/``.count``); read on
        the calling thread when it can be (``rtq_nb.client.sync_reads``)."""
        h = self._async
        conn = None if timeout is not None else self._conn()
        if conn is None or not h.placed:
            return self._portal.iterate_batches(h.batches(timeout))
        return itertools.chain.from_iterable(read_batches(h, conn, self._portal))

    def __iter__(self) -> Iterator[Chunk]:
        return self.chunks()

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncRequestHandle", "RequestHandle")

    def _repr_html_(self) -> str:
        return self._async._repr_html_()


class Client:
    """Synchronous client; same arguments as :class:`~rtq_nb.AsyncClient`.

    >>> c = Client()                      # embedded Redis when no URL is configured
    >>> c.call("hello")                   # submit + wait (1 round trip)
    >>> for tok in c.stream("Tell me"):   # text deltas as they arrive
    ...     print(tok, end="")
    """

    def __init__(self, url: str | None = None, **options: Unpack[ClientOptions]) -> None:
        self._portal = portal()
        self._async = AsyncClient(url, **options)
        # a Client dropped without close() still closes its connections (on the loop thread)
        self._sync: SyncConn | None = None
        self._finalizer = weakref.finalize(self, _close_quietly, self._portal, self._async)

    @property
    def url(self) -> str:
        return self._async.url

    @property
    def queue(self) -> str:
        return self._async.queue

    @property
    def client_id(self) -> str:
        return self._async.client_id

    @property
    def security(self) -> Security:
        """The keys this client signs, verifies and encrypts with (see README, Security)."""
        return self._async.security

    def set_security(self, security: Security) -> None:
        """Use other keys from the next request on (see AsyncClient.set_security)."""
        self._async.set_security(security)

    @property
    def async_client(self) -> AsyncClient:
        """The AsyncClient behind this facade (lives on rtq_nb's loop thread)."""
        return self._async

    def _wrap(self, h: AsyncRequestHandle) -> RequestHandle:
        return RequestHandle(h, self._portal, weakref.WeakMethod(self._fast_conn))

    def submit(
        self, input: Any, *, stream: bool = False, **o: Unpack[SubmitOptions]
    ) -> RequestHandle:
        """Queue one request; returns its handle at once. See AsyncClient.submit."""
        self._read_layout(o.get("queue"))
        p = self._async.prepare(input, stream=stream, **o)
        if not self._send_here(p):
            self._portal.call(self._async.send([p]))
        return self._wrap(p.handle)

    def submit_many(
        self,
        inputs: Iterable[Any],
        *,
        stream: bool = False,
        chunk_size: int = 500,
        **o: Unpack[BatchOptions],
    ) -> list[RequestHandle]:
        """Queue many requests, pipelined. See AsyncClient.submit_many."""
        self._read_layout(o.get("queue"))
        prepared = [self._async.prepare(x, stream=stream, **o) for x in inputs]
        for i in range(0, len(prepared), chunk_size):
            self._portal.call(self._async.send(prepared[i : i + chunk_size]))
        return [self._wrap(p.handle) for p in prepared]

    def handle(
        self, request_id: str, *, stream: bool = False, queue: str | None = None
    ) -> RequestHandle:
        """A handle for an existing request id (e.g. a second viewer of a stream)."""
        return self._wrap(self._async.handle(request_id, stream=stream, queue=queue))

    def call(self, input: Any, **o: Unpack[SubmitOptions]) -> Any:
        """Submit and wait for the result (1 round trip). See AsyncClient.call.

        The common case (the result arrives within one wait slice) runs on a synchronous
        connection in the calling thread; everything else continues in the async core."""
        self._portal.refuse_own_thread()
        self._read_layout(o.get("queue"))
        p = self._async.prepare(input, stream=False, **o)
        conn = self._fast_conn()
        if conn is None:
            return self._portal.call(self._async.call_prepared(p))
        handle = p.handle
        since = time.monotonic()
        remaining = handle.remaining()
        wait = handle.wait_command(remaining)
        try:
            replies = conn.pipeline([*p.commands, wait])
            self._async.replication.note(p.commands, replies)
            popped = replies[-1]
        except RedisUnavailable:
            return self._portal.call(self._async.resume_call(p, remaining, since=since))
        left = None if remaining is None else max(remaining - wait[2], 0.0)
        return _after_first_slice(self._portal, handle, popped, left, since, popped is None)

    def _syncconn(self) -> SyncConn:
        if self._sync is None:
            self._sync = SyncConn(self._async.url)
        return self._sync

    def stream(self, input: Any, **o: Unpack[SubmitOptions]) -> Stream:
        """Submit a streaming request now and return its :class:`~rtq_nb.client.streams.Stream`:
        ``for delta in s``, ``s.events()``, ``s.text``, ``s.final()`` (text, usage, timings);
        ``with`` cancels it if left early. See AsyncClient.stream.

        As for ``call()``, the common case runs in the calling thread: the submission, then
        the reads (``rtq_nb.client.sync_reads``)."""
        self._read_layout(o.get("queue"))
        p = self._async.prepare(input, stream=True, **o)  # bad arguments raise here
        if not self._send_here(p):
            start = (p.handle, self._async.batches_prepared(p))
            return Stream(p.handle, self._portal, start=start)
        reads = read_batches(p.handle, self._syncconn(), self._portal)
        return Stream(p.handle, self._portal, reads=reads)

    def _send_here(self, p: Prepared) -> bool:
        """Send a prepared submission on the calling thread's connection; False (nothing
        sent) where this client cannot (a cluster, wake tokens after the reply)."""
        self._portal.refuse_own_thread()
        conn = self._fast_conn()
        if conn is None or p.after:
            return False
        try:
            self._async.replication.note(p.commands, conn.pipeline(p.commands))
        except RedisUnavailable:  # sent again by the async core if it never landed
            self._portal.call(self._async.resend(p))
        return True

    def _fast_conn(self) -> SyncConn | None:
        """The synchronous connection for the calling thread's fast paths (None on a Redis
        Cluster, or before the client knows whether it is one)."""
        if getattr(self._async.conn, "cluster", False) is not False:
            return None
        return self._syncconn()

    def _read_layout(self, queue: str | None) -> None:
        """Read the queue's layout (its shards) once, before preparing in this thread."""
        if not self._async.knows_layout(queue):
            self._portal.call(self._async.layout(queue))

    cancel = _facade(AsyncClient.cancel)
    get = _facade(AsyncClient.get)
    queues = _facade(AsyncClient.queues)
    pending_count = _facade(AsyncClient.pending_count)
    pending_by_priority = _facade(AsyncClient.pending_by_priority)
    estimated_wait = _facade(AsyncClient.estimated_wait)
    workers = _facade(AsyncClient.workers)
    stats = _facade(AsyncClient.stats)
    load = _facade(AsyncClient.load)
    snapshot = _facade(AsyncClient.snapshot)
    recommend_workers = _facade(AsyncClient.recommend_workers)
    reap = _facade(AsyncClient.reap)
    dead_letters = _facade(AsyncClient.dead_letters)
    requeue = _facade(AsyncClient.requeue)

    def close(self) -> None:
        """Close the connections (also done when the Client is garbage-collected)."""
        self._finalizer.detach()
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        self._portal.call(self._async.aclose())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._async).replace("AsyncClient", "Client")

    def _repr_html_(self) -> str:
        import html

        a = self._async
        return (
            f"<div class='rtq-client'><b>rtq_nb Client</b> &middot; "
            f"<code>{html.escape(safe_url(a.url))}</code>"
            f" &middot; queue <code>{html.escape(a.queue)}</code> &middot; prefix "
            f"<code>{html.escape(a.prefix)}</code> &middot; id <code>{a.client_id}</code></div>"
        )


__all__ = ["Client", "RequestHandle"]
