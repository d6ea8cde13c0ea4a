"""The error-mapping table, masked URLs and the one backoff policy: no Redis."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
from redis import exceptions as rex

from rtq_nb.errors import (
    ConfigurationError,
    MalformedRecord,
    RedisOutOfMemory,
    RedisUnavailable,
    RtqError,
)
from rtq_nb.transport import Backoff, ScriptsLost, safe_url
from rtq_nb.transport.errors import map_error, raise_mapped

URL = "redis://user:s3cret@db.example:6379/2"


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (rex.NoScriptError("NOSCRIPT x"), ScriptsLost, "lost rtq_nb's scripts"),
        (rex.ReadOnlyError("READONLY replica"), ConfigurationError, "is a read-only replica"),
        (
            ssl.SSLCertVerificationError(1, "certificate verify failed"),
            ConfigurationError,
            "TLS with Redis at",
        ),
        (rex.ResponseError("OOM command not allowed"), RedisOutOfMemory, "is out of memory"),
        (
            rex.ResponseError("RTQ_MALFORMED rtq:{q}:wake holds a string, not a list"),
            MalformedRecord,
            "rtq:{q}:wake holds a string, not a list. Nothing was written",
        ),
        (rex.ResponseError("RTQ_INVALID timeout_ms 1e20"), ConfigurationError, "timeout_ms 1e20"),
        (rex.BusyLoadingError("LOADING"), RedisUnavailable, "cannot reach"),
        (rex.AuthenticationError("WRONGPASS"), ConfigurationError, "refused the credentials"),
        (
            rex.ResponseError("RTQ_DUPLICATE request id already exists: r1"),
            ConfigurationError,
            "request id already exists: r1: choose another request_id",
        ),
        (rex.ResponseError("WRONGTYPE x"), MalformedRecord, "holds another type than it should"),
        (rex.ResponseError("ERR unknown command"), RtqError, "refused a command: ERR unknown"),
        (rex.ConnectionError("reset"), RedisUnavailable, "cannot reach"),
        (ConnectionRefusedError(111, "refused"), RedisUnavailable, "cannot reach"),
        (rex.RedisError("odd"), RtqError, "Redis error"),
    ],
)
def test_the_mapping_table(exc: BaseException, kind: type[Exception], text: str) -> None:
    mapped = map_error(exc, URL)
    assert type(mapped) is kind and text in str(mapped)
    assert "s3cret" not in str(mapped)
    with pytest.raises(kind) as info:
        raise_mapped(exc, URL)
    assert info.value.__cause__ is exc


def test_other_exceptions_pass_through() -> None:
    err = ValueError("not ours")
    assert map_error(err, URL) is err
    ours = RtqError("ours")
    assert map_error(ours, URL) is ours


def test_safe_url_masks_only_the_password() -> None:
    assert safe_url(URL) == "redis://user:***@db.example:6379/2"
    assert safe_url("rediss://:pw@h:1/0") == "rediss://:***@h:1/0"
    assert safe_url("redis://h:6379/0") == "redis://h:6379/0"
    assert safe_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


def test_backoff_doubles_to_its_cap_and_gives_up_after_its_tries() -> None:
    async def go() -> list[float]:
        b = Backoff(start=0.001, cap=0.004, tries=4)
        delays = []
        err = RedisUnavailable("down")
        with pytest.raises(RedisUnavailable, match=r"down \(x: gave up after 4 tries"):
            while True:
                delays.append(b.delay)
                await b.retry(err, "x")
        b.reset()
        assert b.delay == 0.001 and not b.exhausted
        return delays

    assert asyncio.run(go()) == [0.001, 0.002, 0.004, 0.004, 0.004]


def test_backoff_waits_out_its_whole_timeout_then_gives_up() -> None:
    """The last wait is cut to end on the deadline: reconnect_timeout=0.3 tries for 0.3 s."""

    async def go() -> float:
        b = Backoff(start=0.2, timeout=0.3)
        t0 = time.monotonic()
        with pytest.raises(RedisUnavailable, match=r"gave up after 0.3 s of retries"):
            while True:
                await b.retry(RedisUnavailable("down."), "x")
        return time.monotonic() - t0

    spent = asyncio.run(go())
    assert 0.3 <= spent < 0.5
    assert not Backoff(start=10.0, timeout=1.0).exhausted  # a long first delay is shortened
    assert Backoff().deadline is None and not Backoff().exhausted
    assert Backoff(timeout=5).deadline is not None
    assert Backoff(timeout=5).deadline > time.monotonic()  # type: ignore[operator]
