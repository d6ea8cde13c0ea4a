"""StreamView's front end's Markdown renderer (rtq_nb/notebook/_stream_front.js) under Node:
safe (HTML escaped), and the blocks a model writes render, also mid-stream."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import rtq_nb.notebook

JS = Path(rtq_nb.notebook.__file__).parent / "_stream_front.js"


def render(markdown: str) -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    code = (
        f"import {{ renderMarkdown }} from {json.dumps(JS.as_uri())};"
        f"process.stdout.write(renderMarkdown({json.dumps(markdown)}));"
    )
    out = subprocess.run(
        [node, "--input-type=module", "-e", code], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_blocks_and_inline() -> None:
    doc = (
        "# Title\n\nSome **bold**, *italic* and `code`.\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n\n- one\n- two\n\n1. first\n\n"
        "```python\ndef f():\n    return 'x'  # c\n```\n"
    )
    html = render(doc)
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html
    assert "<em>italic</em>" in html and "<code>code</code>" in html
    assert "<table><thead><tr><th>a</th><th>b</th></tr></thead>" in html
    assert "<td>1</td><td>2</td>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html and "<ol><li>first</li></ol>" in html
    assert '<pre class="rtq-code" data-lang="python">' in html
    assert '<span class="rtq-hl-k">def</span>' in html and "rtq-hl-c" in html


def test_html_is_escaped() -> None:
    html = render("<script>alert(1)</script> <img src=x onerror=y> [x](javascript:y)")
    assert "<script" not in html and "<img" not in html and "javascript:" not in html.split("(")[0]
    assert "&lt;script&gt;" in html and 'href="javascript' not in html


def test_an_unclosed_fence_mid_stream_renders_as_code() -> None:
    html = render("Intro\n\n```js\nconst a = 1;")
    assert "<p>Intro</p>" in html and '<span class="rtq-hl-k">const</span>' in html
