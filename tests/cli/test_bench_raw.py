"""The raw hiredis floor of ``rtq-nb bench`` does its round trip against a real redis-server:
the client's one write (HSET + ZADD + BLPOP) is answered by the raw worker (BZPOPMAX, then
HGET + LPUSH in one write), and the worker stops on its stop key."""

from __future__ import annotations

import threading
import uuid

from rtq_nb.cli.bench_raw import PAYLOAD, RawConn, pack, raw_worker


def test_raw_round_trip(url: str) -> None:
    ns, stop = f"raw{uuid.uuid4().hex[:6]}", f"raw{uuid.uuid4().hex[:6]}:stop"
    t = threading.Thread(target=raw_worker, args=(url, ns, stop), daemon=True)
    t.start()
    c = RawConn(url)
    assert c.request(
        b"*3\r\n$5\r\nBLPOP\r\n$%d\r\n%s:ready\r\n$1\r\n5\r\n" % (len(ns) + 6, ns.encode()), 1
    )[0]

    data = pack(("HSET", f"{ns}:req:r1", "id", "r1", "input", PAYLOAD))
    data += pack(("ZADD", f"{ns}:pending", 0, "r1")) + pack(("BLPOP", f"{ns}:res:r1", 5))
    hset, zadd, popped = c.request(data, 3)
    assert hset == 2 and zadd == 1 and popped == [f"{ns}:res:r1", PAYLOAD]
    c.request(pack(("ZADD", stop, 1, "x")), 1)
    t.join(5)
    assert not t.is_alive()
