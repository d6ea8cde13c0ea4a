"""Fixtures for the OpenAI-compatible backend tests.

* ``engine`` (session): the real engine, llama.cpp's ``llama-server``, on a free loopback port,
  serving the tiny model as ``engine.model`` (``"tiny-llama"``) with 4 parallel slots. See
  ``tests/backends/engine.py`` for its attributes and helpers (``base_url``, ``slots()``,
  ``busy_slots()``, ``wait_idle()``, ``metrics()``, ``restart()``, ``log_since()``, ...).
* ``start_engine`` (function): start private engines (other ``n_parallel``, ``ctx_per_slot``,
  model, extra flags), stopped at teardown; for tests that kill or restart the engine without
  disturbing the session's.
* ``engine_proxy`` (function): a recording reverse proxy in front of the session engine
  (``tests/backends/proxy.py``): point the backend at ``engine_proxy.base_url`` and read what
  the engine received in ``engine_proxy.requests``.
* ``stub`` (function): the scripted OpenAI-compatible stub (``tests/backends/stub.py``) for
  429 / 503 / dropped / slow / hanging responses.
* ``tiny_model_path`` (session): the model file the session wrote.

Without a built ``llama-server`` the engine tests skip locally with the build command in the
reason; in CI (``CI`` set) or with ``RTQ_REQUIRE_ENGINE=1`` they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backends.engine import (
    BUILD_HINT,
    Engine,
    engine_required,
    llama_server_path,
)
from tests.backends.proxy import RecordingProxy
from tests.backends.stub import StubServer
from tests.backends.tiny_model import write_tiny_model


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """The ``llama-server`` binary (skip, or fail in CI, when it was not built)."""
    path = llama_server_path()
    if path.is_file():
        return path
    msg = f"llama-server not found at {path}: {BUILD_HINT}"
    if engine_required():
        pytest.fail(f"{msg} (CI / RTQ_REQUIRE_ENGINE=1: the engine tests must not skip)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@pytest.fixture(scope="session")
def tiny_model_path(engine_dir: Path) -> Path:
    """The tiny random-weight GGUF model (about 1 MB), written once per session."""
    return write_tiny_model(engine_dir / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def engine(llama_server_bin: Path, tiny_model_path: Path, engine_dir: Path) -> Iterator[Engine]:
    """The session's real engine: 4 slots x 4,096 tokens, 1 thread, alias ``tiny-llama``."""
    eng = Engine(llama_server_bin, tiny_model_path, engine_dir / "llama-server.log")
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture
def start_engine(
    llama_server_bin: Path, tiny_model_path: Path, tmp_path: Path
) -> Iterator[Callable[..., Engine]]:
    """``start_engine(**kw) -> Engine``: a private, started engine (keywords of ``Engine``:
    ``n_parallel``, ``ctx_per_slot``, ``threads``, ``model``, ``port``, ``extra_args``, and
    ``model_path`` for another model); all are stopped at teardown."""
    started: list[Engine] = []

    def start(**kw: Any) -> Engine:
        model_path = kw.pop("model_path", tiny_model_path)
        log = tmp_path / f"llama-server-{len(started)}.log"
        eng = Engine(llama_server_bin, model_path, log, **kw)
        started.append(eng)
        eng.start()
        return eng

    yield start
    for eng in started:
        eng.stop()


@pytest.fixture
def engine_proxy(engine: Engine) -> Iterator[RecordingProxy]:
    """A recording proxy in front of the session engine (fresh records per test)."""
    proxy = RecordingProxy(engine.host, engine.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """The scripted OpenAI-compatible stub server (fresh per test)."""
    s = StubServer()
    try:
        yield s
    finally:
        s.close()
