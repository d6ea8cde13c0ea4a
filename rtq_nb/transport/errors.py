"""The one error boundary: Redis replies and socket failures become :mod:`rtq_nb.errors`.

Two tables, read top to bottom: ``REPLY_ERRORS`` names the redis-py exception class for a RESP
error reply by its prefix (hiredis builds it while parsing), and ``RULES`` turns any Redis or
socket exception into an :class:`~rtq_nb.errors.RtqError` (``raise ... from`` keeps the
original attached). URLs in messages have their password masked.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from typing import NoReturn

from redis import exceptions as rex

from rtq_nb.errors import (
    AccessDenied,
    ConfigurationError,
    MalformedRecord,
    RedisOutOfMemory,
    RedisUnavailable,
    RtqError,
)
from rtq_nb.protocol.scripts import duplicate_id, invalid, malformed
from rtq_nb.transport.endpoint import is_sentinel_url, safe_url
from rtq_nb.transport.sentinel import NotPrimary

__all__ = [
    "REPLY_ERRORS",
    "RULES",
    "ScriptsLost",
    "map_error",
    "mapped_errors",
    "raise_mapped",
    "reply_error",
]


class ScriptsLost(RedisUnavailable):
    """Redis had lost rtq_nb's scripts (restarted or flushed); they are loaded again before the
    next command, so a retry succeeds. The failed script did not run."""


REPLY_ERRORS: tuple[tuple[str, type[rex.RedisError]], ...] = (
    ("NOSCRIPT", rex.NoScriptError),
    ("LOADING", rex.BusyLoadingError),  # a restarting server: a connection-level error
    ("NOAUTH", rex.AuthenticationError),
    ("WRONGPASS", rex.AuthenticationError),
    ("READONLY", rex.ReadOnlyError),  # a replica (after a failover): retry elsewhere
    ("NOPERM", rex.NoPermissionError),  # the ACL user lacks a command, key or channel
    ("ERR The user executing the script can't", rex.NoPermissionError),  # same, in Lua (7.0)
)


def reply_error(message: str) -> rex.RedisError:
    """The redis-py exception for an error reply (hiredis calls this while parsing)."""
    for prefix, cls in REPLY_ERRORS:
        if message.startswith(prefix):
            return cls(message)
    return rex.ResponseError(message)


def _text(exc: BaseException) -> str:
    """An exception's text without its closing full stop (messages go on after it)."""
    return str(exc).rstrip(". ")


def _refused(exc: BaseException, url: str) -> RtqError:
    msg = str(exc)
    dup = duplicate_id(msg)
    if dup is not None:
        return ConfigurationError(f"{dup}: choose another request_id (nothing was overwritten)")
    damaged = malformed(msg)
    if damaged is not None:
        return MalformedRecord(
            f"Redis at {url} holds data that does not follow rtq_nb's wire format: {damaged}. "
            "Nothing was written; delete or repair that key (or use another prefix)"
        )
    if msg.startswith("WRONGTYPE"):
        return MalformedRecord(
            f"Redis at {url} holds data that does not follow rtq_nb's wire format: a key read "
            f"holds another type than it should ({_text(exc)}); delete or repair it"
        )
    bad_arg = invalid(msg)
    if bad_arg is not None:
        return ConfigurationError(f"refused before anything was written: invalid {bad_arg}")
    if msg.startswith("OOM") or "OOM command not allowed" in msg:
        return RedisOutOfMemory(
            f"Redis at {url} is out of memory (maxmemory reached, eviction off): {_text(exc)}. "
            "Nothing was written; free memory, raise maxmemory, or let workers drain the queue"
        )
    return RtqError(f"Redis at {url} refused a command: {msg}")


def _credentials(exc: BaseException, url: str) -> RtqError:  # retrying cannot help
    return ConfigurationError(
        f"Redis at {url} refused the credentials: {_text(exc)}. Put the right password in "
        "the URL (redis://:password@host:port/db or redis://user:password@host:port/db)."
    )


def _unreachable(exc: BaseException, url: str) -> RtqError:
    return RedisUnavailable(
        f"cannot reach Redis at {url}: {_text(exc)}. Check that it runs, or pass url=... "
        f"(or set RTQ_REDIS_URL); with no URL rtq_nb starts an embedded redis-server."
    )


def _replica(exc: BaseException, url: str) -> RtqError:
    if is_sentinel_url(url):  # demoted by a failover: the sentinels name the new primary
        return _moved(exc, url)
    return ConfigurationError(
        f"Redis at {url} is a read-only replica ({exc}): point the URL at the primary"
    )


def _moved(exc: BaseException, url: str) -> RtqError:
    return RedisUnavailable(
        f"the primary of {url} moved ({_text(exc)}): asking the sentinels for the new one"
    )


def _tls(exc: BaseException, url: str) -> RtqError:
    return ConfigurationError(
        f"TLS with Redis at {url} failed: {_text(exc)}. If the server's certificate is "
        "signed by your own CA, add ?ssl_ca_certs=/path/to/ca.pem to the rediss:// URL "
        "(and ssl_certfile / ssl_keyfile for mutual TLS); ?ssl_cert_reqs=none skips "
        "verification (tests only)"
    )


def _denied(exc: BaseException, url: str) -> RtqError:  # retrying cannot help
    return AccessDenied(
        f"Redis at {url} refused a command for lack of an ACL permission: {_text(exc)}. "
        "Connect as a user made for this use (client, worker or monitor): create it with the "
        "lines `rtq-nb acl --queue QUEUE --role client|worker|monitor` prints"
    )


def _scripts_lost(exc: BaseException, url: str) -> RtqError:
    return ScriptsLost(
        f"Redis at {url} had lost rtq_nb's scripts (restarted or flushed); they are "
        "loaded again: retry"
    )


def _unreachable_or_tls(exc: BaseException, url: str) -> RtqError:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return _tls(exc, url)
    return _unreachable(exc, url)


def _other(exc: BaseException, url: str) -> RtqError:
    return RtqError(f"Redis error at {url}: {exc}")


Rule = tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[..., RtqError]]
RULES: tuple[Rule, ...] = (
    (rex.NoScriptError, _scripts_lost),
    (rex.ReadOnlyError, _replica),  # retried for a Sentinel URL (the primary moved)
    (NotPrimary, _moved),
    (rex.BusyLoadingError, _unreachable),
    (ssl.SSLError, _tls),
    (rex.AuthenticationError, _credentials),
    (rex.NoPermissionError, _denied),
    (rex.ResponseError, _refused),
    ((rex.ConnectionError, rex.TimeoutError, OSError), _unreachable_or_tls),
    (rex.RedisError, _other),
)


def map_error(exc: BaseException, url: str) -> BaseException:
    """The rtq_nb exception for a Redis or socket exception; others pass unchanged."""
    if isinstance(exc, RtqError):
        return exc
    for kinds, build in RULES:
        if isinstance(exc, kinds):
            return build(exc, safe_url(url))
    return exc


def raise_mapped(exc: BaseException, url: str) -> NoReturn:
    """Raise the rtq_nb exception for ``exc`` (chained), or ``exc`` itself."""
    mapped = map_error(exc, url)
    if mapped is exc:
        raise exc
    raise mapped from exc


@contextlib.contextmanager
def mapped_errors(url: str) -> Iterator[None]:
    """Map Redis and socket exceptions raised inside the block (see :func:`map_error`)."""
    try:
        yield
    except (rex.RedisError, OSError) as exc:
        raise_mapped(exc, url)
