"""The OpenAI-compatible backend's pure parts: the request body it sends (input forms,
params passed through, priority, usage asked for) and Retry-After parsing."""

from __future__ import annotations

import email.utils

import pytest

from rtq_nb.backends.openai_compat import EngineOptions, body_for, retry_after
from rtq_nb.errors import ConfigurationError
from rtq_nb.protocol.records import Request

CHAT = EngineOptions("http://127.0.0.1:1/v1", "m")
COMPLETIONS = EngineOptions("http://127.0.0.1:1/v1", "m", api="completions")


def test_body_for_each_input_form() -> None:
    b = body_for(Request(id="r", input="hi", params={"temperature": 0.2, "stream": False}), CHAT)
    assert b["messages"] == [{"role": "user", "content": "hi"}] and b["model"] == "m"
    assert b["temperature"] == 0.2 and b["stream"] is True  # the backend always streams
    assert b["stream_options"] == {"include_usage": True} and "priority" not in b
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}]
    assert body_for(Request(id="r", input=msgs), CHAT)["messages"] == msgs
    whole = {"messages": msgs, "model": "other", "max_tokens": 3}
    assert body_for(Request(id="r", input=whole), CHAT)["model"] == "other"
    assert body_for(Request(id="r", input="p"), COMPLETIONS)["prompt"] == "p"
    with pytest.raises(ConfigurationError, match="chat API"):
        body_for(Request(id="r", input=msgs), COMPLETIONS)
    with pytest.raises(ConfigurationError, match="prompt string"):
        body_for(Request(id="r", input=42), CHAT)


def test_priority_is_sent_negated_when_asked() -> None:
    opts = EngineOptions("http://h/v1", "m", send_priority=True)
    assert body_for(Request(id="r", input="x", priority=7), opts)["priority"] == -7


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="http://"):
        EngineOptions("127.0.0.1:8000", "m")
    with pytest.raises(ConfigurationError, match="model"):
        EngineOptions("http://h/v1", "")
    assert CHAT.url == "http://127.0.0.1:1/v1/chat/completions"
    assert COMPLETIONS.url.endswith("/v1/completions")


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after("2") == 2.0 and retry_after("0.5") == 0.5 and retry_after(None) is None
    assert retry_after("garbage") is None
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after(date, now=1_000_000) == pytest.approx(10.0)


def test_the_transformers_example_imports_without_torch() -> None:
    import importlib.util

    from rtq_nb.backends import transformers_example as tx

    assert callable(tx.cancel_criteria) and tx.__all__  # importable without torch
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ConfigurationError, match="pip install torch transformers"):
            tx.TransformersHandler("any/model")
