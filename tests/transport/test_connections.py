"""The hot-path transports (``transport.link`` on asyncio, ``transport.blocking``, blocking)
against a real redis-server: TCP with a password and a database number, wrong credentials,
an error reply in front of a blocking read, and scripts flushed under a running client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from rtq_nb import AsyncClient, Client, Worker
from rtq_nb.demo import aecho, echo
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport.embedded import EmbeddedRedis


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[EmbeddedRedis, str]]:
    """A TCP redis-server that requires a password; rtq_nb uses database 3 on it."""
    with EmbeddedRedis(tcp=True) as srv:
        redis.Redis.from_url(srv.url).config_set("requirepass", "s3cret")
        yield srv, f"redis://:s3cret@127.0.0.1:{srv.port}/3"


def test_tcp_with_password_and_database(secured: tuple[EmbeddedRedis, str]) -> None:
    srv, url = secured
    with Worker(echo, url, prefix="sec"), Client(url, prefix="sec", timeout=30) as c:
        assert c.call("sync path") == "sync path"  # blocking-socket link
        assert c.submit({"a": 1}).result() == {"a": 1}  # asyncio link (loop thread)
        assert "".join(c.stream("one two three")) == "one two three"

        async def via_async() -> Any:
            async with AsyncClient(url, prefix="sec", timeout=30) as ac:
                return await ac.call([1, 2])

        assert asyncio.run(via_async()) == [1, 2]
    raw = redis.Redis(host="127.0.0.1", port=srv.port, password="s3cret", db=3)
    assert raw.exists(Keys("sec", "default").stats)  # the keys live in database 3 ...
    assert not redis.Redis(host="127.0.0.1", port=srv.port, password="s3cret").keys("sec:*")


def test_wrong_password_is_a_configuration_error(secured: tuple[EmbeddedRedis, str]) -> None:
    srv, _ = secured
    bad = f"redis://:nope@127.0.0.1:{srv.port}/3"
    with Client(bad, prefix="sec", timeout=5) as c, pytest.raises(ConfigurationError) as err:
        c.call("x")
    assert "refused the credentials" in str(err.value)
    assert "password" in str(err.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_duplicate_id_in_call_fails_at_once_and_keeps_the_original(
    mode: str, client: Client, raw: Any, prefix: str
) -> None:
    """The submit's error reply comes back before the pipelined BLPOP could block: the link
    is dropped instead of waiting, and the existing request is untouched."""
    first = client.submit("original", request_id="dup-1")
    with pytest.raises(ConfigurationError, match="already exists"):
        if mode == "sync":
            client.call("impostor", request_id="dup-1")
        else:
            client._portal.call(client._async.call("impostor", request_id="dup-1"))
    rec = raw.hgetall(Keys(prefix, "default").request("dup-1"))
    assert rec["input"] == '"original"' and rec["status"] == "pending"
    assert client.pending_count() == 1
    assert first.id == "dup-1"


def test_scripts_flushed_under_a_running_client_and_worker(
    client: Client, raw: Any, start_worker: Callable[..., Worker]
) -> None:
    start_worker(aecho)
    assert client.call("before") == "before"
    raw.script_flush()  # as after a restart: every EVALSHA now gets NOSCRIPT
    assert client.call("sync after") == "sync after"
    raw.script_flush()
    assert client.submit("async after").result() == "async after"
    raw.script_flush()
    assert "".join(client.stream("stream after")) == "stream after"
