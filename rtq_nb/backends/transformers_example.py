"""Custom inference in the worker process: Hugging Face transformers' ``generate()`` streamed
with ``TextIteratorStreamer`` (the reference design's other path, beside an inference server).
An example to copy and adapt; importable without torch (they are imported when a handler is
made).

Usage::

    from rtq_nb import Worker
    from rtq_nb.backends.transformers_example import TransformersHandler

    Worker(TransformersHandler("Qwen/Qwen2.5-0.5B-Instruct"), url, concurrency=1).run_forever()

or ``rtq-nb worker mymodule:handler`` where ``mymodule.handler = TransformersHandler(...)``.

**Cancellation reaches ``generate()``**: a ``StoppingCriteria`` returns True once
``request.cancelled`` is set (the worker sets it when the request is cancelled or its lease is
lost), so generation stops at the next token; the streamer then ends and the handler returns.
``generate()`` runs in its own thread (it blocks), the handler (a sync generator) runs in the
worker's thread pool and yields the streamer's text as it comes.

**Batching**: :class:`BatchedTransformersHandler` is a batch handler (``Worker(...,
batch_size=8)``): one ``generate()`` call for the whole batch (left padding), whole results,
stopped when every request of the batch is cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.records import Request, Usage

__all__ = ["BatchedTransformersHandler", "TransformersHandler", "cancel_criteria"]


def _load(model_name: str, device: str | None) -> tuple[Any, Any]:
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConfigurationError(
            f"this handler needs torch and transformers ({exc}): pip install torch transformers"
        ) from exc
    tok = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name)
    if device:
        model = model.to(device)
    return tok, model


def cancel_criteria(requests: list[Request]) -> Any:
    """A ``StoppingCriteriaList`` that stops ``generate()`` once every request is cancelled."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> bool:
            return all(r.cancelled for r in requests)

    return StoppingCriteriaList([Cancelled()])


def _prompt(tok: Any, request: Request) -> str:
    """A prompt string, or a message list rendered with the model's chat template."""
    inp = request.input
    if isinstance(inp, list):
        return str(tok.apply_chat_template(inp, tokenize=False, add_generation_prompt=True))
    return str(inp)


class TransformersHandler:
    """Streams one request's answer from a local model (see the module docs). ``params``:
    ``max_new_tokens`` (default ``max_new_tokens``), ``temperature`` (0: greedy)."""

    def __init__(
        self, model_name: str, *, device: str | None = None, max_new_tokens: int = 256
    ) -> None:
        self.tok, self.model = _load(model_name, device)
        self.max_new_tokens = max_new_tokens

    def __call__(self, request: Request) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self.tok(_prompt(self.tok, request), return_tensors="pt").to(self.model.device)
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        temperature = float(request.params.get("temperature", 0))
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=int(request.params.get("max_new_tokens", self.max_new_tokens)),
            do_sample=temperature > 0,
            stopping_criteria=cancel_criteria([request]),
        )
        if temperature > 0:
            kwargs["temperature"] = temperature
        thread = threading.Thread(target=self.model.generate, kwargs=kwargs, daemon=True)
        thread.start()
        produced = []
        try:
            for text in streamer:  # ends when generate() stops (done, or cancelled)
                produced.append(text)
                yield text
        finally:
            request.cancelled = request.cancelled or thread.is_alive()  # a consumer that left
            thread.join()
            completion = len(self.tok("".join(produced))["input_ids"])
            request.usage = Usage(int(inputs["input_ids"].shape[-1]), completion)


class BatchedTransformersHandler:
    """A batch handler: one ``generate()`` for ``list[Request]``, whole answers in order."""

    def __init__(
        self, model_name: str, *, device: str | None = None, max_new_tokens: int = 256
    ) -> None:
        self.tok, self.model = _load(model_name, device)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.max_new_tokens = max_new_tokens

    def __call__(self, requests: list[Request]) -> list[str]:
        prompts = [_prompt(self.tok, r) for r in requests]
        batch = self.tok(prompts, return_tensors="pt", padding=True).to(self.model.device)
        out = self.model.generate(
            **batch,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            stopping_criteria=cancel_criteria(requests),
            pad_token_id=self.tok.pad_token_id,
        )
        width = batch["input_ids"].shape[-1]
        texts = self.tok.batch_decode(out[:, width:], skip_special_tokens=True)
        for r, row, text in zip(requests, batch["attention_mask"], texts, strict=True):
            r.usage = Usage(int(row.sum()), len(self.tok(text)["input_ids"]))
        return [str(t) for t in texts]
