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
# `PromptLab` submits every prompt with every parameter set, shows their progress while they
# run on the queue's workers, and collects the outcomes (text, timings) into a pandas
# `DataFrame`. Afterwards `views.history` shows the same requests as Redis recorded them
# (status, queue wait, time to first chunk, duration).
#
# Here an in-process worker serving the fake model stands in for a GPU; the parameter sets vary
# the answer length (`tokens`) and the model's speed (`rate`, tokens/s).

# %%
from rtq_nb import Client, Worker, views
from rtq_nb.demo import fake_llm
from rtq_nb.notebook import PromptLab

client = Client(queue="prompt-lab")  # $RTQ_REDIS_URL if set, else an embedded redis-server
worker = Worker(fake_llm, client.url, queue="prompt-lab", concurrency=4).start()
client

# %%
prompts = [
    "Summarise the benefits of a priority queue.",
    "Why do workers pull work instead of being pushed it?",
    "What happens when a worker dies mid-answer?",
]
param_sets = [
    {"tokens": 10, "rate": 200},
    {"tokens": 30, "rate": 200},
    {"tokens": 30, "rate": 60},
]
lab = PromptLab(client, prompts, param_sets)
lab.run()  # returns at once; the widget shows progress
lab.wait()

# %%
results = lab.results()
assert len(results) == len(prompts) * len(param_sets), results
results

# %% [markdown]
# Per parameter set: the answer length and the model's pace set the elapsed time.

# %%
param_set = results.params.map(lambda p: f"{p['tokens']} tokens @ {p['rate']}/s")
results.groupby(param_set)[["tokens", "ttft_ms", "elapsed_s"]].mean().round(3)

# %% [markdown]
# ## What Redis recorded
#
# `views.history` reads the request records of this queue: one row per request with its status
# and the server-side timings.

# %%
history = views.history(client)
assert len(history) >= len(prompts) * len(param_sets), history
history

# %%
views.history(client, status="completed", limit=5)

# %%
worker.stop()
client.close()
