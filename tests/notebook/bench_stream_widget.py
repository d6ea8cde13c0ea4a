"""Benchmark (not a test): the stream widget in JupyterLab, bytes against liveliness.

    python tests/notebook/bench_stream_widget.py [--tokens 10000 --rate 500]
        [--compression on|off] [--max-delay S --max-updates N] [--matrix] [--json]

A real redis-server (EmbeddedRedis), a real JupyterLab server and kernel, headless Chromium.
A notebook starts a ``fake_llm`` worker and a non-blocking ``StreamView`` of a ``--tokens``
answer at ``--rate`` tokens/s; while it streams, the page runs ``1+1`` through the notebook's
kernel connection every 250 ms (the time until its result arrives: what a user running a cell
feels). The page is loaded through :class:`jupyter_harness.CountingProxy`, so the kernel
websocket's bytes are counted as they cross TCP (permessage-deflate included), next to the
message bytes (inflated, what CDP's frame events and the browser see).

Reported, per run:

* wire B/text B, msg B/text B: bytes of the websocket messages that carry the widget's text
  (append/sync), on the wire and inflated, per byte of answer text; ``widget wire/msg``: all
  the widget's comm messages while the text streamed (the status/metrics syncs too). The demo
  answer repeats its words, so deflate shrinks its text too (``text_deflated_per_text`` in
  the JSON); real model text deflates about 2-3x, so judge the wire numbers with that;
* updates/s: the widget's comm messages (``update_count``) per second of streaming;
* token-to-DOM p50/p95: per token, the time from its chunk's push (the chunk's Redis stream
  entry id is the Redis server's ms clock then) to the first moment the page's DOM holds it
  (``Date.now()`` in a MutationObserver; the browser runs on the same host);
* 1+1 p50/p95 while streaming (and idle, once the stream is done).

``--matrix`` runs the old pacing (max_delay_s=0.25, 20 messages/s) and the defaults, each
with compression on and off. The numbers vary with the machine's load; see the README.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (str(ROOT / "tests"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from jupyter_harness import (  # noqa: E402
    CountingProxy,
    JupyterLabSession,
    open_lab_page,
    rtq_lab_env,
    skip_reason,
    write_notebook,
)

from rtq_nb import Client  # noqa: E402
from rtq_nb.demo import fake_answer  # noqa: E402
from rtq_nb.transport.embedded import EmbeddedRedis  # noqa: E402

STREAM_CLASS = "rtq-stream-text"
PROMPT = "bench stream widget"
OLD = {"max_delay_s": 0.25, "max_updates_per_s": 20}

#: ``--text random``: a model whose words come from a seeded random 4,000-word vocabulary of
#: random letters: its text deflates to ~0.5x (English prose: ~0.35x; the demo answer, which
#: repeats one paragraph: ~0.01x), a worst case for the wire bytes. Run in the kernel too.
RANDOM_LLM = """
import asyncio as _asyncio, random as _random

def random_answer(n):
    rng = _random.Random(14)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(4000)]
    return [("" if i == 0 else " ") + rng.choice(vocab) for i in range(n)]

async def random_llm(request):
    n, rate = int(request.params["tokens"]), float(request.params["rate"])
    loop = _asyncio.get_running_loop()
    t0 = loop.time()
    for i, tok in enumerate(random_answer(n)):
        await _asyncio.sleep(max(0.0, t0 + (i + 1) / rate - loop.time()))
        yield tok
"""

_PAGE_JS = """() => {
  window.__lens = [];
  let last = -1;
  new MutationObserver(() => {
    const el = document.getElementsByClassName('rtq-stream-text')[0];
    if (!el) return;
    const n = el.textContent.length;
    if (n !== last) { last = n; window.__lens.push([Date.now(), n]); }
  }).observe(document, {subtree: true, childList: true, characterData: true});
  window.__rtqExec = (code) => new Promise((resolve) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const t0 = performance.now();
    let out = '', resultMs = null;
    const fut = kernel.requestExecute({code, store_history: false});
    fut.onIOPub = (msg) => {
      const c = msg.content, kind = msg.header.msg_type;
      if (kind === 'stream') out += c.text;
      if (kind === 'execute_result') {
        out += c.data['text/plain'];
        if (resultMs === null) resultMs = performance.now() - t0;
      }
    };
    fut.done.then(() => resolve({ms: resultMs ?? performance.now() - t0, out}));
  });
  window.__probe = async (until, every) => {
    const got = [];
    const streaming = () => {
      const el = document.getElementsByClassName('rtq-stream-text')[0];
      return !el || el.textContent.length < until;
    };
    while (!document.getElementsByClassName('rtq-stream-text')[0]?.textContent.length) {
      await new Promise((r) => requestAnimationFrame(r));
    }
    while (streaming()) {
      got.push((await window.__rtqExec('1+1')).ms);
      await new Promise((r) => setTimeout(r, every));
    }
    return got;
  };
}"""


def _cells(tokens: int, rate: float, kwargs: dict[str, float], text: str) -> list[str]:
    kw = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    model = "fake_llm" if text == "demo" else "random_llm"
    return [
        RANDOM_LLM + "\n"
        "from rtq_nb import Client, Worker\n"
        "from rtq_nb.demo import fake_llm\n"
        "from rtq_nb.notebook.streamview import StreamView\n"
        "client = Client()\n"
        f"worker = Worker({model}, client.url).start()",
        f"h = client.submit({PROMPT!r}, stream=True, params={{'tokens': {tokens}, "
        f"'rate': {rate}}}, timeout=600)\n"
        f"view = StreamView(h{kw})\n"
        "view.show()\n"
        "view.start()",
    ]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _is_text(payload: bytes) -> bool:
    return any(k in payload for k in (b'"t": "append"', b'"t":"append"', b'"t": "sync"'))


def answer(text: str, tokens: int) -> str:
    """The answer the ``--text`` model streams."""
    if text == "demo":
        return "".join(fake_answer(PROMPT, tokens))
    ns: dict[str, Any] = {}
    exec(RANDOM_LLM, ns)  # the same source the kernel runs
    return "".join(ns["random_answer"](tokens))


def run(
    tokens: int, rate: float, compression: bool, kwargs: dict[str, float], text: str = "demo"
) -> dict[str, Any]:
    """One stream in JupyterLab; returns the measurements (see the module docstring)."""
    expected = answer(text, tokens)
    units = len(expected.encode("utf-16-le")) // 2
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        base = Path(tmp)
        write_notebook(base / "root" / "bench.ipynb", _cells(tokens, rate, kwargs, text))
        with EmbeddedRedis(tcp=True) as redis_srv:
            env = rtq_lab_env(base / "lab" / "env", redis_srv.url, ROOT)
            lab = JupyterLabSession(
                base / "root", base / "lab", env=env, websocket_compression=compression
            )
            with lab, CountingProxy(lab) as proxy:
                with open_lab_page(proxy, "bench.ipynb", STREAM_CLASS) as page:  # type: ignore[arg-type]
                    page.page.evaluate(_PAGE_JS)
                    page.run_all_cells()
                    busy = [float(x) for x in page.page.evaluate(f"window.__probe({units}, 250)")]
                    page.wait_for(
                        "document.querySelector('.rtq-sv-badge')?.textContent === 'done'", 120
                    )
                    idle = [  # the same probe once the kernel is idle again
                        float(page.page.evaluate("window.__rtqExec('1+1')")["ms"])
                        for _ in range(10)
                    ]
                    info = page.page.evaluate(
                        "window.__rtqExec('print(view.update_count, view.status, len(view.text))')"
                    )["out"].split()
                    lens = [(float(w), int(n)) for w, n in page.page.evaluate("window.__lens")]
                    final = page.probe_text() or ""
                    cdp = [p for _, _, p in page.ws_frames]
                sockets = proxy.kernel_sockets()
            with Client(redis_srv.url) as client:
                from rtq_nb import views

                df = views.history(client)
                rid = str(df[(df.input_preview == PROMPT) & (df.chunks > 0)].id.iloc[0])
                chunks = list(client.handle(rid, stream=True).chunks(timeout=10))

    assert final == expected, "the page does not show the exact answer"
    text_bytes = len(expected.encode())
    # token-to-DOM: each token's chunk push (Redis clock) -> first DOM state holding it
    delays: list[float] = []
    at, i = 0, 0
    for c in chunks:
        at += len(c.text.encode("utf-16-le")) // 2
        while i < len(lens) and lens[i][1] < at:
            i += 1
        if i == len(lens):
            raise AssertionError(f"no DOM state holds {at} characters")
        delays += [lens[i][0] - c.timestamp_ms] * max(1, c.pieces)
    stream_s = (chunks[-1].timestamp_ms - chunks[0].timestamp_ms) / 1000 or 1.0
    # the kernel socket that carried the text (JupyterLab may open more than one)
    carrying = [s for s in sockets if any(_is_text(m.payload) for m in s.messages)]
    main = max(carrying, key=lambda s: sum(_is_text(m.payload) for m in s.messages))
    text_msgs = [m for m in main.messages if _is_text(m.payload)]
    t0, t1 = text_msgs[0].t, text_msgs[-1].t
    window = [m for m in main.messages if t0 <= m.t <= t1 and b"comm_msg" in m.payload]
    deflated = len(zlib.compress(expected.encode(), 6))
    cdp_text = sum(
        len(p if isinstance(p, bytes) else p.encode())
        for p in cdp
        if _is_text(p if isinstance(p, bytes) else p.encode())
    )
    return {
        "pacing": kwargs or "defaults",
        "text": text,
        "compression": compression,
        "extensions": main.extensions,
        "tokens": tokens,
        "rate": rate,
        "text_bytes": text_bytes,
        "text_messages": len(text_msgs),
        "sockets_with_text": len(carrying),
        "wire_per_text": sum(m.wire for m in text_msgs) / text_bytes,
        "msg_per_text": sum(len(m.payload) for m in text_msgs) / text_bytes,
        "cdp_msg_per_text": cdp_text / text_bytes / max(1, len(carrying)),
        "widget_wire_per_text": sum(m.wire for m in window) / text_bytes,
        "widget_msg_per_text": sum(len(m.payload) for m in window) / text_bytes,
        "text_deflated_per_text": deflated / text_bytes,
        # what each text message adds on the wire beyond the deflated text (roughly)
        "wire_overhead_per_message": (sum(m.wire for m in text_msgs) - deflated) / len(text_msgs),
        "update_count": int(info[0]),
        "updates_per_s": int(info[0]) / stream_s,
        "stream_s": stream_s,
        "dom_p50_ms": statistics.median(delays),
        "dom_p95_ms": _pct(delays, 0.95),
        "dom_max_ms": max(delays),
        "one_plus_one_p50_ms": statistics.median(busy) if busy else float("nan"),
        "one_plus_one_p95_ms": _pct(busy, 0.95),
        "one_plus_one_probes": len(busy),
        "idle_one_plus_one_p50_ms": statistics.median(idle),
    }


COLUMNS = [
    ("pacing", "pacing", "{}"),
    ("compr", "compression", "{}"),
    ("wire B/text B", "wire_per_text", "{:.2f}"),
    ("msg B/text B", "msg_per_text", "{:.2f}"),
    ("widget wire", "widget_wire_per_text", "{:.2f}"),
    ("widget msg", "widget_msg_per_text", "{:.2f}"),
    ("updates/s", "updates_per_s", "{:.1f}"),
    ("DOM p50 ms", "dom_p50_ms", "{:.0f}"),
    ("DOM p95 ms", "dom_p95_ms", "{:.0f}"),
    ("1+1 p50 ms", "one_plus_one_p50_ms", "{:.0f}"),
    ("1+1 p95 ms", "one_plus_one_p95_ms", "{:.0f}"),
    ("idle 1+1", "idle_one_plus_one_p50_ms", "{:.0f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    def label(row: dict[str, Any], key: str, fmt: str) -> str:
        v = row[key]
        if key == "pacing" and isinstance(v, dict):
            v = f"{v.get('max_delay_s', '-')} s/{v.get('max_updates_per_s', '-')}/s"
        if key == "compression":
            v = "on" if v else "off"
        return fmt.format(v)

    cells = [[h for h, _, _ in COLUMNS]] + [[label(r, k, f) for _, k, f in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--compression", choices=("on", "off"), default="on")
    ap.add_argument(
        "--text", choices=("demo", "random"), default="demo", help="demo: fake_llm's answer"
    )
    ap.add_argument("--max-delay", type=float, help="StreamView max_delay_s (default: its own)")
    ap.add_argument("--max-updates", type=float, help="StreamView max_updates_per_s")
    ap.add_argument("--matrix", action="store_true", help="old pacing and defaults, on and off")
    ap.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    a = ap.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    kwargs: dict[str, float] = {}
    if a.max_delay is not None:
        kwargs["max_delay_s"] = a.max_delay
    if a.max_updates is not None:
        kwargs["max_updates_per_s"] = a.max_updates
    runs = [(a.compression == "on", kwargs)]
    if a.matrix:
        runs = [(c, k) for k in (dict(OLD), kwargs) for c in (False, True)]
    rows = []
    for compression, kw in runs:
        started = time.monotonic()
        row = run(a.tokens, a.rate, compression, kw, a.text)
        row["run_s"] = time.monotonic() - started
        rows.append(row)
        if a.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"[{len(rows)}/{len(runs)}] {row['run_s']:.0f} s", file=sys.stderr, flush=True)
    if not a.json:
        print(
            f"{a.tokens} tokens at {a.rate:g} tok/s; bytes per byte of answer text "
            f"({rows[0]['text_bytes']} B, {a.text} text, deflates to "
            f"{rows[0]['text_deflated_per_text']:.2f}x); DOM = token push (Redis) -> page DOM"
        )
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
