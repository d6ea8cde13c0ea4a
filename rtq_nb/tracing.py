"""OpenTelemetry tracing, off by default (``tracing=True``, ``--tracing`` or ``RTQ_TRACING=1``).

The client's ``rtq.submit`` span (kind PRODUCER) travels in the request record as the field
``trace``: its W3C ``traceparent``, then one space and its ``tracestate`` when it has one. A
worker reads it back from POP and records, per request, ``rtq.queue_wait`` (from the record's
``created_ms`` to the pop), ``rtq.run`` (kind CONSUMER, current while a single request's
handler runs, so the spans the handler or its model opens are its children) and, inside the
run, ``rtq.deliver`` (the completion write). A trace reads client -> queue -> worker -> model.

The field is not signed (observability only): a malformed or hostile value is ignored (logged
at debug) and that request's worker spans start a trace of their own. ``opentelemetry`` is
imported only when tracing is on; spans go to the global tracer provider, which the
application configures (SDK, exporter) as usual.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rtq_nb.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext

__all__ = ["ENV", "FIELD", "JobTrace", "Tracing", "format_trace", "parse_trace", "tracing"]

ENV = "RTQ_TRACING"
FIELD = "trace"  # the request record's field
SYSTEM = "rtq"  # messaging.system
log = logging.getLogger("rtq_nb.tracing")

_MAX_FIELD = 1024
_PARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
# tracestate members as OpenTelemetry's TraceState accepts them (W3C Trace Context)
_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


def parse_trace(field: object) -> tuple[int, int, int, list[tuple[str, str]]] | None:
    """``(trace_id, span_id, flags, tracestate pairs)`` of a ``trace`` field, or None when it
    is not one (never raises: the value comes from Redis, unsigned). A bad ``tracestate``
    alone is dropped."""
    if type(field) is not str or not field or len(field) > _MAX_FIELD:
        return None
    parent, _, state = field.partition(" ")
    m = _PARENT.fullmatch(parent)
    if m is None or m[1] == "ff" or (m[1] == "00" and m[5]):
        return None
    trace_id, span_id = int(m[2], 16), int(m[3], 16)
    if not trace_id or not span_id:
        return None
    pairs: list[tuple[str, str]] = []
    for member in state.split(",") if state else ():
        key, eq, value = member.strip(" \t").partition("=")
        if not member.strip(" \t"):
            continue
        if not eq or not _KEY.fullmatch(key) or not _VALUE.fullmatch(value) or len(pairs) >= 32:
            log.debug("ignoring a malformed tracestate %.100r", state)
            pairs = []
            break
        pairs.append((key, value))
    return trace_id, span_id, int(m[4], 16), pairs


def format_trace(ctx: SpanContext) -> str:
    """The ``trace`` field of a span context ("" for an invalid one: nothing to carry)."""
    if not ctx.is_valid:
        return ""
    parent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    state = ctx.trace_state.to_header() if ctx.trace_state else ""
    return f"{parent} {state}" if state else parent


def tracing(flag: bool | None) -> Tracing | None:
    """A :class:`Tracing` when ``flag`` asks for one (None: ``$RTQ_TRACING`` decides), else
    None. Raises ConfigurationError when on without ``opentelemetry-api`` installed."""
    if flag is None:
        flag = os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")
    elif not isinstance(flag, bool):
        raise ConfigurationError(f"tracing must be True, False or None, got {flag!r}")
    return Tracing() if flag else None


class Tracing:
    """The spans of one client or worker (on the global tracer provider)."""

    def __init__(self) -> None:
        try:
            from opentelemetry import context, trace
        except ImportError as exc:
            raise ConfigurationError(
                "tracing is on (tracing=True, --tracing or RTQ_TRACING) but opentelemetry-api "
                "is not installed: pip install 'rtq-nb[tracing]'"
            ) from exc
        self.trace, self.context = trace, context
        self.tracer = trace.get_tracer("rtq_nb")

    # ---- client -----------------------------------------------------------------------------
    def submit(self, queue: str, request_id: str, priority: int, stream: bool) -> str:
        """Record the client's ``rtq.submit`` span (a child of the current span) and return
        the record's ``trace`` field for it."""
        span = self.tracer.start_span(
            "rtq.submit",
            kind=self.trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "create",
                "messaging.destination.name": queue,
                "messaging.message.id": request_id,
                "rtq.priority": priority,
                "rtq.stream": stream,
            },
        )
        span.end()
        return format_trace(span.get_span_context())

    # ---- worker -----------------------------------------------------------------------------
    def parent(self, field: object, request_id: str) -> Context:
        """The context a popped request's ``trace`` field carries (empty: none or bad)."""
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

        empty = Context()
        if not field:
            return empty
        try:
            parsed = parse_trace(field)
            if parsed is None:
                log.debug("request %r: ignoring a malformed trace field %.100r", request_id, field)
                return empty
            tid, sid, flags, pairs = parsed
            sc = SpanContext(tid, sid, True, TraceFlags(flags), TraceState(pairs))
            return self.trace.set_span_in_context(NonRecordingSpan(sc), empty)
        except Exception as exc:  # never let a trace field fail a request
            log.debug("request %r: ignoring trace field %.100r (%s)", request_id, field, exc)
            return empty

    def job(
        self,
        *,
        request_id: str,
        queue: str,
        attempt: str,
        created_ms: int | None,
        field: object,
        worker_id: str,
    ) -> JobTrace:
        """At the pop: record ``rtq.queue_wait`` and open ``rtq.run`` for one request."""
        parent = self.parent(field, request_id)
        now = time.time_ns()
        attrs: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.message.id": request_id,
        }
        if created_ms:  # the Redis server's clock; never after the pop on this worker's clock
            start = min(created_ms * 1_000_000, now)
            wait = self.tracer.start_span(
                "rtq.queue_wait", context=parent, start_time=start, attributes=attrs
            )
            wait.end(end_time=now)
        attrs.update({"messaging.operation.type": "process", "rtq.worker.id": worker_id})
        with contextlib.suppress(ValueError):
            attrs["rtq.attempt"] = int(attempt)
        run = self.tracer.start_span(
            "rtq.run",
            context=parent,
            kind=self.trace.SpanKind.CONSUMER,
            start_time=now,
            attributes=attrs,
        )
        return JobTrace(self, run)


class JobTrace:
    """One popped request's open spans on the worker: ``rtq.run``, then ``rtq.deliver``."""

    __slots__ = ("deliver", "done", "run", "t")

    def __init__(self, t: Tracing, run: Span) -> None:
        self.t, self.run = t, run
        self.deliver: Span | None = None
        self.done = False

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make ``rtq.run`` the current span (the handler's spans become its children)."""
        token = self.t.context.attach(self.t.trace.set_span_in_context(self.run))
        try:
            yield
        finally:
            self.t.context.detach(token)

    def first_chunk(self) -> None:
        """The first stream write went out (time to first token)."""
        self.run.add_event("rtq.first_chunk")

    def delivering(self) -> None:
        """Open ``rtq.deliver`` (once: a delivery retried after an outage keeps it)."""
        if self.deliver is None and not self.done:
            ctx = self.t.trace.set_span_in_context(self.run)
            self.deliver = self.t.tracer.start_span("rtq.deliver", context=ctx)

    def finish(self, outcome: str, error: str | None, delivered: bool, pieces: int = 0) -> None:
        """Close the spans: how the request ended here and whether its completion landed."""
        if self.done:
            return
        self.done = True
        status = self.t.trace.Status
        code = self.t.trace.StatusCode
        if self.deliver is not None:
            self.deliver.set_attribute("rtq.delivered", delivered)
            if not delivered:
                self.deliver.set_status(status(code.ERROR, "completion not delivered"))
            self.deliver.end()
        self.run.set_attribute("rtq.outcome", outcome)
        if pieces:
            self.run.set_attribute("rtq.stream.pieces", pieces)
        if outcome == "failed":
            self.run.set_status(status(code.ERROR, (error or "failed")[:500]))
        elif not delivered:
            self.run.set_status(status(code.ERROR, "completion not delivered"))
        self.run.end()
