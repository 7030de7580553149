"""Your own labelled photos: EXIF-rotated phone photos, masks from MATLAB's Image Labeler."""

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import data
from helpers.config import load_config
from helpers.data import IGNORE_INDEX

# Image Labeler's convention: pixel label ids 1..N, 0 = unlabelled.
MATLAB_CLASSES = {
    "classes": [
        {"id": 1, "name": "sky", "color": [70, 130, 180]},
        {"id": 2, "name": "building", "color": [200, 60, 40]},
        {"id": 3, "name": "lawn", "color": [40, 160, 60]},
    ],
    "ignore_index": 0,
}
GRAYS = np.array([30, 90, 150, 220], dtype=np.uint8)  # photo brightness of label 0, 1, 2, 3


def scene(height, width, seed):
    """Return (photo, label ids) of a scene of random rectangles whose photo edges follow the
    labels (a labelled photo's masks follow its edges too)."""
    rng = np.random.default_rng(seed)
    labels = np.full((height, width), rng.integers(1, 4), dtype=np.uint8)
    for _ in range(7):
        top, left = rng.integers(0, height - 4), rng.integers(0, width - 4)
        bottom = top + rng.integers(4, max(5, height // 2))
        right = left + rng.integers(4, max(5, width // 2))
        labels[top:bottom, left:right] = rng.integers(0, 4)
    photo = GRAYS[labels][..., None].repeat(3, axis=2).astype(np.int16)
    photo += rng.integers(-6, 7, size=photo.shape).astype(np.int16)
    return np.clip(photo, 0, 255).astype(np.uint8), labels


def save_jpeg(path, pixels, orientation):
    exif = Image.Exif()
    exif[data.EXIF_ORIENTATION] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif)


def make_pair(images, masks, stem, orientation, mask_on, size=(48, 64), seed=0):
    """Write a photo stored as ``size`` with an EXIF orientation and its mask drawn on the
    ``raw`` (stored) or ``oriented`` (displayed) grid. Returns the stored labels."""
    photo, labels = scene(*size, seed)
    save_jpeg(images / f"{stem}.jpg", photo, orientation)
    drawn = labels if mask_on == "raw" else data.orient(labels, orientation)
    Image.fromarray(drawn).save(masks / f"{stem}.png")
    return photo, labels


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / "phone" / "images", tmp_path / "phone" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    class_file = tmp_path / "classes.json"
    class_file.write_text(json.dumps(MATLAB_CLASSES))
    return images, masks, class_file


def test_orient_turns_arrays_as_pillow_turns_photos():
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[data.EXIF_ORIENTATION] = orientation
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG", exif=exif)
        buffer.seek(0)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(buffer)))
        buffer.seek(0)
        stored, found = data.read_photo(buffer)
        assert found == orientation
        np.testing.assert_array_equal(stored, pixels)
        np.testing.assert_array_equal(data.orient(stored, orientation), expected, str(orientation))


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("mask_on", ["raw", "oriented"])
def test_masks_on_either_grid_of_a_rotated_photo_load_aligned(folders, orientation, mask_on):
    images, masks, class_file = folders
    photo, labels = make_pair(images, masks, "IMG_0001", orientation, mask_on, seed=orientation)
    classes = data.load_class_file(class_file)
    found = data.inspect_dataset(images, masks, classes, progress=False)
    assert found.problems == []
    mask_path = masks / "IMG_0001.png"
    assert found.mask_grids == {mask_path: mask_on}
    assert bool(found.notes) == (mask_on == "raw")
    for grids in (found.mask_grids, None):  # decided by the check, or when loading
        image, mask = data.SegmentationDataset(found.pairs, classes, mask_grids=grids).load(0)
        upright = data.orient(labels, orientation)
        assert image.shape[:2] == mask.shape == upright.shape
        np.testing.assert_array_equal(mask, classes.lookup_table()[upright])
        # The photo's brightness follows the mask: every label sits on its own gray level.
        assert np.abs(image[..., 0].astype(int) - GRAYS[upright]).mean() < 8


def test_a_mask_that_fits_neither_grid_names_the_file_and_both_sizes(folders, capsys):
    images, masks, class_file = folders
    make_pair(images, masks, "IMG_0002", 6, "raw")
    Image.fromarray(np.ones((50, 50), np.uint8)).save(masks / "IMG_0002.png")
    assert data.main(["check", str(images), str(masks), "--classes", str(class_file)]) == 1
    err = capsys.readouterr().err
    assert ("IMG_0002.png: mask is 50x50 but image IMG_0002.jpg is 64x48 as stored and 48x64 as "
            "displayed (EXIF orientation 6)") in err
    dataset = data.SegmentationDataset([(images / "IMG_0002.jpg", masks / "IMG_0002.png")],
                                       data.load_class_file(class_file))
    with pytest.raises(ValueError, match="as stored and 48x64 as displayed"):
        dataset.load(0)


def test_check_says_once_that_masks_follow_the_stored_pixels(folders, capsys):
    images, masks, class_file = folders
    for i, orientation in enumerate((6, 6, 8, 1)):
        make_pair(images, masks, f"IMG_{i:04d}", orientation, "raw", seed=i)
    assert data.main(["check", str(images), str(masks), "--classes", str(class_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and "3 of 4 mask(s) follow their photo's pixels as stored" in out
    assert "OK: 4 image/mask pairs, 3 classes" in out


def test_a_square_photo_is_matched_by_its_content(folders):
    images, masks, class_file = folders
    make_pair(images, masks, "IMG_0003", 8, "raw", size=(64, 64), seed=5)
    found = data.inspect_dataset(images, masks, data.load_class_file(class_file), progress=False)
    assert found.mask_grids == {masks / "IMG_0003.png": "raw"}


def test_resize_turns_masks_drawn_on_the_stored_pixels(folders, tmp_path):
    images, masks, _ = folders
    _, labels = make_pair(images, masks, "IMG_0004", 6, "raw", size=(96, 128))
    out_images, out_masks = data.resize_dataset(images, masks, tmp_path / "small", max_side=64,
                                                progress=False)
    with Image.open(out_images / "IMG_0004.jpg") as image:
        assert image.size == (48, 64) and image.getexif().get(data.EXIF_ORIENTATION) is None
    mask = np.asarray(Image.open(out_masks / "IMG_0004.png"))
    np.testing.assert_array_equal(mask, data.orient(labels, 6)[::2, ::2])


@pytest.fixture
def matlab_export(tmp_path):
    """Photos and an Image Labeler export, with the pairs file written on another computer."""
    photos, labels_dir = tmp_path / "campus", tmp_path / "PixelLabelData"
    photos.mkdir()
    labels_dir.mkdir()
    rows, stored = [], {}
    # Image Labeler numbers its exports in labelling order, not by photo name.
    for n, stem in enumerate(["IMG_0107", "IMG_0042", "IMG_0311"], start=1):
        photo, labels = scene(48, 64, seed=n)
        save_jpeg(photos / f"{stem}.jpg", photo, 6)  # portrait phone photos
        Image.fromarray(labels).save(labels_dir / f"Label_{n}.png")  # imread: stored grid
        stored[stem] = labels
        rows.append([f"C:\\Users\\me\\campus\\{stem}.jpg",
                     f"C:\\Users\\me\\labels\\PixelLabelData\\Label_{n}.png"])
    pairs_file = tmp_path / "pairs.csv"
    with pairs_file.open("w", newline="") as handle:
        csv.writer(handle).writerows([["image", "mask"], *rows])
    class_file = tmp_path / "classes.yaml"
    import yaml

    class_file.write_text(yaml.safe_dump(MATLAB_CLASSES))
    return pairs_file, class_file, stored


def test_a_matlab_export_is_paired_by_its_pairs_file(matlab_export, capsys):
    pairs_file, class_file, stored = matlab_export
    pairs, problems = data.read_pairs_file(pairs_file)
    assert problems == []
    assert [(i.name, m.name) for i, m in pairs] == [
        ("IMG_0107.jpg", "Label_1.png"), ("IMG_0042.jpg", "Label_2.png"),
        ("IMG_0311.jpg", "Label_3.png")]
    assert data.main(["check", "--pairs", str(pairs_file), "--classes", str(class_file)]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 mask(s) follow their photo's pixels as stored" in out and "OK: 3" in out
    assert data.main(["pairs", "--pairs", str(pairs_file)]) == 0
    assert "IMG_0042.jpg -> " in capsys.readouterr().out
    # Written back with paths relative to the new CSV, it pairs the same files.
    copy = pairs_file.parent / "copy" / "pairs.csv"
    assert data.main(["pairs", "--pairs", str(pairs_file), "--out", str(copy)]) == 0
    assert "../campus/IMG_0107.jpg,../PixelLabelData/Label_1.png" in copy.read_text()
    assert data.read_pairs_file(copy) == (pairs, [])

    classes = data.load_class_file(class_file)
    image, mask = data.SegmentationDataset(pairs, classes).load(1)
    upright = data.orient(stored["IMG_0042"], 6)
    assert mask.shape == image.shape[:2] == (64, 48)
    assert (mask[upright == 0] == IGNORE_INDEX).all()  # unlabelled -> ignored
    np.testing.assert_array_equal(mask[upright > 0], upright[upright > 0] - 1)


def test_a_pairs_file_names_missing_and_repeated_files(matlab_export, tmp_path):
    pairs_file, _, _ = matlab_export
    with pairs_file.open("a", newline="") as handle:
        csv.writer(handle).writerows([["campus/IMG_0042.jpg", "PixelLabelData/Label_9.png"],
                                      ["campus/IMG_0107.jpg", "PixelLabelData/Label_1.png"]])
    _, problems = data.read_pairs_file(pairs_file)
    assert any("line 5: mask PixelLabelData/Label_9.png not found" in p for p in problems)
    assert any("line 6: image" in p and "already paired on line 2" in p for p in problems)


def test_a_pairs_dataset_splits_and_builds_from_its_config(matlab_export, tmp_path, capsys,
                                                           monkeypatch):
    pairs_file, class_file, _ = matlab_export
    monkeypatch.chdir(tmp_path)  # data/splits/ of this folder, not of the repository
    split = data.load_or_make_split(None, None, "campus", seed=1, splits_dir=tmp_path / "splits",
                                    pairs_file=pairs_file)
    again = data.load_or_make_split(None, None, "campus", seed=1, splits_dir=tmp_path / "splits",
                                    pairs_file=pairs_file)
    assert again == split and sum(len(v) for v in split.values()) == 3
    rows = (tmp_path / "splits" / "campus.csv").read_text()
    assert "campus/IMG_" in rows and "PixelLabelData/Label_" in rows  # portable, relative paths
    config = load_config("smoke", dataset="folder", pairs_file=str(pairs_file),
                         class_file=str(class_file), split_name="campus-test")
    datasets = data.build_datasets(config)
    assert "follow their photo's pixels as stored" in capsys.readouterr().out
    assert sum(len(d) for d in datasets.values()) == 3
    assert datasets["train"].classes.names == ("sky", "building", "lawn")
