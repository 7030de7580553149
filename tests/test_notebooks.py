"""The notebooks' setup cell (the canonical text is ``helpers.notebook.SETUP_CELL``), run as
Colab runs it (clone once, install, repair an interrupted install), the one-line display of
input errors, your own photos in Colab, and the notebooks without the campus photos.

nbval (``make test``) runs every notebook in the smoke profile with the data present.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import notebook
from helpers.notebook import SETUP_CELL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPO_URL_LINE = next(line for line in SETUP_CELL.splitlines() if line.startswith("REPO_URL ="))
REPO_URL = REPO_URL_LINE.split('"')[1]


def code_cells(path: Path) -> list[str]:
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
            if cell["cell_type"] == "code"]


def test_the_setup_cell_is_at_most_12_lines_and_names_the_repository_once():
    lines = SETUP_CELL.splitlines()
    assert len(lines) <= 12, f"the setup cell has {len(lines)} lines"
    assert 'IN_COLAB = "google.colab" in sys.modules' in lines
    assert lines[-1].startswith("setup()") and SETUP_CELL.count(REPO_URL) == 1
    compile(SETUP_CELL, "setup cell", "exec")
    assert REPO_URL in (ROOT / "README.md").read_text(), "the README names another repository"


def test_every_notebook_starts_with_the_setup_cell():
    """Each notebook's first code cell is ``helpers.notebook.SETUP_CELL`` exactly, and the
    repository's URL appears nowhere else in it."""
    for path in NOTEBOOKS:
        cells = code_cells(path)
        assert cells[0] == SETUP_CELL, (f"{path.name}: its first code cell is not "
                                        "helpers.notebook.SETUP_CELL (python -m helpers.notebook)")
        assert sum(REPO_URL in source for source in cells) == 1, f"{path.name}: the URL outside the setup"


# -- the cell as Colab runs it: a fresh machine with torch and the other libraries installed,
# -- google.colab importable, the repository URL at a local clone (no network).

def _colab_environment(tmp_path: Path, with_project: bool) -> tuple[Path, dict]:
    """A throwaway virtual environment holding the shared environment's packages (as Colab holds
    its own) but not this project, unless ``with_project``; and the environment variables of a
    Colab process: ``google.colab`` importable, no network, pip offline."""
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    source = Path(sysconfig.get_path("purelib"))
    assert source in map(Path, site.getsitepackages()), "run the tests in the project's virtual environment"
    ours = ("helpers-", "__editable__", "campus_segmentation", "campus-segmentation")
    for entry in source.iterdir():
        if with_project or not entry.name.startswith(ours):
            (target / entry.name).symlink_to(entry)
    fake = tmp_path / "fake_colab" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Stands for Colab\'s package: its presence is what the cell checks."""\n')
    campus = tmp_path / "campus"
    campus.mkdir()
    (campus / "photo.jpg").write_bytes(b"")  # photos "present": nothing is downloaded
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "SEG_PROFILE", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(tmp_path / "fake_colab"), CAMPUS_DIR=str(campus),
               SEG_CACHE_DIR=str(tmp_path / "cache"), PIP_NO_INDEX="1", PIP_NO_DEPS="1",
               PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    return python, env


def _cell_program(cwd: Path | None = None) -> str:
    """Python code that imports google.colab, then runs the setup cell (the URL at this
    repository's committed state), optionally from ``cwd``, and prints what it found."""
    cell = SETUP_CELL.replace(REPO_URL_LINE, f"REPO_URL = {ROOT.as_uri()!r}")
    return "\n".join([
        "import google.colab, json, os, sys",
        *([f"os.chdir({str(cwd)!r})"] if cwd else []),
        f"exec(compile({cell!r}, 'setup cell', 'exec'))",
        "import helpers",
        "print(json.dumps({'cwd': os.getcwd(), 'profile': os.environ['SEG_PROFILE'], "
        "'helpers': helpers.__file__}))",
    ])


def _run_cell(python: Path, env: dict, where: Path, cwd: Path | None = None, **changes):
    result = subprocess.run([str(python), "-c", _cell_program(cwd)], cwd=where, env={**env, **changes},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stdout


def _committed():
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout: nothing to clone")


@pytest.mark.slow
def test_the_setup_cell_on_colab_clones_once_and_reruns_without_change(tmp_path):
    """Run the cell as Colab does (twice, then from inside the clone): one clone, no nesting,
    nothing installed again, the profile from the hardware unless SEG_PROFILE is set."""
    _committed()
    python, env = _colab_environment(tmp_path, with_project=True)
    content = tmp_path / "content"
    content.mkdir()
    clone = content / ROOT.name
    found, printed = _run_cell(python, env, content)
    assert found["cwd"] == str(clone) and found["helpers"].startswith(str(clone))
    import torch

    assert found["profile"] == ("full" if torch.cuda.is_available() else "quick")
    assert f"profile {found['profile']}" in printed and "commit " in printed
    before = sorted(str(p.relative_to(content)) for p in content.rglob("*") if ".git" not in p.parts)
    found, printed = _run_cell(python, env, clone, SEG_PROFILE="smoke")  # the user's choice wins
    assert found["profile"] == "smoke" and "Installing" not in printed
    found, _ = _run_cell(python, env, clone / "notebooks")  # a notebook opened inside the clone
    after = sorted(str(p.relative_to(content)) for p in content.rglob("*") if ".git" not in p.parts)
    assert after == before and found["cwd"] == str(clone)


def _project_installed(python: Path, env: dict) -> bool:
    """Whether pip installed the project into ``python``'s environment (its record, not a
    folder the build left)."""
    import tomllib

    name = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    code = ("import importlib.metadata as m, sys; sys.exit(0 if any((d.read_text('INSTALLER') or '')"
            f".strip() for d in m.distributions(name={name!r})) else 1)")
    return subprocess.run([str(python), "-I", "-c", code], env=env).returncode == 0


@pytest.mark.slow
def test_an_interrupted_install_is_repaired_by_running_the_cell_again(tmp_path):
    """The first run's ``pip install`` is killed as soon as its build leaves the ``.egg-info``
    folder in the clone (what fooled the old check); the next run installs again and works."""
    _committed()
    python, env = _colab_environment(tmp_path, with_project=False)
    content = tmp_path / "content"
    content.mkdir()
    clone = content / ROOT.name
    first = subprocess.Popen([str(python), "-c", _cell_program()], cwd=content, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(clone.glob("*.egg-info")) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)  # the cell and its pip, mid-install
    first.wait()
    assert list(clone.glob("*.egg-info")), first.stdout.read().decode()
    assert not _project_installed(python, env), "pip finished before it could be interrupted"

    found, printed = _run_cell(python, env, content)
    assert "Installing the project" in printed and "is not installed" in printed, printed
    assert _project_installed(python, env) and found["cwd"] == str(clone)
    _, printed = _run_cell(python, env, clone)
    assert "Installing" not in printed


def test_installation_problems_names_each_missing_too_old_or_broken_dependency(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "not-installed-project"\nversion = "1.0"\n'
        'dependencies = ["numpy>=2", "no-such-distribution-here", "numpy>=999", "brokenlib"]\n')
    site = tmp_path / "site"
    (site / "brokenlib").mkdir(parents=True)
    (site / "brokenlib" / "__init__.py").write_text("raise ImportError('half installed')\n")
    (site / "brokenlib-1.0.dist-info").mkdir()
    (site / "brokenlib-1.0.dist-info" / "METADATA").write_text("Name: brokenlib\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(site))
    problems = notebook.installation_problems(tmp_path)
    assert problems == [
        "no-such-distribution-here is not installed",
        f"numpy {__import__('numpy').__version__} does not satisfy numpy>=999",
        "brokenlib 1.0 does not import (ImportError: half installed)",
        "the project (not-installed-project 1.0) is not installed",
    ]


def test_every_default_dependency_is_installed_and_imports_here():
    """The import names of helpers.notebook.IMPORT_NAMES fit every dependency of pyproject.toml."""
    problems = [p for p in notebook.installation_problems(ROOT) if not p.startswith("the project")]
    assert problems == []


def test_setup_prints_the_profile_device_and_commit(monkeypatch, capsys):
    monkeypatch.delenv("SEG_PROFILE", raising=False)
    info = notebook.setup(install=False, fetch_photos=False)
    import torch

    assert info["profile"] == os.environ["SEG_PROFILE"] == ("full" if torch.cuda.is_available() else "quick")
    out = capsys.readouterr().out
    assert f"profile {info['profile']} (" in out and info["device"] in out and str(info["commit"]) in out
    monkeypatch.setenv("SEG_PROFILE", "fast")
    with pytest.raises(ValueError, match="SEG_PROFILE='fast' is not a profile"):
        notebook.setup(install=False, fetch_photos=False)


def test_an_input_error_shows_as_one_line_in_ipython_and_the_cell_still_fails(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert notebook.show_input_errors_as_one_line(shell)
        result = shell.run_cell("from helpers.errors import CheckpointError\n"
                                "raise CheckpointError('model.pt: not a checkpoint; train one first')")
        err = capsys.readouterr().err
        assert err == "CheckpointError: model.pt: not a checkpoint; train one first\n"
        assert isinstance(result.error_in_exec, ValueError)
        result = shell.run_cell("1 / 0")  # other errors keep their traceback
        assert isinstance(result.error_in_exec, ZeroDivisionError)
        assert "Traceback" in "".join(capsys.readouterr())
    finally:
        InteractiveShell.clear_instance()


def _fake_colab(monkeypatch, uploads: dict[str, bytes]):
    """``google.colab`` with a ``files.upload()`` that returns ``uploads`` and, as Colab does,
    also saves each file in the working folder."""
    colab, files = type(sys)("google.colab"), type(sys)("google.colab.files")

    def upload():
        for name, data in uploads.items():
            Path(name).write_bytes(data)
        return dict(uploads)

    files.upload, colab.files = upload, files
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.files", files)


def test_own_photos_on_colab_come_through_the_upload_dialog(campus_dir, tmp_path, monkeypatch):
    from helpers.errors import PhotoError

    monkeypatch.chdir(tmp_path)
    photo = (campus_dir / "UNH_DL_55.jpg").read_bytes()
    _fake_colab(monkeypatch, {"street.jpg": photo})
    [saved] = notebook.own_photos(folder=tmp_path / "uploads")
    assert saved == tmp_path / "uploads" / "street.jpg" and saved.read_bytes() == photo
    assert not (tmp_path / "street.jpg").exists()  # Colab's own copy, the same bytes, is not left

    _fake_colab(monkeypatch, {"notes.txt": b"hello", "good.jpg": photo})
    with pytest.raises(PhotoError, match=r"^notes.txt: not a photo"):
        notebook.own_photos(folder=tmp_path / "second")
    _fake_colab(monkeypatch, {"broken.jpg": photo[:2000]})
    with pytest.raises(PhotoError, match=r"^broken.jpg: .*choose another photo"):
        notebook.own_photos(folder=tmp_path / "second")
    assert not (tmp_path / "second").exists()  # nothing of a refused upload is saved


def test_own_photos_elsewhere_come_from_a_path(campus_dir, tmp_path, capsys):
    from helpers.errors import PhotoError

    assert notebook.own_photos() == [] and "own_photos('" in capsys.readouterr().out
    assert notebook.own_photos(campus_dir / "UNH_DL_63.jpg") == [campus_dir / "UNH_DL_63.jpg"]
    assert len(notebook.own_photos(campus_dir)) == 12
    with pytest.raises(PhotoError, match="no such photo or folder"):
        notebook.own_photos(tmp_path / "missing.jpg")


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
