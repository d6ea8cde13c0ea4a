"""StreamView's widget model: the text goes to the front end as deltas (custom messages), the
status, reason and metrics (``stats``) as small synced traits. An anywidget (ES module front end,
``_stream_front.js``/``.css``) when anywidget is installed; else a plain ipywidgets HTML widget
that re-renders the whole text (the fallback: it works everywhere, it is just not a delta).

Messages, kernel -> front end (``content`` of an ipywidgets ``custom`` message):

- ``{"t": "append", "text": delta, "at": n}``: text to add at the end; ``n`` is where it
  starts (in UTF-16 code units, JavaScript's string length), so a view sees a gap;
- ``{"t": "reset"}``: a retry starts the text over;
- ``{"t": "sync", "text": whole}``: the whole text sent so far, the answer to a hello.

Front end -> kernel: ``{"t": "hello"}`` when a view lacks text: it was rendered after text
was sent (a page reload, a second display), an append starts past its end, or the ``chars``
in the ``stats`` trait (the text length sent so far) exceed its text; and ``{"t": "cancel"}``
(its Cancel button). A view rendered while queued never says hello: deltas only.
"""

from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import traitlets

from rtq_nb.notebook._throttle import fmt_ms

try:
    import anywidget
except ImportError:  # pragma: no cover - the fallback is tested by forcing HAVE_ANYWIDGET
    anywidget = None  # type: ignore[assignment]

__all__ = ["HAVE_ANYWIDGET", "DeltaWidget", "status_line"]

HAVE_ANYWIDGET = anywidget is not None
_HERE = Path(__file__).parent
_Base: Any = anywidget.AnyWidget if anywidget is not None else widgets.HTML
_PRE = "<pre class='rtq-stream-text' style='white-space:pre-wrap;overflow-wrap:anywhere'>{}</pre>"


def status_line(status: str, reason: str, m: dict[str, Any]) -> str:
    """The status line as text (the front end draws the same one): badge, metrics, reason."""
    parts = [
        status,
        f"queue wait {fmt_ms(m.get('queue_wait_ms'))}",
        f"TTFT {fmt_ms(m.get('ttft_ms'))}",
        f"{m.get('tokens', 0)} tokens",
    ]
    if m.get("tokens_per_s") is not None:
        parts.append(f"{m['tokens_per_s']:.1f} tok/s")
    if m.get("elapsed_ms") is not None:
        parts.append(f"elapsed {fmt_ms(m['elapsed_ms'])}")
    if (u := m.get("usage")) is not None:
        parts.append(f"usage {u['prompt_tokens']} + {u['completion_tokens']} tokens")
    if reason:
        parts.append(reason)
    return " · ".join(parts)


def _units(text: str) -> int:
    """Length in UTF-16 code units (a JavaScript string's length)."""
    return len(text.encode("utf-16-le")) // 2


class DeltaWidget(_Base):  # type: ignore[misc]
    """The widget half of a StreamView: ``_emit`` sends text deltas, the traits sync state."""

    if HAVE_ANYWIDGET:
        _esm = (_HERE / "_stream_front.js").read_text(encoding="utf-8")
        _css = (_HERE / "_stream_front.css").read_text(encoding="utf-8")

    status = traitlets.Unicode("queued").tag(sync=True)
    reason = traitlets.Unicode("").tag(sync=True)
    stats = traitlets.Dict().tag(sync=True)  # the metrics, JSON (see StreamView.metrics)
    markdown = traitlets.Bool(False).tag(sync=True)
    stall_s = traitlets.Float(3.0).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._send_lock = threading.RLock()
        self._sent_parts: list[str] = []  # the text the front ends have (sent so far)
        self.sent_units = 0  # its length in UTF-16 code units (the front end's string length)
        self.messages_sent = 0  # comm messages: custom messages and trait syncs
        self.text_bytes_sent = 0  # UTF-8 bytes of text in custom messages (sync included)
        self.add_class("rtq-stream-view")
        if HAVE_ANYWIDGET:
            self.on_msg(self._on_front_msg)

    # ---- kernel -> front end ------------------------------------------------------------------
    def _emit(self, delta: str) -> int:
        """Send ``delta`` to the front ends; returns the comm messages sent (0 or 1)."""
        if not delta:
            return 0
        with self._send_lock:
            self._sent_parts.append(delta)
            at, self.sent_units = self.sent_units, self.sent_units + _units(delta)
            if not HAVE_ANYWIDGET:
                self._render_fallback()
                return 1
            self._send_custom({"t": "append", "text": delta, "at": at}, len(delta.encode()))
        return 1

    def _emit_reset(self) -> int:
        with self._send_lock:
            self._sent_parts.clear()
            self.sent_units = 0
            if not HAVE_ANYWIDGET:
                self._render_fallback()
            else:
                self._send_custom({"t": "reset"}, 0)
        return 1

    def _emit_sync(self) -> None:
        with self._send_lock:
            if len(self._sent_parts) > 1:
                self._sent_parts = ["".join(self._sent_parts)]
            whole = self._sent_parts[0] if self._sent_parts else ""
            self._send_custom({"t": "sync", "text": whole}, len(whole.encode()))

    def _send_custom(self, content: dict[str, Any], text_bytes: int) -> None:
        self.send(content)
        self.messages_sent += 1
        self.text_bytes_sent += text_bytes

    def _on_front_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        kind = content.get("t") if isinstance(content, dict) else None
        if kind == "hello":
            self._emit_sync()
        elif kind == "cancel":
            self.cancel()

    def cancel(self) -> None:  # StreamView's
        raise NotImplementedError

    @property
    def sent_text(self) -> str:
        """The text the front ends were sent so far (what they show)."""
        with self._send_lock:
            return "".join(self._sent_parts)

    # ---- the fallback (no anywidget): a plain HTML widget -----------------------------------
    def _render_fallback(self) -> None:
        line = html.escape(status_line(self.status, self.reason, self.stats))
        body = html.escape("".join(self._sent_parts))
        self.messages_sent += 1
        self.value = f"<div class='rtq-stream-status'>{line}</div>" + _PRE.format(body)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            preview = self.sent_text[-200:]
            data["text/plain"] = f"[{self.status}] {preview}"
        return data
