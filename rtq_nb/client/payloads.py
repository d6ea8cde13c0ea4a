"""A client's side of values by reference: a large input written to the payload store at
submission (after sealing, before signing), and a result stored by reference read back
(checked against its sha256, then opened when sealed) when the caller takes it."""

from __future__ import annotations

import json
from typing import Any

from rtq_nb.client.host import HandleHost
from rtq_nb.errors import PayloadError
from rtq_nb.payloads import PayloadStore
from rtq_nb.protocol.refs import PayloadRef, payload_ref
from rtq_nb.security.results import ResultCheck
from rtq_nb.security.sealing import Unsealable

__all__ = ["ByReference", "input_keep", "load_result"]


def input_keep(timeout: float | None, retention: float) -> float:
    """Seconds an input object is kept: the request's time to start (its timeout, or one
    retention when it has no deadline) plus the retention after it ends."""
    return (timeout or retention) + retention


def load_result(check: ResultCheck, store: PayloadStore | None, rid: str, ref: PayloadRef) -> Any:
    """The value of a result stored by reference (blocking: the download); raises
    :class:`~rtq_nb.errors.PayloadError` naming the URL."""
    if store is None:
        raise PayloadError(
            f"{ref.url}: the result is stored by reference and this client has no payload "
            "store: set RTQ_PAYLOAD_URL, or Client(payloads=...) with the workers' URL",
            url=ref.url,
        )
    data = store.get(ref)
    try:
        return check.open_value(rid, json.loads(data))
    except (Unsealable, ValueError, RecursionError) as exc:
        raise PayloadError(f"{ref.url}: cannot read the result: {exc}", url=ref.url) from exc


class ByReference:
    """Mixed into :class:`~rtq_nb.client.handle.AsyncRequestHandle`: its completed result,
    read from the payload store once when it is a reference (raises PayloadError, again on
    each call, while it cannot be read)."""

    _host: HandleHost
    _result: Any
    check: ResultCheck
    id: str

    def completed_value(self) -> Any:
        ref = payload_ref(self._result)
        if ref is not None:  # blocking: the caller's thread (Client) or the loop (AsyncClient)
            self._result = load_result(self.check, self._host.payloads, self.id, ref)
        return self._result
