"""``rtq-nb lab`` finds its notebook folder from any directory (pure path resolution) and
runs JupyterLab with websocket compression."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rtq_nb.cli import build_parser
from rtq_nb.cli.lab import bundled_notebooks, lab_command, notebook_folder
from rtq_nb.errors import ConfigurationError

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_default_is_the_bundled_notebooks_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # outside the repository: no ./notebooks here
    assert bundled_notebooks() == NOTEBOOKS
    assert notebook_folder(None) == NOTEBOOKS
    assert (notebook_folder(None) / "quickstart.ipynb").is_file()


def test_given_folder_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine").mkdir()
    monkeypatch.chdir(tmp_path)
    assert notebook_folder("mine") == tmp_path / "mine"
    with pytest.raises(ConfigurationError, match="--notebooks DIR"):
        notebook_folder("missing")


def test_no_bundled_notebooks_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtq_nb.cli.lab.bundled_notebooks", lambda: None)
    with pytest.raises(ConfigurationError, match=r"rtq-nb lab --notebooks DIR"):
        notebook_folder(None)


def test_cli_flags() -> None:
    parser = build_parser()
    assert parser.parse_args(["lab"]).dir is None
    assert parser.parse_args(["lab", "--notebooks", "x"]).dir == "x"
    assert parser.parse_args(["lab", "--dir", "y"]).dir == "y"


def test_lab_command_turns_on_websocket_compression() -> None:
    """permessage-deflate on the kernel websockets (the stream widget's envelopes deflate to a
    few dozen bytes); exactly ``{}``: traitlets hands a command-line value over as a string."""
    cmd = lab_command("/nb", 8899, open_browser=False)
    assert "--ServerApp.websocket_compression_options={}" in cmd
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"] and "--no-browser" in cmd
    assert "--port=8899" in cmd and "--ServerApp.root_dir=/nb" in cmd
