# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling: throughput against clients x workers
#
# Worker **processes** (`rtq-nb worker rtq_nb.demo:aecho`, the cheapest possible handler: it
# echoes its input) serve one queue; client **processes** each send 100-byte requests one after
# the other (`client.call`, submit + wait, one round trip) for a fixed time. We count completed
# requests per second for a small grid of clients x workers.
#
# Everything (Redis, workers, clients, this kernel) shares this machine's CPU cores, so expect
# throughput to grow only until the cores are busy: on a 2-core machine the grid measures the
# CPU cost per request more than the queue's ability to scale. Run the same notebook against a
# Redis on another host, with workers on other machines, to see horizontal scaling. The grid
# finishes in well under 30 s.

# %%
import os
import time
import uuid

import pandas as pd

from rtq_nb import Client
from rtq_nb.cli.bench import scaling

client = Client()  # $RTQ_REDIS_URL if set, else an embedded redis-server
URL = client.url
QUEUE = f"scaling-{uuid.uuid4().hex[:6]}"
CLIENTS = [1, 2, 4]
WORKERS = [1, 2, 4]
SECONDS = 1.0  # measuring time per grid point
print(f"Redis {URL}, queue {QUEUE}, {os.cpu_count()} CPU cores")

# %% [markdown]
# The measurement reuses the processes of `rtq-nb bench` (`rtq_nb.cli.bench.scaling`): worker
# processes, added as the grid needs them, and one pool of client processes, each warmed up
# before any clock runs. For each grid point the first `clients` of them call at the same time
# for `SECONDS`; its row holds the completed requests, requests/s and the median latency.

# %%
t_start = time.perf_counter()
grid = [(c, w) for w in WORKERS for c in CLIENTS]
rows = scaling(URL, grid, seconds=SECONDS, queue=QUEUE)
elapsed = time.perf_counter() - t_start
results = pd.DataFrame(rows)
table = results.pivot(index="clients", columns="workers", values="requests_per_s")
print(f"grid measured in {elapsed:.1f} s (requests/s; rows: clients, columns: workers)")
table

# %%
try:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
except ImportError:
    print("matplotlib is not installed (pip install matplotlib): the table above is the result")
else:
    ax = table.plot(marker="o", title="rtq_nb throughput (echo, 100-byte requests)")
    ax.set_xlabel("client processes")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # process counts are whole numbers
    ax.set_ylabel("requests/s")
    ax.legend(title="worker processes")
    plt.show()

# %% [markdown]
# ## Does it scale linearly?
#
# Linear scaling would mean `requests/s(n clients, n workers) = n x requests/s(1, 1)`: every
# extra client-worker pair adds as much throughput as the first. The cell below computes the
# efficiency (measured / linear) of each grid point and says what happened on this machine.
#
# What to expect on a small machine: with one client and one worker a request is a strict
# ping-pong between three processes (client -> Redis -> worker -> Redis -> client), and each hop
# costs CPU in the kernel's network stack and in Python. More pairs help only while cores are
# idle: on 2 cores expect sub-linear growth up to about 2 pairs and flat (or falling) totals
# beyond, where extra processes mostly add context switches. Each point is measured for one
# second only, so numbers vary by some 10-20 % from run to run. That is the machine's limit,
# not the queue's: Redis alone does well over 100k simple commands/s on one core. To see horizontal
# scaling, put workers and clients on other machines (`rtq-nb lab --url redis://...`).

# %%
base = table.loc[1, 1]
pairs = zip(results.clients, results.workers, strict=True)
results["linear"] = [base * min(c, w) for c, w in pairs]
results["efficiency"] = (results.requests_per_s / results.linear).round(2)
best = results.loc[results.requests_per_s.idxmax()]
cores = os.cpu_count() or 1
print(f"{cores} CPU cores; 1 client x 1 worker: {base:.0f} requests/s")
print(
    f"best: {best.requests_per_s:.0f} requests/s at {int(best.clients)} clients x "
    f"{int(best.workers)} workers = {best.requests_per_s / base:.2f}x the 1 x 1 rate"
)
diagonal = results[(results.clients == results.workers) & (results.clients > 1)]
for row in diagonal.itertuples():
    print(
        f"{row.clients} x {row.workers}: {row.requests_per_s / base:.2f}x the 1 x 1 rate "
        f"(linear: {row.clients}x, efficiency {row.efficiency:.2f})"
    )
linear = bool((diagonal.efficiency >= 0.8).all())
print(
    "verdict:",
    "close to linear on this machine"
    if linear
    else "NOT linear on this machine: the processes compete for the same CPU cores",
)
results
