"""A small HTTP endpoint for Prometheus and process managers: ``/metrics`` (the text
exposition format), ``/healthz`` (liveness) and ``/readyz`` (readiness), each 200 or 503, on a
daemon thread. (prometheus_client's own server has no health routes.)"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

__all__ = ["Endpoint", "serve"]

log = logging.getLogger("rtq_nb.ops")


class Endpoint:
    """A running endpoint: ``url`` (with the port actually bound), ``close()``."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        host, port = server.server_address[:2]
        self.port = int(port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        self.url = f"http://{shown!s}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(
    registry: CollectorRegistry,
    port: int,
    host: str = "0.0.0.0",
    *,
    live: Callable[[], bool] = lambda: True,
    ready: Callable[[], bool] = lambda: True,
) -> Endpoint:
    """Serve ``registry`` on ``host:port`` (0: a free port) until ``close()``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    body, status, kind = generate_latest(registry), 200, CONTENT_TYPE_LATEST
                except Exception as exc:  # a collector failed: say so, keep serving
                    log.warning("metrics: a scrape failed: %s", exc)
                    body, status, kind = f"scrape failed: {exc}\n".encode(), 500, "text/plain"
            elif path in ("/healthz", "/readyz"):
                ok = (live if path == "/healthz" else ready)()
                body, status, kind = (
                    (b"ok\n" if ok else b"not ok\n"),
                    (200 if ok else 503),
                    "text/plain",
                )
            else:
                body, status, kind = b"try /metrics, /healthz or /readyz\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="rtq-metrics", daemon=True)
    thread.start()
    return Endpoint(server, thread)
