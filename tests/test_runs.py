"""Run folders: named by dataset, and never emptied by a run of another configuration."""

import hashlib
from pathlib import Path

import pytest

from helpers import finetune, runs, train
from helpers.config import load_config


def _digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in ("best.pt", "last.pt", "history.json", "config.json")}


def test_default_run_folder_names_the_dataset_and_split(tmp_path):
    camvid = load_config("smoke", "mini-unet", runs_dir=str(tmp_path))
    assert runs.run_dir(camvid) == tmp_path / "smoke" / "mini-unet"  # the report's paths
    mine = load_config("quick", dataset="folder", images_dir=str(tmp_path / "mine" / "images"),
                       masks_dir=str(tmp_path / "mine" / "masks"), class_file="c.yaml",
                       runs_dir=str(tmp_path))
    assert runs.run_dir(mine) == tmp_path / "quick" / "mine" / "unet-effnet-lite0"
    split = mine.replace(split_name="v2")
    assert runs.run_dir(split) == tmp_path / "quick" / "mine-v2" / "unet-effnet-lite0"
    pairs = mine.replace(images_dir=None, masks_dir=None, pairs_file=str(tmp_path / "labels.csv"))
    assert runs.run_dir(pairs) == tmp_path / "quick" / "labels" / "unet-effnet-lite0"


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
    assert other.parent == folder.with_name(f"unet-effnet-lite0@{runs.config_hash(second)}")
    assert other.is_file() and _digests(folder) == before
    # ... and each call finds its own run again without training, as make serve does.
    assert runs.run_folder(second) == other.parent and runs.run_folder(first) == folder
    assert train.main(["--profile", "smoke", "--set", f"runs_dir={tmp_path}", "--set", "lr=2e-3",
                       "--epochs", "1", "--where"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(other.parent))
    stamp = other.stat().st_mtime_ns
    assert train.ensure_trained(second, progress=False) == other
    assert other.stat().st_mtime_ns == stamp
    assert train.ensure_trained(first, progress=False) == best and _digests(folder) == before


def test_a_configuration_saved_before_new_fields_existed_is_the_same_run():
    config = load_config("smoke")
    older = config.to_dict()
    for name in ("init_from", "freeze_encoder_epochs", "tensorboard", "pairs_file"):
        older.pop(name)
    assert runs.run_identity(older) == runs.run_identity(config)
    assert runs.run_identity(config.replace(tensorboard=True)) == runs.run_identity(config)
    assert runs.config_hash(config) != runs.config_hash(config.replace(seed=1))


def _labelled_folder(root, count=12, size=(96, 128)):
    """A tiny own-data set: photos of random rectangles, masks in Image Labeler's convention
    (class ids 1-3, 0 = unlabelled), and its class file."""
    import json

    import numpy as np
    from PIL import Image

    images, masks = root / "yard" / "images", root / "yard" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    grays = np.array([0, 60, 130, 210], dtype=np.uint8)
    for i in range(count):
        rng = np.random.default_rng(i)
        labels = np.full(size, 1, dtype=np.uint8)
        for _ in range(5):
            top, left = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
            labels[top:top + rng.integers(8, 48), left:left + rng.integers(8, 64)] = rng.integers(0, 4)
        photo = np.repeat(grays[labels][..., None], 3, axis=2)
        photo[..., 1] //= 2  # not gray: the encoder sees colour
        Image.fromarray(photo).save(images / f"yard_{i:02d}.png")
        Image.fromarray(labels).save(masks / f"yard_{i:02d}.png")
    class_file = root / "yard" / "classes.json"
    class_file.write_text(json.dumps({"classes": [
        {"id": 1, "name": "lawn"}, {"id": 2, "name": "path"}, {"id": 3, "name": "wall"}],
        "ignore_index": 0}))
    return images, masks, class_file


def test_fine_tuning_from_a_camvid_checkpoint_onto_new_classes(smoke_run, tmp_path, monkeypatch):
    import torch

    from helpers import checkpoint
    from helpers.models import build_model

    monkeypatch.chdir(tmp_path)  # the split CSV goes to this folder's data/splits/
    images, masks, class_file = _labelled_folder(tmp_path)
    source = checkpoint.read_checkpoint(smoke_run.best_checkpoint)["state_dict"]

    # Encoder and decoder come from the CamVid model; the classifier is new, for 3 classes.
    model = build_model("unet-effnet-lite0", 3, pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = finetune.init_from_checkpoint(model, smoke_run.best_checkpoint, progress=False)
    assert kept and all(k.startswith("net.segmentation_head.") for k in kept)
    for key, value in model.state_dict().items():
        if key in kept:
            assert value.shape[0] == 3 and torch.equal(value, before[key])
        else:
            assert torch.equal(value, source[key]), key

    # Trained with the encoder frozen for the first of two epochs.
    config = load_config("smoke", "unet-effnet-lite0", dataset="folder", images_dir=str(images),
                         masks_dir=str(masks), class_file=str(class_file),
                         init_from=str(smoke_run.best_checkpoint), freeze_encoder_epochs=1,
                         tensorboard=True, runs_dir=str(tmp_path / "runs"))
    encoder_conv = "net.encoder.model.conv_stem.weight"
    encoder_bn = "net.encoder.model.bn1.weight"
    decoder_conv = "net.decoder.blocks.0.conv1.0.weight"
    seen = []

    def after_epoch(row):
        seen.append(checkpoint.read_checkpoint(runs.run_dir(config) / "last.pt")["state_dict"])

    result = train.fit(config, progress=False, epoch_callback=after_epoch)
    assert result.out_dir == tmp_path / "runs" / "smoke" / "yard" / "unet-effnet-lite0"
    assert torch.equal(seen[0][encoder_conv], source[encoder_conv])  # frozen in epoch 1
    assert not torch.equal(seen[0][encoder_bn], source[encoder_bn])  # BatchNorm still trains
    assert not torch.equal(seen[0][decoder_conv], source[decoder_conv])
    assert not torch.equal(seen[1][encoder_conv], source[encoder_conv])  # trained in epoch 2
    model, info = checkpoint.load_model(result.best_checkpoint)
    assert model.num_classes == 3 and info["classes"].names == ("lawn", "path", "wall")
    assert info["config"].init_from == str(smoke_run.best_checkpoint)

    # TensorBoard got each epoch's scalars.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.out_dir / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/val", "mIoU/train", "mIoU/val", "learning rate"} <= set(
        events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("mIoU/val")] == [1, 2]
    assert events.Scalars("loss/val")[0].value == pytest.approx(result.history[0]["val_loss"])


def test_train_command_fine_tunes_with_its_flags(smoke_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images, masks, class_file = _labelled_folder(tmp_path, count=6)
    out = tmp_path / "run"
    assert train.main(["--profile", "smoke", "--epochs", "1", "--out", str(out),
                       "--set", "dataset=folder", "--set", f"images_dir={images}",
                       "--set", f"masks_dir={masks}", "--set", f"class_file={class_file}",
                       "--init-from", str(smoke_run.best_checkpoint),
                       "--freeze-encoder-epochs", "1", "--tensorboard"]) == 0
    import json

    saved = json.loads((out / "config.json").read_text())
    assert saved["init_from"] == str(smoke_run.best_checkpoint.resolve())
    assert saved["freeze_encoder_epochs"] == 1 and saved["tensorboard"] is True
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert "classifier new (11 -> 3 classes)" in capsys.readouterr().out
    # A checkpoint of another architecture is refused with the way out.
    assert train.main(["--profile", "smoke", "--model", "mini-unet", "--epochs", "1",
                       "--out", str(tmp_path / "mini"), "--set", "dataset=folder",
                       "--set", f"images_dir={images}", "--set", f"masks_dir={masks}",
                       "--set", f"class_file={class_file}",
                       "--init-from", str(smoke_run.best_checkpoint)]) == 2
    assert "--model unet-effnet-lite0" in capsys.readouterr().err
