"""The sample notebooks match their sources, run top to bottom in a real kernel, and stream.

Each sample notebook is a jupytext percent-format source ``notebooks/<name>.py`` (what ruff
and mypy check) paired with ``notebooks/<name>.ipynb`` (what users open and these tests run);
a drift test fails when the two differ. Every notebook in ``notebooks/`` is executed with
nbclient (tests/jupyter_harness.py) in an isolated Jupyter environment, against the embedded
Redis its kernel starts (no URL), except ``queue_inspection.ipynb``, which also runs against a
Redis given by ``RTQ_REDIS_URL``. The comm traffic of the ``rtq-stream-text`` widget is
checked message by message (its text goes as custom messages with deltas: append, reset, sync),
and a 10,000-token stream measures how many widget updates per
second the kernel sends (``-s`` prints the numbers). ``rtq-nb lab`` (rtq_nb.cli.lab.run_lab)
is started and stopped once.
"""

from __future__ import annotations

import difflib
import html
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_harness import (
    NotebookRun,
    isolated_jupyter_env,
    run_notebook,
    write_notebook,
)

from rtq_nb import Client
from rtq_nb.demo import fake_answer
from rtq_nb.transport.embedded import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
SOURCES = sorted(p.name for p in NOTEBOOK_DIR.glob("*.py"))
#: Regenerates each .ipynb from its .py, whatever their mtimes (``jupytext --sync`` takes the
#: newer file as the source, and a checkout can leave an .ipynb newer than an edited .py).
#: ``--update`` keeps the .ipynb's cell ids and metadata.
RESYNC = "jupytext --to ipynb --update notebooks/*.py"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
STREAM_CLASS = "rtq-stream-view"
QUICKSTART_PROMPT = "Explain how a Redis queue serves real-time inference."
QUICKSTART_TOKENS = 60
_TAG = re.compile(r"<[^>]*>")


def visible_text(value: str) -> str:
    """The text a browser shows for an HTML widget value (tags dropped, entities decoded)."""
    return html.unescape(_TAG.sub("", value))


def kernel_env(tmp_path: Path, redis_url: str | None = None) -> dict[str, str]:
    """Isolated Jupyter env; the kernel starts its own embedded Redis unless ``redis_url``."""
    env = isolated_jupyter_env(tmp_path / "jupyter")
    for name in ("RTQ_REDIS_URL", "REDIS_URL"):
        env.pop(name, None)
    if redis_url:
        env["RTQ_REDIS_URL"] = redis_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def execute(name: str, tmp_path: Path, redis_url: str | None = None) -> NotebookRun:
    """Run a copy of ``notebooks/<name>`` (so outputs never land in the repo); keep the
    executed copy under tmp_path for inspection."""
    work = tmp_path / "nb"
    work.mkdir(parents=True, exist_ok=True)
    src = shutil.copy(NOTEBOOK_DIR / name, work / name)
    return run_notebook(
        Path(src),
        env=kernel_env(tmp_path, redis_url),
        timeout=120,
        output_path=work / f"executed-{name}",
    )


def outputs_text(run: NotebookRun) -> str:
    parts: list[str] = []
    for cell in run.notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.append(str(out.get("data", {}).get("text/plain", "")))
            parts.append(str(out.get("data", {}).get("text/html", "")))
    return "\n".join(parts)


def text_messages(run: NotebookRun, model_id: str) -> list[Any]:
    """The custom messages (text deltas) the kernel sent to the stream widget ``model_id``."""
    return [
        m
        for m in run.comm_messages
        if m.comm_id == model_id and m.msg_type == "comm_msg" and m.method == "custom"
    ]


def stream_texts(run: NotebookRun, model_id: str) -> list[str]:
    """The text a front end that got every message shows, after each message."""
    text, out = "", []
    for m in text_messages(run, model_id):
        c = m.data["content"]
        if c["t"] == "append":
            text += c["text"]
        elif c["t"] in ("reset", "sync"):
            text = c.get("text", "")
        out.append(text)
    return out


def stream_states(run: NotebookRun, model_id: str) -> list[str]:
    """Distinct texts the widget showed, in order (consecutive repeats dropped)."""
    texts = stream_texts(run, model_id)
    return [t for i, t in enumerate(texts) if t.strip() and (i == 0 or t != texts[i - 1])]


def assert_strict_growth(states: list[str]) -> None:
    for i, (prev, nxt) in enumerate(itertools.pairwise(states)):
        assert nxt.startswith(prev) and len(nxt) > len(prev), (
            f"widget state {i + 1} does not extend state {i}: {prev[-60:]!r} -> {nxt[-60:]!r}"
        )


def peak_per_second(times: list[datetime]) -> int:
    """Largest number of timestamps inside any 1-second window."""
    peak, start = 0, 0
    for end, t_end in enumerate(times):
        while (t_end - times[start]).total_seconds() >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


_runs: dict[str, NotebookRun] = {}


@pytest.fixture(scope="module")
def run_of(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``run_of(name)``: execute a sample notebook once per module (embedded Redis)."""

    def get(name: str) -> NotebookRun:
        if name not in _runs:
            _runs[name] = execute(name, tmp_path_factory.mktemp(Path(name).stem))
        return _runs[name]

    yield get
    _runs.clear()


# --------------------------------------------------------------------------- all notebooks
def test_notebooks_present_and_paired_with_sources() -> None:
    """The five sample notebooks exist, each as notebooks/<name>.py + notebooks/<name>.ipynb."""
    assert {
        "quickstart.ipynb",
        "prompt_lab.ipynb",
        "queue_inspection.ipynb",
        "scaling.ipynb",
        "reliability.ipynb",
    } <= set(NOTEBOOKS)
    py = {Path(n).stem for n in SOURCES}
    ipynb = {Path(n).stem for n in NOTEBOOKS}
    assert not ipynb - py, f"notebooks without a .py source: {sorted(ipynb - py)}"
    assert not py - ipynb, f"sources without a .ipynb (run `{RESYNC}`): {sorted(py - ipynb)}"


def _first_difference(expected: list[tuple[str, str]], actual: list[tuple[str, str]]) -> str:
    for i, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            diff = difflib.unified_diff(
                got[1].splitlines(), want[1].splitlines(), ".ipynb", ".py", n=1, lineterm=""
            )
            return f"cell {i} ({got[0]} in .ipynb, {want[0]} in .py):\n" + "\n".join(diff)
    return f"{len(actual)} cells in .ipynb, {len(expected)} in .py"


@pytest.mark.parametrize("source", SOURCES)
def test_notebook_in_sync_with_source(source: str) -> None:
    """notebooks/<name>.ipynb holds exactly the cells (type and source) that jupytext reads
    from notebooks/<name>.py, the source of truth, with no outputs."""
    import jupytext

    text = jupytext.read(NOTEBOOK_DIR / source)
    jt = text.metadata.get("jupytext", {})
    assert jt.get("formats") == "ipynb,py:percent", f"{source}: header must pair ipynb,py:percent"
    assert jt.get("text_representation", {}).get("format_name") == "percent", source
    name = f"{Path(source).stem}.ipynb"
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    expected = [(c.cell_type, c.source) for c in text.cells]
    actual = [(c.cell_type, c.source) for c in notebook.cells]
    assert actual == expected, (
        f"notebooks/{name} is out of sync with notebooks/{source}, its source: "
        f"{_first_difference(expected, actual)}\nEdit the .py, then regenerate the .ipynb: "
        f"{RESYNC}"
    )
    assert notebook.cells[0].cell_type == "markdown", f"{name} must open with a markdown cell"
    for i, cell in enumerate(notebook.cells):
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            f"{name} cell {i} is committed with outputs: "
            f"jupyter nbconvert --clear-output --inplace notebooks/{name}"
        )
    assert text.metadata.get("kernelspec") == notebook.metadata.get("kernelspec") == KERNELSPEC


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_top_to_bottom(name: str, run_of: Any) -> None:
    run = run_of(name)  # raises NotebookExecutionError naming the failing cell
    code_cells = [c for c in run.notebook.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells), name
    errors = [o for c in code_cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    print(f"\n[notebooks] {name}: {run.duration_s:.1f} s, {len(run.comm_messages)} comm messages")


# --------------------------------------------------------------------------- quickstart
def test_quickstart_stream_widget_streams(run_of: Any) -> None:
    run = run_of("quickstart.ipynb")
    expected = "".join(fake_answer(QUICKSTART_PROMPT, QUICKSTART_TOKENS))

    (model_id,) = run.model_ids_with_class(STREAM_CLASS)
    states = stream_states(run, model_id)
    # 60 tokens at 30 tokens/s over ~2 s: a live widget shows many intermediate states
    assert len(states) >= 5, f"only {len(states)} distinct widget states: {states!r}"
    assert_strict_growth(states)
    assert states[0] != expected, "the first update already held the whole answer"
    assert states[-1].strip() == expected
    assert stream_texts(run, model_id)[-1].strip() == expected
    assert run.widget_states()[model_id]["status"] == "done"
    # the sync and async API cells assert they got the same answer; the last cell says DONE
    text = outputs_text(run)
    assert expected in text
    assert "[DONE] quickstart finished" in text
    print(
        f"\n[quickstart] {len(text_messages(run, model_id))} text deltas, "
        f"{len(states)} distinct states, peak "
        f"{peak_per_second([m.kernel_time for m in text_messages(run, model_id)])} deltas/s"
    )


# --------------------------------------------------------------------------- queue inspection
def test_queue_inspection_uses_rtq_redis_url(tmp_path: Path) -> None:
    """With RTQ_REDIS_URL set, the notebook inspects that Redis (not an embedded one)."""
    with EmbeddedRedis(tcp=True) as srv:
        run = execute("queue_inspection.ipynb", tmp_path, redis_url=srv.tcp_url)
        assert f"Redis: {srv.tcp_url}" in outputs_text(run)
        with Client(srv.tcp_url, queue="inspection") as c:
            stats = c.stats()
            assert stats["pending"] == 0 and stats.get("completed", 0) >= 6, stats
            assert c.workers() == []  # the notebook stopped its worker


# --------------------------------------------------------------------------- update rate
LONG_TOKENS = 10_000
LONG_CELLS = [
    """\
import json, time
from rtq_nb import Client, Worker
from rtq_nb.demo import fake_llm
from rtq_nb.notebook import stream_view
client = Client()
worker = Worker(fake_llm, client.url).start()
timings = {}""",
    f"""\
for name, rate in (("paced", 2500), ("burst", 0)):
    t0 = time.perf_counter()
    view = stream_view(client, f"long {{name}}", params={{"tokens": {LONG_TOKENS}, "rate": rate}},
                       timeout=120, block=True)
    timings[name] = {{"seconds": time.perf_counter() - t0, "status": str(view.status),
                      "update_count": view.update_count, "chars": len(view.text)}}
print("TIMINGS " + json.dumps(timings))""",
    "worker.stop()",
]


def test_long_stream_update_rate_is_bounded(tmp_path: Path) -> None:
    """10,000 tokens, paced (2,500 tokens/s, ~4 s) and as fast as possible: the widget must
    stay live (many updates) yet coalesce to at most a few tens of comm messages per second."""
    nb = write_notebook(tmp_path / "nb" / "long_stream.ipynb", LONG_CELLS)
    run = run_notebook(nb, env=kernel_env(tmp_path), timeout=180)
    line = next(ln for ln in outputs_text(run).splitlines() if ln.startswith("TIMINGS "))
    timings = json.loads(line.removeprefix("TIMINGS "))

    expected = {name: "".join(fake_answer(f"long {name}", LONG_TOKENS)) for name in timings}
    by_text: dict[str, str] = {}
    for mid in run.model_ids_with_class(STREAM_CLASS):
        texts = stream_texts(run, mid)
        final = texts[-1].strip() if texts else ""
        by_text.update({name: mid for name, text in expected.items() if text == final})
    assert set(by_text) == {"paced", "burst"}, "a widget's final text is not the full answer"

    for name, mid in by_text.items():
        msgs = text_messages(run, mid)
        states = stream_states(run, mid)
        assert_strict_growth(states)
        span = (msgs[-1].kernel_time - msgs[0].kernel_time).total_seconds() if msgs else 0.0
        mean = (len(msgs) - 1) / span if span > 0 else 0.0
        peak = peak_per_second([m.kernel_time for m in msgs])
        payload = sum(len(json.dumps(m.data)) for m in msgs)
        text_bytes = len(expected[name].encode())
        # every comm message the kernel sent while this stream ran (text, status line, button)
        during = [
            m
            for m in run.comm_messages
            if m.msg_type == "comm_msg"
            and msgs[0].kernel_time <= m.kernel_time <= msgs[-1].kernel_time
        ]
        all_peak = peak_per_second([m.kernel_time for m in during])
        print(
            f"\n[update rate] {name}: {LONG_TOKENS} tokens in {timings[name]['seconds']:.2f} s; "
            f"{len(msgs)} text updates over {span:.2f} s = {mean:.1f}/s mean, "
            f"peak {peak} in any 1 s window; all comm messages: {len(during)}, peak "
            f"{all_peak}/s; {payload / 1e6:.3f} MB of text-delta payload for "
            f"{text_bytes / 1e6:.3f} MB of text ({payload / text_bytes:.2f}x)"
        )
        assert payload <= 1.5 * text_bytes, f"{name}: {payload} B sent for {text_bytes} B"
        assert peak <= 60, f"{name}: {peak} widget updates in one second (a few tens at most)"
        assert all_peak <= 80, f"{name}: {all_peak} comm messages in one second"
        if name == "paced":  # ~4 s of streaming must show up as a live, growing widget
            assert len(states) >= 10, f"{name}: only {len(states)} distinct states"


# --------------------------------------------------------------------------- rtq-nb lab
def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_rtq_nb_lab_serves_with_embedded_redis(tmp_path: Path) -> None:
    """run_lab without a URL: embedded Redis up, RTQ_REDIS_URL exported to JupyterLab,
    /api/status answers; SIGTERM stops JupyterLab and the Redis with it."""
    env = kernel_env(tmp_path)
    env["JUPYTER_TOKEN"] = token = "rtq-lab-test"
    port = free_port()
    code = (
        "import sys; from rtq_nb.cli.lab import run_lab; "
        f"sys.exit(run_lab(None, {str(NOTEBOOK_DIR)!r}, {port}, False))"
    )
    log_path = tmp_path / "rtq-nb-lab.log"
    kids: list[int] = []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:  # process readiness: poll the server's status endpoint
            assert proc.poll() is None, log_path.read_text()
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2
                ) as resp:
                    status = json.loads(resp.read())
                    break
            except (urllib.error.URLError, OSError):
                assert time.monotonic() < deadline, f"no answer in 60 s:\n{log_path.read_text()}"
                time.sleep(0.2)
        assert "started" in status
        kids = _children(proc.pid)  # JupyterLab and the embedded redis-server
        (lab_pid,) = [k for k in kids if b"jupyterlab" in Path(f"/proc/{k}/cmdline").read_bytes()]
        environ = dict(
            kv.split("=", 1)
            for kv in Path(f"/proc/{lab_pid}/environ").read_text().split("\0")
            if "=" in kv
        )
        url = environ["RTQ_REDIS_URL"]
        assert url.startswith("redis://127.0.0.1:"), url  # the embedded server's TCP URL
        assert f"RTQ_REDIS_URL={url}" in log_path.read_text()  # and rtq-nb lab says so
        with Client(url) as c:
            assert c.queues() == []  # the exported Redis answers (and is a fresh one)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        for pid in kids:  # JupyterLab and redis-server are gone with it
            assert not Path(f"/proc/{pid}").exists(), f"child {pid} outlived rtq-nb lab"
    finally:
        if proc.poll() is None:
            kids = kids or _children(proc.pid)
            proc.terminate()  # graceful: run_lab stops JupyterLab and its Redis
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in kids:  # never leave our grandchildren behind when something failed
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
