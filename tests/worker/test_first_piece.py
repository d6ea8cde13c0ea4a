"""A sync generator's first piece is written by its own thread (a blocking write on the
worker's synchronous connection): it reaches Redis without the worker's event loop, which
picks up the rest where the first left off (sequence numbers, flush timing, lease answers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from rtq_nb import Client, Request, Worker
from rtq_nb.protocol.keys import Keys


def test_the_first_piece_is_written_while_the_loop_is_held(
    client: Client,
    start_worker: Callable[..., Worker],
    raw: Any,
    prefix: str,
    loop_held: Callable[[], None],
) -> None:
    started, go = threading.Event(), threading.Event()

    def gen(r: Request) -> Iterator[str]:
        started.set()
        assert go.wait(30)
        yield "first "
        yield from ("second ", "third ")

    start_worker(gen)
    h = client.submit("x", stream=True)  # sent on this thread's connection
    assert started.wait(30)  # the worker's loop popped it and started the generator
    loop_held()  # the worker's loop (rtq_nb's loop thread, in this process) now waits on a gate
    go.set()
    key = Keys(prefix, client.queue).stream(h.id)
    got = raw.xread({key: "0-0"}, count=10, block=10_000)
    assert got, "the first piece did not reach Redis while the loop was held"
    fields = got[0][1][0][1]
    assert (fields["d"], fields["s"]) == ("first ", "0")
    assert len(got[0][1]) == 1  # the rest waits for the loop


def test_the_loop_continues_after_a_first_piece_from_the_thread(
    client: Client, start_worker: Callable[..., Worker], raw: Any, prefix: str
) -> None:
    """Sequence numbers continue after the thread's piece; the record's first-chunk time is
    set; the result is the whole text, for several requests on one worker."""

    def gen(r: Request) -> Iterator[str]:
        yield from (f"{r.input}-{i} " for i in range(50))

    start_worker(gen, flush_interval=0.0)
    for n in range(3):
        s = client.stream(n)
        chunks = list(s)
        assert "".join(chunks) == "".join(f"{n}-{i} " for i in range(50))
        seqs = [c.seq for c in chunks]
        assert seqs[0] == 0 and seqs == sorted(set(seqs))
        assert sum(c.pieces for c in chunks) == 50
        rec = client.get(s.id)
        assert rec.first_chunk_ms is not None and rec.chunks == 50
