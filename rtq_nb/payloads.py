"""Large inputs and results by reference: a :class:`PayloadStore` writes values above a size
threshold to object storage through fsspec (``s3://``, ``gs://``, ``file://``, ...), and the
record carries a reference instead (:mod:`rtq_nb.protocol.refs`).

fsspec (and s3fs, gcsfs, ...) is imported only when a store is first used: install the
``payloads`` extra (``pip install 'rtq-nb[payloads]'``). The calls here block: workers and
clients run them off their event loop (``asyncio.to_thread``) or in the caller's thread.

Lifetime: each object's key starts with its expiry (``exp=<UTC stamp>/``); :meth:`sweep`
deletes the folders whose time has come, and runs by itself (in a background thread, at most
once per ``sweep_interval``) whenever the store writes. An object-store lifecycle rule on the
prefix is the backstop (README, Large inputs and results).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from rtq_nb.errors import ConfigurationError, PayloadError
from rtq_nb.protocol.refs import (
    PayloadRef,
    expiry_folder,
    folder_expiry,
    object_key,
    ref_json,
)

__all__ = ["DEFAULT_THRESHOLD", "PayloadStore", "payload_store"]

log = logging.getLogger("rtq_nb.payloads")

DEFAULT_THRESHOLD = 1 << 20  # bytes of JSON text (as stored: after sealing) kept inline
_ENV_URL, _ENV_THRESHOLD, _ENV_OPTIONS = (
    "RTQ_PAYLOAD_URL",
    "RTQ_PAYLOAD_THRESHOLD",
    "RTQ_PAYLOAD_OPTIONS",
)


class PayloadStore:
    """Where values above ``threshold`` bytes go: ``url`` is a base folder (``s3://bucket/rtq``,
    ``file:///data/rtq``); ``storage_options`` go to fsspec (e.g. s3fs's
    ``{"client_kwargs": {"endpoint_url": ...}}``). ``expiry_bucket``: seconds objects' expiries
    are rounded up to (one ``exp=`` folder each); ``sweep_interval``: seconds between the
    automatic sweeps (0: only explicit :meth:`sweep` calls). Clients and workers of a queue use
    the same base URL: a store reads only references under its own base."""

    def __init__(
        self,
        url: str,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        storage_options: Mapping[str, Any] | None = None,
        expiry_bucket: int = 3600,
        sweep_interval: float = 300.0,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ConfigurationError(
                f"payload url must be an fsspec URL with a protocol (s3://bucket/prefix, "
                f"file:///path, ...), got {url!r}"
            )
        for name, val in (("payload threshold", threshold), ("expiry_bucket", expiry_bucket)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigurationError(f"{name} must be an int >= 1 (bytes / s), got {val!r}")
        self.url = url.rstrip("/")
        self.threshold = threshold
        self.storage_options = dict(storage_options or {})
        self.expiry_bucket = expiry_bucket
        self.sweep_interval = sweep_interval
        self._fs: Any = None
        self._root = ""
        self._lock = threading.Lock()
        self._last_sweep = time.monotonic()  # the first automatic sweep: one interval in
        self._sweeping = False

    # ---- the filesystem (fsspec, imported on first use) ----------------------------------
    def _filesystem(self) -> tuple[Any, str]:
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:
                raise ConfigurationError(
                    "payloads by reference need fsspec (and s3fs for s3://, gcsfs for gs://): "
                    "pip install 'rtq-nb[payloads]'"
                ) from exc
            try:
                fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except (ImportError, ValueError) as exc:
                raise ConfigurationError(f"payload url {self.url!r}: {exc}") from exc
            self._fs, self._root = fs, root.rstrip("/")
        return self._fs, self._root

    def _url(self, path: str) -> str:
        fs, _ = self._filesystem()
        return str(fs.unstrip_protocol(path))

    def _path(self, url: str) -> str:
        """The store path of a reference's URL; refuses URLs outside this store's base."""
        _fs, root = self._filesystem()
        base = self._url(root) + "/"
        if not url.startswith(base) or "/../" in url or url.endswith("/.."):
            raise PayloadError(
                f"{url}: not under this payload store ({base}): configure the clients and "
                "workers of a queue with the same payload URL",
                url=url,
            )
        return f"{root}/{url[len(base) :]}"

    # ---- values ------------------------------------------------------------------------------
    def put(self, request_id: str, place: str, data: bytes, keep: float) -> str:
        """Write ``data`` (a request's ``place``: ``in`` or ``out``) to be kept ``keep``
        seconds at least; returns the reference's JSON text to store instead."""
        fs, root = self._filesystem()
        folder = expiry_folder(time.time() + keep, self.expiry_bucket)
        path = f"{root}/{object_key(folder, request_id, place)}"
        url = self._url(path)
        try:
            if getattr(fs, "auto_mkdir", None) is False:  # a local filesystem: make folders
                fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            fs.pipe_file(path, data)
        except Exception as exc:  # fsspec back ends raise OSError and their own errors
            raise PayloadError(
                f"{url}: cannot write ({type(exc).__name__}: {exc}): check the payload "
                "store's URL, credentials and endpoint (storage_options / RTQ_PAYLOAD_OPTIONS)",
                url=url,
            ) from exc
        self.maybe_sweep()
        return ref_json(url, len(data), hashlib.sha256(data).hexdigest())

    def get(self, ref: PayloadRef) -> bytes:
        """The bytes a reference names, checked against its size and sha256; raises
        :class:`~rtq_nb.errors.PayloadError` naming the URL."""
        path = self._path(ref.url)
        fs, _ = self._filesystem()
        try:
            data = fs.cat_file(path)
        except FileNotFoundError as exc:
            raise PayloadError(
                f"{ref.url}: not found (deleted, or its retention ran out)", url=ref.url
            ) from exc
        except Exception as exc:
            raise PayloadError(
                f"{ref.url}: cannot read ({type(exc).__name__}: {exc}): check the payload "
                "store's credentials and endpoint (storage_options / RTQ_PAYLOAD_OPTIONS)",
                url=ref.url,
            ) from exc
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise PayloadError(
                f"{ref.url}: the object does not match its reference (size or sha256): "
                "it was changed or damaged after it was written",
                url=ref.url,
            )
        return bytes(data)

    def delete(self, ref: PayloadRef) -> None:
        """Delete a reference's object now (gone already: nothing to do)."""
        fs, _ = self._filesystem()
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(self._path(ref.url))

    # ---- lifetime ----------------------------------------------------------------------------
    def sweep(self, now: float | None = None) -> int:
        """Delete every ``exp=`` folder whose time has come; returns how many."""
        fs, root = self._filesystem()
        now = time.time() if now is None else now
        try:
            fs.invalidate_cache(root)
            names = fs.ls(root, detail=False)
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            expires = folder_expiry(str(name))
            if expires is None or expires > now:
                continue
            try:
                fs.rm(str(name), recursive=True)
                removed += 1
            except FileNotFoundError:
                pass  # another sweeper was first
        if removed:
            fs.invalidate_cache(root)
            log.info("payload store %s: swept %d expired folder(s)", self.url, removed)
        return removed

    def maybe_sweep(self) -> None:
        """Start a sweep in a background thread when ``sweep_interval`` has passed."""
        if self.sweep_interval <= 0:
            return
        with self._lock:
            if self._sweeping or time.monotonic() - self._last_sweep < self.sweep_interval:
                return
            self._sweeping, self._last_sweep = True, time.monotonic()
        threading.Thread(target=self._sweep_quietly, name="rtq-payload-sweep", daemon=True).start()

    def _sweep_quietly(self) -> None:
        try:
            self.sweep()
        except Exception as exc:
            log.warning("payload store %s: sweep failed (%s)", self.url, exc)
        finally:
            self._sweeping = False

    def __repr__(self) -> str:
        return f"<PayloadStore {self.url} threshold={self.threshold}>"


def payload_store(
    value: PayloadStore | str | None, threshold: int | None = None
) -> PayloadStore | None:
    """A client's or worker's ``payloads`` option: a store, a URL ('' = off), or None: from
    ``RTQ_PAYLOAD_URL`` (with ``RTQ_PAYLOAD_THRESHOLD`` bytes and ``RTQ_PAYLOAD_OPTIONS``, a
    JSON object of fsspec storage options), off when unset. ``threshold`` (bytes) overrides
    ``RTQ_PAYLOAD_THRESHOLD`` for a URL (``rtq-nb worker --payload-threshold``)."""
    if isinstance(value, PayloadStore):
        return value
    if value is None:
        value = os.environ.get(_ENV_URL, "")
    if not isinstance(value, str):
        raise ConfigurationError(
            f"payloads must be a PayloadStore, a URL or None, got {type(value).__name__}"
        )
    if not value:
        return None
    raw = os.environ.get(_ENV_THRESHOLD, "")
    try:
        threshold = threshold or (int(raw) if raw else DEFAULT_THRESHOLD)
        options = json.loads(os.environ.get(_ENV_OPTIONS) or "{}")
    except ValueError as exc:
        raise ConfigurationError(
            f"{_ENV_THRESHOLD} must be an int (bytes) and {_ENV_OPTIONS} a JSON object: {exc}"
        ) from exc
    if not isinstance(options, dict):
        raise ConfigurationError(f"{_ENV_OPTIONS} must be a JSON object of storage options")
    return PayloadStore(value, threshold=threshold, storage_options=options)
