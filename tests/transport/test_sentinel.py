"""Redis Sentinel (``redis+sentinel://``) against a real deployment on loopback: one primary,
one replica, three sentinels (``sentinel_servers``). URLs parse, or fail naming what is wrong
with passwords masked; clients (sync and async), workers and the command line work on a
Sentinel URL; a ``SENTINEL FAILOVER`` under a load of calls and a stream in flight loses,
duplicates and re-runs nothing, and callers resume by themselves (the recovery time is
printed: run with ``-s`` to see it)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import wait_until, worker_cmd
from redis import exceptions as rex

from rtq_nb import AsyncClient, Client, Worker
from rtq_nb.demo import fake_answer, fake_llm
from rtq_nb.errors import ConfigurationError, RedisUnavailable
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport.endpoint import Endpoint, parse_sentinel_url, safe_url
from rtq_nb.transport.errors import map_error
from rtq_nb.transport.sentinel import NotPrimary, Resolver
from tests.transport.sentinel_servers import (
    DATA_PASSWORD,
    SENTINEL_PASSWORD,
    SERVICE,
    Counting,
    Sentinels,
    sentinels,
    tls_sentinel,
)


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinels]:
    yield from sentinels(tmp_path_factory.mktemp("sentinel"))


def resolver(c: Client) -> Resolver:
    r = c.async_client.conn.endpoint.sentinel  # type: ignore[attr-defined]
    assert r is not None
    return r


# ---- URLs (no servers) ------------------------------------------------------------------------
def test_sentinel_url_forms() -> None:
    spec, data = parse_sentinel_url("redis+sentinel://h1:5000,h2:5001/mymaster")
    assert spec.sentinels == (("h1", 5000), ("h2", 5001)) and spec.service == "mymaster"
    assert spec.password is None and data == "redis://sentinel-primary/0"
    spec, data = parse_sentinel_url(
        "rediss+sentinel://app:p%40ss@s1,[::1]:5002/svc/3?ssl_ca_certs=/ca.pem"
        "&sentinel_password=spw&sentinel_username=sen"
    )
    assert spec.sentinels == (("s1", 26379), ("::1", 5002))  # the sentinels' default port
    assert (spec.username, spec.password, spec.service) == ("sen", "spw", "svc")
    assert data == "rediss://app:p%40ss@sentinel-primary/3?ssl_ca_certs=%2Fca.pem"
    ep = Endpoint("rediss+sentinel://app:pw@127.0.0.1:1/svc/2?ssl_cert_reqs=none")
    assert ep.tls is not None and ep.sentinel is not None
    assert ep.hello == [("AUTH", "app", "pw"), ("SELECT", 2)]  # to the data nodes
    assert ep.sentinel.spec.sentinels == (("127.0.0.1", 1),)
    assert Endpoint("redis://127.0.0.1:1/0").sentinel is None  # plain URLs: no resolver


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:secret@h1:1,h2:2", "names no service"),
        ("redis+sentinel://:secret@h1:1/", "names no service"),
        ("redis+sentinel://:secret@/svc", "names no sentinel"),
        ("redis+sentinel:///svc?sentinel_password=secret", "names no sentinel"),
        ("redis+sentinel://:secret@h1:port/svc", "'h1:port' is not a sentinel address"),
        ("redis+sentinel://:secret@h1:1/svc/x", "database 'x' is not a number"),
    ],
)
def test_bad_sentinel_urls_say_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as info:
        Client(url)
    assert "secret" not in str(info.value) and "redis+sentinel://" in str(info.value)


def test_passwords_are_masked_and_readonly_means_rediscover() -> None:
    url = "redis+sentinel://user:pw1@h1:1,h2:2/svc/0?sentinel_password=pw2&ssl=x"
    shown = safe_url(url)
    assert "pw1" not in shown and "pw2" not in shown
    assert shown == "redis+sentinel://user:***@h1:1,h2:2/svc/0?sentinel_password=***&ssl=x"
    assert safe_url("redis://:p@h:1/0?password=q") == "redis://:***@h:1/0?password=***"
    demoted = rex.ReadOnlyError("READONLY You can't write against a read only replica.")
    assert isinstance(map_error(demoted, url), RedisUnavailable)  # retried: rediscover
    assert type(map_error(demoted, "redis://h:1/0")) is ConfigurationError  # as before
    moved = map_error(NotPrimary("h:1 is a slave"), url)
    assert isinstance(moved, RedisUnavailable) and "pw" not in str(moved)


# ---- a real deployment ------------------------------------------------------------------------
def test_client_worker_and_async_client_on_a_sentinel_url(dep: Sentinels, prefix: str) -> None:
    url = dep.url()
    with Client(url, prefix=prefix, timeout=20) as c, Worker(fake_llm, url, prefix=prefix):
        assert DATA_PASSWORD not in repr(c) and SENTINEL_PASSWORD not in repr(c)
        assert c.call("sync", params={"rate": 0, "tokens": 3}) == "".join(fake_answer("sync", 3))
        assert resolver(c).addr == ("127.0.0.1", dep.primary_port())
        text = "".join(c.stream("streamed", params={"rate": 0, "tokens": 30}))
        assert text == "".join(fake_answer("streamed", 30))

        async def use_async() -> Any:
            async with AsyncClient(url, prefix=prefix, timeout=20) as ac:
                return await ac.call("async", params={"rate": 0, "tokens": 2})

        assert asyncio.run(use_async()) == "".join(fake_answer("async", 2))
    with Client(dep.url(db=1), prefix=prefix) as c1:  # the database number reaches the primary
        c1.submit("in db 1")
        with dep.node(dep.primary_port()) as r:
            r.select(1)  # type: ignore[no-untyped-call]
            assert r.zcard(Keys(prefix, "default").pending) == 1


def test_command_line_on_a_sentinel_url(dep: Sentinels, prefix: str) -> None:
    """``rtq-nb worker``, ``status`` and ``metrics`` take the URL as it is."""
    url = dep.url()
    cli = [sys.executable, "-m", "rtq_nb.cli"]
    worker = subprocess.Popen(
        worker_cmd(url, prefix, "rtq_nb.demo:aecho"), stdout=subprocess.PIPE, text=True
    )
    metrics = subprocess.Popen(
        [*cli, "metrics", "--url", url, "--prefix", prefix, "--port", "0", "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None and metrics.stdout is not None
        assert worker.stdout.readline().startswith("READY worker=")
        with Client(url, prefix=prefix, timeout=20) as c:
            assert c.call("via cli") == "via cli"
        status = subprocess.run([*cli, "status", "--url", url, "--prefix", prefix],
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert SENTINEL_PASSWORD not in status.stdout + status.stderr
        assert "sentinel_password=***" in status.stdout
        scrape = metrics.stdout.readline().split("=", 1)[1].strip()
        with urllib.request.urlopen(scrape, timeout=10) as r:
            text = r.read().decode()
        assert 'rtq_finished_total{queue="default",status="completed"} 1.0' in text
        assert 'rtq_up{queue="default"} 1.0' in text
    finally:
        for proc in (worker, metrics):
            proc.terminate()
            assert proc.wait(30) == 0
            if proc.stdout is not None:
                proc.stdout.close()


def test_sentinel_problems_fail_fast_or_are_skipped(dep: Sentinels, prefix: str) -> None:
    hosts = ",".join(f"127.0.0.1:{p}" for p in dep.sentinel_ports)
    wrong = f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{dep.service}?sentinel_password=nope"
    t0 = time.monotonic()
    with Client(wrong, prefix=prefix, reconnect_timeout=30) as c:
        with pytest.raises(ConfigurationError, match="sentinel_password") as info:
            c.queues()
        assert "nope" not in str(info.value)
    unknown = dep.url().replace(f"/{dep.service}/", "/no-such-service/")
    with Client(unknown, prefix=prefix) as c, pytest.raises(ConfigurationError, match="no-such"):
        c.call("x")  # the sync call()'s own path too
    assert time.monotonic() - t0 < 15  # refused at once, not retried like an outage
    dead = dep.url().replace("@", "@127.0.0.1:1,", 1)
    with Client(dead, prefix=prefix) as c:  # a sentinel that is down is skipped
        assert c.queues() == []


def test_a_stale_primary_is_refused_and_rediscovered(
    dep: Sentinels, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A link's ROLE check refuses a replica named as the primary; a user that may not run
    ROLE writes there once, and READONLY sends it back to the sentinels."""
    primary = dep.primary_port()
    (replica,) = [p for p in dep.data_ports if p != primary]
    for port in dep.data_ports:  # ACL users are not replicated
        with dep.node(port) as r:
            r.execute_command("ACL", "SETUSER", "norole", "on", ">pw", "~*", "&*", "+@all", "-role")
    for userinfo, sign in ((f":{DATA_PASSWORD}", "is a replica"), ("norole:pw", "READONLY")):
        url = dep.url().replace(f":{DATA_PASSWORD}@", f"{userinfo}@")
        with Client(url, prefix=prefix, timeout=20) as c, Worker(fake_llm, url, prefix=prefix):
            assert c.call("before", params={"rate": 0, "tokens": 1})
            r = resolver(c)
        r.found(("127.0.0.1", replica))  # as if a sentinel's answer were stale
        caplog.clear()
        with Client(url, prefix=prefix, timeout=20) as c, Worker(fake_llm, url, prefix=prefix):
            assert c.call("after", params={"rate": 0, "tokens": 1})
            assert resolver(c).addr == ("127.0.0.1", primary)
        assert sign in caplog.text and "asking the sentinels" in caplog.text


def test_rediss_sentinel_speaks_tls_to_the_primary(
    tmp_path_factory: pytest.TempPathFactory, prefix: str
) -> None:
    for port, ca in tls_sentinel(tmp_path_factory.mktemp("sentinel-tls")):
        url = f"rediss+sentinel://127.0.0.1:{port}/{SERVICE}/0"
        with Client(url, prefix=prefix, reconnect_timeout=30) as c:
            t0 = time.monotonic()
            with pytest.raises(ConfigurationError, match=r"TLS with Redis at rediss\+sentinel"):
                c.call("x")  # our own CA, not in the URL: refused at once, with the fix
            assert time.monotonic() - t0 < 10
        url += f"?ssl_ca_certs={ca}"
        with Client(url, prefix=prefix) as c, Worker(fake_llm, url, prefix=prefix):
            assert c.call("tls", params={"rate": 0, "tokens": 2}) == "".join(fake_answer("tls", 2))
            assert c.submit([1], params={"rate": 0, "tokens": 1}).result(timeout=10)


# ---- failover -----------------------------------------------------------------------------------


def test_failover_under_load(dep: Sentinels, prefix: str) -> None:
    dep.wait_ready()
    url = dep.url()
    n = 1500
    handler = Counting()
    done: dict[int, tuple[Any, float]] = {}
    problems: list[BaseException] = []
    streamed: list[str] = []
    workers = [
        Worker(handler, url, prefix=prefix, queue="calls", concurrency=4).start(),
        Worker(fake_llm, url, prefix=prefix, queue="streams").start(),
    ]
    client = Client(url, prefix=prefix, queue="calls", timeout=60)

    def calls(start: int, step: int, submit: bool) -> None:
        try:
            for i in range(start, n, step):  # sync call() (blocking sockets) / async submit
                got = client.submit(i).result(timeout=60) if submit else client.call(i)
                done[i] = (got, time.monotonic())
        except BaseException as exc:
            problems.append(exc)

    def stream() -> None:
        try:
            for chunk in client.stream("during", queue="streams", params={"tokens": 150}):
                streamed.append(chunk)  # 150 tokens at 50/s: 3 s, the failover in the middle
        except BaseException as exc:
            problems.append(exc)

    threads = [threading.Thread(target=calls, args=(k, 2, k == 1)) for k in (0, 1)]
    threads.append(threading.Thread(target=stream))
    try:
        wait_until(lambda: resolver(client).subscriptions == 3, what="the failover events")
        for t in threads:
            t.start()
        wait_until(lambda: len(done) > n // 4 and len(streamed) > 10, what="a load")
        old, new = dep.failover()
        t_failover = time.monotonic()
        dep.wait_switched(new)
        for t in threads:
            t.join(120)
        assert not problems, problems
        assert [done[i][0] for i in range(n)] == list(range(n))  # each call its own value
        assert max(handler.runs.values()) == 1 and len(handler.runs) == n  # each ran once
        assert "".join(streamed) == "".join(fake_answer("during", 150))  # the whole text
        assert client.call("after") == "after"  # the worker keeps serving on the new primary
        with dep.node(new) as r:
            records = [r.hgetall(k) for k in r.scan_iter(Keys(prefix, "calls").request("*"))]
        attempts = collections.Counter(int(rec["attempts"]) for rec in records)
        assert len(records) == n + 1 and set(attempts) <= {1, 2}, attempts
        # recovery: from the failover command to the first completion after the longest gap
        times = sorted(t for _, t in done.values())
        gap, end = max((b - a, b) for a, b in itertools.pairwise(times) if b > t_failover)
        print(
            f"\nfailover {old} -> {new}: calls resumed {end - t_failover:.3f} s after "
            f"SENTINEL FAILOVER (longest pause {gap:.3f} s); {n} calls, none lost or run "
            f"twice; attempts {dict(attempts)}"
        )
        assert end - t_failover < 15
    finally:
        client.close()
        for w in workers:
            w.stop()
