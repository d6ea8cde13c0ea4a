"""Fetching from a sharded queue (the scheme is in :mod:`rtq_nb.protocol.shards`): hold wake
tokens, peek at every shard's head, POP from the best shard with a floor, give back unused
tokens at once.

Round trips per fetch: while the queue is busy, one for tokens and heads (``LPOP`` on the
wake list with the peek) and one for the POP (the first rides with the previous batch's
completions, see :meth:`first` / :meth:`finish`); from idle, one more for the blocking wait.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from rtq_nb.protocol import scripts
from rtq_nb.protocol.defaults import MIN_BLOCK
from rtq_nb.protocol.shards import Head, choose, parse_peek
from rtq_nb.transport.resp import Command

if TYPE_CHECKING:
    from rtq_nb.worker.fetch import Fetcher
    from rtq_nb.worker.state import Held

__all__ = ["ShardedFetch"]

log = logging.getLogger("rtq_nb.worker")
RETRIES = 3  # peeks after a floor refused everything (another worker took that head)


class ShardedFetch:
    def __init__(self, fetcher: Fetcher) -> None:
        self.f = fetcher
        self.busy = False  # requests were left at the last peek: take tokens without blocking
        self.rng = random.Random()

    def first(self, block: float, limit: int = 0) -> list[Command]:
        """The fetch's first commands: tokens and heads when busy, else the blocking wait."""
        f = self.f
        layout, limit = f.state.layout, limit or f.opts.batch_size
        home = layout.home
        if self.busy:
            return [("LPOP", home.wake, limit), *layout.peek()]
        return [("BLPOP", home.control(f.state.id), home.wake, max(block, MIN_BLOCK))]

    async def finish(self, replies: list[Any], limit: int = 0) -> list[Held]:
        """The rest of a fetch, given the replies to :meth:`first`'s commands."""
        f = self.f
        layout, limit = f.state.layout, limit or f.opts.batch_size
        home = layout.home
        heads: list[Head] | None = None
        if self.busy:
            tokens = len(replies[0] or [])
            if not tokens:  # pending requests whose tokens are on their way: wait for them
                self.busy = False
                return []
            heads = parse_peek(replies[1:])
        else:
            woke = replies[0]
            if woke is not None and woke[0] == home.control(f.state.id):
                return []  # a stop token
            tokens = 0 if woke is None else 1
            extra = limit - tokens if tokens else 0
            cmds = [("LPOP", home.wake, extra)] if extra > 0 else []
            got = await f.conn.pipeline([*cmds, *layout.peek()])
            if extra > 0:
                tokens += len(got[0] or [])
            heads = parse_peek(got[1:] if extra > 0 else got)
        return await self._take(tokens, heads, limit)

    async def fetch(self, block: float, limit: int = 0) -> list[Held]:
        return await self.finish(await self.f.conn.pipeline(self.first(block, limit)), limit)

    async def gather(self, got: list[Held]) -> list[Held]:
        """Batching: wait up to ``batch_wait`` for more requests to fill the batch."""
        f = self.f
        end = time.monotonic() + f.opts.batch_wait
        while len(got) < f.opts.batch_size and not f.state.stopping:
            left = end - time.monotonic()
            if left <= 0:
                break
            got += await self.fetch(left, f.opts.batch_size - len(got))
        return got

    async def _take(self, tokens: int, heads: list[Head], limit: int) -> list[Held]:
        """POP from the best shard: as many requests as tokens held (one without a token when
        a blocking wait timed out: the safety net for tokens lost with a dead worker); the
        tokens left over go back at once. Tokens held while every shard is empty are stale
        (a token is pushed only after its request landed, so the peek would have seen it):
        they are dropped, never passed round."""
        f = self.f
        layout, o = f.state.layout, f.opts
        out: list[Held] = []
        for _ in range(RETRIES):
            choice = choose(heads, self.rng)
            if choice is None:
                tokens, self.busy = 0, False
                break
            keys = layout.all[choice.shard]
            count = min(tokens, limit) if tokens else 1
            cmd = scripts.pop(
                keys,
                f.state.id,
                lease_ms=o.lease_ms,
                count=count,
                consumed=count,  # the tokens are on the home wake list: trim nothing here
                retention_s=o.retention_s,
                floor=choice.floor,
            )
            out += f.accept((await f.conn.pipeline([cmd]))[0], keys)
            taken = f.taken
            tokens = max(0, tokens - taken)
            left = sum(h.size for h in heads) - taken
            if taken or choice.floor is None:
                self.busy = left > 0
                break
            heads = parse_peek(await f.conn.pipeline(layout.peek()))
        else:
            self.busy = True
        if tokens:  # unused: another worker may take their requests
            await f.conn.pipeline([("LPUSH", layout.home.wake, *["1"] * tokens)])
        return out
