"""The notebooks' first cell and what it calls: one setup for every notebook, on Colab or not.

Every notebook starts with :data:`SETUP_CELL` (``tests/test_notebooks.py`` checks that each
notebook's first code cell is exactly this text; ``python -m helpers.notebook`` prints it). On
Colab the cell clones the repository once and works from the clone's root; everywhere it then
calls :func:`setup`, which

* on Colab, checks that the project and each of its dependencies are installed and import, and
  re-runs the install when anything is missing: a marker proves nothing (an interrupted
  ``pip install .`` leaves a ``.egg-info`` folder in the clone that looks like an install);
* picks the profile: ``full`` on a GPU, ``quick`` on a CPU, a ``SEG_PROFILE`` set before wins;
* fetches the campus photos when they are missing (optional: offline, their cells are skipped);
* shows a :class:`helpers.errors.InputError` raised in a later cell as one line, not a traceback;
* prints the profile, the device and the commit.

Notebook 06 takes your own photos through :func:`own_photos` (Colab's upload dialog, or a path).

Only the standard library is imported when this module loads: the setup cell imports it from
the clone before the project's dependencies are installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

SETUP_CELL = '''\
# The same setup cell in every notebook; re-running it changes nothing (helpers/notebook.py).
import os
import sys
REPO_URL = "https://github.com/segmentation-study/campus-segmentation"
IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:  # work in the clone we are in (or just above it), else in one cloned here once
    root = next((p for p in (".", "..") if os.path.isfile(f"{p}/helpers/notebook.py")), REPO_URL.rsplit("/", 1)[-1])
    if not os.path.isdir(root):
        os.system(f"git clone -q --depth 1 {REPO_URL} {root}")
    os.chdir(root)
from helpers.notebook import setup
setup()  # Colab: installs what is missing. Picks the profile, fetches the photos, shows the machine.'''

# The module each default dependency (pyproject.toml) is imported as, where it differs from
# the distribution's name with dashes as underscores.
IMPORT_NAMES = {"segmentation-models-pytorch": "segmentation_models_pytorch",
                "opencv-python-headless": "cv2", "pillow": "PIL", "pyyaml": "yaml",
                "pydensecrf2": "pydensecrf.densecrf"}


def in_colab() -> bool:
    """Return whether this runs in a Google Colab runtime."""
    return "google.colab" in sys.modules


def _project(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (PEP 503)."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1]
    return re.sub(r"[-_.]+", "-", name).lower()


def _satisfies(version: str, requirement: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no packaging yet: presence and import are checked
        return True
    return Requirement(requirement).specifier.contains(version, prereleases=True)


def requirement_problem(requirement: str) -> str | None:
    """Return why a requirement (``name`` with an optional version specifier) is not met here:
    absent, too old, or recorded as installed but failing to import; None when it is met."""
    name = _name(requirement)
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return f"{name} is not installed"
    if not _satisfies(version, requirement):
        return f"{name} {version} does not satisfy {requirement}"
    try:
        importlib.import_module(IMPORT_NAMES.get(name, name.replace("-", "_")))
    except Exception as error:  # noqa: BLE001 - a half-installed package fails in many ways
        return f"{name} {version} does not import ({type(error).__name__}: {error})"
    return None


def installation_problems(root: str | Path) -> list[str]:
    """Return what is missing for the notebooks in the clone at ``root``: one phrase per
    dependency (of ``pyproject.toml``) that is absent, too old or does not import, and for the
    project itself when pip has not installed it (empty when all is in place)."""
    project = _project(Path(root))
    problems = [problem for problem in map(requirement_problem, project["dependencies"]) if problem]
    # pip records its installs (INSTALLER); a build's .egg-info folder in the clone has no record.
    installed = [d for d in importlib.metadata.distributions(name=project["name"])
                 if (d.read_text("INSTALLER") or "").strip()]
    if not any(d.version == project["version"] for d in installed):
        problems.append(f"the project ({project['name']} {project['version']}) is not installed")
    return problems


def require_extra(extra: str, root: str | Path | None = None) -> bool:
    """Make sure the optional packages of an extra of ``pyproject.toml`` (``onnx``, ``crf``...)
    import; return whether pip ran.

    The notebook cell that needs an extra calls this. On Colab the extra is installed there
    (``pip install '.[extra]'``); elsewhere ``ModuleNotFoundError`` names the command.
    """
    from .config import repo_root

    root = Path(root or repo_root()).resolve()
    requirements = _project(root)["optional-dependencies"][extra]
    missing = [problem for problem in map(requirement_problem, requirements) if problem]
    if not missing:
        return False
    if not in_colab():
        raise ModuleNotFoundError(f"this cell needs the {extra} extra ({'; '.join(missing)}): "
                                  f"pip install '.[{extra}]' in {root}, or pip install -r "
                                  "requirements.txt")
    print(f"Installing the {extra} extra ({'; '.join(missing)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"{root}[{extra}]"], check=True)
    importlib.invalidate_caches()
    return True


def ensure_installed(root: str | Path, quiet: bool = False) -> bool:
    """Install the clone at ``root`` with pip when :func:`installation_problems` finds anything
    missing; return whether pip ran.

    Dependencies that are recorded as installed but do not import (an interrupted install)
    are reinstalled first. Raises ``RuntimeError`` when something is still missing after it.
    """
    root = Path(root).resolve()
    problems = installation_problems(root)
    if not problems:
        return False
    if not quiet:
        print(f"Installing the project from {root} ({'; '.join(problems)}) ...", flush=True)
    broken = [p.split()[0] for p in problems if "does not import" in p]
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if broken:
        subprocess.run([*pip, "--force-reinstall", "--no-deps", *broken], check=True)
    # Not editable: Colab imports an editable install only after a restart.
    subprocess.run([*pip, str(root)], check=True)
    importlib.invalidate_caches()
    left = installation_problems(root)
    if left:
        raise RuntimeError(f"still missing after the install: {'; '.join(left)}. Restart the "
                           "runtime (Runtime > Restart session) and run this cell again")
    return True


def show_input_errors_as_one_line(shell=None) -> bool:
    """Make IPython show a :class:`helpers.errors.InputError` as one line (its message names
    the file and the fix) instead of a traceback; return whether an IPython shell was found.

    The cell still fails (the notebook stops there); only the display changes.
    """
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    if shell is None:
        return False
    from .errors import InputError

    def one_line(self, etype, value, tb, tb_offset=None):
        print(f"{etype.__name__}: {value}", file=sys.stderr)

    shell.set_custom_exc((InputError,), one_line)
    return True


def setup(install: bool | None = None, fetch_photos: bool = True) -> dict:
    """Prepare a notebook; return the profile, device, commit and root it printed.

    ``install`` (default: on Colab only) checks the installation and repairs it
    (:func:`ensure_installed`). The profile is ``$SEG_PROFILE`` when set, else ``full`` on a GPU
    and ``quick`` on a CPU (and is put into ``SEG_PROFILE`` for the notebook's cells). The campus
    photos are downloaded when missing; without a network the reason is printed and the
    notebooks skip their campus cells.
    """
    from .config import PROFILE_ENV, get_profile, repo_root

    root = repo_root()
    installed = ensure_installed(root) if (in_colab() if install is None else install) else False
    import torch

    from .provenance import git_commit, hardware

    chosen = os.environ.get(PROFILE_ENV, "").strip()
    gpu = torch.cuda.is_available()
    os.environ[PROFILE_ENV] = chosen or ("full" if gpu else "quick")
    profile = get_profile()  # an unknown SEG_PROFILE is refused here, naming the profiles
    why = f"{PROFILE_ENV} set" if chosen else ("a GPU" if gpu else "no GPU")
    if fetch_photos:
        from .downloads import campus_photos, download_campus

        if not campus_photos(quiet=True):
            try:
                download_campus()
            except (OSError, ValueError) as error:  # optional: the campus cells are skipped
                print(error)
    show_input_errors_as_one_line()
    info = {"profile": profile, "device": hardware()["summary"], "commit": git_commit(),
            "root": str(root), "installed": installed}
    where = f", in {root}" if in_colab() else ""  # on Colab: where the clone is
    print(f"profile {profile} ({why}), {info['device']}, commit {info['commit'] or 'unknown'}{where}")
    return info


def own_photos(path: str | Path | None = None, folder: str | Path | None = None) -> list[Path]:
    """Return your own photos: uploaded through Colab's dialog, or found at ``path`` elsewhere.

    On Colab without ``path``, the upload dialog opens and each uploaded photo is saved into
    ``folder`` (default ``data/uploads``). ``path`` is a photo or a folder of photos. Every photo
    is checked to decode first: anything else raises :class:`helpers.errors.PhotoError` naming
    the file, and nothing of it is saved. Off Colab without ``path``, says how and returns ``[]``.
    """
    from .config import project_path
    from .errors import PhotoError
    from .files import write_bytes
    from .imageio import IMAGE_SUFFIXES, decode_photo, list_images

    def check(name: str, data: bytes) -> None:
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise PhotoError(f"{name}: not a photo ({', '.join(IMAGE_SUFFIXES)} are read); "
                             "choose a photo file")
        try:
            decode_photo(data, max_side=64)
        except ValueError as error:
            raise PhotoError(f"{name}: {error}; choose another photo") from None

    if path is None:
        if not in_colab():
            print("Not on Colab: give a photo or a folder of photos, "
                  "e.g. own_photos('~/Pictures/street.jpg')")
            return []
        from google.colab import files as colab_files

        uploaded = colab_files.upload()
        for name, data in uploaded.items():
            check(name, data)
        folder = Path(folder or project_path("data", "uploads"))
        photos = []
        for name, data in uploaded.items():
            photos.append(write_bytes(folder / Path(name).name, data))
            # Colab also saves each upload in the working folder (the clone's root): the copy
            # under data/ is kept, that one is the same bytes.
            stray = Path.cwd() / Path(name).name
            if stray.is_file() and stray.resolve() != photos[-1].resolve() \
                    and stray.read_bytes() == data:
                stray.unlink()
        return photos
    path = Path(path).expanduser()
    if path.is_dir():
        photos = list_images(path)
    elif path.is_file():
        photos = [path]
    else:
        raise PhotoError(f"{path}: no such photo or folder; give the path of a photo "
                         "or of a folder of photos")
    for photo in photos:
        check(str(photo), photo.read_bytes())
    return photos


if __name__ == "__main__":
    print(SETUP_CELL)
