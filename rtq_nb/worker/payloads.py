"""A worker's side of values by reference: inputs fetched (and opened when sealed) before the
handler runs, large results written to the store before delivery. The store's calls block:
they run in a thread, while the worker's heartbeats keep the requests' leases.

Order, both ways: JSON text, then sealed (when encrypting), then by reference when over the
threshold, then signed (the signature covers the reference and so, by its sha256, the
object). A reference that cannot be read fails that request alone, with a ``PayloadError:``
text naming the URL; a worker without a store fails requests that carry references.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from rtq_nb.errors import EncodingError, PayloadError
from rtq_nb.payloads import PayloadStore
from rtq_nb.protocol.encoding import dumps
from rtq_nb.protocol.records import Status
from rtq_nb.protocol.refs import PayloadRef, payload_ref
from rtq_nb.security.results import seal_json, sealed_token
from rtq_nb.security.sealing import Sealer, Unsealable
from rtq_nb.worker.invoke import Outcome
from rtq_nb.worker.state import Held, WorkerOptions

__all__ = ["admit_inputs", "store_results"]

_NO_STORE = (
    "PayloadError: {url}: the input is stored by reference and this worker has no payload "
    "store (set RTQ_PAYLOAD_URL, or Worker(payloads=...) / rtq-nb worker --payload-url)"
)


async def admit_inputs(
    batch: Sequence[Held], store: PayloadStore | None, sealer: Sealer | None
) -> list[Held]:
    """Replace each reference input of ``batch`` by its value; a request whose input cannot
    be read is held with its ``problem``. Returns the requests that fail without running
    (``request`` None: these, malformed and refused ones). One type check per request when
    no input is by reference."""
    for p in batch:
        req = p.request
        ref = None if req is None else payload_ref(req.input)
        if ref is None or req is None:
            continue
        if store is None:
            p.request, p.problem = None, _NO_STORE.format(url=ref.url)
            continue
        try:
            value, sealed = await asyncio.to_thread(_load, store, ref, p.id, sealer)
        except PayloadError as exc:
            p.request, p.problem = None, f"PayloadError: {exc}"
            continue
        except Exception as exc:  # a store's own error (no fsspec, bad options): this one fails
            p.request, p.problem = None, f"PayloadError: {ref.url}: {type(exc).__name__}: {exc}"
            continue
        req.input = value
        p.sealed = p.sealed or sealed
    return [p for p in batch if p.request is None]


def _load(
    store: PayloadStore, ref: PayloadRef, rid: str, sealer: Sealer | None
) -> tuple[Any, bool]:
    """``(value, was sealed)`` of a reference input (blocking: run in a thread)."""
    data = store.get(ref)
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"{ref.url}: not valid JSON ({exc})", url=ref.url) from exc
    token = sealed_token(value)
    if token is None:
        return value, False
    if sealer is None:
        raise PayloadError(
            f"{ref.url}: the input is encrypted and this worker holds no encryption key "
            "(set RTQ_ENCRYPTION_KEYS or --encryption-keys)",
            url=ref.url,
        )
    try:
        return json.loads(sealer.open(token, f"{rid}|in")), True
    except (Unsealable, ValueError) as exc:
        raise PayloadError(
            f"{ref.url}: cannot open the encrypted input: {exc}", url=ref.url
        ) from exc


async def store_results(
    batch: Sequence[Held], outcomes: Sequence[Outcome], opts: WorkerOptions, sealer: Sealer | None
) -> None:
    """Encode each completed result as stored (``Outcome.stored``): sealed when its input
    was, and by reference when over the threshold (kept for the retention). A result that
    cannot be written fails its request with a ``PayloadError:`` text. Done once per outcome
    (a retried delivery skips it)."""
    store, keep = opts.payloads, opts.retention_s
    for p, o in zip(batch, outcomes):
        if o.status is not Status.COMPLETED or o.stored or store is None:
            continue
        try:
            text = dumps(o.value, "handler result")
        except EncodingError:
            continue  # delivery reports it
        if p.sealed and sealer is not None:
            text = seal_json(sealer, p.id, "out", text)
        if len(text) <= store.threshold:
            o.stored = text
            continue
        try:
            o.stored = await asyncio.to_thread(store.put, p.id, "out", text.encode(), keep)
        except PayloadError as exc:
            o.status, o.value, o.error = Status.FAILED, None, f"PayloadError: {exc}"
        except Exception as exc:  # a store's own error (no fsspec, bad options): this one fails
            why = f"PayloadError: cannot store the result: {type(exc).__name__}: {exc}"
            o.status, o.value, o.error = Status.FAILED, None, why
