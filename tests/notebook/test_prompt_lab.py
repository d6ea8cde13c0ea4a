"""PromptLab: parameter grids, the lab's layout, its results' metrics (checked against the
stored records and a model's known rate), exports, and running past requests again.
Real Redis, in-process workers."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from rtq_nb import Client, RtqError, Worker, demo, views
from rtq_nb.notebook import PromptLab, StreamView
from rtq_nb.notebook.lab_results import (
    RESULT_COLUMNS,
    RunResult,
    export_results,
    load_results,
    param_grid,
    results_frame,
    run_result,
)
from rtq_nb.protocol.records import Chunk, RequestRecord, Status

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
RATE = 200  # the fake model's tokens/s


def answer(prompt: str, tokens: int) -> str:
    return "".join(demo.fake_answer(prompt, tokens))


# ---- pure ----------------------------------------------------------------------------------


def test_param_grid() -> None:
    assert param_grid({"t": [0, 0.7], "n": [64, 128]}) == [
        {"t": 0, "n": 64},
        {"t": 0, "n": 128},
        {"t": 0.7, "n": 64},
        {"t": 0.7, "n": 128},
    ]
    assert param_grid({"n": [1, 2]}, {"rate": 0, "n": 9}) == [
        {"rate": 0, "n": 1},
        {"rate": 0, "n": 2},
    ]
    assert param_grid({}) == [{}] and param_grid(None, {"a": 1}) == [{"a": 1}]
    assert param_grid({"a": range(3)}) == [{"a": 0}, {"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match="no values"):
        param_grid({"a": []})
    with pytest.raises(TypeError, match="list of values"):
        param_grid({"a": "abc"})


def test_results_frame_types_and_empty() -> None:
    empty = results_frame([])
    assert list(empty.columns) == list(RESULT_COLUMNS) and len(empty) == 0
    df = results_frame([RunResult("p", "{}", "id1", "queued", "")])
    assert {c: str(t) for c, t in df.dtypes.items()} == RESULT_COLUMNS
    assert df["tokens"].isna().all()


def test_run_result_definitions() -> None:
    rec = RequestRecord(
        id="r1",
        client="c",
        queue="q",
        priority=0,
        status=Status.COMPLETED,
        created_ms=1000,
        started_ms=1010,
        first_chunk_ms=1050,
        finished_ms=1250,
        queue_wait_ms=10,
        ttfc_ms=50,
        duration_ms=240,
        chunks=3,
        prompt_tokens=7,
        completion_tokens=None,
    )
    # 1 + 2 + 2 pieces written at 1050, 1150, 1250 (server entry times): 4 tokens in 200 ms
    chunks = [Chunk("a", 0, 1, "1050-0"), Chunk("bc", 1, 2, "1150-0"), Chunk("de", 3, 2, "1250-0")]
    r = run_result({"role": "user"}, {"b": 1, "a": 2}, "r1", "done", "abcde", rec, chunks)
    assert (r.prompt, r.params) == ('{"role": "user"}', '{"a": 2, "b": 1}')
    assert (r.tokens, r.ttft_ms, r.tokens_per_s) == (5, 50, 20.0)
    assert (r.duration_ms, r.queue_wait_ms, r.prompt_tokens) == (240, 10, 7)
    # the stream expired: from the record, (tokens - 1) over first chunk -> finished
    used = rec.model_copy(update={"completion_tokens": 5})
    assert run_result("p", {}, "r1", "done", "", used).tokens_per_s == 20.0
    assert run_result("p", {}, "r1", "done", "", rec).tokens is None
    assert run_result("p", {}, "r1", "running", "ab", None).ttft_ms is None


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path) -> None:
    if HAS_PYARROW:
        pytest.skip("pyarrow is installed: the parquet round trip is tested instead")
    df = results_frame([RunResult("p", "{}", "id1", "done", "x", tokens=1)])
    with pytest.raises(RtqError, match="pip install pyarrow"):
        export_results(df, tmp_path / "r.parquet")
    with pytest.raises(ValueError, match="unknown extension"):
        export_results(df, tmp_path / "r.xlsx")


# ---- with Redis and a worker ---------------------------------------------------------------


def test_lab_sweep_layout_metrics_and_exports(
    client: Client, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    start_worker(demo.fake_llm, concurrency=8)
    prompts = ["first <prompt>", "second"]
    sweep = {"tokens": [40, 60], "temperature": [0, 0.7]}
    lab = PromptLab(client, prompts, {"rate": RATE}, sweep=sweep)
    assert len(lab.runs) == 8 and len(lab.columns) == 4 and len(lab.rows) == 2
    assert lab.runs[1] == ("first <prompt>", {"rate": RATE, "tokens": 40, "temperature": 0.7})
    # header row (corner + 4 parameter sets), then per prompt: its label + 4 cells
    assert len(lab.grid.children) == 5 + 2 * 5
    assert "first &lt;prompt&gt;" in lab.grid.children[5].value
    assert "rtq-lab-head" in lab.grid.children[1]._dom_classes
    lab.run(block=True)
    cells = [c for c in lab.grid.children if "rtq-lab-cell" in c._dom_classes]
    assert len(cells) == 8
    for cell in cells:
        scroll = cell.children[1]
        assert scroll.layout.height == lab.cell_height and scroll.layout.overflow == "auto"
        assert isinstance(scroll.children[0], StreamView)
    df = lab.results()
    assert list(df.columns) == list(RESULT_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == RESULT_COLUMNS
    assert len(df) == 8 and set(df.status) == {"done"}
    for row in df.itertuples():
        params = json.loads(row.params)
        assert row.text == answer(row.prompt, params["tokens"])
        assert row.tokens == params["tokens"]
        rec = client.get(row.request_id)
        assert row.ttft_ms == rec.ttfc_ms and row.queue_wait_ms == rec.queue_wait_ms
        assert row.duration_ms == rec.duration_ms
        # the model's rate, from the chunks' server entry times (not the kernel's arrivals)
        assert abs(row.tokens_per_s - RATE) / RATE < 0.2, (row.tokens_per_s, params)
    assert set(df.request_id) <= set(views.history(client).id)

    back = {}
    for ext in ["csv", "json", *(["parquet"] if HAS_PYARROW else [])]:
        path = lab.export(tmp_path / f"results.{ext}")
        back[ext] = load_results(path)
        pd.testing.assert_frame_equal(back[ext], df, check_exact=False)
    assert json.loads(lab.to_json())[0]["request_id"] == df.request_id[0]


def test_rerun_from_history(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(demo.fake_llm, concurrency=4)
    lab = PromptLab(client, ["a b", "c"], [{"tokens": 3, "rate": 0}, {"tokens": 5, "rate": 0}])
    lab.run(block=True)
    first = lab.results()
    again = PromptLab.from_history(client, list(first.request_id))
    assert again.runs == lab.runs and len(again.columns) == 2
    again.run(block=True)
    second = again.results()
    assert list(second.text) == list(first.text) and list(second.params) == list(first.params)
    assert not set(second.request_id) & set(first.request_id)
    one = lab.rerun(str(first.request_id[1]))
    assert one.runs == [lab.runs[1]]
    with pytest.raises(RtqError, match="not a run"):
        lab.rerun("nope")


def test_cancel_all(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(demo.fake_llm, concurrency=4)
    lab = PromptLab(client, ["x", "y", "z"], {"tokens": 2000, "rate": 50})
    lab.run()
    cells = [c for c in lab.grid.children if "rtq-lab-cell" in c._dom_classes]
    cells[0].children[0].children[0].click()  # the first cell's own Cancel button
    lab.views[0].wait(30)
    assert lab.views[0].status == "cancelled" and lab.views[1].status != "cancelled"
    lab.cancel_all_button.click()
    lab.wait(30)
    df = lab.results()
    assert set(df.status) == {"cancelled"}
    assert "3 finished" in lab.summary.value
    assert all(client.get(r).status.value == "cancelled" for r in df.request_id)
