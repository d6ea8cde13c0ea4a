"""Large inputs and results by reference, against real servers: a moto S3 server process on a
loopback port and the local filesystem (file://), with a real redis-server and real workers.
Round trips of 50 MB each way, values below the threshold inline, objects gone after their
retention, deleted objects failing with PayloadError naming the URL, views showing the
reference."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rtq_nb import Client, RequestFailed, SealKey, Security, views
from rtq_nb.cli.bench_payloads import moto_s3
from rtq_nb.errors import PayloadError
from rtq_nb.payloads import PayloadStore, payload_store
from rtq_nb.protocol.keys import Keys
from rtq_nb.protocol.refs import payload_ref
from rtq_nb.security import Sealer

pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")  # moto[server] brings it

MB50 = 50 * 1024 * 1024
BUCKET = "rtq-payloads"


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, Any]]:
    """Storage options of a moto S3 server process (rtq_nb.cli.bench_payloads.moto_s3)."""
    with moto_s3(BUCKET) as options:
        assert options is not None, "moto[server] is in the test extra"
        yield options


@pytest.fixture(params=["s3", "file"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, prefix: str
) -> Callable[..., PayloadStore]:
    """A store factory on each back end (a fresh base folder per test)."""

    def make(**kw: Any) -> PayloadStore:
        if request.param == "s3":
            options = request.getfixturevalue("s3_options")
            return PayloadStore(f"s3://{BUCKET}/{prefix}", storage_options=options, **kw)
        return PayloadStore(f"file://{tmp_path}/{prefix}", **kw)

    return make


def _objects(store: PayloadStore) -> list[str]:
    fs, root = store._filesystem()
    fs.invalidate_cache()
    try:
        return sorted(str(p) for p in fs.find(root))
    except FileNotFoundError:
        return []


def _stored(raw: Any, prefix: str, rid: str, field: str) -> str:
    return str(raw.hget(Keys(prefix, "default").request(rid), field) or "")


def test_50mb_input_and_result_round_trip(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, raw: Any, start_worker: Any
) -> None:
    store = make_store()
    seen: list[int] = []

    def handler(r: Any) -> Any:
        seen.append(len(r.input))
        return r.input[::-1]  # a 50 MB result

    start_worker(handler, payloads=store)
    big = "ab" * (MB50 // 2)
    mem0 = int(raw.info("memory")["used_memory"])
    with Client(url, prefix=prefix, timeout=120, payloads=store) as c:
        h = c.submit(big)
        assert h.result(timeout=120) == big[::-1]
        assert seen == [MB50]  # the handler saw the value, not the reference
        for field, place in (("input", "in"), ("result", "out")):
            text = _stored(raw, prefix, h.id, field)
            assert len(text) < 400, f"{field} is inline in Redis"
            ref = payload_ref(json.loads(text))
            assert ref is not None and ref.url.endswith(f"/{h.id}/{place}")
            assert ref.size == MB50 + 2  # the JSON text: quotes included
    assert int(raw.info("memory")["used_memory"]) - mem0 < 5 * 1024 * 1024
    assert len(_objects(store)) == 2


def test_values_below_the_threshold_stay_inline(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, raw: Any, start_worker: Any
) -> None:
    store = make_store(threshold=1000)
    start_worker(lambda r: r.input.upper(), payloads=store)
    with Client(url, prefix=prefix, timeout=30, payloads=store) as c:
        h = c.submit("small")
        assert h.result() == "SMALL"
        assert _stored(raw, prefix, h.id, "input") == '"small"'
        assert _stored(raw, prefix, h.id, "result") == '"SMALL"'
        assert c.call("y" * 2000) == "Y" * 2000  # just over: by reference both ways
    assert len(_objects(store)) == 2


def test_objects_are_gone_after_their_retention(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, start_worker: Any
) -> None:
    store = make_store(threshold=100, expiry_bucket=1, sweep_interval=0)
    start_worker(lambda r: r.input * 2, payloads=store, retention=2)
    with Client(url, prefix=prefix, timeout=1, retention=2, payloads=store) as c:
        assert c.call("z" * 500) == "z" * 1000
    assert len(_objects(store)) == 2
    assert store.sweep() == 0  # not yet: input kept timeout + retention, result retention
    time.sleep(4.2)
    assert store.sweep() >= 1
    assert _objects(store) == []


def test_a_deleted_input_fails_its_request_with_payload_error(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, raw: Any, start_worker: Any
) -> None:
    store = make_store(threshold=100)
    with Client(url, prefix=prefix, timeout=30, payloads=store) as c:
        h = c.submit("q" * 1000)
        ref = payload_ref(json.loads(_stored(raw, prefix, h.id, "input")))
        assert ref is not None
        store.delete(ref)
        start_worker(lambda r: r.input, payloads=store)
        with pytest.raises(RequestFailed) as info:
            h.result()
        assert info.value.error == (
            f"PayloadError: {ref.url}: not found (deleted, or its retention ran out)"
        )
        assert c.call("still serving: " + "w" * 200) == "still serving: " + "w" * 200


def test_a_deleted_result_raises_payload_error_for_the_caller(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, start_worker: Any
) -> None:
    store = make_store(threshold=100)
    start_worker(lambda r: "r" * 1000, payloads=store)
    with Client(url, prefix=prefix, timeout=30, payloads=store) as c:
        h = c.submit("go")
        end = time.monotonic() + 20
        while c.get(h.id).status.value != "completed":
            assert time.monotonic() < end
            time.sleep(0.02)
        ref = payload_ref(c.get(h.id).result)  # a record view shows the reference
        assert ref is not None and ref.size == 1002
        store.delete(ref)
        with pytest.raises(PayloadError) as info:
            h.result()
        assert info.value.url == ref.url
        assert str(info.value) == f"{ref.url}: not found (deleted, or its retention ran out)"


def test_history_shows_the_reference_not_the_bytes(
    make_store: Callable[..., PayloadStore], url: str, prefix: str, start_worker: Any
) -> None:
    store = make_store(threshold=100)
    start_worker(lambda r: "o" * 5000, payloads=store)
    with Client(url, prefix=prefix, timeout=30, payloads=store) as c:
        c.call("i" * 3000)
        rows = views.history(c)
        inp, out = rows["input_preview"].iloc[0], rows["output_preview"].iloc[0]
        assert inp.startswith("(by reference: ") and inp.endswith(", 3002 bytes)")
        assert out.startswith("(by reference: ") and out.endswith(", 5002 bytes)")
        assert store.url.split("://")[1] in inp


def test_encrypted_values_are_sealed_before_they_go_by_reference(
    tmp_path: Path, url: str, prefix: str, start_worker: Any
) -> None:
    store = PayloadStore(f"file://{tmp_path}/p", threshold=100)
    sec = Security(sealer=Sealer([SealKey.generate("e1")]))
    start_worker(lambda r: "ANSWER " + r.input, payloads=store, security=sec)
    with Client(url, prefix=prefix, timeout=30, payloads=store, security=sec) as c:
        assert c.call("SECRET " * 100) == "ANSWER " + "SECRET " * 100
    files = _objects(store)
    assert len(files) == 2
    for f in files:
        data = Path(f).read_text()
        assert "SECRET" not in data and "ANSWER" not in data and "rtq_sealed" in data


def test_a_worker_without_a_store_fails_reference_inputs_clearly(
    tmp_path: Path, url: str, prefix: str, start_worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RTQ_PAYLOAD_URL", raising=False)
    store = PayloadStore(f"file://{tmp_path}/p", threshold=10)
    start_worker(lambda r: r.input)
    with Client(url, prefix=prefix, timeout=30, payloads=store) as c:
        with pytest.raises(RequestFailed) as info:
            c.call("x" * 100)
        assert info.value.error.startswith("PayloadError: file://")
        assert "this worker has no payload store" in info.value.error


def test_a_store_reads_only_references_under_its_base(tmp_path: Path) -> None:
    store = PayloadStore(f"file://{tmp_path}/p", threshold=10)
    (tmp_path / "secret").write_text("no")
    ref = payload_ref({"rtq_ref": f"file://{tmp_path}/secret", "size": 2, "sha256": "0"})
    assert ref is not None
    with pytest.raises(PayloadError, match="not under this payload store"):
        store.get(ref)
    ref = payload_ref({"rtq_ref": f"file://{tmp_path}/p/../secret", "size": 2, "sha256": "0"})
    assert ref is not None
    with pytest.raises(PayloadError, match="not under this payload store"):
        store.get(ref)


def test_a_changed_object_is_refused(tmp_path: Path) -> None:
    store = PayloadStore(f"file://{tmp_path}/p", threshold=10)
    ref = payload_ref(json.loads(store.put("r1", "in", b'"hello"', 60)))
    assert ref is not None
    Path(ref.url[len("file://") :]).write_bytes(b'"HELLO"')
    with pytest.raises(PayloadError, match="does not match its reference"):
        store.get(ref)


def test_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTQ_PAYLOAD_URL", raising=False)
    assert payload_store(None) is None
    monkeypatch.setenv("RTQ_PAYLOAD_URL", "file:///tmp/rtq-payloads")
    monkeypatch.setenv("RTQ_PAYLOAD_THRESHOLD", "4096")
    monkeypatch.setenv("RTQ_PAYLOAD_OPTIONS", '{"auto_mkdir": true}')
    s = payload_store(None)
    assert s is not None and s.threshold == 4096 and s.storage_options == {"auto_mkdir": True}
    assert payload_store("") is None  # explicitly off
    s = payload_store("file:///tmp/rtq-payloads", 123)  # rtq-nb worker --payload-threshold
    assert s is not None and s.threshold == 123
