"""Calling a handler of any kind and turning what it returns into outcomes (no Redis here).

A handler gets a :class:`~rtq_nb.Request` (or a list of them when batching) and may be a plain
function, an async function, a generator or an async generator (generators stream text).
Sync code runs in a thread pool, never on the event loop. Streamed pieces go through a
:class:`~rtq_nb.worker.streaming.StreamWriter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtq_nb.protocol.records import Request, Status
from rtq_nb.protocol.stream import LeaseResult
from rtq_nb.worker.chunking import ChunkData
from rtq_nb.worker.streaming import StreamWriter, consume, is_stream
from rtq_nb.worker.threads import HandlerThreads

if TYPE_CHECKING:
    from rtq_nb.tracing import JobTrace

__all__ = ["Outcome", "describe", "handler_kind", "run_batch", "run_single"]


@dataclass
class Outcome:
    """How one request ended on this worker; ``tail`` is a final stream entry not yet sent."""

    status: Status
    value: Any = None
    error: str | None = None
    tail: list[ChunkData] = field(default_factory=list)
    lease: LeaseResult = LeaseResult.OK  # from the request's last stream write
    pieces: int = 0  # stream pieces produced
    counter: str = ""  # one more stats counter to count (a refused request: unauthenticated)
    stored: str = ""  # the result's JSON text as stored (sealed, by reference), if made already


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_KINDS: dict[Any, str] = {}


def handler_kind(handler: Callable[..., Any]) -> str:
    """``"async"`` (coroutine or async generator function), ``"gen"`` (generator function)
    or ``"sync"``; remembered per handler (the inspection is not free on the hot path)."""
    try:
        return _KINDS[handler]
    except (KeyError, TypeError):  # TypeError: an unhashable callable object
        pass
    call = next(  # a handler object's own __call__ (a model backend)
        (vars(c)["__call__"] for c in type(handler).__mro__ if "__call__" in vars(c)), None
    )
    if any(
        inspect.isasyncgenfunction(f) or inspect.iscoroutinefunction(f) for f in (handler, call)
    ):
        kind = "async"
    elif inspect.isgeneratorfunction(handler):
        kind = "gen"
    else:
        kind = "sync"
    with contextlib.suppress(TypeError):
        _KINDS[handler] = kind
    return kind


async def call_handler(handler: Callable[..., Any], arg: Any, executor: HandlerThreads) -> Any:
    """Call ``handler(arg)`` without blocking the loop; returns its value or its iterator."""
    kind = handler_kind(handler)
    if kind == "async":
        value = handler(arg)
        return await value if inspect.isawaitable(value) else value
    if kind == "gen":
        return handler(arg)  # iterated in a thread by consume()
    # in the caller's context (as asyncio.to_thread): a traced request's span stays current
    value = await executor.call(handler, arg)
    return await value if inspect.isawaitable(value) else value


async def finish(value: Any, writer: StreamWriter, executor: HandlerThreads) -> Outcome:
    """Turn a handler's value (plain or stream) into an outcome for ``writer.request``."""
    req = writer.request
    if is_stream(value):
        await consume(value, writer, executor)
        return await _close_stream(writer)
    if req.stream:  # a plain value for a streaming request: one chunk
        writer.write(value if isinstance(value, str) else json.dumps(value))
        return await _close_stream(writer)
    return Outcome(Status.COMPLETED, value=value)


async def _close_stream(writer: StreamWriter) -> Outcome:
    tail = await writer.close()
    if writer.state is LeaseResult.CANCELLED or writer.request.cancelled:
        return Outcome(Status.CANCELLED, lease=LeaseResult.CANCELLED)
    return Outcome(
        Status.COMPLETED, value=writer.text, tail=tail, lease=writer.state, pieces=writer.pieces
    )


async def run_single(
    handler: Callable[..., Any],
    writer: StreamWriter,
    executor: HandlerThreads,
    trace: JobTrace | None = None,
) -> Outcome:
    """Run one request; when traced, its ``rtq.run`` span is current meanwhile (the spans the
    handler and its model open, streaming included, are its children)."""
    if trace is not None:
        with trace.current():
            return await _run_single(handler, writer, executor)
    return await _run_single(handler, writer, executor)


async def _run_single(
    handler: Callable[..., Any], writer: StreamWriter, executor: HandlerThreads
) -> Outcome:
    try:
        value = await call_handler(handler, writer.request, executor)
        return await finish(value, writer, executor)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        await writer.close()
        return Outcome(Status.FAILED, error=describe(exc), lease=writer.state)


async def run_batch(
    handler: Callable[..., Any], writers: list[StreamWriter], executor: HandlerThreads
) -> list[Outcome]:
    """Batch handler: gets ``list[Request]``; returns a list (one value or iterator per
    request, same order) or is an (async) generator yielding ``(index, text)`` pairs."""
    reqs = [w.request for w in writers]
    try:
        value = await call_handler(handler, reqs, executor)
        if is_stream(value):
            await consume(_Demux(value, writers), _NullWriter(), executor)
            return [await _close_stream(w) for w in writers]
        if not isinstance(value, (list, tuple)) or len(value) != len(reqs):
            raise TypeError(
                f"a batch handler must return a list of {len(reqs)} results (one per request, "
                f"same order), got {type(value).__name__}"
                + (f" of length {len(value)}" if isinstance(value, (list, tuple)) else "")
            )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        for w in writers:
            await w.close()
        return [Outcome(Status.FAILED, error=describe(exc)) for _ in writers]
    results = await asyncio.gather(
        *(finish(v, w, executor) for v, w in zip(value, writers)), return_exceptions=True
    )
    return [
        r if isinstance(r, Outcome) else Outcome(Status.FAILED, error=describe(r)) for r in results
    ]


class _Demux:
    """Routes ``(index, text)`` pairs of a streaming batch handler to per-request writers."""

    def __init__(self, source: Any, writers: list[StreamWriter]) -> None:
        self.source, self.writers = source, writers

    def route(self, pair: Any) -> None:
        try:
            i, text = pair
            self.writers[i].write(text)
        except (TypeError, ValueError, IndexError) as exc:
            raise TypeError(
                f"a streaming batch handler must yield (index, text) pairs, got {pair!r}"
            ) from exc

    def __aiter__(self) -> _Demux:
        return self

    async def __anext__(self) -> str:
        if hasattr(self.source, "__anext__"):
            pair = await self.source.__anext__()
        else:
            loop = asyncio.get_running_loop()
            pair = await loop.run_in_executor(None, next, self.source, _STOP)
            if pair is _STOP:
                raise StopAsyncIteration
        self.route(pair)
        return ""

    async def aclose(self) -> None:
        close = getattr(self.source, "aclose", None) or getattr(self.source, "close", None)
        if close is not None:
            res = close()
            if inspect.isawaitable(res):
                await res


_STOP = object()


class _NullWriter(StreamWriter):
    def __init__(self) -> None:
        super().__init__(Request(id="-", input=None), None, _NoChunk(), 0.0)

    def write(self, text: str) -> None:
        return None


class _NoChunk:
    def feed(self, text: str) -> list[str]:
        return []

    def flush(self) -> list[str]:
        return []
