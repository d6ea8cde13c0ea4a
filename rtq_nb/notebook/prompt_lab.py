"""PromptLab: several prompts x parameter sets streaming side by side in a grid.

Rows are prompts, columns parameter sets (given, or a ``sweep`` over a grid of parameters:
:func:`~rtq_nb.notebook.lab_results.param_grid`), under a sticky header row; every cell has a
fixed height and scrolls on its own, with its own Cancel button, and a Cancel-all button
stops every run. Every run is an ordinary streaming request, so it also lands in the queue's
history (``rtq_nb.notebook.views.history``): :meth:`PromptLab.from_history` runs past requests
again. :meth:`PromptLab.results` is a typed DataFrame (definitions: ``lab_results``),
:meth:`PromptLab.export` writes it to CSV / JSON / Parquet.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from rtq_nb.errors import RequestTimeout, RtqError, WorkerLost
from rtq_nb.notebook._display import ShowOnce
from rtq_nb.notebook.lab_results import (
    RESULT_COLUMNS,
    RunResult,
    as_text,
    export_results,
    param_grid,
    results_frame,
    run_result,
)
from rtq_nb.notebook.streamview import StreamView, stream_view
from rtq_nb.protocol.records import Chunk, RequestRecord

if TYPE_CHECKING:
    import pandas as pd

    from rtq_nb.client.sync import Client

__all__ = ["RESULT_COLUMNS", "PromptLab", "param_grid"]

CELL_HEIGHT = "220px"  # every run cell: fixed height, its stream scrolls inside
CHUNK_READ_S = 2.0  # at most this long to read a finished run's stream back for its metrics
_CSS = """<style>
.rtq-prompt-lab .rtq-lab-grid {max-height: 75vh; overflow: auto; align-items: start}
.rtq-prompt-lab .rtq-lab-head {position: sticky; top: 0; z-index: 2; padding: 4px 6px;
  background: var(--jp-layout-color1, #fff); border-bottom: 2px solid #ccc;
  font-size: 12px; overflow: hidden; text-overflow: ellipsis}
.rtq-prompt-lab .rtq-lab-prompt {font-size: 12px; padding: 4px; word-break: break-word}
.rtq-prompt-lab .rtq-lab-cell {border: 1px solid #ddd; border-radius: 4px; padding: 2px}
.rtq-prompt-lab .rtq-lab-cellbar {font-size: 11px; white-space: nowrap; overflow: hidden}
.rtq-prompt-lab .rtq-lab-scroll {overflow: auto}
</style>"""


ENDED = frozenset({"done", "failed", "cancelled", "timeout", "expired", "error"})


def _ended(view: StreamView) -> bool:
    return str(view.status) in ENDED


def _short(value: Any, limit: int = 160) -> str:
    s = as_text(value)
    return html.escape(s if len(s) <= limit else s[: limit - 1] + "…")


class PromptLab(ShowOnce, widgets.VBox):  # type: ignore[misc]
    """Run each prompt with each parameter set as a streaming request and watch them side by
    side (one :class:`StreamView` per run, in a scroll box of a fixed height).

    ``prompts``: one prompt or a list; ``param_sets``: None (default params), a dict, or a
    list of dicts; ``sweep``: ``{"temperature": [0, 0.7], "max_tokens": [64, 128]}`` adds the
    cartesian product of those values (merged over each parameter set). ``run()`` shows the
    lab if it has not been shown yet; ``results()`` / ``export(path)`` once it ran."""

    def __init__(
        self,
        client: Client,
        prompts: Any,
        param_sets: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        sweep: Mapping[str, Sequence[Any]] | None = None,
        runs: Sequence[tuple[Any, Mapping[str, Any]]] | None = None,
        priority: int = 0,
        timeout: float | None = None,
        markdown: bool = False,
        cell_height: str = CELL_HEIGHT,
    ) -> None:
        self.client = client
        self.prompts: list[Any] = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        if param_sets is None:
            sets: list[dict[str, Any]] = [{}]
        elif isinstance(param_sets, Mapping):
            sets = [dict(param_sets)]
        else:
            sets = [dict(p) for p in param_sets]
        if sweep:
            sets = [g for s in sets for g in param_grid(sweep, s)]
        self.param_sets = sets
        if runs is None:
            runs = [(p, s) for p in self.prompts for s in sets]
        self.runs: list[tuple[Any, dict[str, Any]]] = [(p, dict(s)) for p, s in runs]
        if not self.runs:
            raise ValueError("PromptLab needs at least one prompt and one parameter set")
        self.priority, self.timeout, self.markdown = priority, timeout, markdown
        self.cell_height = cell_height
        self.views: list[StreamView] = []
        self._done: dict[str, RunResult] = {}  # finished runs' rows, read once
        self._place()
        self.cancel_all_button = widgets.Button(
            description="Cancel all",
            icon="stop",
            tooltip="Cancel every run of this lab",
            layout=widgets.Layout(width="auto"),
        )
        self.cancel_all_button.on_click(lambda _b: self.cancel_all())
        self.summary = widgets.HTML(self._summary())
        self.grid = widgets.GridBox(layout=self._grid_layout())
        self.grid.add_class("rtq-lab-grid")
        self.grid.children = self._grid_children([None] * len(self.runs))
        bar = widgets.HBox([self.cancel_all_button, self.summary])
        super().__init__([widgets.HTML(_CSS), bar, self.grid])
        self.add_class("rtq-prompt-lab")

    # ---- layout ---------------------------------------------------------------------------
    def _place(self) -> None:
        """Each run's (row, column): rows are prompts, columns distinct parameter sets; a
        prompt that repeats a parameter set gets another row."""
        keys = [as_text(s) for _, s in self.runs]
        self.columns = list(dict.fromkeys(keys))
        self.rows: list[Any] = []
        taken: list[tuple[str, set[int]]] = []
        self.cells: list[tuple[int, int]] = []
        for (prompt, _), key in zip(self.runs, keys, strict=True):
            col, pkey = self.columns.index(key), as_text(prompt)
            row = next((i for i, (k, t) in enumerate(taken) if k == pkey and col not in t), None)
            if row is None:
                row = len(taken)
                taken.append((pkey, set()))
                self.rows.append(prompt)
            taken[row][1].add(col)
            self.cells.append((row, col))

    def _grid_layout(self) -> widgets.Layout:
        n = len(self.columns)
        return widgets.Layout(
            grid_template_columns=f"minmax(120px, 0.6fr) repeat({n}, minmax(260px, 1fr))",
            grid_auto_rows="auto",
            grid_gap="6px",
            width="100%",
        )

    def _grid_children(self, bodies: Sequence[Any]) -> list[Any]:
        corner = widgets.HTML("<b>prompt \\ params</b>")
        heads = [
            widgets.HTML(f"<code>{_short(json.loads(k) or 'default params', 200)}</code>")
            for k in self.columns
        ]
        for h in (corner, *heads):
            h.add_class("rtq-lab-head")
        grid: list[list[Any]] = [
            [widgets.HTML(f"<b>{_short(p, 300)}</b>"), *([None] * len(self.columns))]
            for p in self.rows
        ]
        for r in grid:
            r[0].add_class("rtq-lab-prompt")
        for i, ((row, col), body) in enumerate(zip(self.cells, bodies, strict=True)):
            grid[row][col + 1] = self._cell(i, body)
        blank = widgets.Box
        return [corner, *heads, *(c if c is not None else blank() for r in grid for c in r)]

    def _cell(self, i: int, body: Any) -> Any:
        status = widgets.HTML("not started" if body is None else "")
        status.add_class("rtq-lab-cellbar")
        cancel = widgets.Button(
            description="Cancel",
            icon="stop",
            tooltip="Cancel this run",
            disabled=body is None,
            layout=widgets.Layout(width="auto", min_width="90px"),
        )
        cancel.on_click(lambda _b: self.cancel(i))
        scroll = widgets.Box(
            [body if body is not None else widgets.HTML("<i>call run()</i>")],
            layout=widgets.Layout(height=self.cell_height, overflow="auto", display="block"),
        )
        scroll.add_class("rtq-lab-scroll")
        cell = widgets.VBox([widgets.HBox([cancel, status]), scroll])
        cell.add_class("rtq-lab-cell")
        return cell

    def _summary(self) -> str:
        n, done = len(self.runs), sum(_ended(v) for v in self.views)
        cols = len(self.columns)
        return (
            f"<span class='rtq-lab-summary'>{n} run(s): {len(self.rows)} prompt(s) x {cols} "
            f"parameter set(s) &middot; {done} finished</span>"
        )

    # ---- running --------------------------------------------------------------------------
    def run(self, block: bool = False) -> None:
        """Submit every run (again, if called twice) and start streaming; returns at once
        unless ``block``. Shows the lab first if it has not been shown."""
        self._done.clear()
        self.views = [
            stream_view(
                self.client,
                p,
                params=s or None,
                priority=self.priority,
                timeout=self.timeout,
                markdown=self.markdown,
                display=False,
            )
            for p, s in self.runs
        ]
        self.grid.children = self._grid_children(self.views)
        for v in self.views:
            if hasattr(v, "observe"):  # a traitlets widget: the summary follows the runs
                v.observe(lambda _c: self._refresh(), names="status")
        self._refresh()
        if not self.shown:
            self.show()
        if block:
            self.wait()

    def _refresh(self) -> None:
        self.summary.value = self._summary()

    def cancel(self, index: int) -> None:
        """Cancel run ``index`` (prompt-major order, as ``runs``); never blocks."""
        if self.views:
            self.views[index].cancel()

    def cancel_all(self) -> None:
        """Cancel every run still streaming (the Cancel-all button); never blocks."""
        for v in self.views:
            if not _ended(v):
                v.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Block until every run has ended (RequestTimeout after ``timeout`` seconds)."""
        end = None if timeout is None else time.monotonic() + timeout
        for v in self.views:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                v.wait(left)
            except RequestTimeout:
                raise RequestTimeout(
                    f"PromptLab: {sum(not _ended(x) for x in self.views)} run(s) still streaming "
                    f"after {timeout} s",
                    request_id=v.request_id,
                    status=v.status,
                    waited=timeout,
                ) from None
        self._refresh()

    # ---- results --------------------------------------------------------------------------
    def _read_back(self, rid: str) -> tuple[RequestRecord | None, list[Chunk]]:
        """A finished run's record and its stream's chunks (with their entry times), read
        once through the public client API (a second viewer of the stream)."""
        try:
            rec = self.client.get(rid)
        except RtqError:
            return None, []
        chunks: list[Chunk] = []
        handle = self.client.handle(rid, stream=True)
        for _attempt in range(1 + max(0, rec.attempts)):
            try:
                chunks.extend(handle.chunks(timeout=CHUNK_READ_S))
            except WorkerLost:
                chunks.clear()  # a worker died mid-stream: the metrics are the retry's
                continue
            except RtqError:
                pass  # failed / cancelled (its chunks so far are kept), or the stream expired
            break
        return rec, chunks

    def _result(self, i: int) -> RunResult:
        (prompt, params), v = self.runs[i], self.views[i]
        if not _ended(v):
            return run_result(prompt, params, v.request_id, v.status, v.text, None)
        if v.request_id not in self._done:
            rec, chunks = self._read_back(v.request_id)
            row = run_result(prompt, params, v.request_id, v.status, v.text, rec, chunks)
            self._done[v.request_id] = row
        return self._done[v.request_id]

    def results(self) -> pd.DataFrame:
        """One row per run (prompt-major): prompt, params (JSON), request_id, status, text,
        tokens, ttft_ms, tokens_per_s, duration_ms, queue_wait_ms, prompt_tokens,
        completion_tokens; typed (nullable) columns. Metrics are the record's and the
        stream's, on the Redis server's clock (see ``rtq_nb.notebook.lab_results``); a run
        still streaming has its text and status only."""
        if not self.views:
            raise RtqError("PromptLab.results(): call run() first")
        return results_frame(self._result(i) for i in range(len(self.runs)))

    def export(self, path: str | Path) -> Path:
        """Write ``results()`` to ``path``: ``.csv``, ``.json`` or ``.parquet`` (needs
        pyarrow). Read it back with ``rtq_nb.notebook.lab_results.load_results``."""
        return export_results(self.results(), path)

    def to_json(self) -> str:
        """``results()`` as a JSON list of records (one object per run)."""
        return str(self.results().to_json(orient="records", force_ascii=False))

    # ---- history --------------------------------------------------------------------------
    @classmethod
    def from_history(cls, client: Client, request_ids: str | Sequence[str], **kw: Any) -> PromptLab:
        """A new lab running past requests again: each one's input and params from its record
        (``kw``: as for the constructor, e.g. ``priority``). Call ``run()`` on it."""
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        records = [client.get(rid) for rid in ids]
        runs = [(r.input, dict(r.params)) for r in records]
        return cls(client, [p for p, _ in runs], runs=runs, **kw)

    def rerun(self, request_id: str | None = None, **kw: Any) -> PromptLab:
        """A new lab of this lab's runs (or of one, ``request_id``), from their records."""
        ids = [v.request_id for v in self.views]
        if request_id is not None:
            if request_id not in ids:
                raise RtqError(f"request {request_id} is not a run of this lab")
            ids = [request_id]
        if not ids:
            raise RtqError("PromptLab.rerun(): call run() first")
        kw = {"priority": self.priority, "timeout": self.timeout, "markdown": self.markdown, **kw}
        return type(self).from_history(self.client, ids, **kw)
