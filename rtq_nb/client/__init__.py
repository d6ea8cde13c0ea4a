"""The client: submit requests, wait for results, follow streams, read a queue's state.

::

    core.py      AsyncClient: prepare (no I/O), submit, call, stream; riding out outages
    options.py   SubmitOptions / BatchOptions (typed keywords), DEFAULT, Prepared
    handle.py    AsyncRequestHandle, and HandleHost: the one interface a handle uses
    inspect.py   reads: counts, workers, clients, pending, history rows, monitor snapshot
    admin.py     cancel, get, extend, reap, dead letters, requeue
    sync.py      Client / RequestHandle: the synchronous facade (one-liners + fast call())
"""

from __future__ import annotations

from rtq_nb.client.core import AsyncClient, ping
from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.client.inspect import FinishedSample, PendingRequest, QueueSnapshot
from rtq_nb.client.options import DEFAULT, BatchOptions, ClientDefault, Prepared, SubmitOptions
from rtq_nb.client.sync import Client, RequestHandle

__all__ = [
    "DEFAULT",
    "AsyncClient",
    "AsyncRequestHandle",
    "BatchOptions",
    "Client",
    "ClientDefault",
    "FinishedSample",
    "PendingRequest",
    "Prepared",
    "QueueSnapshot",
    "RequestHandle",
    "SubmitOptions",
    "ping",
]
