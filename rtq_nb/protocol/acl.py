"""Least-privilege Redis 7 ACL users for one queue (pure: no I/O): ``ACL SETUSER`` lines for the
roles ``client``, ``worker`` and ``monitor``.

Redis checks three things, and each role is built for them: the command (each role starts
from ``-@all`` and gets exactly the commands its code paths send), the keys a command names
(``~`` read and write, ``%R~`` read only; every pattern comes from :class:`Keys`), and, for
``EVALSHA``, the KEYS a script declares; inside a script every ``redis.call`` runs with the
caller's permissions, so each role also gets the commands of the scripts it runs (read from
the scripts' sources, so a script that starts using a new command updates the roles).

A role is a list of :class:`Grant`: the first is the user's root permissions, the others are
ACL selectors ``(...)`` (a command is allowed when one of them allows it with all its keys).
Selectors keep the client away from the workers' scripts: it may run ``EVALSHA`` only with
the keys SUBMIT declares or with those CANCEL (and EXTEND) declare, so POP (pending, running
*and* wake), COMPLETE (stats), REAP (dead) and HANDBACK are refused before they run, and it
may only ``ZREM`` from ``running`` (CANCEL), not ``ZADD`` (no leases of its own).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol import scripts
from rtq_nb.protocol.keys import Keys, check_name
from rtq_nb.protocol.shards import check_shards

__all__ = [
    "HANDSHAKE",
    "ROLES",
    "Grant",
    "grants",
    "matrix",
    "matrix_markdown",
    "password_rule",
    "script_commands",
    "setuser_args",
    "setuser_lines",
    "user_name",
]

ROLES: dict[str, str] = {
    "client": "submit, call, stream, cancel, extend and read its requests; queue counts",
    "worker": "serve the queue: pop, stream, complete, renew, reap, hand back, registry",
    "monitor": "read every view of the queue (inspect, dashboards); write nothing",
}
# What every connection may send: the transports' handshake (AUTH, SELECT when the URL names
# a database; HELLO is never sent, and Redis allows AUTH and HELLO to every user anyway), PING
# (``rtq_nb.client.ping``) and SCRIPT LOAD of every script before a connection's first
# pipeline (harmless: running a script is still checked, key by key and command by command).
# Every connection: AUTH/SELECT from the URL, PING, SCRIPT LOAD before the first pipeline,
# INFO (cluster detection on the first round trip: `INFO cluster`), and on a Redis Cluster the
# slot map and ASK redirections (CLUSTER SLOTS, ASKING), and behind Sentinel the check that a
# new connection reached the primary (ROLE). None of them reads or writes data.
HANDSHAKE = ("auth", "select", "ping", "script|load", "info", "cluster|slots", "asking", "role")
_CALL = re.compile(r"""redis\.p?call\(\s*['"]([A-Za-z]+)['"]""")
_USER = re.compile(r"^[A-Za-z0-9_.@:\-]{1,128}$")


def script_commands(*scripts_: scripts.Script) -> tuple[str, ...]:
    """The commands the given scripts call (``redis.call`` / ``redis.pcall``), lower case."""
    found = {m.lower() for s in scripts_ for m in _CALL.findall(s.source)}
    return tuple(sorted(found))


@dataclass(frozen=True)
class Grant:
    """Commands allowed on keys: the user's root permissions, or one ACL selector."""

    scope: str  # what it is for (the table's second column)
    commands: tuple[str, ...]
    keys: tuple[str, ...] = ()  # read and write: ``~pattern``
    read_keys: tuple[str, ...] = ()  # read only: ``%R~pattern``

    def rules(self) -> list[str]:
        return [
            *(f"+{c}" for c in sorted(set(self.commands))),
            *(f"~{k}" for k in self.keys),
            *(f"%R~{k}" for k in self.read_keys),
        ]


def _glob(text: str) -> str:
    """``text`` as a literal in a Redis glob pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _any(key_of_empty_id: str, start: str = "") -> str:
    """The pattern of every key ``key_of_empty_id + id`` whose id starts with ``start``."""
    return _glob(key_of_empty_id + start) + "*"


def _requests(k: Keys, client_id: str | None) -> tuple[str, str, str]:
    """Record, result and stream patterns of one client's requests (ids start with
    ``<client_id>-``), or of every request."""
    start = f"{client_id}-" if client_id else ""
    return _any(k.request(""), start), _any(k.result(""), start), _any(k.stream(""), start)


def _client(k: Keys, client_id: str | None) -> list[Grant]:
    req, res, stream = _requests(k, client_id)
    registry = _glob(k.client(client_id)) if client_id else _any(k.client(""))
    direct = (
        *("sadd", "sismember", "smembers"),  # the queues set: announce, check a name
        *("zadd", "zremrangebyscore", "hset", "expire"),  # the client registry refresh
        *("blpop", "xread", "hgetall", "exists", "time"),  # waits, records, the server clock
        "hget",  # the queue's layout (config), read once per queue
        "lpush",  # a sharded queue's wake token (the home wake list)
        *("zcard", "zcount", "zrange", "zrevrange", "zrevrangebyscore"),  # counts, workers
        # stream lanes (many streams read on one connection): a lane's own id, and waking its
        # blocked XREAD when a stream joins (no data; without them lanes turn themselves off)
        *("client|id", "client|unblock"),
        "evalsha",
    )
    inner = script_commands(scripts.SUBMIT, scripts.CANCEL, scripts.EXTEND)
    q = (_glob(k.pending), _glob(k.wake), _glob(k.seq), _glob(k.history))
    return [
        Grant(
            "its requests, the queue's entry points, counts",
            (*HANDSHAKE, *[c for c in (*direct, *inner) if c != "evalsha"]),
            keys=(_glob(k.queues), *q, _glob(k.clients), registry, req, res, stream),
            read_keys=(
                *(_glob(k.running), _glob(k.stats), _glob(k.workers), _glob(k.config)),
                _any(k.worker("")),
            ),
        ),
        Grant("SUBMIT (declared keys)", ("evalsha",), keys=(req, *q)),
        Grant(
            "CANCEL, EXTEND (declared keys)",
            ("evalsha",),
            keys=(req, _glob(k.pending), _glob(k.running), res, stream, _glob(k.unsuccessful)),
        ),
        Grant("CANCEL: leave running", ("zrem",), keys=(_glob(k.running),)),
        Grant(
            "CANCEL: list it as unsuccessful (and trim)",
            ("zadd", "zremrangebyscore"),
            keys=(_glob(k.unsuccessful),),
        ),
    ]


def _worker(k: Keys) -> list[Grant]:
    req, res, stream = _requests(k, None)
    registry = (_any(k.worker("")), _any(k.control("")))
    direct = (
        *("sadd", "hset", "expire", "zadd", "zremrangebyscore", "zrem"),  # registry, heartbeat
        *("blpop", "lpush"),  # waiting for work; stop tokens
        *("hget", "hsetnx"),  # the queue's layout (config)
        *("lpop", "zrevrange", "zcard"),  # a sharded queue: tokens, the shards' heads
        "evalsha",
    )
    inner = script_commands(
        scripts.POP, scripts.APPEND, scripts.COMPLETE, scripts.RENEW, scripts.REAP, scripts.HANDBACK
    )
    queue = (
        *(k.pending, k.running, k.wake, k.dead, k.history, k.unsuccessful),
        *(k.stats, k.workers, k.config),
    )
    return [
        Grant(
            "the queue but its clients (and the arrival counter)",
            (*HANDSHAKE, *direct, *inner),
            keys=(_glob(k.queues), *map(_glob, queue), *registry, req, res, stream),
        ),
        Grant("deregistering: its entry, its control list", ("del",), keys=registry),
    ]


def _monitor(k: Keys) -> list[Grant]:
    req, _, stream = _requests(k, None)
    reads = (
        *("sismember", "smembers", "time", "zcard", "zcount", "zrange", "zrevrange"),
        *("zrevrangebyscore", "hgetall", "hget", "hmget", "xread"),
    )
    queue = (
        *(k.queues, k.pending, k.running, k.history, k.unsuccessful, k.dead),
        *(k.stats, k.workers, k.clients),
    )
    queue_and_layout = (*queue, k.config)
    patterns = (_any(k.worker("")), _any(k.client("")), req, stream)
    return [
        Grant(
            "every key it shows, read only",
            (*HANDSHAKE, *reads),
            read_keys=(*map(_glob, queue_and_layout), *patterns),
        )
    ]


def grants(
    role: str,
    *,
    queue: str,
    prefix: str = "rtq",
    client_id: str | None = None,
    shards: int = 1,
) -> list[Grant]:
    """The permissions of ``role`` on ``queue`` under ``prefix``: root first, then selectors.
    ``client_id`` (client role only) restricts a client to the requests whose ids start with
    ``<client_id>-`` (what ``Client(client_id=...)`` makes) and to its own registry entry.
    ``shards``: a sharded queue's shard count (every key pattern of the home shard is given
    for each shard too)."""
    out = _grants(role, queue, prefix, client_id)
    if check_shards(shards) == 1:
        return out
    home = _glob(Keys(prefix, queue).home)
    bases = [_glob(Keys(prefix, queue, i).base) for i in range(1, shards)]

    def widen(patterns: tuple[str, ...]) -> tuple[str, ...]:
        more = [b + p[len(home) :] for p in patterns if p.startswith(home) for b in bases]
        return (*patterns, *more)

    return [Grant(g.scope, g.commands, widen(g.keys), widen(g.read_keys)) for g in out]


def _grants(role: str, queue: str, prefix: str, client_id: str | None) -> list[Grant]:
    if role not in ROLES:
        raise ConfigurationError(f"unknown role {role!r}: use {', '.join(ROLES)}")
    k = Keys(prefix, queue)
    if client_id is not None:
        if role != "client":
            raise ConfigurationError("a client id restricts the client role only")
        check_name("client id", client_id)
        if "-" in client_id:
            raise ConfigurationError(
                f"client id {client_id!r} contains '-': request ids are <client id>-..., so "
                f"another client named {client_id.split('-')[0]!r} could read its requests; "
                "use A-Z a-z 0-9 _ . only"
            )
    if role == "client":
        return _client(k, client_id)
    return _worker(k) if role == "worker" else _monitor(k)


def user_name(role: str, queue: str, client_id: str | None = None) -> str:
    """The default ACL user name: ``rtq-<role>-<queue>[-<client id>]``."""
    return "-".join(["rtq", role, queue, *([client_id] if client_id else [])])


def password_rule(password: str | None, *, nopass: bool = False) -> str:
    """``#<sha256 hex>`` of ``password`` (Redis stores and compares only the hash; the
    password itself never appears in a line), or ``nopass`` when explicitly asked for."""
    if nopass:
        if password:
            raise ConfigurationError("give a password or nopass, not both")
        return "nopass"
    if not password:
        raise ConfigurationError("no password given: pass one (or nopass=True, explicitly)")
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def setuser_args(
    role: str,
    *,
    queue: str,
    prefix: str = "rtq",
    user: str | None = None,
    client_id: str | None = None,
    password: str | None = None,
    nopass: bool = False,
    shards: int = 1,
) -> list[list[str]]:
    """The ``ACL SETUSER`` commands (argument lists) creating ``user`` with ``role``: it
    starts with ``reset`` (so applying it again replaces the user, selectors and passwords
    included), then ``resetkeys resetchannels -@all``, then exactly the role's grants."""
    found = grants(role, queue=queue, prefix=prefix, client_id=client_id, shards=shards)
    name = user or user_name(role, queue, client_id)
    if not _USER.match(name):
        raise ConfigurationError(f"invalid user name {name!r}: use 1-128 of A-Z a-z 0-9 _ . @ : -")
    head = ["ACL", "SETUSER", name, "reset", "on", password_rule(password, nopass=nopass)]
    head += ["resetkeys", "resetchannels", "-@all", *found[0].rules()]
    return [head + ["(" + " ".join(g.rules()) + ")" for g in found[1:]]]


def setuser_lines(
    role: str,
    *,
    queue: str,
    prefix: str = "rtq",
    user: str | None = None,
    client_id: str | None = None,
    password: str | None = None,
    nopass: bool = False,
    shards: int = 1,
) -> list[str]:
    """:func:`setuser_args` as lines for ``redis-cli`` (one command per line). Redis joins a
    selector's words back (``(+evalsha ~a ~b)``), so the same rules serve an ACL file: write
    ``user`` instead of the leading ``ACL SETUSER``."""
    cmds = setuser_args(
        role,
        queue=queue,
        prefix=prefix,
        user=user,
        client_id=client_id,
        password=password,
        nopass=nopass,
        shards=shards,
    )
    return [" ".join(cmd) for cmd in cmds]


def matrix(queue: str = "QUEUE", prefix: str = "rtq") -> list[tuple[str, str, str, str]]:
    """The role/command table: (role, scope, commands, keys) per grant (root, selectors)."""
    rows = []
    for role in ROLES:
        cid = "CID" if role == "client" else None
        for g in grants(role, queue=queue, prefix=prefix, client_id=cid):
            keys = [*g.keys, *(f"{k} (read only)" for k in g.read_keys)]
            rows.append((role, g.scope, " ".join(sorted(set(g.commands))), ", ".join(keys)))
    return rows


def matrix_markdown(queue: str = "QUEUE", prefix: str = "rtq") -> str:
    """:func:`matrix` as a markdown table (for the README)."""
    lines = ["| role | for | commands | keys |", "|---|---|---|---|"]
    for row in matrix(queue, prefix):
        role, scope, commands, keys = (c.replace("|", "\\|") for c in row)
        lines.append(f"| {role} | {scope} | `{commands}` | `{keys}` |")
    return "\n".join(lines)
