"""The errors a request's outcome or a timed-out wait raise (pure: built from what is known)."""

from __future__ import annotations

from typing import Any

from rtq_nb.errors import (
    MalformedRecord,
    RequestCancelled,
    RequestExpired,
    RequestFailed,
    RequestTimeout,
    RtqError,
    WorkerLost,
)
from rtq_nb.protocol.records import RequestRecord, Status

__all__ = ["expired_while_pending", "outcome_error", "timeout_error", "worker_lost"]

GRACE_MS = 250  # a pending request this close to its deadline when a wait ends has expired


def expired_while_pending(rec: RequestRecord, now_ms: int) -> bool:
    """A request still queued when (all but) its whole deadline is gone: no worker will run
    it, so its reader gets RequestExpired rather than a timeout."""
    deadline = rec.deadline_ms or 0
    return rec.status is Status.PENDING and bool(deadline) and now_ms + GRACE_MS >= deadline


def worker_lost(rid: str, why: str, lost: list[Any]) -> WorkerLost:
    """The error a stream reader gets when the attempt it followed was lost."""
    return WorkerLost(
        f"request {rid}: {why or 'its worker was lost'}; the request was requeued and will "
        f"stream again from the start ({len(lost)} chunk(s) of the lost attempt are in "
        ".chunks). Iterate the handle again to follow the retry, or call result().",
        request_id=rid,
        chunks=lost,
        requeued=True,
    )


def outcome_error(rid: str, status: Status | None, detail: Any) -> RtqError:
    """The error for a request that ended ``status`` (not completed); ``detail`` is the
    worker's error text or the reason."""
    if status is Status.FAILED:
        return RequestFailed(
            f"request {rid} failed on the worker: {detail}", request_id=rid, error=str(detail)
        )
    if status is Status.CANCELLED:
        return RequestCancelled(f"request {rid} was cancelled: {detail}", request_id=rid)
    if status is Status.EXPIRED:
        return RequestExpired(
            f"request {rid} expired: its deadline passed while it was queued, so no worker "
            "started it (queued time counts against the timeout). Resubmit with a larger "
            "timeout or a higher priority, or add workers.",
            request_id=rid,
        )
    return MalformedRecord(f"request {rid} ended with unexpected status {status!r}")


def timeout_error(
    rec: RequestRecord, now_ms: int, waited: float, ahead: int | None, chunks: list[Any]
) -> RequestTimeout:
    """What is known when a wait for ``rec`` ran out, and the three recipes."""
    age = (now_ms - rec.created_ms) / 1000 if rec.created_ms else None
    running_for = (now_ms - rec.started_ms) / 1000 if rec.started_ms else None
    if rec.status is Status.PENDING:
        state = f"still pending, {ahead or 0} request(s) ahead of it in queue {rec.queue!r}"
    elif rec.status is Status.RUNNING:
        state = f"running on worker {rec.worker} for {running_for or 0:.1f} s"
    else:
        state = f"status {rec.status.value}"
    return RequestTimeout(
        f"request {rec.id} timed out after waiting {waited:.1f} s: {state}. Recipes: "
        f"handle.wait(timeout=...) waits longer (and extends its deadline), "
        f"handle.resubmit(priority=...) sends a fresh copy with a new id, "
        f"handle.cancel() gives up.",
        request_id=rec.id,
        status=rec.status.value,
        worker_id=rec.worker,
        waited=waited,
        age=age,
        running_for=running_for,
        chunks=chunks,
    )
