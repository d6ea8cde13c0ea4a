"""PromptLab's parameter grids and its results table (no widgets).

The metrics of a finished run come from its stored record and its stream, on one clock, the
Redis server's (the same definitions as :class:`~rtq_nb.notebook.live_metrics.LiveMetrics`,
so they agree with the record, the history view and the stream widgets):

- ``ttft_ms``: the record's ``ttfc_ms``, the first chunk's time minus ``created_ms``;
- ``tokens``: the engine's ``completion_tokens`` when the worker recorded usage, else the
  pieces (tokens) the stream's chunks carried;
- ``tokens_per_s``: the tokens after the first chunk over the time between the first and the
  last chunk's stream entry times (when the worker wrote them, not when a reader got them);
  without the chunks (the stream expired): ``(tokens - 1) / (finished_ms - first_chunk_ms)``;
- ``duration_ms``: the record's (``finished_ms - started_ms``, the worker's service time);
- ``queue_wait_ms``: the record's (``started_ms - created_ms``);
- ``prompt_tokens`` / ``completion_tokens``: the engine's usage, when recorded.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rtq_nb.errors import RtqError
from rtq_nb.notebook.live_metrics import LiveMetrics
from rtq_nb.protocol.records import Chunk, RequestRecord

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "RESULT_COLUMNS",
    "RunResult",
    "export_results",
    "load_results",
    "param_grid",
    "results_frame",
    "run_result",
]

# column -> pandas dtype (nullable: a run still streaming has no record metrics yet)
RESULT_COLUMNS: dict[str, str] = {
    "prompt": "string",
    "params": "string",  # JSON, keys sorted
    "request_id": "string",
    "status": "string",
    "text": "string",
    "tokens": "Int64",
    "ttft_ms": "Int64",
    "tokens_per_s": "Float64",
    "duration_ms": "Int64",
    "queue_wait_ms": "Int64",
    "prompt_tokens": "Int64",
    "completion_tokens": "Int64",
}


def param_grid(
    sweep: Mapping[str, Sequence[Any]] | None = None,
    base: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The cartesian product of ``sweep``'s values, each merged over ``base``, in order (the
    last key varies fastest): ``param_grid({"t": [0, 1], "n": [8, 16]})`` ->
    ``[{"t": 0, "n": 8}, {"t": 0, "n": 16}, {"t": 1, "n": 8}, {"t": 1, "n": 16}]``.
    An empty sweep gives ``[base]``; a key with no values is an error (it would give no run)."""
    sweep = dict(sweep or {})
    for key, values in sweep.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"sweep[{key!r}] must be a list of values, got {values!r}")
        sweep[key] = list(values)
        if not sweep[key]:
            raise ValueError(f"sweep[{key!r}] has no values")
    keys = list(sweep)
    return [
        {**(base or {}), **dict(zip(keys, combo, strict=True))}
        for combo in itertools.product(*(sweep[k] for k in keys))
    ]


def as_text(value: Any) -> str:
    """A prompt or params as one string (JSON for anything but a string; keys sorted)."""
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


@dataclass(frozen=True)
class RunResult:
    """One row of :meth:`PromptLab.results` (see the module's doc for the definitions)."""

    prompt: str
    params: str
    request_id: str
    status: str
    text: str
    tokens: int | None = None
    ttft_ms: int | None = None
    tokens_per_s: float | None = None
    duration_ms: int | None = None
    queue_wait_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def row(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in RESULT_COLUMNS)


def run_result(
    prompt: Any,
    params: Mapping[str, Any],
    request_id: str,
    status: str,
    text: str,
    record: RequestRecord | None,
    chunks: Sequence[Chunk] | None = None,
) -> RunResult:
    """A run's row from its record and its stream's chunks (pure)."""
    base = RunResult(as_text(prompt), as_text(dict(params)), request_id, status, text)
    if record is None:
        return base
    m = LiveMetrics()
    for c in chunks or ():
        m.on_chunk(c)
    m.on_record(record)
    snap = m.snapshot()
    tps = snap.tokens_per_s
    if not chunks:  # the stream was not read: the record's first chunk and end
        first, end, n = record.first_chunk_ms, record.finished_ms, snap.tokens
        tps = (n - 1) / ((end - first) / 1000) if first and end and end > first and n else None
    ttft = record.ttfc_ms if record.ttfc_ms is not None else snap.ttft_ms
    return RunResult(
        base.prompt,
        base.params,
        request_id,
        status,
        text,
        tokens=snap.tokens if chunks or record.completion_tokens else None,
        ttft_ms=ttft,
        tokens_per_s=tps,
        duration_ms=record.duration_ms,
        queue_wait_ms=record.queue_wait_ms,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
    )


def results_frame(results: Iterable[RunResult]) -> pd.DataFrame:
    """The typed DataFrame of ``results`` (columns and dtypes: ``RESULT_COLUMNS``)."""
    import pandas as pd

    rows = [r.row() for r in results]
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(RESULT_COLUMNS)
    data = {
        name: pd.Series(list(values), dtype=dtype)
        for (name, dtype), values in zip(RESULT_COLUMNS.items(), cols, strict=True)
    }
    frame: pd.DataFrame = pd.DataFrame(data)
    return frame


def _parquet_engine() -> None:
    if importlib.util.find_spec("pyarrow") is None:
        raise RtqError(
            "Parquet export needs pyarrow: `pip install pyarrow` (or export to .csv / .json)"
        )


def export_results(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` by its extension: ``.csv``, ``.json`` (records, one object
    per run) or ``.parquet`` (needs pyarrow). Returns the path."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".csv":
        frame.to_csv(p, index=False)
    elif ext == ".json":
        p.write_text(frame.to_json(orient="records", force_ascii=False), encoding="utf-8")
    elif ext in (".parquet", ".pq"):
        _parquet_engine()
        frame.to_parquet(p, index=False)
    else:
        raise ValueError(f"export: unknown extension {ext!r} (use .csv, .json or .parquet)")
    return p


def load_results(path: str | Path) -> pd.DataFrame:
    """Read an exported results file back with its dtypes (``RESULT_COLUMNS``)."""
    import pandas as pd

    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".csv":
        raw = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""])
    elif ext == ".json":
        raw = pd.DataFrame(json.loads(p.read_text(encoding="utf-8")))
    elif ext in (".parquet", ".pq"):
        _parquet_engine()
        raw = pd.read_parquet(p)
    else:
        raise ValueError(f"load_results: unknown extension {ext!r}")
    out = {}
    for name, dtype in RESULT_COLUMNS.items():
        col = raw[name] if name in raw else pd.Series([None] * len(raw))
        if dtype != "string":
            col = pd.to_numeric(col, errors="coerce")
        out[name] = col.astype(cast(Any, dtype))
    frame: pd.DataFrame = pd.DataFrame(out)
    return frame
