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
# # Reliability: kill a worker, watch its request come back
#
# The reference design loses every request a worker had popped when that worker dies. rtq_nb
# records a **lease** for each popped request; a worker renews its leases on every heartbeat,
# and when it dies the lease runs out and a **reaper** (running in the other workers, and in
# waiting clients) puts the request back in the queue with its priority and an attempt count.
#
# This notebook starts two worker *processes* with short leases (2 s), streams an answer into
# the widget, kills the worker that runs it with `SIGKILL`, and watches the other worker take
# over: the widget shows *retrying*, then streams the answer again from the start.

# %%
import os
import signal
import subprocess
import sys
import time
import uuid

from rtq_nb import Client, Status
from rtq_nb.notebook import stream_view

client = Client(prefix=f"rel{uuid.uuid4().hex[:6]}")  # embedded Redis unless RTQ_REDIS_URL is set
workers = [
    subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rtq_nb.cli",
            "worker",
            "rtq_nb.demo:fake_llm",
            "--url",
            client.url,
            "--prefix",
            client.async_client.prefix,
            "--lease",
            "2",
            "--heartbeat",
            "0.5",
        ]
    )
    for _ in range(2)
]
deadline = time.monotonic() + 30
while True:
    try:
        if len(client.workers()) == 2:
            break
    except Exception:
        pass  # the queue is unknown until the first worker registers
    assert time.monotonic() < deadline, "workers did not start"
    time.sleep(0.1)
[w.id for w in client.workers()]

# %%
view = stream_view(
    client,
    "What happens when a worker dies mid-answer?",
    params={"tokens": 60, "rate": 20},
    timeout=120,
)
# wait until the answer is streaming, then find the worker process that runs it
while not view.text:
    time.sleep(0.05)
victim = client.get(view.request_id).worker
assert victim is not None, "a streaming request has a worker"
os.kill(int(victim.rsplit("-", 2)[1]), signal.SIGKILL)
print("killed", victim)

# %%
final = view.wait(timeout=120)
record = client.get(view.request_id)
print(f"status={record.status.value} attempts={record.attempts} served by {record.worker}")
assert record.status is Status.COMPLETED and record.attempts == 2 and record.worker != victim
final[:80]

# %%
for w in workers:
    w.terminate()
for w in workers:
    w.wait(30)
client.close()
