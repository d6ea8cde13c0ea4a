"""The package's shape: the public API pinned, old import paths alive, modules and classes
small, and importing rtq_nb not pulling in the notebook stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rtq_nb

PACKAGE = Path(rtq_nb.__file__).parent
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


def test_public_api_is_pinned() -> None:
    assert sorted(rtq_nb.__all__) == [
        "AccessDenied",
        "AsyncClient",
        "AsyncRequestHandle",
        "Chunk",
        "Client",
        "EmbeddedRedis",
        "EngineError",
        "Keyring",
        "Request",
        "RequestCancelled",
        "RequestExpired",
        "RequestFailed",
        "RequestHandle",
        "RequestRecord",
        "RequestTimeout",
        "RtqError",
        "SealKey",
        "Security",
        "SigningKey",
        "Status",
        "Usage",
        "VerifyKey",
        "Worker",
        "WorkerInfo",
        "__version__",
        "errors",
    ]
    for name in rtq_nb.__all__:
        assert getattr(rtq_nb, name) is not None


def test_public_import_paths_users_already_use() -> None:
    from rtq_nb import Client, views
    from rtq_nb.demo import fake_llm
    from rtq_nb.notebook import stream_view

    assert callable(Client) and callable(fake_llm) and callable(stream_view)
    assert callable(views.history) and callable(views.workers) and callable(views.pending)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_pins_its_public_names() -> None:
    missing = []
    for path in _modules():
        tree = ast.parse(path.read_text())
        names = {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets
                 if isinstance(t, ast.Name)}  # fmt: skip
        if "__all__" not in names and path.name not in ("__main__.py",) and tree.body:
            if path.name == "__init__.py" and all(
                isinstance(n, (ast.Expr, ast.ImportFrom, ast.Import)) for n in tree.body
            ):
                continue  # a package docstring only
            missing.append(str(path.relative_to(PACKAGE)))
    assert not missing, f"modules without __all__: {missing}"


def test_no_module_over_400_lines_no_class_over_300() -> None:
    too_long = []
    for path in _modules():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.name}: {size} lines")
    assert not too_long, too_long


def test_import_rtq_nb_stays_light() -> None:
    code = (
        "import sys, rtq_nb; "
        "heavy = [m for m in ('pandas', 'ipywidgets', 'IPython', 'matplotlib')"
        " if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
