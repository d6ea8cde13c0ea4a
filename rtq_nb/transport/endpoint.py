"""Where and how to connect: Redis URLs (secrets never printed), TLS, AUTH and SELECT.

URLs mean what they mean everywhere else (redis-py's own parser): ``redis://``, ``rediss://``
(TLS, with ``ssl_*`` query options), ``unix://``, a user and password, a database number.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any

from redis.connection import parse_url

__all__ = ["URL_ENV_VARS", "Endpoint", "configured_url", "resolve_url", "safe_url"]

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


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    return _PASSWORD.sub(r"\1***\3", url)


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
    """One server to connect to, from a Redis URL."""

    def __init__(self, url: str) -> None:
        kw: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
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

    def __repr__(self) -> str:
        return f"<Endpoint {safe_url(self.url)}>"
