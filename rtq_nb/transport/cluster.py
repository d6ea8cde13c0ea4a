"""Redis Cluster: a :class:`~rtq_nb.transport.base.Transport` that routes every command to the
master serving its key's slot, and the detection that picks it.

One :class:`~rtq_nb.transport.aio.Conn` per master (scripts are loaded on each master before
its first pipeline). A pipeline is split by (node, slot); the parts go out concurrently and
the replies come back in the original order. Keyless commands (``TIME``, ``WAIT``, ``PING``)
go with their neighbour (the keyed command before them, else after). ``MOVED`` updates the
slot map and re-sends on the right node, ``ASK`` sends ``ASKING`` + the command to the node
it names, ``TRYAGAIN``/``CLUSTERDOWN`` (a slot mid-migration, a failover) are retried after a
short backoff. A connection error marks the map stale (re-read before the next pipeline) and
raises :class:`~rtq_nb.errors.RedisUnavailable`, as on one server. All keys of a queue share
its hash tag, so a queue lives on one master: a worker's pipelines go to one node, unsplit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rex

from rtq_nb.errors import RedisUnavailable, RtqError
from rtq_nb.transport.aio import Conn
from rtq_nb.transport.base import OnHead, check_replies
from rtq_nb.transport.endpoint import Endpoint, safe_url
from rtq_nb.transport.errors import ScriptsLost, mapped_errors, raise_mapped
from rtq_nb.transport.link import open_link
from rtq_nb.transport.resp import Command, Packed, pack
from rtq_nb.transport.slots import SLOTS, command_key, key_slot, redirect, split_packed

__all__ = ["CLUSTER_SCHEMES", "ClusterTransport", "NodeConn", "is_cluster_url"]

log = logging.getLogger("rtq_nb.transport")

Addr = tuple[str, int]
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_UNSET: Any = object()
_MAX_ROUNDS = 64  # redirections followed for one pipeline before giving up


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a cluster explicitly (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def node_url(url: str, host: str | None = None, port: int | None = None) -> str:
    """``url`` as a plain Redis URL, at ``host:port`` if given (credentials, db, TLS kept)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower(), parts.scheme)
    netloc = parts.netloc
    if host is not None:
        user = netloc.rpartition("@")[0]
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        netloc = f"{user}@{where}" if user else where
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


class NodeConn(Conn):
    """The :class:`Conn` of one master, plus :meth:`raw`: error replies left in the list."""

    async def raw(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        """One round trip; error replies stay in the list. Fewer replies than commands come
        back when an error reply cut the pipeline short (see ``Link.request``). Socket and
        connection errors are raised as they are (the router maps them)."""
        if not self._loaded:
            await self._load()  # the scripts first (one load for all who ask; errors mapped)
        data = pack(commands)
        link = self._idle_link() or await open_link(self.endpoint)
        self._took()
        try:
            replies = await link.request(data, data.n, head=head, on_head=on_head)
        except BaseException:
            link.close()
            raise
        finally:
            self._busy -= 1
        self._give_back(link)
        return replies


def _expand(commands: Sequence[Command]) -> tuple[list[Command], list[int | None]]:
    """One command per item (packed buffers split) and each one's slot (keyless: the slot of
    the keyed command before it, else after it)."""
    cmds: list[Command] = []
    slots: list[int | None] = []
    for cmd in commands:
        if isinstance(cmd, Packed):
            for data, args in split_packed(cmd):
                one = Packed(data)
                one.n = 1
                cmds.append(one)
                key = command_key(args)
                slots.append(None if key is None else key_slot(key))
        else:
            cmds.append(cmd)
            key = command_key(cmd)
            slots.append(None if key is None else key_slot(key))
    last: int | None = None
    for i, s in enumerate(slots):
        if s is None:
            slots[i] = last
        else:
            last = s
    nxt: int | None = None
    for i in range(len(slots) - 1, -1, -1):
        if slots[i] is None:
            slots[i] = nxt
        else:
            nxt = slots[i]
    return cmds, slots


class ClusterTransport:
    """Routes pipelines over a Redis Cluster given any node's URL (see the module doc)."""

    cluster = True

    def __init__(self, url: str) -> None:
        self.url = url
        self._base = node_url(url)
        ep = Endpoint(self._base)
        self._seed: Addr = (ep.host, ep.port)
        self._nodes: dict[Addr, NodeConn] = {}
        self._slots: list[Addr | None] = [None] * SLOTS
        self._stale = True
        self._known: list[Addr] = []  # every node the last slot map named (with replicas)
        self._failed: set[Addr] = set()  # connection failed since that map: asked last
        self._refreshing: asyncio.Task[None] | None = None

    # ---- the slot map ---------------------------------------------------------------------
    def node(self, addr: Addr) -> NodeConn:
        conn = self._nodes.get(addr)
        if conn is None:
            conn = self._nodes[addr] = NodeConn(node_url(self.url, *addr))
        return conn

    def address(self, slot: int | None) -> Addr:
        """The master serving ``slot`` (any known master for None or an unserved slot)."""
        if slot is not None:
            addr = self._slots[slot]
            if addr is not None:
                return addr
        for addr in self._slots:
            if addr is not None:
                return addr
        return self._seed

    async def refresh(self) -> None:
        """Read the slot map again (one refresh at a time; concurrent callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    def _candidates(self) -> list[Addr]:
        """Where to ask for the slot map: the seed, the masters in use, every node the last
        map named (replicas too); the nodes a connection just failed to, last."""
        order = [self._seed, *self._nodes, *self._known]
        fresh = [a for a in dict.fromkeys(order) if a not in self._failed]
        return [*fresh, *(a for a in dict.fromkeys(order) if a in self._failed)]

    async def _ask_slots(self, addr: Addr) -> Any:
        """``CLUSTER SLOTS`` on ``addr``: on its pool if it is a master in use, otherwise on a
        link opened for it (no scripts loaded on a node that may be a replica)."""
        conn = self._nodes.get(addr)
        if conn is not None:
            return (await conn.pipeline([("CLUSTER", "SLOTS")]))[0]
        url = node_url(self.url, *addr)
        with mapped_errors(url):
            link = await open_link(Endpoint(url))
            try:
                data = pack([("CLUSTER", "SLOTS")])
                (reply,) = await link.request(data, data.n)
            finally:
                link.close()
            if isinstance(reply, Exception):
                raise reply
        return reply

    async def _refresh(self) -> None:
        last: BaseException | None = None
        for addr in self._candidates():
            try:
                reply = await self._ask_slots(addr)
            except RtqError as exc:
                last = exc
                continue
            table: list[Addr | None] = [None] * SLOTS
            known: dict[Addr, None] = {}
            for start, end, *nodes in reply:
                where = [(_host(n[0], addr[0]), int(n[1])) for n in nodes]
                known.update(dict.fromkeys(where))
                for s in range(int(start), int(end) + 1):
                    table[s] = where[0]
            self._slots, self._stale = table, False
            self._known, self._failed = list(known), set()
            log.debug("cluster slot map read from %s:%s", *addr)
            return
        raise RedisUnavailable(
            f"cannot read the Redis Cluster slot map from any node of {safe_url(self.url)}: {last}"
        ) from last

    # ---- pipelines ------------------------------------------------------------------------
    async def pipeline(
        self, commands: Sequence[Command], *, head: int = 0, on_head: OnHead | None = None
    ) -> list[Any]:
        """As :meth:`Conn.pipeline`, over the cluster: raw replies in the commands' order,
        the first error raised (mapped). ``on_head`` gets the first ``head`` replies early
        when they all go to one node; otherwise once they are all known."""
        if self._stale:
            await self.refresh()
        cmds, slots = _expand(commands)
        results: list[Any] = [_UNSET] * len(cmds)
        todo = list(range(len(cmds)))
        asking: dict[int, Addr] = {}
        head_done = [head == 0 or on_head is None]
        rounds = 0
        while todo:
            rounds += 1
            groups: dict[tuple[Addr, int | None, bool], list[int]] = {}
            for i in todo:
                ask = asking.get(i)
                key = (ask or self.address(slots[i]), slots[i], ask is not None)
                groups.setdefault(key, []).append(i)
            parts = [
                self._send(addr, [cmds[i] for i in idxs], ask, idxs, head, on_head, head_done)
                for (addr, _, ask), idxs in groups.items()
            ]
            if len(parts) == 1:
                got: list[Any] = [await _settled(parts[0])]
            else:
                got = await asyncio.gather(*parts, return_exceptions=True)
            todo, wait = self._settle(groups, got, results, asking)
            if todo and (wait or rounds > 4):
                if rounds > _MAX_ROUNDS:
                    raise RedisUnavailable(
                        f"Redis Cluster at {safe_url(self.url)} kept redirecting "
                        f"({rounds} rounds): resharding or failover in progress; retry"
                    )
                await asyncio.sleep(min(0.25, 0.005 * 2 ** min(rounds, 8)))
        if not head_done[0] and on_head is not None:
            on_head(results[:head])
        return results

    async def _send(
        self,
        addr: Addr,
        cmds: list[Command],
        ask: bool,
        idxs: list[int],
        head: int,
        on_head: OnHead | None,
        head_done: list[bool],
    ) -> list[Any]:
        node = self.node(addr)
        if ask:  # ASKING holds for the next command only
            sent: list[Command] = [c for cmd in cmds for c in (("ASKING",), cmd)]
            return (await node.raw(sent))[1::2]
        if not head_done[0] and on_head is not None and idxs[:head] == list(range(head)):

            def early(replies: list[Any]) -> None:
                head_done[0] = True
                on_head(replies)

            return await node.raw(cmds, head=head, on_head=early)
        return await node.raw(cmds)

    def _settle(
        self,
        groups: dict[tuple[Addr, int | None, bool], list[int]],
        got: list[Any],
        results: list[Any],
        asking: dict[int, Addr],
    ) -> tuple[list[int], bool]:
        """Store final replies; return what to send again and whether to wait first.
        Raises the first error (a connection error, or an error reply in command order)."""
        todo: list[int] = []
        wait = False
        for ((addr, _, _), idxs), replies in zip(groups.items(), got, strict=True):
            if isinstance(replies, BaseException):
                if isinstance(replies, (rex.RedisError, OSError, RedisUnavailable)):
                    self._stale = True  # a failover, maybe: read the map again
                    self._failed.add(addr)
                    for link in self.node(addr)._idle:
                        link.close()
                    if isinstance(replies, RtqError):
                        raise replies
                    raise_mapped(replies, node_url(self.url, *addr))
                raise replies
            node = self.node(addr)
            for j, i in enumerate(idxs):
                if j >= len(replies):  # cut short by an error reply before it: send again
                    todo.append(i)
                    continue
                r = replies[j]
                moved = redirect(r)
                if moved is None:
                    asking.pop(i, None)
                    if isinstance(r, rex.NoScriptError):
                        node._forget_scripts()
                    results[i] = r
                elif moved.kind == "ASK" and moved.address is not None:
                    asking[i] = moved.address
                    todo.append(i)
                else:
                    asking.pop(i, None)
                    if moved.kind == "MOVED" and moved.address is not None:
                        self._slots[moved.slot] = moved.address
                        self._stale = True
                    else:
                        wait = True
                    todo.append(i)
        done = [r for r in results if r is not _UNSET]
        if any(isinstance(r, Exception) for r in done):
            check_replies(done, self.url, lambda: None)
        return sorted(todo), wait

    async def call(self, *args: Any) -> Any:
        """One command's reply; a script that was lost is reloaded and run once more."""
        try:
            return (await self.pipeline([args]))[0]
        except ScriptsLost:
            return (await self.pipeline([args]))[0]

    async def aclose(self) -> None:
        nodes, self._nodes = list(self._nodes.values()), {}
        for conn in nodes:
            await conn.aclose()

    def __repr__(self) -> str:
        return f"<ClusterTransport {safe_url(self.url)} masters={len(set(self._slots) - {None})}>"


def _host(host: Any, default: str) -> str:
    """A node's host as ``CLUSTER SLOTS`` gives it (empty: the node asked)."""
    if isinstance(host, bytes):
        host = host.decode()
    return str(host) if host else default


async def _settled(part: Any) -> Any:
    try:
        return await part
    except Exception as exc:  # handled like gather(..., return_exceptions=True)
        return exc
