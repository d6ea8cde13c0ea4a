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
# # rtq_nb quickstart
#
# A real-time inference queue on Redis, from one notebook:
#
# 1. **connect** a `Client` — to `$RTQ_REDIS_URL` if it is set, otherwise to a private
#    embedded `redis-server` that this kernel starts (and stops when it exits);
# 2. **serve** the queue with an in-process `Worker` running `fake_llm`, a deterministic fake
#    model that streams tokens at a set rate (no model download);
# 3. **stream** an answer into a live widget with `stream_view`;
# 4. ask the same thing through the **sync API** (`client.call`, `client.stream`) and the
#    **async API** (`await AsyncClient(...).call(...)`);
# 5. **stop** the worker.
#
# In production the worker runs next to the GPU (`rtq-nb worker package.module:handler --url
# redis://...`) and only the client lives in the notebook.

# %%
from IPython.display import HTML, display

from rtq_nb import AsyncClient, Client, Worker
from rtq_nb.demo import fake_llm
from rtq_nb.notebook import stream_view

client = Client()  # $RTQ_REDIS_URL if set, else an embedded redis-server
client

# %% [markdown]
# ## A worker, in the background of this kernel
#
# `Worker(handler, url, concurrency=N).start()` returns once the worker is registered and
# taking requests; it keeps serving while you run other cells.

# %%
worker = Worker(fake_llm, client.url, concurrency=2).start()
worker

# %% [markdown]
# ## Stream an answer into a widget
#
# `stream_view` submits a streaming request and shows its text as the tokens arrive (60 tokens
# at 30 tokens/s: about two seconds). `block=True` makes the cell wait until the answer is
# complete; without it the cell returns at once and the widget keeps filling.

# %%
PROMPT = "Explain how a Redis queue serves real-time inference."
PARAMS = {"tokens": 60, "rate": 30}

view = stream_view(client, PROMPT, params=PARAMS, block=True)

# %%
print(f"status: {view.status}; widget updates: {view.update_count}; {len(view.text.split())} words")

# %% [markdown]
# ## The same request through the sync API
#
# `client.call` submits and waits for the whole result in one round trip; `client.stream`
# yields text deltas (`Chunk`, a `str` with `.seq`/`.pieces`) as they arrive. The fake model is
# deterministic, so every answer to the prompt is the same; here it runs at full speed
# (`rate: 0`) to keep the notebook quick.

# %%
FAST = {**PARAMS, "rate": 0}
answer = client.call(PROMPT, params=FAST)
streamed = "".join(client.stream(PROMPT, params=FAST))
assert answer == streamed == view.text, (answer, streamed, view.text)
print(answer)


# %% [markdown]
# ## ... and through the async API
#
# Jupyter cells can `await` directly. `AsyncClient` is the asyncio core that `Client` wraps.


# %%
async def ask_async() -> tuple[str, str]:
    async with AsyncClient(client.url) as aclient:
        called = await aclient.call(PROMPT, params=FAST)
        streamed = "".join([chunk async for chunk in aclient.stream(PROMPT, params=FAST)])
    return called, streamed


async_answer, async_streamed = await ask_async()  # type: ignore[top-level-await]
assert async_answer == async_streamed == answer
print("async API: same answer,", len(async_answer), "characters")

# %% [markdown]
# ## Clean up
#
# `worker.stop()` is graceful: requests in flight finish first. The embedded Redis (if one was
# started) stops when the kernel shuts down.

# %%
worker.stop()
client.close()
display(HTML("<div class='rtq-quickstart-done'>[DONE] quickstart finished</div>"))  # type: ignore[no-untyped-call]
