"""Sharded queues (pure: no I/O): one logical queue spread over N hash-tagged shards, so one
hot queue can use every master of a Redis Cluster.

- **Where a request lives.** Shard ``crc32(id) % N``: any client, view or worker finds a
  request from its id alone, and a resubmitted id meets its first copy (duplicates are still
  refused). Shard 0 is the queue's home (its keys are the unsharded queue's keys).
- **Waking workers.** One wake list for the whole queue, in the home shard. A submission to
  shard 0 pushes its token in the SUBMIT script; one to another shard pushes it right after
  the SUBMIT has landed (the token never runs ahead of its request). Requeues, hand-backs and
  reaps into shard ``i > 0`` push theirs the same way.
- **Global priority.** A worker holds wake tokens (one per request it may take), *peeks* at
  every shard's head and size (plain reads, one round trip; on a cluster the shards' nodes
  are asked concurrently), picks the shard whose head has the highest priority (among equal
  heads, at random weighted by backlog) and POPs there with a *floor*: only requests whose
  priority is at least the best head of the other shards. So a request is never passed over
  by a lower-priority one that was already waiting when the worker looked; the inversions
  left are with requests that arrived during the peek-to-pop round trip. Within a shard,
  order is FIFO; across shards, equal priorities are served in about arrival order (random,
  weighted by backlog).
- **Token accounting.** A worker POPs at most as many requests as it holds tokens and
  pushes back the tokens it did not use at once, so tokens track pending requests and a
  blocked worker is never left asleep beside pending work. A worker that dies holding tokens
  loses them: every worker also peeks when its blocking wait times out (``block_timeout``),
  which serves such stranded requests.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.keys import MAX_SHARDS, Keys
from rtq_nb.protocol.scores import PRIORITY_MAX, PRIORITY_MIN, decode_priority, priority_bounds

__all__ = [
    "CONFIG_SHARDS",
    "Choice",
    "Head",
    "Layout",
    "check_shards",
    "choose",
    "parse_config",
    "parse_peek",
    "shard_of",
]

CONFIG_SHARDS = "shards"  # field of the queue's config hash
_HIGHEST = float(priority_bounds(PRIORITY_MAX)[1])
_LOWEST = float(priority_bounds(PRIORITY_MIN)[0])
Command = tuple[Any, ...]


def check_shards(value: object) -> int:
    """Validate a shard count (an int in [1, MAX_SHARDS])."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise ConfigurationError(f"shards must be an int in [1, {MAX_SHARDS}], got {value!r}")
    return value


def parse_config(reply: object, key: str) -> int:
    """The shard count stored in a queue's config hash (``HGET <config> shards``; None: 1)."""
    if reply is None:
        return 1
    try:
        n = int(str(reply))
        return check_shards(n)
    except (ValueError, ConfigurationError):
        raise ConfigurationError(
            f"{key} field {CONFIG_SHARDS!r} is {reply!r}, not a shard count in [1, {MAX_SHARDS}]"
            f": repair it with `rtq-nb queue <name> --shards N` (N as the queue's workers use)"
        ) from None


def shard_of(request_id: str, shards: int) -> int:
    """The shard a request id lives in."""
    return zlib.crc32(request_id.encode()) % shards if shards > 1 else 0


class Head(NamedTuple):
    """One shard's view from a peek: its index, its head's score (None: empty), its size."""

    shard: int
    score: float | None
    size: int


class Choice(NamedTuple):
    """Where to pop: the shard, and the lowest score to take there (None: no floor)."""

    shard: int
    floor: int | None


@dataclass(frozen=True)
class Layout:
    """One logical queue's shards (``shards == 1``: an ordinary queue, shard 0 only)."""

    prefix: str = "rtq"
    queue: str = "default"
    shards: int = 1
    all: tuple[Keys, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_shards(self.shards)
        keys = tuple(Keys(self.prefix, self.queue, i) for i in range(self.shards))
        object.__setattr__(self, "all", keys)

    @property
    def home(self) -> Keys:
        return self.all[0]

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def for_id(self, request_id: str) -> Keys:
        """The keys of the shard ``request_id`` lives in."""
        return self.all[shard_of(request_id, self.shards)] if self.shards > 1 else self.all[0]

    def wake_after(self, keys: Keys, count: int = 1) -> list[Command]:
        """What to send once a script has put ``count`` requests back into ``keys``' shard:
        their tokens on the queue's wake list (shard 0's scripts push them themselves)."""
        if not keys.shard or count <= 0:
            return []
        return [("LPUSH", self.home.wake, *["1"] * count)]

    def peek(self) -> list[Command]:
        """Each shard's head (highest score) and size: 2 plain reads per shard."""
        cmds: list[Command] = []
        for k in self.all:
            cmds += [("ZREVRANGE", k.pending, 0, 0, "WITHSCORES"), ("ZCARD", k.pending)]
        return cmds


def parse_peek(replies: Sequence[Any]) -> list[Head]:
    """Heads from :meth:`Layout.peek`'s replies. A head scored out of range (damaged data,
    say ``+inf``) counts at the nearest priority bound, as POP would take it: it fails alone
    there, and the shard's good requests come next."""
    out: list[Head] = []
    for i in range(0, len(replies) - 1, 2):
        head, size = replies[i], replies[i + 1]
        score: float | None = None
        if isinstance(head, list) and len(head) == 2:
            try:
                score = min(max(float(head[1]), _LOWEST), _HIGHEST)
            except (TypeError, ValueError):
                score = None
        try:
            n = int(size)
        except (TypeError, ValueError):
            n = 0
        out.append(Head(i // 2, score, n if score is not None else 0))
    return out


def choose(heads: Sequence[Head], rng: random.Random | None = None) -> Choice | None:
    """The shard to pop from (None: every shard is empty). See the module docstring."""
    live = [h for h in heads if h.score is not None]
    if not live:
        return None
    prio = {h.shard: decode_priority(h.score) for h in live if h.score is not None}
    top = max(prio.values())
    best = [h for h in live if prio[h.shard] == top]
    pick = best[0]
    if len(best) > 1:
        pick = (rng or random).choices(best, weights=[max(1, h.size) for h in best])[0]
    others = [p for s, p in prio.items() if s != pick.shard]
    return Choice(pick.shard, priority_bounds(max(others))[0] if others else None)
