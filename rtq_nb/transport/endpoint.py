"""Where and how to connect: Redis URLs (secrets never printed), TLS, AUTH and SELECT.

URLs mean what they mean everywhere else (redis-py's own parser): ``redis://``, ``rediss://``
(TLS, with ``ssl_*`` query options), ``unix://``, a user and password, a database number.
Sentinel: ``redis+sentinel://[user:password@]host1:port1,host2:port2/<service>[/db]``
(``rediss+sentinel://`` for TLS to the data nodes), the sentinels' own credentials in the
``sentinel_username`` / ``sentinel_password`` query options; the primary's address comes
from a :class:`~rtq_nb.transport.sentinel.Resolver`.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from redis.connection import parse_url

from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.sentinel import Resolver, resolver_for
from rtq_nb.transport.watcher import Addr, SentinelSpec

__all__ = [
    "SENTINEL_PORT",
    "URL_ENV_VARS",
    "Endpoint",
    "configured_url",
    "is_sentinel_url",
    "parse_sentinel_url",
    "resolve_url",
    "safe_url",
]

URL_ENV_VARS = ("RTQ_REDIS_URL", "REDIS_URL")


def configured_url(url: str | None = None) -> str | None:
    """The Redis URL from the argument, else ``RTQ_REDIS_URL``, else ``REDIS_URL``, else None."""
    if url:
        return url
    for name in URL_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


def resolve_url(url: str | None = None) -> str:
    """A usable Redis URL; starts the process-wide embedded redis-server when none is set."""
    found = configured_url(url)
    if found:
        return found
    from rtq_nb.transport.embedded import default_server

    return default_server().url


_PASSWORD = re.compile(r"^([a-z+]+://[^:/@]*:)([^@/]+)(@)", re.I)
_QUERY_PASSWORD = re.compile(r"([?&][a-z_]*password=)([^&#]*)", re.I)


def safe_url(url: str) -> str:
    """``url`` with its passwords masked (the URL's own and ``*password=`` query options),
    for messages and logs."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***\3", url))


SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
SENTINEL_PORT = 26379
SENTINEL_FORM = "redis+sentinel://[user:password@]host1:port1,host2:port2/<service>[/db]"


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names a Sentinel-managed primary (``redis+sentinel://``, ``rediss+...``)."""
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def _sentinel_host(text: str, url: str) -> Addr:
    host, port = text, ""
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    elif ":" in text:
        host, _, port = text.rpartition(":")
    try:
        number = int(port) if port else SENTINEL_PORT
    except ValueError:
        number = 0
    if not host or not 0 < number < 65536:
        raise ConfigurationError(
            f"{safe_url(url)}: {text!r} is not a sentinel address: use host:port (the port "
            f"defaults to {SENTINEL_PORT}), several separated by commas ({SENTINEL_FORM})"
        )
    return host, number


def parse_sentinel_url(url: str) -> tuple[SentinelSpec, str]:
    """The sentinels and service a Sentinel URL names, and the URL of the data nodes (the
    same credentials, database and query options, with a placeholder host)."""
    scheme, _, rest = url.partition("://")
    rest = rest.partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinels = tuple(_sentinel_host(h.strip(), url) for h in hosts.split(",") if h.strip())
    if not sentinels:
        raise ConfigurationError(f"{safe_url(url)} names no sentinel: use {SENTINEL_FORM}")
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ConfigurationError(
            f"{safe_url(url)} names no service (the name the sentinels monitor the primary "
            f"by, as in `sentinel monitor <service> ...`): use {SENTINEL_FORM}"
        )
    if db and not db.isdigit():
        raise ConfigurationError(f"{safe_url(url)}: database {db!r} is not a number")
    options = parse_qsl(query, keep_blank_values=True)
    own = {k: v for k, v in options if k in ("sentinel_username", "sentinel_password")}
    spec = SentinelSpec(
        sentinels, unquote(service), own.get("sentinel_username"), own.get("sentinel_password")
    )
    rest_query = urlencode([(k, v) for k, v in options if k not in own], quote_via=quote)
    data = f"{SENTINEL_SCHEMES[scheme.lower()]}://{userinfo}{at}sentinel-primary/{db or 0}"
    return spec, data + (f"?{rest_query}" if rest_query else "")


def _ssl_context(kw: dict[str, Any]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=kw.get("ssl_ca_certs"))
    reqs = kw.get("ssl_cert_reqs", "required")
    reqs = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(str(reqs), reqs)
    if reqs in (ssl.CERT_NONE, ssl.CERT_OPTIONAL) or kw.get("ssl_check_hostname") is False:
        ctx.check_hostname = False
    if reqs in (ssl.CERT_NONE, ssl.CERT_OPTIONAL):
        ctx.verify_mode = reqs
    if kw.get("ssl_certfile"):
        ctx.load_cert_chain(kw["ssl_certfile"], kw.get("ssl_keyfile"))
    return ctx


class Endpoint:
    """One server to connect to, from a Redis URL (for a Sentinel URL: the primary, wherever
    its ``sentinel`` resolver says it is)."""

    def __init__(self, url: str) -> None:
        spec, data_url = parse_sentinel_url(url) if is_sentinel_url(url) else (None, url)
        kw: dict[str, Any] = parse_url(data_url)  # type: ignore[no-untyped-call]
        self.url = url
        self.path: str | None = kw.get("path")
        self.host = str(kw.get("host", "localhost"))
        self.port = int(kw.get("port", 6379))
        tls_class = getattr(kw.get("connection_class"), "__name__", "")
        self.tls = _ssl_context(kw) if "SSL" in tls_class else None
        self.hello: list[tuple[Any, ...]] = []  # sent once, right after connecting
        if kw.get("password"):
            user = kw.get("username")
            self.hello.append(("AUTH", user, kw["password"]) if user else ("AUTH", kw["password"]))
        if int(kw.get("db") or 0):
            self.hello.append(("SELECT", int(kw["db"])))
        self.sentinel: Resolver | None = None if spec is None else resolver_for(spec)

    def __repr__(self) -> str:
        return f"<Endpoint {safe_url(self.url)}>"
