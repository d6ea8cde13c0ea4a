"""Small styled HTML cards for notebooks' rich reprs of handles and workers (pure: strings
only), one look for all: a title, an identifier, a coloured status badge, details."""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["STATUS_COLORS", "card", "status_badge"]

STATUS_COLORS = {
    "completed": "#2e7d32",
    "running": "#1565c0",
    "pending": "#757575",
    "submitted": "#757575",
    "failed": "#c62828",
    "cancelled": "#6d4c41",
    "expired": "#ef6c00",
    "timeout": "#f9a825",
    "stopped": "#757575",
}


def status_badge(state: str) -> str:
    color = STATUS_COLORS.get(state.split(" ", 1)[0], "#455a64")
    return (
        f"<span class='rtq-status rtq-status-{html.escape(state.split(' ', 1)[0])}' "
        f"style='background:{color};color:#fff;border-radius:8px;padding:1px 7px;"
        f"font-size:85%;white-space:nowrap'>{html.escape(state)}</span>"
    )


def card(
    css: str, title: str, ident: str, state: str, details: Sequence[str], body: str = ""
) -> str:
    """A one-line card: ``title`` ``ident`` [state] · detail · detail, then ``body`` (HTML,
    already escaped). ``details`` are plain text (escaped here)."""
    parts = " &middot; ".join(html.escape(d) for d in details)
    return (
        f"<div class='{css}' style='font-family:var(--jp-ui-font-family,sans-serif);"
        f"border-left:3px solid {STATUS_COLORS.get(state.split(' ', 1)[0], '#455a64')};"
        f"padding:2px 8px'><b>{html.escape(title)}</b> <code>{html.escape(ident)}</code> "
        f"{status_badge(state)}" + (f" &middot; {parts}" if parts else "") + body + "</div>"
    )
