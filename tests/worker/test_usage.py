"""A handler's model usage (tokens) is stored with the outcome: in the record, the history
view and the stream's record; a handler that records none leaves the fields out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import rtq_nb.views
from rtq_nb import Client, Request, Usage, Worker


def counted(request: Request) -> Any:
    words = str(request.input).split()
    request.usage = Usage(prompt_tokens=len(words), completion_tokens=2 * len(words))
    if request.stream:
        return _echo(words)
    return " ".join(words)


def _echo(words: list[str]) -> Iterator[str]:
    for w in words:
        yield w + " "


def test_usage_is_recorded(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(counted)
    h = client.submit("a b c")
    assert h.result() == "a b c"
    rec = client.get(h.id)
    assert rec.usage == Usage(3, 6) and rec.usage.total_tokens == 9
    s = client.submit("x y", stream=True)
    assert s.result() == "x y "
    assert client.get(s.id).usage == Usage(2, 4)
    plain = client.submit("no usage", params={})
    plain.result()
    df = rtq_nb.views.history(client)
    by_id = df.set_index("id")
    assert by_id.loc[h.id, "prompt_tokens"] == 3 and by_id.loc[h.id, "completion_tokens"] == 6


def test_no_usage_no_fields(client: Client, start_worker: Callable[..., Worker]) -> None:
    start_worker(lambda r: r.input)
    h = client.submit("x")
    h.result()
    assert client.get(h.id).usage is None
