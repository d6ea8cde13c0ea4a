"""The wire format, and the only place that knows it (pure: no I/O, tested without Redis).

::

    keys.py       every Redis key (Keys), with one Redis Cluster hash tag per queue
    scores.py     priority + FIFO in one sorted-set score
    records.py    Status, RequestRecord (the stored hash), Request (a handler's), Chunk
    encoding.py   JSON, params, timeouts, submission fields, result envelopes
    jobs.py       a popped request as a Request (the worker's hot path)
    stream.py     stream entry kinds, lease results, decoding an entry
    registry.py   worker and client registry entries: commands and views
    history.py    lenient history rows for views
    scripts.py    the Lua scripts (lua/*.lua): one builder and one reply parser each
    defaults.py   defaults shared by clients and workers
"""
