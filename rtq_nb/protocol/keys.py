"""Every Redis key rtq_nb uses is built here. The Lua scripts that build request keys from ids
they pop use this module's infixes, injected at load time (``scripts.CONSTANTS``).

Layout (wire format v1), for prefix ``rtq`` and queue ``default``::

    rtq:queues                         set    names of queues seen (untagged, single-key ops only)
    rtq:{default}:pending              zset   request id -> score (priority, FIFO; see _scores)
    rtq:{default}:running              zset   request id -> lease expiry (ms since epoch)
    rtq:{default}:wake                 list   one token per submission; workers block on it
    rtq:{default}:seq                  string arrival counter for FIFO scores
    rtq:{default}:history              zset   request id -> created (ms); trimmed by retention
    rtq:{default}:unsuccessful         zset   the same, for requests that ended failed, expired
                                              or cancelled (status filters read it, not all)
    rtq:{default}:dead                 zset   dead-lettered request id -> time (ms)
    rtq:{default}:stats                hash   completed/failed counters, service-time EWMA
    rtq:{default}:workers              zset   worker id -> last heartbeat (ms)
    rtq:{default}:worker:<wid>         hash   worker registry entry (TTL)
    rtq:{default}:ctl:<wid>            list   stop tokens for one worker's blocked fetches
    rtq:{default}:clients              zset   client id -> last seen (ms)
    rtq:{default}:client:<cid>         hash   client registry entry (TTL)
    rtq:{default}:req:<id>             hash   the request record (TTL = retention)
    rtq:{default}:res:<id>             list   non-streaming result envelope (client BLPOPs it)
    rtq:{default}:stream:<id>          stream streamed chunks with sequence numbers + end marker
    rtq:{default}:config               hash   the queue's layout (``shards``; absent: 1)

``{default}`` is a Redis Cluster hash tag: all keys of one queue live in one slot, so every
multi-key script of a queue is cluster-safe. Different queues spread over the cluster.

A sharded queue (see :mod:`rtq_nb.protocol.shards`) keeps shard 0 under the queue's own tag
(the keys above: the *home* shard) and shard ``i > 0`` under the tag ``{<queue>~<i>}`` (``~``
is not allowed in queue names, so a shard never collides with a queue). A shard's Keys give
its own request and queue keys (pending, running, wake, seq, history, unsuccessful, dead,
stats, req, res, stream) and the home's registry keys (workers, clients, control lists,
config): the worker and client registries are one per logical queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from rtq_nb.errors import ConfigurationError

__all__ = [
    "MAX_SHARDS",
    "REQUEST_INFIX",
    "RESULT_INFIX",
    "SHARD_MARK",
    "STREAM_INFIX",
    "WIRE_VERSION",
    "Keys",
    "check_id",
    "check_name",
]

WIRE_VERSION = 1

# The parts of a request's keys after the queue's base; the Lua scripts that build request keys
# from ids they pop get these same strings (see ``scripts.CONSTANTS``).
REQUEST_INFIX = ":req:"
RESULT_INFIX = ":res:"
STREAM_INFIX = ":stream:"
SHARD_MARK = "~"  # between a queue's name and a shard number in the shard's hash tag
MAX_SHARDS = 1024
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


def check_name(kind: str, value: str) -> str:
    """Validate a prefix, queue, worker or client name; raise a clear error otherwise."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"invalid {kind} name {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . -"
        )
    return value


def check_id(value: str) -> str:
    """Validate a request id (what may follow ``req:`` in a key)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigurationError(
            f"invalid request id {value!r}: use 1-128 characters from A-Z a-z 0-9 _ . : -"
        )
    return value


@dataclass(frozen=True)
class Keys:
    """Key builder for one queue (or one shard of a sharded queue) under one prefix."""

    prefix: str = "rtq"
    queue: str = "default"
    shard: int = 0

    def __post_init__(self) -> None:
        check_name("prefix", self.prefix)
        check_name("queue", self.queue)
        s = self.shard
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < MAX_SHARDS:
            raise ConfigurationError(f"shard must be an int in [0, {MAX_SHARDS}), got {s!r}")

    @cached_property
    def home(self) -> str:
        """``<prefix>:{<queue>}``: the start of the queue's registry keys (shard 0's base)."""
        return f"{self.prefix}:{{{self.queue}}}"

    @cached_property
    def base(self) -> str:
        """``<prefix>:{<queue>}`` (``<prefix>:{<queue>~<shard>}`` for shard > 0): the common,
        hash-tagged start of this shard's keys."""
        if not self.shard:
            return self.home
        return f"{self.prefix}:{{{self.queue}{SHARD_MARK}{self.shard}}}"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def pending(self) -> str:
        return f"{self.base}:pending"

    @property
    def running(self) -> str:
        return f"{self.base}:running"

    @property
    def wake(self) -> str:
        return f"{self.base}:wake"

    @property
    def seq(self) -> str:
        return f"{self.base}:seq"

    @property
    def history(self) -> str:
        return f"{self.base}:history"

    @property
    def unsuccessful(self) -> str:
        """The history of requests that ended failed, expired or cancelled (id -> created ms):
        a view filtered to those statuses reads it instead of every record."""
        return f"{self.base}:unsuccessful"

    @property
    def dead(self) -> str:
        return f"{self.base}:dead"

    @property
    def stats(self) -> str:
        return f"{self.base}:stats"

    @property
    def workers(self) -> str:
        return f"{self.home}:workers"

    @property
    def clients(self) -> str:
        return f"{self.home}:clients"

    @property
    def config(self) -> str:
        """The queue's layout hash (``shards``), in the home shard."""
        return f"{self.home}:config"

    def worker(self, worker_id: str) -> str:
        return f"{self.home}:worker:{worker_id}"

    def control(self, worker_id: str) -> str:
        """A worker's control list (stop tokens wake its blocked fetches at once)."""
        return f"{self.home}:ctl:{worker_id}"

    def client(self, client_id: str) -> str:
        return f"{self.home}:client:{client_id}"

    def request(self, request_id: str) -> str:
        return self.base + REQUEST_INFIX + request_id

    def result(self, request_id: str) -> str:
        return self.base + RESULT_INFIX + request_id

    def stream(self, request_id: str) -> str:
        return self.base + STREAM_INFIX + request_id

    def request_keys(self, request_id: str) -> tuple[str, str, str]:
        """(record, result list, stream) of one request."""
        return self.request(request_id), self.result(request_id), self.stream(request_id)
