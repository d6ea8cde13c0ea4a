"""Fault suite: real worker processes killed with SIGKILL, a real redis-server restarted with
AOF, garbage injected into the queue. Figures are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
from typing import Any

import pytest
import redis

from rtq_nb import AsyncClient, Client, Status, Worker, WorkerInfo
from rtq_nb.demo import echo, fake_answer
from rtq_nb.errors import WorkerLost
from rtq_nb.protocol.keys import Keys
from rtq_nb.transport.embedded import EmbeddedRedis
from tests.conftest import across_restart, wait_until, worker_cmd


def pid_of(worker_id: str) -> int:
    return int(worker_id.rsplit("-", 2)[1])


def spawn(url: str, prefix: str, handler: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(worker_cmd(url, prefix, handler, *args), stderr=subprocess.DEVNULL)


def n_workers(client: Client) -> int:
    from rtq_nb.errors import UnknownQueue

    try:
        return len(client.workers())
    except UnknownQueue:  # no worker has registered the queue yet
        return 0


def running_on(client: Client, rid: str) -> str | None:
    rec = client.get(rid)
    return rec.worker if rec.status is Status.RUNNING else None


def test_kill_worker_mid_request_completes_elsewhere(
    client: Client, url: str, prefix: str, procs: list[Any]
) -> None:
    procs += [spawn(url, prefix, "rtq_nb.demo:fake_llm") for _ in range(2)]
    wait_until(lambda: n_workers(client) == 2, what="2 workers registered")
    h = client.submit("question", params={"tokens": 40, "rate": 20}, timeout=60)  # ~2 s of work
    victim = wait_until(lambda: running_on(client, h.id), what="request running")
    t_kill = time.monotonic()
    os.kill(pid_of(victim), signal.SIGKILL)
    assert h.result() == "".join(fake_answer("question", 40))  # exactly one result
    rec = h.record()
    assert rec.status is Status.COMPLETED and rec.attempts == 2 and rec.worker != victim
    print(f"\nmid-request kill: result {time.monotonic() - t_kill:.2f} s after SIGKILL")


def test_kill_worker_mid_stream_client_learns_within_10s(
    client: Client, url: str, prefix: str, procs: list[Any]
) -> None:
    procs += [spawn(url, prefix, "rtq_nb.demo:fake_llm") for _ in range(2)]
    wait_until(lambda: n_workers(client) == 2, what="2 workers registered")
    expected = "".join(fake_answer("story", 200))
    h = client.submit("story", stream=True, params={"tokens": 200, "rate": 40}, timeout=120)
    it = iter(h)
    first = [next(it) for _ in range(5)]
    victim = running_on(client, h.id)
    assert victim
    t_kill = time.monotonic()
    os.kill(pid_of(victim), signal.SIGKILL)
    with pytest.raises(WorkerLost) as ei:
        for _ in it:
            pass
    detected = time.monotonic() - t_kill
    lost = ei.value.chunks
    assert lost[:5] == first and "".join(lost) and expected.startswith("".join(lost))
    assert ei.value.requeued and "stopped renewing its lease" in str(ei.value)
    assert detected <= 10.0, f"client learned of the dead worker after {detected:.1f} s"
    retry = "".join(h)  # following the retry: the whole answer again, from its start
    assert retry == expected and h.result() == expected
    assert h.record().attempts == 2
    print(f"\nmid-stream kill: WorkerLost after {detected:.2f} s, {len(lost)} chunks lost attempt")


def test_result_follows_a_stream_retry_transparently(
    client: Client, url: str, prefix: str, procs: list[Any]
) -> None:
    procs += [
        spawn(url, prefix, "rtq_nb.demo:fake_llm", "--lease", "2", "--heartbeat", "0.5")
        for _ in range(2)
    ]
    wait_until(lambda: n_workers(client) == 2, what="2 workers registered")
    h = client.submit("tale", stream=True, params={"tokens": 60, "rate": 40}, timeout=60)
    victim = wait_until(
        lambda: running_on(client, h.id) if h.record().first_chunk_ms else None,
        what="stream started",
    )
    os.kill(pid_of(victim), signal.SIGKILL)
    assert h.result() == "".join(fake_answer("tale", 60))


def test_dead_letter_after_max_attempts_and_requeue(
    url: str, prefix: str, procs: list[Any], raw: Any
) -> None:
    c = Client(url, prefix=prefix, max_attempts=2, timeout=60)
    k = Keys(prefix, "default")
    h = c.submit("doomed", params={"tokens": 100, "rate": 10})
    for attempt in (1, 2):
        procs.append(
            spawn(url, prefix, "rtq_nb.demo:fake_llm", "--lease", "1", "--heartbeat", "0.3")
        )
        victim = wait_until(lambda: running_on(c, h.id), what=f"attempt {attempt} running")
        os.kill(pid_of(victim), signal.SIGKILL)
        procs[-1].wait(10)
        # no worker is left to reap: the client triggers the reaper itself
        outcome = wait_until(
            lambda: r if any(r := c.reap()) else None, what=f"attempt {attempt} reaped"
        )
        assert outcome == (([h.id], []) if attempt == 1 else ([], [h.id]))
    rec = c.get(h.id)
    assert rec.status is Status.FAILED and "dead-lettered after 2 attempt(s)" in (rec.error or "")
    assert [r.id for r in c.dead_letters()] == [h.id] and raw.zscore(k.dead, h.id)
    assert raw.zscore(k.unsuccessful, h.id) == rec.created_ms  # the failed filter finds it
    from rtq_nb import RequestFailed

    with pytest.raises(RequestFailed, match="dead-lettered"):
        h.result()
    assert c.requeue(h.id) and c.get(h.id).status is Status.PENDING and not c.dead_letters()
    procs.append(spawn(url, prefix, "rtq_nb.demo:fake_llm"))
    c.cancel(h.id)
    c.close()


def test_graceful_stop_hands_back_without_counting_an_attempt(
    client: Client, url: str, prefix: str
) -> None:
    from rtq_nb import Worker
    from rtq_nb.demo import fake_llm, sleepy

    w = Worker(fake_llm, url, prefix=prefix).start()
    h = client.submit("x", params={"tokens": 400, "rate": 20}, timeout=60)  # 20 s: won't finish
    wait_until(lambda: running_on(client, h.id), what="running")
    w.stop(drain_timeout=0.2)
    rec = client.get(h.id)
    # the attempt is not counted: its number stays (lease tokens are never reused) and the
    # budget grows by one
    assert rec.status is Status.PENDING and "handed back" in (rec.error or "")
    assert rec.attempts == 1 and rec.max_attempts == 3 + 1
    assert client.workers() == []
    h.cancel()
    Worker(sleepy, url, prefix=prefix).start().stop()


def test_garbage_records_fail_and_good_requests_complete(
    client: Client, url: str, prefix: str, raw: Any, procs: list[Any]
) -> None:
    k = Keys(prefix, "default")
    rng = random.Random(3)

    def rec(i: int, **over: str) -> dict[str, str]:
        base = {
            "v": "1",
            "id": f"g{i}",
            "status": "pending",
            "queue": "default",
            "priority": "0",
            "input": "1",
            "params": "{}",
            "stream": "0",
        }
        return {**base, **over}

    kinds = [
        lambda i: {"status": "pending"},
        lambda i: rec(i, input="{oops"),
        lambda i: rec(i, v="7"),
        lambda i: rec(i, priority="x", stream="1"),
        lambda i: rec(i, params="[]", deadline_ms="never"),
        lambda i: rec(i, stream="maybe"),
    ]
    good = client.submit_many(range(500), timeout=120)
    pipe = raw.pipeline(transaction=False)
    for i in range(1000):
        pipe.hset(k.request(f"g{i}"), mapping=kinds[i % len(kinds)](i))
        pipe.zadd(k.pending, {f"g{i}": rng.choice([-1, 0, 1])})
        pipe.lpush(k.wake, "1")
    pipe.execute()
    good += client.submit_many(range(500, 1000), timeout=120)
    procs += [spawn(url, prefix, "rtq_nb.demo:aecho", "--concurrency", "4") for _ in range(2)]
    assert [h.result() for h in good] == list(range(1000))
    statuses = [raw.hget(k.request(f"g{i}"), "status") for i in range(1000)]
    errors = [raw.hget(k.request(f"g{i}"), "error") or "" for i in range(1000)]
    assert statuses.count("failed") == 1000
    assert all(e.startswith("MalformedRecord: request") for e in errors)
    assert all(p.poll() is None for p in procs), "a worker crashed"
    assert raw.zcard(k.pending) == 0
    print("\ngarbage: 1000/1000 failed with a reason, 1000/1000 good completed, 0 crashes")


def test_redis_restart_with_aof_loses_nothing_acknowledged(tmp_path: Any, procs: list[Any]) -> None:
    srv = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis", tcp=True).start()
    url, prefix, n = srv.url, "aof", 1500
    try:
        procs += [spawn(url, prefix, "rtq_nb.demo:sleepy", "--concurrency", "4") for _ in range(2)]
        acked: list[Any] = []
        done = threading.Event()

        def load() -> None:
            with Client(url, prefix=prefix, timeout=120, reconnect_timeout=60) as c:
                for i in range(n):
                    acked.append(c.submit(i, params={"delay": 0.002}))
            done.set()

        t = threading.Thread(target=load)
        t.start()
        wait_until(lambda: len(acked) > n // 3, what="load under way")
        srv.stop()  # SIGTERM; appendfsync always: everything acknowledged is on disk
        srv.start()
        t.join(120)
        assert done.is_set(), "the client did not recover from the restart"
        results = [h.result() for h in acked]
        assert results == list(range(n))
        assert all(p.poll() is None for p in procs), "a worker died with Redis"
        print(f"\nredis restart: {n} acknowledged, {n} completed, 0 lost")
    finally:
        srv.cleanup()


def test_submit_many_rides_out_a_redis_restart(tmp_path: Any, caplog: Any) -> None:
    """A batch sent while Redis is down waits for it, then lands exactly once."""
    srv = EmbeddedRedis(appendonly=True, data_dir=tmp_path / "redis").start()
    try:
        with Client(srv.url, prefix="sm", timeout=120, reconnect_timeout=60) as c:
            first = c.submit_many(["warm"])  # connected, scripts loaded
            batch = across_restart(srv, caplog, lambda: c.submit_many(range(50)))
            assert len(batch) == 50
            with Worker(echo, srv.url, prefix="sm"):
                assert [h.result() for h in batch] == list(range(50))
                assert first[0].result() == "warm"
            raw = redis.Redis.from_url(srv.url)
            assert raw.zcard(Keys("sm", "default").history) == 51  # no duplicates
            assert raw.hget(Keys("sm", "default").stats, "completed") == b"51"
    finally:
        srv.stop()
        srv.cleanup()


def _soak(url: str, prefix: str, total: int, procs: list[Any], raw: Any) -> None:
    args = ("--concurrency", "8", "--lease", "2", "--heartbeat", "0.5")
    for _ in range(4):
        procs.append(spawn(url, prefix, "rtq_nb.demo:sleepy", *args))
    rng = random.Random(11)
    kills = 0
    stop = threading.Event()
    pace = (0.1, 0.4) if total <= 2000 else (0.3, 1.5)  # seconds between kills

    def killer() -> None:
        nonlocal kills
        while not stop.wait(rng.uniform(*pace)):
            alive = [p for p in procs if p.poll() is None]
            if len(alive) < 2:
                continue
            victim = rng.choice(alive)
            victim.kill()
            victim.wait(10)
            kills += 1
            procs.append(spawn(url, prefix, "rtq_nb.demo:sleepy", *args))
            if kills >= 2 and total <= 2000:
                return

    async def run() -> list[Any]:
        async with AsyncClient(url, prefix=prefix, timeout=600, max_attempts=5) as c:
            hs = await c.submit_many(range(total), params={"delay": 0.002})
            out = []
            for h in hs:
                try:
                    out.append(await h.result())
                except Exception as exc:  # dead-lettered requests must carry a reason
                    out.append(exc)
            return out

    t = threading.Thread(target=killer)
    t0 = time.monotonic()
    t.start()
    try:
        results = asyncio.run(run())
    finally:
        stop.set()
        t.join(30)
    k = Keys(prefix, "default")
    ok = sum(1 for i, r in enumerate(results) if r == i)
    dead = [r for r in results if isinstance(r, Exception)]
    assert all("dead-lettered" in str(e) for e in dead)
    assert ok + len(dead) == total  # nothing lost
    assert int(raw.hget(k.stats, "completed")) == ok  # no completion accepted twice
    assert not raw.keys(f"{k.base}:res:*")  # no second envelope left behind anywhere
    assert raw.zcard(k.pending) == 0 and raw.zcard(k.running) == 0
    assert kills >= 2
    print(
        f"\nsoak: {total} requests, {kills} SIGKILLs + restarts, {ok} completed, "
        f"{len(dead)} dead-lettered, 0 lost, 0 duplicated, {time.monotonic() - t0:.1f} s"
    )


def test_soak_small(url: str, prefix: str, procs: list[Any], raw: Any) -> None:
    _soak(url, prefix, 2000, procs, raw)


@pytest.mark.slow
def test_soak_20000(url: str, prefix: str, procs: list[Any], raw: Any) -> None:
    _soak(url, prefix, 20000, procs, raw)


_ = WorkerInfo


@pytest.mark.parametrize("kind", ["async-generator", "sync-generator"])
def test_cancel_running_stream_stops_generation(
    client: Client, start_worker: Any, kind: str
) -> None:
    produced: list[int] = []
    closed = threading.Event()

    async def agen(r: Any) -> Any:
        try:
            for i in range(10_000):
                produced.append(i)
                await asyncio.sleep(0.01)  # simulated model pace
                yield f"t{i} "
        finally:
            closed.set()  # the generator was closed (aclose) when the worker stopped it

    def sgen(r: Any) -> Any:
        try:
            for i in range(10_000):
                produced.append(i)
                time.sleep(0.01)  # simulated model pace (a sync model runs in a thread)
                yield f"t{i} "
        finally:
            closed.set()

    start_worker(agen if kind == "async-generator" else sgen, heartbeat=0.5, lease=2.0)
    h = client.submit("x", stream=True, timeout=60)
    it = iter(h)
    next(it)  # it is streaming
    assert h.cancel() is Status.RUNNING
    from rtq_nb import RequestCancelled

    with pytest.raises(RequestCancelled):
        for _ in it:
            pass
    assert closed.wait(10), "the handler's generator was not stopped"
    assert len(produced) < 300  # 10,000 would take 100 s: it stopped within a flush or so
    assert h.status() is Status.CANCELLED
