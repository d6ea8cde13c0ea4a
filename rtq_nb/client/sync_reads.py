"""Reading a stream on the calling thread: the sync facade's common case.

``Client.stream()`` and ``RequestHandle`` iteration read a stream's entries with blocking
``XREAD``s on the client's synchronous connection (:class:`~rtq_nb.transport.blocking.SyncConn`)
in the thread that iterates: no hop to rtq_nb's loop thread and back, no event-loop turn per
read (about 100 µs of a first token on a small machine; README, Performance). The entries are
taken by the handle itself (:meth:`~rtq_nb.client.handle.AsyncRequestHandle.take_entries`), so
what is not the common case (the request's deadline reached, a dropped connection) continues
in the async core on the loop thread, where this read left off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rtq_nb.errors import RedisUnavailable
from rtq_nb.protocol.records import Chunk

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle
    from rtq_nb.loop import LoopThread
    from rtq_nb.transport.blocking import SyncConn

__all__ = ["read_batches"]


def read_batches(
    handle: AsyncRequestHandle, conn: SyncConn, portal: LoopThread
) -> Iterator[list[Chunk]]:
    """``handle``'s stream, one list of chunks per read (as ``handle.batches()``), read on the
    calling thread; raises what ``batches()`` raises (WorkerLost, RequestFailed, ...)."""
    portal.refuse_own_thread()  # a blocking read there would stop every other task
    since = time.monotonic()
    retried = False
    while not handle.done:
        left = handle.remaining()
        if left is not None and left <= 0:
            break  # the deadline's checks (record, server clock) are the async core's
        try:
            got = conn.pipeline([handle.read_command(left)])[-1]
        except RedisUnavailable:
            if retried:
                break  # riding out the outage is the async core's
            retried = True  # once more, on a fresh link (a pooled one may have gone stale)
            continue
        retried = False
        batch, lost = handle.take_entries(got)
        if batch:
            yield batch
        if lost is not None:
            raise lost
    if handle.done:
        handle.end_of_stream()
        return
    yield from portal.iterate(handle.batches(since=since))
