"""Helpers shared by the widget tests."""

from __future__ import annotations

import threading

from rtq_nb.notebook.streamview import StreamView


def on_status(view: StreamView, status: str) -> threading.Event:
    """An event set when ``view.status`` becomes ``status`` (or already is)."""
    evt = threading.Event()
    view.observe(lambda ch: ch["new"] == status and evt.set(), names="status")
    if view.status == status:
        evt.set()
    return evt
