"""A real Sentinel deployment on loopback for tests: one primary, one replica, three sentinels
(quorum 2), Debian's redis-server 7 (``redis-sentinel`` is ``redis-server --sentinel``).

The data nodes and the sentinels each have a password (so the URL's password and the
``sentinel_password`` option are both exercised). Every wait here is on a condition the
servers report (PING, ROLE, what the sentinels know), polled, never a bare sleep.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rtq_nb import Request
from rtq_nb.transport.embedded import free_port
from tests.transport.polling import wait_for

__all__ = [
    "SERVER",
    "SERVICE",
    "Counting",
    "Sentinels",
    "sentinels",
    "tls_sentinel",
    "wait_for",
]

SERVER = "/usr/bin/redis-server"  # Debian's 7.0 (CI installs it)
SERVICE = "rtqsvc"
DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"


class Sentinels:
    """The running deployment: ports, URLs, admin connections, failover."""

    def __init__(self, d: Path, down_after_ms: int = 1000) -> None:
        self.dir = d
        self.service = SERVICE
        self.down_after_ms = down_after_ms
        self.data_ports = [free_port(), free_port()]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen[bytes]] = []

    # ---- URLs and connections ---------------------------------------------------------------
    def url(self, db: int = 0, query: str = "", scheme: str = "redis+sentinel") -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        q = f"sentinel_password={SENTINEL_PASSWORD}" + (f"&{query}" if query else "")
        return f"{scheme}://:{DATA_PASSWORD}@{hosts}/{self.service}/{db}?{q}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=DATA_PASSWORD, decode_responses=True)

    def sentinel(self, i: int) -> redis.Redis:
        port = self.sentinel_ports[i]
        return redis.Redis(port=port, password=SENTINEL_PASSWORD, decode_responses=True)

    def primary_port(self, i: int = 0) -> int:
        with self.sentinel(i) as s:
            _host, port = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def role(self, port: int) -> str:
        with self.node(port) as r:
            return str(r.execute_command("ROLE")[0])

    # ---- starting and stopping --------------------------------------------------------------
    def _spawn(self, args: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(
                args, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    def _link_up(self, port: int) -> bool:
        with self.node(port) as r:
            return r.info("replication").get("master_link_status") == "up"

    def start(self) -> None:
        primary, replica = self.data_ports
        for port in self.data_ports:
            args = [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.dir), "--logfile", f"redis-{port}.log",
                    "--dbfilename", f"dump-{port}.rdb", "--requirepass", DATA_PASSWORD,
                    "--masterauth", DATA_PASSWORD]  # fmt: skip
            if port == replica:
                args += ["--replicaof", "127.0.0.1", str(primary)]
            self._spawn(args)
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile sentinel-{port}.log\n"
                f"requirepass {SENTINEL_PASSWORD}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
            )
        wait_for("the data nodes", lambda: all(self.node(p).ping() for p in self.data_ports))
        wait_for("the replica's link", lambda: self._link_up(replica))  # seen by the first INFO
        for port in self.sentinel_ports:
            self._spawn([SERVER, str(self.dir / f"sentinel-{port}.conf"), "--sentinel"])
        self.wait_ready()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    # ---- conditions -------------------------------------------------------------------------
    def _ready(self) -> bool:
        """Every sentinel agrees on the primary, knows the other two sentinels, and sees the
        other node as a healthy replica of that primary (so a failover can pick it)."""
        primary = self.primary_port()
        if self.role(primary) != "master":
            return False
        for i in range(len(self.sentinel_ports)):
            if self.primary_port(i) != primary:
                return False
            with self.sentinel(i) as s:
                if len(s.execute_command("SENTINEL", "SENTINELS", self.service)) != 2:
                    return False
                replicas = s.execute_command("SENTINEL", "REPLICAS", self.service)
            good = [
                r
                for r in map(_pairs, replicas)
                if r["flags"] == "slave"
                and r["master-link-status"] == "ok"
                and int(r["master-port"]) == primary
            ]
            if not good:
                return False
        return True

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until a failover can be started (after a failover the old primary is turned into
        a replica by the sentinels some seconds later)."""
        wait_for("the sentinels to agree on a primary with a healthy replica", self._ready, timeout)

    def failover(self) -> tuple[int, int]:
        """``SENTINEL FAILOVER`` (returns at once); (old, new) primary ports."""
        old = self.primary_port()
        with self.sentinel(0) as s:
            assert s.execute_command("SENTINEL", "FAILOVER", self.service)
        (new,) = [p for p in self.data_ports if p != old]
        return old, new

    def wait_switched(self, new: int, timeout: float = 30.0) -> None:
        """Until every sentinel names ``new`` the primary and it says it is one."""
        wait_for(
            "the failover to complete",
            lambda: (
                self.role(new) == "master"
                and all(self.primary_port(i) == new for i in range(len(self.sentinel_ports)))
            ),
            timeout,
        )


def _pairs(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def sentinels(tmp: Path, down_after_ms: int = 1000) -> Iterator[Sentinels]:
    """Start the deployment in ``tmp`` (a module fixture's body); skip when not installed.

    ``down_after_ms``: the sentinels' ``down-after-milliseconds``. 1000 is fine for
    ``SENTINEL FAILOVER``; after a primary is *killed*, keep it above 1000: a sentinel
    reconnects at most once per second (its fixed ping period) and, right after it switches
    to the new primary, counts that second against it, so at 1000 it can find the new
    primary "down" before its first PONG (see test_failover_durability)."""
    if not Path(SERVER).exists():
        pytest.skip("needs Debian's redis-server 7 (apt-get install redis-server)")
    dep = Sentinels(tmp, down_after_ms)
    try:
        dep.start()
        yield dep
    finally:
        with contextlib.suppress(Exception):
            dep.stop()


# ---- TLS to the data nodes (rediss+sentinel://) ----------------------------------------------
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(d: Path) -> None:
    """ca.crt, and server.crt/.key for 127.0.0.1 signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=rtq-sentinel-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=d)  # fmt: skip


def tls_sentinel(tmp: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only primary watched by one sentinel that talks TLS to it (``tls-replication``),
    itself listening in plain TCP: (the sentinel's port, the CA file)."""
    if not Path(SERVER).exists() or not shutil.which("openssl"):
        pytest.skip("needs Debian's redis-server 7 and openssl")
    _certificates(tmp)
    tls = ["--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
           "--tls-ca-cert-file", "ca.crt"]  # fmt: skip
    data, port = free_port(), free_port()
    conf = tmp / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp}\nlogfile sentinel.log\ntls-replication yes\n"
        "tls-cert-file server.crt\ntls-key-file server.key\ntls-ca-cert-file ca.crt\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {data} 1\n"
    )
    out = subprocess.DEVNULL
    procs = [
        subprocess.Popen([SERVER, "--port", "0", "--tls-port", str(data), "--bind", "127.0.0.1",
                          *tls, "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                          "--dir", str(tmp)], cwd=tmp, stdout=out, stderr=out),
        subprocess.Popen([SERVER, str(conf), "--sentinel"], cwd=tmp, stdout=out, stderr=out),
    ]  # fmt: skip

    def watching() -> bool:  # the sentinel reaches the primary over TLS
        with redis.Redis(port=port, decode_responses=True) as s:
            master = _pairs(s.execute_command("SENTINEL", "MASTER", SERVICE))
        return master["flags"] == "master" and int(master["info-refresh"]) < 10_000

    try:
        wait_for("the sentinel to watch the TLS primary", watching)
        yield port, tmp / "ca.crt"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


class Counting:
    """A handler that records every input it runs (thread-safe): how often each ran."""

    def __init__(self) -> None:
        self.runs: collections.Counter[Any] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Any:
        with self.lock:
            self.runs[request.input] += 1
        return request.input
