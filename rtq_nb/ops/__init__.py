"""Operations: Prometheus metrics of queues and workers, health endpoints, the autoscaling
signal (adapters over the public client and worker APIs; ``pip install 'rtq-nb[metrics]'``).

    metrics.py   QueueCollector (rtq-nb metrics), WorkerCollector (rtq-nb worker --metrics-port)
    http.py      /metrics, /healthz, /readyz on a daemon thread
"""

from rtq_nb.ops.http import Endpoint, serve
from rtq_nb.ops.metrics import QueueCollector, WorkerCollector

__all__ = ["Endpoint", "QueueCollector", "WorkerCollector", "serve"]
