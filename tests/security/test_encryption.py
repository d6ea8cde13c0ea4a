"""End-to-end encryption against a real redis-server: Redis holds only ciphertext; readers
without the key see "(encrypted)"; workers without it refuse clearly."""

from __future__ import annotations

from typing import Any

import pytest

from rtq_nb import Client, Keyring, RequestFailed, SealKey, Security, SigningKey, views
from rtq_nb.security import Sealer

SEAL = Sealer([SealKey.generate("e1")])
CK, WK = SigningKey.generate("c1"), SigningKey.generate("w1")


def everything_stored(raw: Any, prefix: str) -> str:
    """Every value of every key under ``prefix``, as one string."""
    out: list[str] = []
    for key in raw.scan_iter(f"{prefix}*"):
        kind = raw.type(key)
        if kind == "hash":
            out += raw.hgetall(key).values()
        elif kind == "list":
            out += raw.lrange(key, 0, -1)
        elif kind == "stream":
            out += [v for _, f in raw.xrange(key) for v in f.values()]
        elif kind == "zset":
            out += raw.zrange(key, 0, -1)
        elif kind == "string":
            out.append(raw.get(key))
    return "\n".join(out)


def test_redis_sees_only_ciphertext_and_readers_without_the_key_see_encrypted(
    url: str, prefix: str, raw: Any, start_worker: Any
) -> None:
    def handler(r: Any) -> Any:
        if r.stream:
            return (w for w in ["ANSWER", "SECRET", "-STREAMED"])
        return {"answer": f"ANSWERSECRET for {r.input['prompt']}"}

    start_worker(handler, queue="q",
                 security=Security(signing_key=WK, trusted=Keyring([CK]), sealer=SEAL))  # fmt: skip
    sec = Security(signing_key=CK, trusted=Keyring([WK]), sealer=SEAL)
    with Client(url, prefix=prefix, queue="q", timeout=20, security=sec) as c:
        reply = c.call({"prompt": "TOPSECRET prompt"})
        assert reply == {"answer": "ANSWERSECRET for TOPSECRET prompt"}
        assert "".join(c.stream("TOPSECRET stream prompt")) == "ANSWERSECRET-STREAMED"
        stored = everything_stored(raw, prefix)
        assert "TOPSECRET" not in stored and "ANSWERSECRET" not in stored
        assert "rtq_sealed" in stored  # the values are there, sealed
        mine = views.history(c)
        assert set(mine["input_preview"]) == {
            "TOPSECRET stream prompt",
            '{"prompt":"TOPSECRET prompt"}',
        }
        assert "ANSWERSECRET-STREAMED" in set(mine["output_preview"])
        rid = mine["id"].iloc[0]
        assert "TOPSECRET" in str(c.get(rid).input)
    with Client(url, prefix=prefix, queue="q", security=Security()) as outsider:
        theirs = views.history(outsider)
        assert set(theirs["input_preview"]) == {"(encrypted)"}
        assert set(theirs["output_preview"]) == {"(encrypted)"}
        assert theirs["parse_error"].isna().all()


def test_a_worker_without_the_key_refuses_encrypted_input_clearly(
    url: str, prefix: str, start_worker: Any
) -> None:
    start_worker(lambda r: r.input, queue="q", security=Security())
    sec = Security(sealer=SEAL)
    with (
        Client(url, prefix=prefix, queue="q", timeout=20, security=sec) as c,
        pytest.raises(RequestFailed, match="holds no encryption key"),
    ):
        c.call("secret")
