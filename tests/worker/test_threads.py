"""HandlerThreads: the hop sync handlers take off the event loop (no Redis needed)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest

from rtq_nb.worker.threads import HandlerThreads

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


def test_call_runs_in_a_thread_with_the_callers_context() -> None:
    pool = HandlerThreads(2, name="t")

    def where(x: int) -> tuple[int, str, str]:
        return x * 2, threading.current_thread().name, VAR.get()

    async def main() -> tuple[int, str, str]:
        VAR.set("caller")
        return await pool.call(where, 21)

    value, thread, var = asyncio.run(main())
    pool.shutdown()
    assert value == 42 and thread.startswith("t_") and var == "caller"


def test_errors_reach_the_awaiting_side_stop_iteration_included() -> None:
    pool = HandlerThreads(1)

    def boom(kind: str) -> None:
        if kind == "value":
            raise ValueError("bad input")
        raise StopIteration("exhausted")

    async def main() -> None:
        with pytest.raises(ValueError, match="bad input"):
            await pool.call(boom, "value")
        with pytest.raises(RuntimeError, match="StopIteration") as info:
            await pool.call(boom, "stop")
        assert isinstance(info.value.__cause__, StopIteration)
        assert await pool.call(lambda: "still serving") == "still serving"

    asyncio.run(main())
    pool.shutdown()


def test_threads_start_on_demand_up_to_size_and_run_concurrently() -> None:
    pool = HandlerThreads(3)
    gate = threading.Barrier(3, timeout=10)  # passes only when 3 calls run at once

    async def main() -> list[int]:
        return list(await asyncio.gather(*(pool.call(gate.wait) for _ in range(3))))

    assert sorted(asyncio.run(main())) == [0, 1, 2]
    assert len(pool._threads) == 3
    for _ in range(20):  # sequential calls reuse idle threads: no new ones
        asyncio.run(main())
    assert len(pool._threads) == 3
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(print)


def test_submit_is_an_executor_for_run_in_executor() -> None:
    pool = HandlerThreads(1)

    async def main() -> str:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, str.upper, "abc")

    assert asyncio.run(main()) == "ABC"
    assert pool.submit(lambda a, b=0: a + b, 1, b=2).result(timeout=10) == 3
    pool.shutdown()


def test_a_cancelled_wait_leaves_the_pool_serving() -> None:
    pool = HandlerThreads(1)
    release = threading.Event()

    async def main() -> str:
        slow = pool.call(release.wait, 10)
        slow.cancel()
        release.set()
        return await pool.call(lambda: "next")

    assert asyncio.run(main()) == "next"
    pool.shutdown()


def test_a_handler_raising_stop_iteration_fails_its_request(
    client: Any, start_worker: Callable[..., Any]
) -> None:
    """Through run_in_executor the StopIteration never reached the slot (an asyncio future
    refuses it): the request hung, its lease renewed forever. Now it fails, with the reason."""
    from rtq_nb import Status
    from rtq_nb.errors import RequestFailed

    def handler(request: Any) -> str:
        if request.input == "empty":
            return next(iter(()))  # StopIteration
        return "ok"

    start_worker(handler)
    handle = client.submit("empty", timeout=15)
    with pytest.raises(RequestFailed, match="StopIteration"):
        handle.wait(15)
    record = client.get(handle.id)
    assert record.status is Status.FAILED and "StopIteration" in (record.error or "")
    assert client.call("next", timeout=15) == "ok"  # the worker still serves
