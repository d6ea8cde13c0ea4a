"""How one ``batches()`` call reads its stream: the first read pipelined with the
submission, the rest through the client's stream lanes (``stream_lanes``), direct reads
where lanes cannot serve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtq_nb.client.stream_lanes import DIRECT_FIRST, READ_COUNT, LaneUnavailable, StreamLanes
from rtq_nb.transport.resp import Command

if TYPE_CHECKING:
    from rtq_nb.client.handle import AsyncRequestHandle

__all__ = ["StreamReads"]


class StreamReads:
    """One ``batches()`` call's reads of its stream: direct (``exchange``) for the first read,
    pipelined with the submission, and when there are no lanes; through the client's lanes
    otherwise, back to direct reads for good once a lane cannot serve it. In a burst (more
    than ``DIRECT_FIRST`` first reads blocked at once) the submission goes with a read that
    does not block, on a shared link, and the stream is read through a lane from the start."""

    def __init__(self, handle: AsyncRequestHandle, lanes: StreamLanes | None) -> None:
        self.handle, self.lanes = handle, lanes
        self.key = handle.keys.stream(handle.id)

    async def next(self, before: Sequence[Command], left: float | None, after_id: str) -> Any:
        """The next ``XREAD`` reply of the stream after ``after_id`` (None: nothing came
        within the slice: ``reap_interval``, or ``left`` when less)."""
        h, lanes = self.handle, self.lanes
        if before and lanes is not None and not lanes.disabled and lanes.direct >= DIRECT_FIRST:
            peek = ("XREAD", "COUNT", READ_COUNT, "STREAMS", self.key, after_id)
            got = (await h._host.exchange([*before, peek], h, resend=True, share=True))[-1]
            if got:
                return got
            before = ()
        if not before and lanes is not None:
            slice_s = h._host.reap_interval if left is None else min(left, h._host.reap_interval)
            try:
                return await lanes.read(h, self.key, after_id, max(slice_s, 0.001))
            except LaneUnavailable:
                self.close()
        if before and lanes is not None:
            lanes.direct += 1
        try:
            replies = await h._host.exchange(
                [*before, h.read_command(left)], h, resend=bool(before)
            )
        finally:
            if before and lanes is not None:
                lanes.direct -= 1
        return replies[-1]

    def close(self) -> None:
        """The reader is done with its lane (or the lane with it): direct reads from now on."""
        if self.lanes is not None:
            self.lanes.leave(self.handle)
            self.lanes = None
