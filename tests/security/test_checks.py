"""The pure parts: keys (text forms, secrets never shown), the stream check's rules for
attempts, order and forgeries, and the settings from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtq_nb import Keyring, SealKey, Security, SigningKey, VerifyKey
from rtq_nb.client.checks import StreamCheck
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.records import Chunk
from rtq_nb.protocol.signing import ResultKind
from rtq_nb.protocol.stream import EntryKind, StreamEntry
from rtq_nb.security.results import ResultCheck, ResultSigner

WK = SigningKey.generate("w1")


def entry(rid: str, attempt: int, seq: int, text: str, key: SigningKey = WK) -> StreamEntry:
    sig = ResultSigner(key, None).sign(rid, str(attempt), ResultKind.DATA, text, seq, 1)
    return StreamEntry(f"{seq}-{attempt}", EntryKind.DATA, Chunk(text, seq, 1, "1-0"), auth=sig)


def test_stream_check_follows_attempts_in_order_and_drops_the_rest() -> None:
    follow = StreamCheck(ResultCheck(Keyring([WK]), None), "r", sealed=False)
    taken, ended = follow.take(entry("r", 1, 0, "a"), 0, False)
    assert taken.kind is EntryKind.DATA and ended is None and follow.attempt == 1
    # a gap (seq 2 before 1), another request's entry, a forgery: skipped
    assert follow.take(entry("r", 1, 2, "c"), 1, True)[0].kind is None
    assert follow.take(entry("other", 1, 1, "b"), 1, True)[0].kind is None
    assert follow.take(entry("r", 1, 1, "b", SigningKey.generate("w1")), 1, True)[0].kind is None
    # a newer attempt ends the one followed; then an entry of the old one is superseded
    taken, ended = follow.take(entry("r", 2, 0, "A"), 1, True)
    assert ended is not None and "attempt 1 was lost" in ended and follow.attempt == 2
    assert follow.take(entry("r", 1, 1, "b"), 0, False)[0].kind is None
    # unsigned markers: reset ignored; cancelled taken as a status without its text
    reset = StreamEntry("9-0", EntryKind.RESET, detail="worker died")
    assert follow.take(reset, 1, True)[0].kind is None
    cancelled = StreamEntry("9-1", EntryKind.CANCELLED, detail="evil text")
    taken, _ = follow.take(cancelled, 1, True)
    assert taken.kind is EntryKind.CANCELLED and "evil" not in taken.detail
    # an end marker must cover exactly the pieces received
    end_sig = ResultSigner(WK, None).sign("r", "2", ResultKind.END, "", 3, 3)
    end = StreamEntry("9-2", EntryKind.END, auth=end_sig, pieces=3)
    assert follow.take(end, 2, True)[0].kind is None  # truncated: 2 of 3
    assert follow.take(end, 3, True)[0].kind is EntryKind.END


def test_keys_round_trip_and_never_show_secrets(tmp_path: Path) -> None:
    sk = SigningKey.generate("c1")
    secret = sk.to_text().split(":")[-1]
    assert SigningKey.from_text(sk.to_text()).sign(b"m") == sk.sign(b"m")
    pk = VerifyKey.from_text(sk.public().to_text())
    assert pk.verify(b"m", sk.sign(b"m")) and not pk.verify(b"n", sk.sign(b"m"))
    seal = SealKey.generate("e1")
    shown = " ".join(
        [repr(sk), repr(pk), repr(seal), repr(Keyring([sk])), repr(Security(signing_key=sk))]
    )
    assert secret not in shown and seal.to_text().split(":")[-1] not in shown
    with pytest.raises(ConfigurationError, match="public key: it cannot sign"):
        SigningKey.from_text(sk.public().to_text())
    with pytest.raises(ConfigurationError, match="not an rtq_nb key") as err:
        VerifyKey.from_text("rtq-xx:ed25519:c1:" + secret)
    assert secret not in str(err.value)
    ring = tmp_path / "clients.pub"
    ring.write_text(
        f"# clients\n{sk.public().to_text()}\n{SigningKey.generate('c2').public().to_text()}\n"
    )
    assert Keyring.parse(f"@{ring}").kids == ["c1", "c2"]
    with pytest.raises(ConfigurationError, match="two keys with the id 'c1'"):
        Keyring([sk, sk.public()])


def test_settings_from_the_environment(tmp_path: Path) -> None:
    ck, wk = SigningKey.generate("c1"), SigningKey.generate("w1")
    (tmp_path / "c1.key").write_text(ck.to_text())
    env = {
        "RTQ_CLIENT_SIGNING_KEY": f"@{tmp_path / 'c1.key'}",
        "RTQ_TRUSTED_WORKER_KEYS": wk.public().to_text(),
        "RTQ_ENCRYPTION_KEYS": SealKey.generate("e1").to_text(),
        "RTQ_MAX_CLOCK_SKEW": "5",
    }
    sec = Security.from_env("client", env)
    assert sec.signing_key is not None and sec.signing_key.kid == "c1"
    assert sec.trusted is not None and sec.trusted.kids == ["w1"]
    assert sec.sealer is not None and sec.max_skew == 5
    assert Security.from_env("worker", env).signing_key is None
    with pytest.raises(ConfigurationError, match="RTQ_MAX_CLOCK_SKEW"):
        Security.from_env("client", {"RTQ_MAX_CLOCK_SKEW": "soon"})
