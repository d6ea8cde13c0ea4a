"""The worker: serve a queue with a handler (never imports the client).

::

    worker.py     Worker: options and lifecycle; its slots fetch, process, deliver
    state.py      WorkerOptions (validated), WorkerState, Held (a request under a lease)
    leases.py     Leases: registry, heartbeat, lease renewal, reaping, hand-back
    fetch.py      Fetcher: block on the wake list with POP behind it, gather batches
    delivery.py   Delivery: stream writes and completions, the next fetch pipelined
    invoke.py     calling a handler of any kind; outcomes
    streaming.py  StreamWriter: pieces -> chunks, one flush per interval
    chunking.py   granularity (chunkers) and the coalescer (pure)
    threads.py    HandlerThreads: the threads sync handlers and generators run in
"""

from __future__ import annotations

from rtq_nb.worker.worker import Handler, Worker

__all__ = ["Handler", "Worker"]
