"""Showing widgets once per cell (no duplicate output when a helper both displays a widget
and returns it as the cell's last expression), and picking widget or text at the edge."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["ShowOnce", "in_kernel", "render_markdown", "shell"]


def shell() -> Any:
    """The running IPython shell, or None (plain Python, or IPython not installed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def in_kernel() -> bool:
    """True inside a Jupyter kernel (an IPython shell with a kernel) where widgets can show."""
    ip = shell()
    if ip is None or getattr(ip, "kernel", None) is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def _cell() -> int | None:
    ip = shell()
    return None if ip is None else getattr(ip, "execution_count", None)


class ShowOnce:
    """Mixin for widgets: :meth:`show` displays it; IPython's own display of the same widget in
    the same cell (e.g. the cell's last expression) is then skipped instead of duplicated."""

    _shown_in: int | None = None

    @property
    def shown(self) -> bool:
        return self._shown_in is not None

    def show(self) -> None:
        """Display now, if running under IPython (a no-op in plain Python)."""
        if shell() is None:
            return
        from IPython.display import display

        bundle = self._repr_mimebundle_()  # type: ignore[attr-defined]
        display(bundle, raw=True)  # type: ignore[no-untyped-call,unused-ignore]
        self._shown_in = _cell()

    def _ipython_display_(self) -> None:
        if self._shown_in is not None and self._shown_in == _cell():
            return
        self.show()


def render_markdown(text: str) -> str | None:
    """Safe HTML for Markdown ``text`` (raw HTML escaped, harmful links dropped), or None when
    no Markdown library is installed (mistune, else python-markdown on escaped input)."""
    try:
        import mistune
    except ImportError:
        pass
    else:
        return str(mistune.create_markdown(escape=True)(text))
    try:
        import markdown  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return str(markdown.markdown(html.escape(text, quote=False)))
