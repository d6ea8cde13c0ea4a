"""rtq_nb: a Jupyter-friendly SDK for a real-time AI inference queue on Redis.

Public API::

    Client, AsyncClient           submit, call, stream, inspect (sync facade / async core)
    RequestHandle, AsyncRequestHandle
    Worker, Request               serve a queue with a handler
    Chunk, RequestRecord, Status  wire-format models
    EmbeddedRedis                 a private redis-server
    Security, SigningKey, Keyring, SealKey   signed requests/results, end-to-end encryption
    errors                        the exception tree (RtqError and subclasses)
"""

from __future__ import annotations

import logging

from rtq_nb import errors
from rtq_nb.client.core import AsyncClient
from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.client.sync import Client, RequestHandle
from rtq_nb.errors import (
    AccessDenied,
    EngineError,
    RequestCancelled,
    RequestExpired,
    RequestFailed,
    RequestTimeout,
    RtqError,
)
from rtq_nb.protocol.records import Chunk, Request, RequestRecord, Status, Usage
from rtq_nb.protocol.registry import WorkerInfo
from rtq_nb.security import Keyring, SealKey, Security, SigningKey, VerifyKey
from rtq_nb.transport.embedded import EmbeddedRedis
from rtq_nb.worker.worker import Worker

__version__ = "0.1.0"

logging.getLogger("rtq_nb").addHandler(logging.NullHandler())

__all__ = [
    "AccessDenied",
    "AsyncClient",
    "AsyncRequestHandle",
    "Chunk",
    "Client",
    "EmbeddedRedis",
    "EngineError",
    "Keyring",
    "Request",
    "RequestCancelled",
    "RequestExpired",
    "RequestFailed",
    "RequestHandle",
    "RequestRecord",
    "RequestTimeout",
    "RtqError",
    "SealKey",
    "Security",
    "SigningKey",
    "Status",
    "Usage",
    "VerifyKey",
    "Worker",
    "WorkerInfo",
    "__version__",
    "errors",
]
