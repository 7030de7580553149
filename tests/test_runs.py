"""Run folders: named by dataset, and never emptied by a run of another configuration."""

import hashlib
from pathlib import Path

import pytest

from helpers import train
from helpers.config import load_config


def _digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in ("best.pt", "last.pt", "history.json", "config.json")}


def test_default_run_folder_names_the_dataset_and_split(tmp_path):
    camvid = load_config("smoke", "mini-unet", runs_dir=str(tmp_path))
    assert train.run_dir(camvid) == tmp_path / "smoke" / "mini-unet"  # the report's paths
    mine = load_config("quick", dataset="folder", images_dir=str(tmp_path / "mine" / "images"),
                       masks_dir=str(tmp_path / "mine" / "masks"), class_file="c.yaml",
                       runs_dir=str(tmp_path))
    assert train.run_dir(mine) == tmp_path / "quick" / "mine" / "unet-effnet-lite0"
    split = mine.replace(split_name="v2")
    assert train.run_dir(split) == tmp_path / "quick" / "mine-v2" / "unet-effnet-lite0"
    pairs = mine.replace(images_dir=None, masks_dir=None, pairs_file=str(tmp_path / "labels.csv"))
    assert train.run_dir(pairs) == tmp_path / "quick" / "labels" / "unet-effnet-lite0"


def test_a_second_different_run_leaves_the_first_runs_checkpoints_intact(camvid_dir, tmp_path,
                                                                          capsys):
    first = load_config("smoke", "unet-effnet-lite0", runs_dir=str(tmp_path))
    best = train.ensure_trained(first, progress=False)
    folder = best.parent
    assert folder == tmp_path / "smoke" / "unet-effnet-lite0"
    before = _digests(folder)
    second = first.replace(lr=2e-3, epochs=1)

    # The command line refuses, naming both ways out, and writes nothing.
    code = train.main(["--profile", "smoke", "--set", f"runs_dir={tmp_path}", "--set", "lr=2e-3",
                       "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "--resume" in err and "lr: 0.001 -> 0.002" in err
    with pytest.raises(ValueError, match="another configuration"):
        train.fit(second, folder, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train.fit(second, folder, resume=True, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        train.ensure_trained(second, folder, progress=False)  # an explicit folder: refused
    assert _digests(folder) == before

    # Notebooks and the report (ensure_trained, default folder) write beside it.
    other = train.ensure_trained(second, progress=False)
    assert other.parent == folder.with_name(f"unet-effnet-lite0@{train.config_hash(second)}")
    assert other.is_file() and _digests(folder) == before
    # ... and each call finds its own run again without training.
    stamp = other.stat().st_mtime_ns
    assert train.ensure_trained(second, progress=False) == other
    assert other.stat().st_mtime_ns == stamp
    assert train.ensure_trained(first, progress=False) == best and _digests(folder) == before


def test_a_configuration_saved_before_new_fields_existed_is_the_same_run():
    config = load_config("smoke")
    older = config.to_dict()
    for name in ("init_from", "freeze_encoder_epochs", "tensorboard", "pairs_file"):
        older.pop(name)
    assert train.run_identity(older) == train.run_identity(config)
    assert train.run_identity(config.replace(tensorboard=True)) == train.run_identity(config)
    assert train.config_hash(config) != train.config_hash(config.replace(seed=1))
