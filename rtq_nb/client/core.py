"""AsyncClient: submit requests, wait for results, iterate streams.

This is the one implementation; :class:`rtq_nb.Client` is a thin synchronous facade over it.
Round trips: ``call()`` = 1 (submit script + BLPOP pipelined), ``stream()`` = 1 to the first
batch of chunks (submit + XREAD pipelined), ``submit_many()`` = 1 per 500 requests.
Reading a queue's state lives in :mod:`~rtq_nb.client.inspect`, operating on requests and
dead letters in :mod:`~rtq_nb.client.admin`.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from typing_extensions import Unpack

from rtq_nb.client.admin import Admin
from rtq_nb.client.capacity import Capacity
from rtq_nb.client.durability import Replication
from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.client.inspect import Inspection
from rtq_nb.client.options import (
    BatchOptions,
    ClientDefault,
    ClientOptions,
    Prepared,
    SubmitOptions,
)
from rtq_nb.client.payloads import input_keep
from rtq_nb.client.sending import Sending
from rtq_nb.client.streams import AsyncStream, Started, started
from rtq_nb.errors import ConfigurationError
from rtq_nb.payloads import payload_store
from rtq_nb.protocol import registry, scripts
from rtq_nb.protocol.defaults import (
    CLIENT_HEARTBEAT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETENTION,
    DEFAULT_TIMEOUT,
    WAKE_CAP,
)
from rtq_nb.protocol.encoding import (
    check_retention,
    dumps,
    encode_params,
    record_fields,
    timeout_to_ms,
)
from rtq_nb.protocol.keys import Keys, check_id, check_name
from rtq_nb.protocol.records import Chunk
from rtq_nb.protocol.scores import check_priority
from rtq_nb.protocol.shards import Layout
from rtq_nb.security.requests import sign_request
from rtq_nb.security.results import ResultCheck, seal_json
from rtq_nb.security.settings import Security, coerce_security
from rtq_nb.tracing import tracing
from rtq_nb.transport import connect, resolve_url, safe_url
from rtq_nb.transport.once import Once
from rtq_nb.transport.resp import Command, Template
from rtq_nb.transport.retry import Backoff, Retrying

__all__ = ["AsyncClient", "ping"]

log = logging.getLogger("rtq_nb.client")
_HOST = socket.gethostname()


class AsyncClient(Sending, Inspection, Admin, Capacity):
    """Asyncio client of one Redis (and a default queue).

    ``url=None`` uses ``RTQ_REDIS_URL`` / ``REDIS_URL`` or starts the embedded redis-server.
    Options (:class:`~rtq_nb.client.options.ClientOptions`): ``queue``, ``prefix``,
    ``timeout`` (default per-request timeout in seconds, None = no deadline), ``retention``
    (how long records, results and streams stay in Redis after the fact), ``client_id``,
    ``max_attempts``, ``reap_interval``, ``reconnect_timeout``, ``security`` (a
    :class:`~rtq_nb.Security`: the key requests are signed with, the workers' keys results are
    verified with, encryption keys; default from ``RTQ_CLIENT_SIGNING_KEY``,
    ``RTQ_TRUSTED_WORKER_KEYS``, ``RTQ_ENCRYPTION_KEYS``), ``tracing`` (``RTQ_TRACING``).
    """

    def __init__(self, url: str | None = None, **options: Unpack[ClientOptions]) -> None:
        o = options
        if unknown := set(o) - set(ClientOptions.__annotations__):
            raise TypeError(f"unexpected client options: {', '.join(sorted(unknown))}")
        max_attempts = o.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        timeout = o.get("timeout", DEFAULT_TIMEOUT)
        retention = o.get("retention", DEFAULT_RETENTION)
        self.url = resolve_url(url)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self.reap_interval = o.get("reap_interval", 2.0)
        self.reconnect_timeout = o.get("reconnect_timeout", 30.0)
        self.prefix = check_name("prefix", o.get("prefix", "rtq"))
        self.queue = check_name("queue", o.get("queue", "default"))
        self.client_id = check_name("client id", o.get("client_id") or uuid.uuid4().hex[:12])
        timeout_to_ms(timeout)  # validates
        self.timeout = timeout
        self.retention = check_retention(retention)
        self.set_security(coerce_security(o.get("security"), "client"))
        self.replication = Replication(o.get("min_replicas", 0), o.get("replica_timeout", 1.0))
        self.tracer = tracing(o.get("tracing"))  # None: off (opentelemetry is not imported)
        self.payloads = payload_store(o.get("payloads"))  # None: every value inline
        self.conn = connect(self.url)
        self.reads = Retrying(self.conn, self.reconnect_timeout)  # idempotent calls
        self._keys: dict[str, Keys] = {}
        self._layouts: dict[str, Layout] = {}  # queue -> its shards (read once, on first use)
        self._reading: dict[str, Once[Layout]] = {}  # layouts being read
        self._announced: set[str] = set()
        self._counter = itertools.count(1)
        # request ids are <client_id>-<this client's session>-<n>: a fixed client_id reused by
        # another process (or after a restart) never collides with ids it made before
        self._id_prefix = f"{self.client_id}-{uuid.uuid4().hex[:8]}-"
        self._announced_at: dict[str, float] = {}
        self._templates: dict[tuple[Any, ...], Template] = {}
        self.submitted = 0

    def set_security(self, security: Security) -> None:
        """Use other keys from the next request on (key rotation: trust the new keys on the
        other side first, switch here, then retire the old ones there)."""
        self.security = coerce_security(security, "client")
        self.check = ResultCheck(self.security.trusted, self.security.sealer)

    # ---- preparing (no I/O) -----------------------------------------------------------------
    def _submit_template(
        self, keys: Keys, priority: int, timeout_ms: int, params_json: str, stream: bool
    ) -> Template:
        """The submit command for one request shape, encoded once: the request id, input JSON,
        signature (when signing) and trace context (when tracing) are holes 0-3, filled in."""
        # retention and max_attempts are public attributes: a change takes effect at once
        shape = (
            keys.queue,
            keys.shard,
            priority,
            timeout_ms,
            params_json,
            stream,
            self.retention,
            self.max_attempts,
            self.security.signing_key is not None,
        )
        tpl = self._templates.get(shape)
        if tpl is None:
            if len(self._templates) >= 256:
                self._templates.clear()
            fields = record_fields(
                client=self.client_id,
                queue=keys.queue,
                input_json=scripts.Hole(1),
                params_json=params_json,
                stream=stream,
            )
            cmd = scripts.submit(
                keys,
                scripts.Hole(0),
                priority=priority,
                timeout_ms=timeout_ms,
                retention_s=self.retention,
                wake_cap=WAKE_CAP if not keys.shard else 1,  # shard > 0: see shards.py
                fields=[*fields, "max_attempts", self.max_attempts]
                + (["sig", scripts.Hole(2)] if shape[-1] else [])
                + (["trace", scripts.Hole(3)] if self.tracer is not None else []),  # set once
            )
            tpl = self._templates[shape] = Template(cmd)
        return tpl

    def prepare(self, input: Any, *, stream: bool, **o: Unpack[SubmitOptions]) -> Prepared:
        """Validate and encode one request: its submission commands and its handle. No I/O;
        :meth:`submit`, :meth:`call`, :meth:`stream` and the sync ``Client.call`` send it.
        Raises ConfigurationError / EncodingError naming the bad argument."""
        home = self.keys(o.get("queue"))
        layout = self._layouts.get(home.queue)  # unknown (a path that did not read it): shard 0
        priority = check_priority(o.get("priority", 0))
        timeout = o.get("timeout", ClientDefault.DEFAULT)
        t = self.timeout if isinstance(timeout, ClientDefault) else timeout
        timeout_ms = timeout_to_ms(t)
        request_id = o.get("request_id")
        rid = (
            f"{self._id_prefix}{next(self._counter)}"
            if request_id is None
            else check_id(request_id)
        )
        keys = home if layout is None else layout.for_id(rid)
        params = o.get("params")
        params_json = encode_params(params)
        tpl = self._submit_template(keys, priority, timeout_ms, params_json, stream)
        cmds: list[Command] = []
        if keys.queue not in self._announced:
            cmds.append(("SADD", keys.queues, keys.queue))
            self._announced.add(keys.queue)
        input_json = dumps(input, "input")
        sec = self.security
        if sec.sealer is not None:
            input_json = seal_json(sec.sealer, rid, "in", input_json)
        store = self.payloads
        if store is not None and len(input_json) > store.threshold:  # by reference (blocks)
            keep = input_keep(t, self.retention)
            input_json = store.put(rid, "in", input_json.encode(), keep)
        sig = ""
        if sec.signing_key is not None:
            sig = sign_request(
                sec.signing_key,
                request_id=rid,
                queue=keys.queue,
                client=self.client_id,
                input_json=input_json,
                params_json=params_json,
                priority=priority,
                timeout_ms=timeout_ms,
                max_attempts=self.max_attempts,
                stream=stream,
            )
        trace = "" if self.tracer is None else self.tracer.submit(keys.queue, rid, priority, stream)
        cmds.append(tpl.fill(rid, input_json, sig, trace))
        after: list[Command] = []
        if keys.shard and layout is not None:  # its wake token, once the request has landed
            wake = layout.wake_after(keys)
            if getattr(self.conn, "cluster", False) is False:
                cmds += wake  # one server runs a pipeline in order
            else:
                after += wake  # other nodes: sent when the submission's reply is back
        if self.replication.command is not None:  # durable once replicated
            cmds.append(self.replication.command)
        self.submitted += 1
        now = time.monotonic()
        if now - self._announced_at.get(keys.queue, -1e9) > CLIENT_HEARTBEAT:
            self._announced_at[keys.queue] = now
            cmds += registry.client_refresh(
                keys,
                self.client_id,
                host=_HOST,
                pid=os.getpid(),
                submitted=self.submitted,
                retention_s=self.retention,
            )
        handle = AsyncRequestHandle(
            self,
            keys,
            rid,
            stream=stream,
            timeout=t or None,
            input=input,
            params=params,
            priority=priority,
        )
        return Prepared(cmds, handle, after)

    # ---- submitting ---------------------------------------------------------------------------
    async def submit(
        self, input: Any, *, stream: bool = False, **o: Unpack[SubmitOptions]
    ) -> AsyncRequestHandle:
        """Queue one request and return its handle at once (1 round trip).

        ``input`` and ``params`` must be JSON-serialisable; ``priority`` is an int in
        [-1000, 1000] (higher first, FIFO among equals); ``timeout`` in seconds counts from
        now, queueing included (None = no deadline)."""
        await self.layout(o.get("queue"))
        p = await self._prepare(input, stream=stream, **o)
        await self.send([p])
        return p.handle

    async def submit_many(
        self,
        inputs: Iterable[Any],
        *,
        stream: bool = False,
        chunk_size: int = 500,
        **o: Unpack[BatchOptions],
    ) -> list[AsyncRequestHandle]:
        """Queue many requests, pipelined ``chunk_size`` per round trip. Every input is
        encoded before anything is sent, so a bad one leaves the queue untouched."""
        await self.layout(o.get("queue"))
        prepared = [await self._prepare(x, stream=stream, **o) for x in inputs]
        for i in range(0, len(prepared), chunk_size):
            await self.send(prepared[i : i + chunk_size])
        return [p.handle for p in prepared]

    async def call(self, input: Any, **o: Unpack[SubmitOptions]) -> Any:
        """Submit and wait for the result in one round trip (the common case; two on a
        sharded queue of a cluster: README, Sharded queues)."""
        await self.layout(o.get("queue"))
        return await self.call_prepared(await self._prepare(input, stream=False, **o))

    async def call_prepared(self, p: Prepared) -> Any:
        """Send a prepared request and wait for its result (the sync facade's path too)."""
        if p.after:
            await self.send([p], after=False)
            return await p.handle.wait_envelope(p.handle.remaining(), list(p.after))
        return await p.handle.wait_envelope(p.handle.remaining(), p.commands)

    async def resume_call(
        self, p: Prepared, remaining: float | None, *, since: float | None = None
    ) -> Any:
        """Finish a ``call`` whose first attempt failed on the wire: submit only if the
        submission never reached Redis (no duplicates), then wait as usual."""
        landed = await self._landed([p.handle], Backoff(timeout=self.reconnect_timeout))
        before = [] if landed[0] else p.commands
        return await p.handle.wait_envelope(remaining, before, since=since)

    def stream(self, input: Any, **o: Unpack[SubmitOptions]) -> AsyncStream:
        """Submit a streaming request now (its first read rides in the same round trip) and
        return its :class:`~rtq_nb.client.streams.AsyncStream`: ``async for delta in s``,
        ``s.events()``, ``s.text``, ``await s.final()``; ``async with`` cancels it if left
        early. Bad arguments raise here (once the queue's layout is known: from the second
        request on a queue; the first raises at its first read)."""
        if self.knows_layout(o.get("queue")):
            p = self.prepare(input, stream=True, **o)
            return AsyncStream(started(p.handle, self.batches_prepared(p)))
        return AsyncStream(self._start_stream(input, o))

    async def _start_stream(self, input: Any, o: SubmitOptions) -> Started:
        await self.layout(o.get("queue"))
        p = await self._prepare(input, stream=True, **o)
        return p.handle, self.batches_prepared(p)

    async def stream_batches(
        self, input: Any, **o: Unpack[SubmitOptions]
    ) -> AsyncIterator[list[Chunk]]:
        """Like :meth:`stream`, one list of chunks per Redis read."""
        await self.layout(o.get("queue"))
        async for batch in self.batches_prepared(await self._prepare(input, stream=True, **o)):
            yield batch

    async def batches_prepared(self, p: Prepared) -> AsyncIterator[list[Chunk]]:
        """Send a prepared streaming request and yield its chunks, one list per read."""
        before = p.commands
        if p.after:
            await self.send([p])
            before = []
        async for batch in p.handle.batches(_before=before):
            yield batch

    def handle(
        self, request_id: str, *, stream: bool = False, queue: str | None = None
    ) -> AsyncRequestHandle:
        """A handle for an existing request id (e.g. to watch a stream from a second viewer).
        On a sharded queue whose layout this client has not read yet, the handle finds its
        shard on its first read."""
        rid = check_id(request_id)
        layout = self._layouts.get(self.keys(queue).queue)
        h = AsyncRequestHandle(
            self,
            self.keys(queue) if layout is None else layout.for_id(rid),
            rid,
            stream=stream,
            timeout=None,
            input=None,
            params=None,
            priority=0,
        )
        h.placed = layout is not None
        return h

    async def aclose(self) -> None:
        self.end_reads()
        if self._lanes is not None:
            await self._lanes.aclose()
        await self.conn.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClient {safe_url(self.url)} queue={self.queue!r} id={self.client_id}>"


async def ping(url: str) -> float:
    """Round-trip time of one PING in seconds (raises RedisUnavailable)."""
    conn = connect(url)
    try:
        t0 = time.perf_counter()
        await conn.call("PING")
        return time.perf_counter() - t0
    finally:
        await conn.aclose()
