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
# # Inspecting a queue
#
# Attach to a running system and look at it as tables: what is **pending** (by priority),
# which **workers** and **clients** are alive, and the **history** of requests. `QueueMonitor`
# is a live dashboard that refreshes itself every `interval` seconds.
#
# Set `RTQ_REDIS_URL` (e.g. `rtq-nb lab` does) to inspect a real deployment; without it this
# notebook starts an embedded Redis and creates a little traffic itself, so there is something
# to see.

# %%
from rtq_nb import Client, Worker, views
from rtq_nb.demo import fake_llm
from rtq_nb.notebook import QueueMonitor

client = Client(queue="inspection")  # $RTQ_REDIS_URL if set, else an embedded redis-server
print("Redis:", client.url)

# %% [markdown]
# ## Some traffic: requests waiting at three priorities
#
# No worker serves the `inspection` queue yet, so they wait. Higher priority is served first;
# FIFO among equals.

# %%
handles = [
    client.submit(f"job {i}", priority=p, params={"tokens": 8, "rate": 100}, timeout=120)
    for i, p in enumerate([0, 0, 0, 5, 5, 10])
]
views.pending(client)

# %%
views.pending(client, by_priority=False)

# %% [markdown]
# ## A live monitor
#
# Charts over time (pending by priority, throughput, queue wait and duration p50/p95, workers
# busy and idle), the tables behind them and alerts (stalled workers, dead letters growing, an
# old pending request). It refreshes on rtq_nb's own thread: the next cells run meanwhile.

# %%
monitor = QueueMonitor(client, interval=0.5)
monitor.start()

# %% [markdown]
# ## Start a worker and let it drain the queue
#
# The monitor above follows along; `refresh()` forces an update now.

# %%
worker = Worker(fake_llm, client.url, queue="inspection", concurrency=2).start()
answers = [h.result() for h in handles]
monitor.refresh()
print(len(answers), "answers; pending now:", client.pending_count())

# %%
views.workers(client)

# %%
views.clients(client)

# %%
history = views.history(client)
assert len(history) >= len(handles), history
history

# %%
monitor.stop()
worker.stop()
client.close()
