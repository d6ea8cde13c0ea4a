"""Notebook presentation layer: ipywidgets views of requests and queues (an adapter).

Nothing here is imported by ``import rtq_nb``, and importing this package does not import
ipywidgets or pandas either: each name is loaded on first use, so a worker never needs them.

::

    from rtq_nb.notebook import stream_view, StreamView, PromptLab, QueueMonitor, progress
    view = stream_view(client, "Tell me about Redis", params={"tokens": 200})
    lab = PromptLab(client, "Explain queues", [{"rate": 20}, {"rate": 80}]); lab.run()
    QueueMonitor(client).start()
    results = progress(client.submit_many(prompts))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtq_nb.notebook.monitor import QueueMonitor
    from rtq_nb.notebook.progressbar import progress
    from rtq_nb.notebook.prompt_lab import PromptLab
    from rtq_nb.notebook.streamview import StreamView, stream_view

_WHERE = {
    "StreamView": "streamview",
    "stream_view": "streamview",
    "PromptLab": "prompt_lab",
    "QueueMonitor": "monitor",
    "progress": "progressbar",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rtq_nb.notebook' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = ["PromptLab", "QueueMonitor", "StreamView", "progress", "stream_view"]
