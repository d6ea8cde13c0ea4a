"""PromptLab: several prompts x parameter sets streaming side by side in a grid.

Every run is an ordinary streaming request, so it also lands in the queue's history
(``rtq_nb.notebook.views.history``) for later comparison.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from rtq_nb.errors import RequestTimeout
from rtq_nb.notebook._display import ShowOnce
from rtq_nb.notebook.streamview import StreamView

if TYPE_CHECKING:
    import pandas as pd

    from rtq_nb.client.sync import Client

RESULT_COLUMNS = (
    "request_id",
    "prompt",
    "params",
    "text",
    "status",
    "ttft_ms",
    "tokens",
    "tokens_per_s",
    "queue_wait_ms",
    "elapsed_s",
)


def _title(prompt: Any, params: dict[str, Any]) -> str:
    p = prompt if isinstance(prompt, str) else json.dumps(prompt, default=str)
    p = p if len(p) <= 120 else p[:119] + "…"
    ps = json.dumps(params, default=str, sort_keys=True) if params else "default params"
    return (
        f"<div class='rtq-lab-title'><b>{html.escape(p)}</b><br>"
        f"<code>{html.escape(ps)}</code></div>"
    )


class PromptLab(ShowOnce, widgets.GridBox):  # type: ignore[misc]
    """Run each prompt with each parameter set as a streaming request and watch them side by
    side (one :class:`StreamView` per run, prompt-major order).

    ``prompts``: one prompt or a list; ``param_sets``: None (one run with default params), a
    dict, or a list of dicts; ``columns``: grid columns (default: one per parameter set, up
    to 4, else 3). ``run()`` shows the lab if it has not been shown yet."""

    def __init__(
        self,
        client: Client,
        prompts: Any,
        param_sets: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        *,
        columns: int | None = None,
        priority: int = 0,
        timeout: float | None = None,
        markdown: bool = False,
    ) -> None:
        self.client = client
        self.prompts: list[Any] = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        if param_sets is None:
            sets: list[dict[str, Any]] = [{}]
        elif isinstance(param_sets, dict):
            sets = [param_sets]
        else:
            sets = [dict(p) for p in param_sets]
        if not self.prompts or not sets:
            raise ValueError("PromptLab needs at least one prompt and one parameter set")
        self.param_sets = sets
        self.runs: list[tuple[Any, dict[str, Any]]] = [(p, s) for p in self.prompts for s in sets]
        if columns is None:
            columns = len(sets) if 1 < len(sets) <= 4 else min(len(self.runs), 3)
        self.columns = max(1, int(columns))
        self.priority, self.timeout, self.markdown = priority, timeout, markdown
        self.views: list[StreamView] = []
        super().__init__(
            [self._cell(p, s, widgets.HTML("<i>call run()</i>")) for p, s in self.runs],
            layout=widgets.Layout(
                grid_template_columns=f"repeat({self.columns}, minmax(0, 1fr))",
                grid_gap="8px",
            ),
        )
        self.add_class("rtq-prompt-lab")

    @staticmethod
    def _cell(prompt: Any, params: dict[str, Any], body: Any) -> Any:
        cell = widgets.VBox([widgets.HTML(_title(prompt, params)), body])
        cell.add_class("rtq-lab-cell")
        return cell

    def run(self, block: bool = False) -> None:
        """Submit every run (again, if called twice) and start streaming; returns at once
        unless ``block``. Shows the lab first if it has not been shown."""
        handles = [
            self.client.submit(
                p,
                stream=True,
                params=s or None,
                priority=self.priority,
                timeout=self.timeout,
            )
            for p, s in self.runs
        ]
        self.views = [StreamView(h, markdown=self.markdown) for h in handles]
        cells = zip(self.runs, self.views, strict=True)
        self.children = [self._cell(p, s, v) for (p, s), v in cells]
        if not self.shown:
            self.show()
        for v in self.views:
            v.start()
        if block:
            self.wait()

    def wait(self, timeout: float | None = None) -> None:
        """Block until every run has ended (RequestTimeout after ``timeout`` seconds)."""
        end = None if timeout is None else time.monotonic() + timeout
        for v in self.views:
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                v.wait(left)
            except RequestTimeout:
                raise RequestTimeout(
                    f"PromptLab: {sum(not x.done for x in self.views)} run(s) still streaming "
                    f"after {timeout} s",
                    request_id=v.request_id,
                    status=v.status,
                    waited=timeout,
                ) from None

    def results(self) -> pd.DataFrame:
        """One row per run: request_id, prompt, params, text, status, ttft_ms, tokens,
        tokens_per_s, queue_wait_ms, elapsed_s (what is known so far if still running)."""
        import pandas as pd

        rows = []
        for (prompt, params), v in zip(self.runs, self.views, strict=True):
            m = v.metrics
            rows.append(
                (
                    v.request_id,
                    prompt,
                    params,
                    v.text,
                    v.status,
                    m["ttft_ms"],
                    m["tokens"],
                    m["tokens_per_s"],
                    m["queue_wait_ms"],
                    m["elapsed_s"],
                )
            )
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(RESULT_COLUMNS)
        dtypes = (
            "string",
            "object",
            "object",
            "string",
            "string",
            "Int64",
            "Int64",
            "Float64",
            "Int64",
            "Float64",
        )
        frame: pd.DataFrame = pd.DataFrame(
            {
                name: pd.Series(list(values), dtype=dtype)
                for name, values, dtype in zip(RESULT_COLUMNS, cols, dtypes, strict=True)
            }
        )
        return frame


__all__ = ["PromptLab"]
