"""Run the async core from synchronous code, safely inside Jupyter.

One daemon thread per process runs an asyncio loop (as dask/distributed does). Sync calls
submit a coroutine to it and wait for the result, so they work the same in a plain script, in a
cell of a running Jupyter kernel (whose own loop is already running and is never patched), and
from any worker thread. Ctrl-C / "interrupt kernel" cancels the coroutine on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from typing import Any, TypeVar

from rtq_nb.errors import RtqError

__all__ = ["LOOP_ENV", "LoopThread", "new_loop", "portal", "run"]

T = TypeVar("T")
log = logging.getLogger("rtq_nb")
LOOP_ENV = "RTQ_NB_LOOP"


def new_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for the loops rtq_nb owns (its loop thread, ``rtq-nb worker``):
    uvloop when installed (a dependency on Linux and macOS; it roughly halves the CPU that
    each Redis round trip costs the loop), else asyncio's own. ``RTQ_NB_LOOP=asyncio``
    forces the standard loop."""
    if os.environ.get(LOOP_ENV, "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            log.debug("uvloop not installed: using the standard asyncio loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on :func:`new_loop` (Python 3.10 has no ``loop_factory``)."""
    loop = new_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


class LoopThread:
    """A background event loop in a daemon thread."""

    def __init__(self, name: str = "rtq-nb-loop") -> None:
        self.loop = new_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; returns a concurrent future (does not wait)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def refuse_own_thread(self) -> None:
        """A sync call on the loop's own thread would wait for itself forever: refuse it."""
        if threading.current_thread() is self.thread:
            raise RtqError(
                "a synchronous rtq_nb call was made from inside rtq_nb's own event loop "
                "(e.g. in an async handler): use the async API (AsyncClient / await) there"
            )

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result in the calling thread."""
        try:
            self.refuse_own_thread()
        except RtqError:
            coro.close()
            raise
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()  # KeyboardInterrupt in a notebook: stop the coroutine too
            raise

    def iterate(self, ait: AsyncIterator[T]) -> Iterator[T]:
        """Turn an async iterator living on the loop into a sync iterator."""
        nxt = ait.__anext__
        while True:
            try:
                yield self.call(_anext(nxt))
            except StopAsyncIteration:
                return

    def iterate_batches(self, ait: AsyncIterator[list[T]]) -> Iterator[T]:
        """Flatten an async iterator of lists: one thread hop per list, not per item."""
        for batch in self.iterate(ait):
            yield from batch


async def _anext(nxt: Any) -> Any:
    return await nxt()


_portal: LoopThread | None = None
_lock = threading.Lock()


def portal() -> LoopThread:
    """The process-wide loop thread, started on first use."""
    global _portal
    with _lock:
        if _portal is None or not _portal.thread.is_alive():
            _portal = LoopThread()
        return _portal


async def to_awaitable(aw: Awaitable[T]) -> T:
    return await aw
