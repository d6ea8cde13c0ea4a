"""Bytes to Redis and back, behind one interface (:class:`~rtq_nb.transport.base.Transport`).

::

    endpoint.py   URL -> host/socket, TLS, AUTH, SELECT; secrets masked in messages
    sentinel.py   Resolver: a Sentinel-managed primary's address, followed across failovers
    watcher.py    talking to the sentinels: discovery, failover events (a background thread)
    resp.py       RESP encoding (hiredis), command templates
    link.py       the asyncio link (an asyncio.Protocol feeding hiredis)
    aio.py        Conn: pooled links, pipelines with an early head callback
    blocking.py   SyncConn: blocking sockets for the sync facade's fast call()
    base.py       the Transport interface, script loading, the one NOSCRIPT policy
    errors.py     the error-mapping tables
    retry.py      Backoff: the one retry policy
    embedded.py   EmbeddedRedis: a private redis-server when no URL is given
"""

from __future__ import annotations

from rtq_nb.transport.aio import Conn
from rtq_nb.transport.base import Transport
from rtq_nb.transport.blocking import SyncConn
from rtq_nb.transport.endpoint import configured_url, is_sentinel_url, resolve_url, safe_url
from rtq_nb.transport.errors import ScriptsLost
from rtq_nb.transport.retry import Backoff

__all__ = [
    "Backoff",
    "Conn",
    "ScriptsLost",
    "SyncConn",
    "Transport",
    "configured_url",
    "connect",
    "resolve_url",
    "safe_url",
]


def connect(url: str) -> Transport:
    """The transport for ``url``: a cluster router, one server found through Sentinel (its
    endpoint resolves the primary: README, Sentinel), or one server."""
    from rtq_nb.transport.auto import AutoTransport
    from rtq_nb.transport.cluster import ClusterTransport, is_cluster_url

    if is_sentinel_url(url):
        return Conn(url)  # Sentinel manages one primary, never a cluster: no detection
    return ClusterTransport(url) if is_cluster_url(url) else AutoTransport(url)
