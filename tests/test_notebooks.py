"""The notebooks' shared setup cell (Colab) and the notebooks without the campus photos.

nbval (``make test``) runs every notebook in the smoke profile with the data present; here the
setup cell is run as Colab runs it, and the notebooks that show campus photos are run with none
and no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def code_cells(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
            if cell["cell_type"] == "code"]


def setup_cell() -> str:
    return code_cells(NOTEBOOKS[0])[0]


def test_every_notebook_starts_with_the_same_setup_cell_holding_the_repository_url():
    cell = setup_cell()
    url = next(line.split('"')[1] for line in cell.splitlines() if line.startswith("REPO_URL ="))
    for path in NOTEBOOKS:
        cells = code_cells(path)
        assert cells[0] == cell, f"{path.name}: its first code cell differs from {NOTEBOOKS[0].name}'s"
        assert sum(url in source for source in cells) == 1, f"{path.name}: the URL outside the setup"
    assert url in (ROOT / "README.md").read_text(), "the README names another repository"


def test_the_setup_cell_on_colab_clones_once_and_reruns_without_change(tmp_path, monkeypatch):
    """Run the cell as Colab does (twice, then from inside the clone): one clone, no nesting."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("helpers")
    except PackageNotFoundError:
        pytest.skip("the project is not installed here; the cell would pip-install it")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout: nothing to clone")
    cell = setup_cell().replace(
        next(line for line in setup_cell().splitlines() if line.startswith("REPO_URL =")),
        f"REPO_URL = {str(ROOT)!r}")  # a local clone source: no network
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.delenv("SEG_PROFILE", raising=False)
    monkeypatch.setenv("CAMPUS_DIR", str(tmp_path))  # photos "present": nothing is downloaded
    (tmp_path / "photo.jpg").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    clone = tmp_path / ROOT.name

    exec(compile(cell, "setup", "exec"), {})
    assert Path.cwd() == clone and (clone / "helpers").is_dir()
    import torch

    assert os.environ["SEG_PROFILE"] == ("full" if torch.cuda.is_available() else "quick")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".git" not in p.parts)
    monkeypatch.setenv("SEG_PROFILE", "smoke")  # the user's choice wins
    exec(compile(cell, "setup", "exec"), {})
    monkeypatch.chdir(clone / "notebooks")  # Colab opened a notebook inside the clone
    exec(compile(cell, "setup", "exec"), {})
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if ".git" not in p.parts)
    assert after == before and Path.cwd() == clone and os.environ["SEG_PROFILE"] == "smoke"


CAMPUS_NOTEBOOKS = [path for path in NOTEBOOKS
                    if any("campus_photos(" in source for source in code_cells(path)[1:])]


@pytest.mark.slow
@pytest.mark.parametrize("path", CAMPUS_NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_without_campus_photos_and_network(path, camvid_dir, tmp_path, monkeypatch):
    """Smoke profile, ``CAMPUS_DIR`` at a missing folder, every HTTP(S) request to a dead proxy."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("SEG_PROFILE", "smoke")
    monkeypatch.setenv("CAMPUS_DIR", str(tmp_path / "no_campus_photos"))
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises on the first failing cell
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "Skipping the campus photos" in printed and "download-campus" in printed
