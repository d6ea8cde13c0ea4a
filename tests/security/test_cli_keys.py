"""``rtq-nb keygen`` and a real ``rtq-nb worker`` process configured with key files: signed
requests are served and answered with signed results; unsigned ones are refused; no secret
reaches the output or the logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import worker_cmd

from rtq_nb import Client, Keyring, RequestFailed, Security, SigningKey


def keygen(out: Path, kid: str, alg: str = "ed25519") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rtq_nb.cli", "keygen", "--kid", kid, "--alg", alg, "--out", out],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + done.stderr


def test_keygen_and_a_worker_process_with_key_files(tmp_path: Path, url: str, prefix: str) -> None:
    shown = keygen(tmp_path, "c1") + keygen(tmp_path, "w1") + keygen(tmp_path, "e1", "aesgcm")
    private = {n: (tmp_path / f"{n}.key").read_text().strip() for n in ("c1", "w1", "e1")}
    for text in private.values():
        assert text.split(":")[-1] not in shown
        assert (tmp_path / "c1.key").stat().st_mode & 0o777 == 0o600
    assert "rtq-pk:ed25519:c1:" in shown  # public keys may be shown
    with pytest.raises(subprocess.CalledProcessError):
        keygen(tmp_path, "c1")  # never overwrites a key without --force
    log = tmp_path / "worker.log"
    cmd = worker_cmd(url, prefix, "rtq_nb.demo:aecho", "--queue", "k")
    cmd.insert(cmd.index("worker"), "-vv")  # debug logging: secrets must not show there either
    cmd += ["--trusted-client-keys", f"@{tmp_path / 'c1.pub'}"]
    env = {**os.environ, "RTQ_WORKER_SIGNING_KEY": f"@{tmp_path / 'w1.key'}"}
    env["RTQ_ENCRYPTION_KEYS"] = f"@{tmp_path / 'e1.key'}"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        sec = Security.build(
            signing_key=f"@{tmp_path / 'c1.key'}",
            trusted=f"@{tmp_path / 'w1.pub'}",
            encryption_keys=f"@{tmp_path / 'e1.key'}",
        )
        with Client(url, prefix=prefix, queue="k", timeout=30, security=sec) as c:
            assert c.call("signed hello") == "signed hello"
            assert "".join(c.stream("a b c")) == "a b c"
        unsigned = Security(trusted=Keyring([SigningKey.from_text(private["w1"])]))
        with (
            Client(url, prefix=prefix, queue="k", timeout=30, security=unsigned) as u,
            pytest.raises(RequestFailed, match="unauthenticated: unsigned request"),
        ):
            u.call("who am I")
    finally:
        proc.terminate()
        proc.wait(30)
    logged = log.read_text()
    assert "refusing request" in logged and "trusts c1" in logged
    for text in private.values():
        assert text.split(":")[-1] not in logged
