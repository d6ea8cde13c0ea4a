"""The rtq_nb exception tree. Every error the library raises is an :class:`RtqError`.

::

    RtqError
    ├── ConfigurationError        bad argument or setting (names what was wrong)
    │   ├── EncodingError         input/params/result that is not JSON-serialisable
    │   └── UnknownQueue          a queue no client or worker has used (a typo?)
    ├── RedisUnavailable          cannot reach Redis (after retries); says which URL
    │   ├── RedisOutOfMemory      Redis is full (maxmemory, noeviction): writes refused
    │   └── EmbeddedRedisError    no redis-server binary / it would not start
    ├── AccessDenied              the Redis ACL user lacks a permission (NOPERM)
    ├── EngineError               a model engine failed or is unreachable; names its URL
    ├── PayloadError              a value stored by reference cannot be written or read
    ├── RequestError              something about one request
    │   ├── RequestTimeout        the wait ran out; carries what is known (status, worker, ages)
    │   ├── RequestFailed         the handler raised; carries the worker's error text
    │   ├── RequestCancelled      someone cancelled it
    │   ├── RequestExpired        its deadline passed before a worker started it
    │   ├── WorkerLost            the worker of a stream died; carries the chunks so far
    │   └── RequestNotFound       no record under that id (never existed, or its TTL ran out)
    └── MalformedRecord           data found in Redis that does not follow the wire format

Redis and socket exceptions are mapped onto this tree at one boundary
(:mod:`rtq_nb.transport.errors`, two ordered tables) with ``raise ... from`` so the original
stays attached.
"""

from __future__ import annotations

from typing import Any


class RtqError(Exception):
    """Root of every exception raised by rtq_nb."""


class ConfigurationError(RtqError, ValueError):
    """An argument or setting is invalid; the message names it and says what is allowed."""


class EncodingError(ConfigurationError, TypeError):
    """A value (input, params, result, chunk) cannot be encoded for the wire (JSON)."""


class RedisUnavailable(RtqError, ConnectionError):
    """Redis could not be reached or answered with a connection-level error."""


class EmbeddedRedisError(RedisUnavailable):
    """The embedded redis-server could not be found or started."""


class RedisOutOfMemory(RedisUnavailable):
    """Redis refused a write: maxmemory reached with eviction off. Reads, pops and
    completions still work, so workers can drain the queue; retried like an outage."""


class AccessDenied(RtqError):
    """Redis refused a command: the ACL user it is run as lacks the permission (``NOPERM``).
    The message quotes Redis and names the role to use (``rtq-nb acl --role ...``). Not
    retried: connecting as a user with the right role is what helps."""


class EngineError(RtqError):
    """A model engine (an OpenAI-compatible server) refused, failed or could not be reached
    within the request's deadline; the message names the engine's URL and the status."""


class MalformedRecord(RtqError, ValueError):
    """A record in Redis does not follow the wire format (missing fields, bad JSON, types)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{message} (key {key!r})" if key else message)
        self.key = key


class RequestError(RtqError):
    """An error about one request; ``request_id`` names it."""

    def __init__(self, message: str, *, request_id: str) -> None:
        super().__init__(message)
        self.request_id = request_id


class RequestNotFound(RequestError, LookupError):
    """No record for this request id (it never existed, or its retention TTL ran out)."""


class RequestFailed(RequestError):
    """The worker's handler raised; ``error`` is the worker-side error text."""

    def __init__(self, message: str, *, request_id: str, error: str) -> None:
        super().__init__(message, request_id=request_id)
        self.error = error


class RequestCancelled(RequestError):
    """The request was cancelled before it produced a result."""


class WorkerLost(RequestError):
    """The worker running this stream stopped (crashed, killed, hung): its lease ran out.

    ``chunks`` holds what that attempt had streamed. The request was put back in the queue
    (``requeued`` True) unless it ran out of attempts; iterate the handle again to follow the
    retry from its start, or call ``result()``, which follows retries by itself."""

    def __init__(self, message: str, *, request_id: str, chunks: list[Any], requeued: bool) -> None:
        super().__init__(message, request_id=request_id)
        self.chunks = chunks
        self.requeued = requeued


class RequestExpired(RequestError):
    """The request's deadline passed before any worker started it; it was never run."""


class RequestTimeout(RequestError, TimeoutError):
    """Waiting for a request ran out of time.

    Attributes say what is known when the wait ended: ``status`` (pending, running, ...),
    ``worker_id`` (who runs it, if anyone), ``waited`` (seconds this wait lasted),
    ``age`` (seconds since submission) and ``running_for`` (seconds since a worker started it).
    Recipes from the reference design live on the handle: ``handle.wait(timeout=...)`` waits
    longer, ``handle.resubmit(priority=...)`` sends a fresh copy with a new id, and
    ``handle.cancel()`` gives up.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str,
        status: str | None = None,
        worker_id: str | None = None,
        waited: float | None = None,
        age: float | None = None,
        running_for: float | None = None,
        chunks: list[Any] | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.status = status
        self.worker_id = worker_id
        self.waited = waited
        self.age = age
        self.running_for = running_for
        self.chunks = chunks or []


__all__ = [
    "AccessDenied",
    "ConfigurationError",
    "EmbeddedRedisError",
    "EncodingError",
    "EngineError",
    "MalformedRecord",
    "RedisUnavailable",
    "RequestCancelled",
    "RequestError",
    "RequestExpired",
    "RequestFailed",
    "RequestNotFound",
    "RequestTimeout",
    "RtqError",
]


class UnknownQueue(ConfigurationError, LookupError):
    """No client or worker has ever used this queue under this prefix (a typo?)."""


class PayloadError(RtqError):
    """A large input or result stored by reference (object storage) cannot be written or
    read: missing (deleted, or its retention ran out), unreadable, damaged, or no payload
    store is configured. ``url`` names the object; the message says what to do."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


__all__ += ["PayloadError", "RedisOutOfMemory", "UnknownQueue", "WorkerLost"]
