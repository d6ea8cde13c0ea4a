"""Handles' and workers' reprs tell the true status (no I/O when shown)."""

from __future__ import annotations

import html
from collections.abc import Callable

import pytest

from rtq_nb import Client, RequestCancelled, RequestFailed, RequestTimeout, Worker, demo
from tests.conftest import wait_until


def test_handle_reprs_show_the_true_status(
    client: Client, start_worker: Callable[..., Worker]
) -> None:
    queued = client.submit("x")
    assert "submitted" in repr(queued) and "submitted" in queued._repr_html_()
    with pytest.raises(RequestTimeout):
        queued.result(timeout=0.3)
    assert repr(queued).endswith("pending, wait timed out>")
    assert queued.cancel() is not None
    assert repr(queued).startswith("<RequestHandle request ") and "cancelled" in repr(queued)
    assert "rtq-status-cancelled" in queued._repr_html_()
    with pytest.raises(RequestCancelled):
        queued.result(timeout=5)
    assert repr(queued).endswith(" cancelled>") and queued.state == "cancelled"

    other = client.handle(queued.id)  # a second handle learns it from the record
    assert "submitted" in repr(other)
    other.status()
    assert "cancelled" in repr(other)

    start_worker(demo.fake_llm)
    bad = client.submit("y", stream=True, params={"tokens": 5, "rate": 0, "fail_at": 2})
    with pytest.raises(RequestFailed):
        bad.result(timeout=30)
    assert " failed>" in repr(bad) and "rtq-status-failed" in bad._repr_html_()

    ok = client.submit("<z>", stream=True, params={"tokens": 3, "rate": 0})
    ok.result(timeout=30)
    assert " completed>" in repr(ok)
    page = ok._repr_html_()
    assert "rtq stream" in page and "rtq-status-completed" in page
    assert html.escape(ok.text) in page
    assert ok.async_handle.state == "completed"


def test_worker_repr_html(client: Client, start_worker: Callable[..., Worker]) -> None:
    w = start_worker(demo.fake_llm, concurrency=3)
    client.submit("a", params={"tokens": 2, "rate": 0}).result(timeout=30)
    # the client may see the result before the worker has read COMPLETE's reply and counted it
    wait_until(lambda: w.processed == 1 and not w.state.in_flight, what="the worker counted it")
    page = w._repr_html_()
    assert "rtq worker" in page and w.id in page and "rtq-status-running" in page
    assert "0/3 in flight" in page and "1 processed" in page and "0 failed" in page
    assert repr(w).startswith(f"<Worker {w.id} queue=") and " running " in repr(w)
    w.stop()
    assert "rtq-status-stopped" in w._repr_html_() and " stopped " in repr(w)
