"""progress(): wait for many requests with a progress bar, picked at the edge (as dask does):
an ipywidgets IntProgress inside a Jupyter kernel, a text line on stderr elsewhere."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any

from rtq_nb.client.handle import AsyncRequestHandle
from rtq_nb.loop import portal
from rtq_nb.notebook._display import in_kernel

if TYPE_CHECKING:
    from rtq_nb.client.sync import RequestHandle

EVERY = 0.1  # s between progress redraws (the last one always shows)


class TextBar:
    """``[#####-----] 50/100 · 2 failed · 1.2 s`` redrawn in place with ``\\r``."""

    def __init__(self, total: int, out: IO[str] | None = None, width: int = 30) -> None:
        self.total, self.out, self.width = total, out or sys.stderr, width
        self.t0 = time.monotonic()
        self._last = float("-inf")

    def update(self, done: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < EVERY:
            return
        self._last = now
        filled = self.width * done // max(1, self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        extra = f" · {failed} failed" if failed else ""
        self.out.write(f"\r[{bar}] {done}/{self.total}{extra} · {now - self.t0:.1f} s")
        if final:
            self.out.write("\n")
        self.out.flush()


class WidgetBar:
    """An IntProgress and a label, displayed at creation."""

    def __init__(self, total: int) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self.total = total
        self.t0 = time.monotonic()
        self._last = float("-inf")
        self.bar = widgets.IntProgress(value=0, min=0, max=max(1, total), bar_style="info")
        self.label = widgets.HTML(f"0/{total}")
        self.box = widgets.HBox([self.bar, self.label])
        self.box.add_class("rtq-progress")
        display(self.box)  # type: ignore[no-untyped-call,unused-ignore]

    def update(self, done: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < EVERY:
            return
        self._last = now
        extra = f" &middot; {failed} failed" if failed else ""
        with self.bar.hold_sync():
            self.bar.value = done
            if final:
                self.bar.bar_style = "danger" if failed else "success"
        self.label.value = f"{done}/{self.total}{extra} &middot; {now - self.t0:.1f} s"


async def _gather(
    handles: list[AsyncRequestHandle],
    update: Callable[[int, int, bool], None],
    concurrency: int,
) -> list[Any]:
    results: list[Any] = [None] * len(handles)
    sem = asyncio.Semaphore(concurrency)
    counts = [0, 0]  # done, failed

    async def one(i: int, h: AsyncRequestHandle) -> None:
        async with sem:
            try:
                results[i] = await h.result()
            except Exception as exc:  # collected, not raised (see progress())
                results[i] = exc
                counts[1] += 1
            counts[0] += 1
            update(counts[0], counts[1], False)

    await asyncio.gather(*(one(i, h) for i, h in enumerate(handles)))
    update(counts[0], counts[1], True)
    return results


def progress(
    handles: Iterable[RequestHandle | AsyncRequestHandle],
    *,
    widget: bool | None = None,
    concurrency: int = 32,
) -> list[Any]:
    """Wait for every handle, showing progress; return their results in order.

    A request that did not complete (failed, cancelled, expired, timed out) contributes its
    exception object instead of a result: nothing is raised, so one bad request does not hide
    the others (``[r for r in out if isinstance(r, Exception)]`` lists them). Stream handles
    give their full text. ``widget``: None picks an IntProgress inside a Jupyter kernel and a
    text line on stderr elsewhere; True/False force one. At most ``concurrency`` waits are in
    flight at once. Handles must come from a ``Client`` (or an AsyncClient living on rtq_nb's
    loop thread): they are awaited there."""
    ahs: list[AsyncRequestHandle] = []
    for h in handles:
        ah = getattr(h, "async_handle", h)
        if not isinstance(ah, AsyncRequestHandle):
            raise TypeError(f"progress() needs request handles, got {type(h).__name__}")
        ahs.append(ah)
    use_widget = in_kernel() if widget is None else widget
    bar: WidgetBar | TextBar = WidgetBar(len(ahs)) if use_widget else TextBar(len(ahs))
    return portal().call(_gather(ahs, bar.update, max(1, concurrency)))


__all__ = ["TextBar", "WidgetBar", "progress"]
