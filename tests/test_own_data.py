"""Your own labelled photos from the command line: check, split, train, evaluate, predict.

The dataset is generated: photos of three horizontal bands (sky, building, road) with noise,
labelled either as MATLAB's Image Labeler exports them (one channel, class ids 1..3, 0 for
unlabelled pixels) or as colour masks (unlabelled pixels black).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import checkpoint, train
from helpers.data import load_class_file, read_mask
from helpers.evaluate import main as evaluate_main
from helpers.predict import main as predict_main

COLORS = {1: (70, 130, 180), 2: (128, 0, 0), 3: (128, 64, 128)}  # sky, building, road
CLASS_FILE = {
    "classes": [
        {"id": 0, "name": "unlabelled", "color": [0, 0, 0]},
        {"id": 1, "name": "sky", "color": list(COLORS[1])},
        {"id": 2, "name": "building", "color": list(COLORS[2])},
        {"id": 3, "name": "road", "color": list(COLORS[3])},
    ],
    "ignore_index": 0,
}
HEIGHT, WIDTH = 96, 128


def labelled_photo(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a photo (H, W, 3) and its Image Labeler mask (ids 1-3, 0 = unlabelled)."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(20, 40), rng.integers(56, 76)
    ids = np.full((HEIGHT, WIDTH), 3, np.uint8)
    ids[:top] = 1
    ids[top:bottom] = 2
    photo = np.array([(0, 0, 0), *COLORS.values()], np.float64)[ids]
    photo = np.clip(photo + rng.normal(0, 20, photo.shape), 0, 255).astype(np.uint8)
    ids[top - 2 : top + 2] = 0  # the labeller left the band edges unlabelled
    ids[:, :5] = 0
    return photo, ids


def write_dataset(root, style: str, count: int = 12):
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for index in range(count):
        photo, ids = labelled_photo(index)
        Image.fromarray(photo).save(images / f"IMG_{index:04d}.jpg", quality=95)
        if style == "ids":
            Image.fromarray(ids).save(masks / f"IMG_{index:04d}.png")
        else:
            colours = np.array([(0, 0, 0), *COLORS.values()], np.uint8)[ids]
            Image.fromarray(colours).save(masks / f"IMG_{index:04d}.png")
    class_file = root / "classes.yaml"
    class_file.write_text(yaml.safe_dump(CLASS_FILE, sort_keys=False))
    return images, masks, class_file


@pytest.mark.slow
@pytest.mark.parametrize("style", ["ids", "colours"])
def test_train_evaluate_and_predict_on_a_folder_dataset(tmp_path, monkeypatch, capsys, style):
    monkeypatch.chdir(tmp_path)  # data/splits/ is written under the working folder here
    images, masks, class_file = write_dataset(tmp_path / "my_data", style)
    run = tmp_path / "runs" / "mine"
    status = train.main(["--profile", "smoke", "--images", str(images), "--masks", str(masks),
                         "--classes", str(class_file), "--split", "mine", "--out", str(run)])
    assert status == 0, capsys.readouterr().err
    rows = (tmp_path / "data" / "splits" / "mine.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 and sum(r.startswith("train,") for r in rows) == 10

    _, info = checkpoint.load_model(run / "best.pt")
    config = info["config"]
    assert (config.dataset, config.split_name, config.images_dir) == ("folder", "mine", str(images))
    assert info["classes"].names == ("sky", "building", "road")

    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(run / "best.pt"), "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    test_masks = [masks / row.split(",")[2] for row in rows if row.startswith("test,")]
    classes = load_class_file(class_file)  # the source ids: 0 unlabelled, 1-3 classes
    labelled = sum(int((read_mask(path, classes) != 255).sum()) for path in test_masks)
    assert result["images"] == len(test_masks) == 1
    # Scored pixels are exactly the labelled ones: unlabelled (0 / black) is ignored.
    assert np.sum(result["confusion_matrix"]) == labelled < HEIGHT * WIDTH
    assert 0.0 <= result["miou"] <= 1.0 and len(result["iou"]) == 3

    photo = images / test_masks[0].with_suffix(".jpg").name
    assert predict_main([str(photo), "--checkpoint", str(run / "best.pt"),
                         "--out", str(tmp_path / "predictions"), "--no-progress"]) == 0
    mask = np.asarray(Image.open(tmp_path / "predictions" / f"{photo.stem}_mask.png"))
    assert mask.shape == (HEIGHT, WIDTH) and mask.max() < 3


def test_training_refuses_a_broken_dataset_naming_every_bad_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images, masks, class_file = write_dataset(tmp_path / "my_data", "ids", count=4)
    (masks / "IMG_0001.png").unlink()
    Image.fromarray(np.full((HEIGHT, WIDTH), 9, np.uint8)).save(masks / "IMG_0002.png")
    status = train.main(["--profile", "smoke", "--images", str(images), "--masks", str(masks),
                         "--classes", str(class_file), "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert status == 2
    assert "IMG_0001.jpg: image without mask" in error
    assert "IMG_0002.png: label values [9] are not in the class file" in error
    assert not (tmp_path / "run").exists() and not (tmp_path / "data" / "splits").exists()


def test_the_folder_options_go_together(capsys):
    with pytest.raises(SystemExit):
        train.main(["--images", "photos"])
    assert "--images, --masks and --classes go together" in capsys.readouterr().err
