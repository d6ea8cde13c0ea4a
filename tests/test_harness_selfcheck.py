"""Self-check of tests/jupyter_harness.py on a toy notebook that streams into a widget.

The nbclient tests need only a kernel; the JupyterLab test (marked ``browser``) needs
/usr/bin/chromium and playwright and skips with a clear reason otherwise.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest
from jupyter_harness import (
    JupyterLabSession,
    NotebookExecutionError,
    check_monotonic_growth,
    isolated_jupyter_env,
    open_lab_page,
    run_notebook,
    skip_reason,
    write_notebook,
)

PROBE = "stream-probe"
END = "[END]"
# The sleep below simulates a model emitting tokens; it runs inside the kernel, not the test.
TOY_CELL = f'''\
import time
import ipywidgets as w
from IPython.display import display

box = w.HTML(value="", layout=w.Layout(border="1px solid #888", padding="6px", width="600px"))
box.add_class("{PROBE}")
display(box)
for i in range(30):
    box.value += f"tok{{i:02d}} "
    time.sleep(0.05)
box.value += "{END}"
'''


def _toy_notebook(folder: Path) -> Path:
    return write_notebook(folder / "stream_probe.ipynb", [TOY_CELL])


def test_nbclient_records_widget_updates(tmp_path: Path) -> None:
    env = isolated_jupyter_env(tmp_path / "jupyter")
    run = run_notebook(_toy_notebook(tmp_path / "nb"), env=env, timeout=60)

    (model_id,) = run.model_ids_with_class(PROBE)
    values = [m.state["value"] for m in run.updates(model_id, key="value")]
    assert len(values) >= 10, values
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(values))
    assert values[-1].endswith(END)
    assert run.widget_states()[model_id]["value"].endswith(END)
    assert run.peak_updates_per_second(model_id, "value") >= 1
    assert run.updates_per_second(model_id, "value") > 0


def test_nbclient_error_names_cell_and_uses_current_python(tmp_path: Path) -> None:
    env = isolated_jupyter_env(tmp_path / "jupyter")
    nb = write_notebook(
        tmp_path / "broken.ipynb",
        ["import sys\nprint(sys.executable)", "raise ValueError('boom-42')"],
    )
    with pytest.raises(NotebookExecutionError) as info:
        run_notebook(nb, env=env, timeout=60)

    err = info.value
    assert err.cell_index == 1
    assert "ValueError" in str(err) and "boom-42" in str(err)
    printed = err.notebook.cells[0].outputs[0]["text"].strip()
    assert printed == sys.executable


@pytest.mark.browser
def test_lab_shows_widget_text_growing(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path / "root"
    nb_name = _toy_notebook(root).name
    artifacts = Path(os.environ.get("RTQ_ARTIFACTS") or tmp_path / "artifacts")

    with (
        JupyterLabSession(root, tmp_path / "lab") as lab,
        open_lab_page(lab, nb_name, PROBE) as page,
    ):
        page.run_all_cells()
        page.wait_for_probe_text("tok10", timeout_s=30)
        page.screenshot(artifacts / "selfcheck-lab-mid.png")
        page.wait_for_probe_text(END, timeout_s=30)
        shot = page.screenshot(artifacts / "selfcheck-lab-final.png")
        samples = page.samples()

    report = check_monotonic_growth(samples, END, min_intermediate=5)
    assert report.span_s > 0
    assert shot.is_file() and shot.stat().st_size > 0
    assert all(s["wall"] > 0 for s in samples)


def _frame(payload: bytes, *, fin: bool = True, rsv1: bool = False, opcode: int = 2) -> bytes:
    """A server -> browser websocket frame (RFC 6455: unmasked)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([b0, n])
    elif n < 65536:
        head = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, 127]) + n.to_bytes(8, "big")
    return head + payload


def test_counting_proxy_parses_deflated_kernel_websocket_frames() -> None:
    """The proxy's parser of a kernel websocket's server stream: the 101 head (its agreed
    extensions), frames of every length form, fragments, control frames, permessage-deflate
    with context takeover; fed in odd slices, as TCP delivers them."""
    import zlib

    from jupyter_harness import ProxiedConnection, _DownParser

    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)

    def deflate(data: bytes) -> bytes:
        out = deflater.compress(data) + deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff")
        return out[:-4]

    envelope = b'{"header": {"msg_type": "comm_msg"}, "content": {"t": "append", "text": "%d"}}'
    messages = [envelope % i for i in range(50)] + [b"x" * 70_000]
    wire = (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    sizes = []
    for m in messages:
        frame = _frame(deflate(m), rsv1=True)
        sizes.append(len(frame))
        wire += frame
    plain = b"not compressed, in two fragments"
    wire += _frame(b"\x89\x00", opcode=9)  # a ping: not a message
    parts = _frame(plain[:10], fin=False) + _frame(plain[10:], opcode=0)
    wire += parts
    conn = ProxiedConnection("GET /api/kernels/k/channels HTTP/1.1", kernel_ws=True)
    parser = _DownParser(conn)
    for a, b in itertools.pairwise([*range(0, len(wire), 777), len(wire)]):
        parser.feed(wire[a:b])
    assert conn.extensions == "permessage-deflate"
    assert [m.payload for m in conn.messages] == [*messages, plain]
    assert [m.wire for m in conn.messages] == [*sizes, len(parts)]
    assert [m.compressed for m in conn.messages] == [True] * len(messages) + [False]
    assert sum(sizes[1:50]) < 0.3 * sum(map(len, messages[1:50]))  # the envelopes deflate
