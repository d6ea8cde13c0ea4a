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
# # Prompt lab: prompts x parameter sets
#
# `PromptLab` submits every prompt with every parameter set (given, or a `sweep` over a grid of
# parameters), shows them side by side while they run on the queue's workers (one row per
# prompt, one column per parameter set, each cell scrolling on its own, with per-cell and
# Cancel-all buttons), and collects the outcomes into a typed pandas `DataFrame`: text,
# tokens, time to first token, tokens/s, duration, queue wait and usage, measured on the Redis
# server's clock (the same numbers as the request records). Afterwards `views.history` shows
# the same requests as Redis recorded them, and `PromptLab.from_history` runs them again.
#
# Here an in-process worker serving the fake model stands in for a GPU; the parameter sets vary
# the answer length (`tokens`) and the model's speed (`rate`, tokens/s).

# %%
import json
import tempfile
from pathlib import Path

from rtq_nb import Client, Worker, views
from rtq_nb.demo import fake_llm
from rtq_nb.notebook import PromptLab

client = Client(queue="prompt-lab")  # $RTQ_REDIS_URL if set, else an embedded redis-server
worker = Worker(fake_llm, client.url, queue="prompt-lab", concurrency=6).start()
client

# %%
prompts = [
    "Summarise the benefits of a priority queue.",
    "Why do workers pull work instead of being pushed it?",
    "What happens when a worker dies mid-answer?",
]
# a sweep: the cartesian product of these values (4 parameter sets)
lab = PromptLab(client, prompts, sweep={"tokens": [10, 30], "rate": [200, 60]})
lab.run()  # returns at once; the widget shows progress
lab.wait()

# %%
results = lab.results()
assert len(results) == len(prompts) * 4, results
results

# %% [markdown]
# Per parameter set: the answer length and the model's pace set the duration; tokens/s is the
# model's pace (from when the worker wrote the chunks, not when they reached this kernel).

# %%
param_set = results.params.map(lambda p: "{tokens} tokens @ {rate}/s".format(**json.loads(p)))
results.groupby(param_set)[["tokens", "ttft_ms", "tokens_per_s", "duration_ms"]].mean().round(1)

# %% [markdown]
# Export by extension: `.csv`, `.json`, or `.parquet` (needs pyarrow).

# %%
out = lab.export(Path(tempfile.mkdtemp()) / "prompt_lab.csv")
out, out.stat().st_size

# %% [markdown]
# Run two of those requests again, from their records (their input and parameters):

# %%
again = PromptLab.from_history(client, list(results.request_id[:2]))
again.run(block=True)
again.results()[["prompt", "params", "status", "tokens"]]

# %% [markdown]
# ## What Redis recorded
#
# `views.history` reads the request records of this queue: one row per request with its status
# and the server-side timings.

# %%
history = views.history(client)
assert len(history) >= len(prompts) * 4, history
history

# %%
views.history(client, status="completed", limit=5)

# %%
worker.stop()
client.close()
