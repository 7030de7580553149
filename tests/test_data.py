import json

import numpy as np
import pytest
from PIL import Image

from helpers import data
from helpers.metrics import IGNORE_INDEX

CLASS_FILE = {
    "classes": [
        {"id": 0, "name": "sky", "color": [128, 128, 128]},
        {"id": 1, "name": "building", "color": [128, 0, 0]},
        {"id": 2, "name": "road", "color": [128, 64, 128]},
    ],
    "ignore_index": 11,
}


def write_pair(images, masks, stem, size=(40, 30), values=(0, 1, 2, 11), image_suffix=".jpg"):
    width, height = size
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        images / f"{stem}{image_suffix}")
    mask = rng.choice(np.array(values, dtype=np.uint8), size=(height, width))
    Image.fromarray(mask).save(masks / f"{stem}.png")


@pytest.fixture
def dataset(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(10):
        write_pair(images, masks, f"photo_{i:02d}")
    class_file = tmp_path / "classes.json"
    class_file.write_text(json.dumps(CLASS_FILE))
    return images, masks, class_file


def test_class_file_yaml_and_json_agree(tmp_path):
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CLASS_FILE))
    (tmp_path / "c.json").write_text(json.dumps(CLASS_FILE))
    from_yaml = data.load_class_file(tmp_path / "c.yaml")
    assert from_yaml == data.load_class_file(tmp_path / "c.json")
    assert from_yaml.names == ("sky", "building", "road")
    assert from_yaml.ignore_id == 11




def test_clean_dataset_passes_check(dataset):
    images, masks, class_file = dataset
    assert data.check_dataset(images, masks, data.load_class_file(class_file), progress=False) == []
    assert data.main(["check", str(images), str(masks), "--classes", str(class_file)]) == 0


def test_check_lists_every_problem(dataset, capsys):
    images, masks, class_file = dataset
    (masks / "photo_00.png").unlink()  # image without mask
    write_pair(images, masks, "orphan")
    (images / "orphan.jpg").unlink()  # mask without image
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "photo_01.png")  # size mismatch
    (images / "photo_02.jpg").write_bytes(b"not a jpeg at all")  # unreadable
    Image.fromarray(np.full((30, 40), 7, np.uint8)).save(masks / "photo_03.png")  # bad labels
    code = data.main(["check", str(images), str(masks), "--classes", str(class_file)])
    err = capsys.readouterr().err
    assert code == 1
    assert "5 problem(s)" in err
    assert "photo_00.jpg: image without mask" in err
    assert "orphan.png: mask without image" in err
    assert "photo_01.png: mask is 10x10 but image photo_01.jpg is 40x30" in err
    assert "photo_02.jpg: unreadable image" in err
    assert "photo_03.png: label values [7] are not in the class file" in err


def test_masks_are_recoded_with_one_ignore_index(dataset):
    images, masks, class_file = dataset
    classes = data.load_class_file(class_file)
    raw = data.read_raw_mask(masks / "photo_04.png")
    mask = data.read_mask(masks / "photo_04.png", classes)
    np.testing.assert_array_equal(mask[raw == 11], IGNORE_INDEX)
    np.testing.assert_array_equal(mask[raw == 2], 2)
    assert set(np.unique(mask)) <= {0, 1, 2, IGNORE_INDEX}


def test_colour_masks_with_a_palette(tmp_path):
    classes = data.ClassInfo.from_dict(CLASS_FILE)
    colors = np.array([[128, 128, 128], [128, 0, 0], [128, 64, 128], [0, 0, 0]], np.uint8)
    ids = np.array([[0, 1], [2, 3]])
    path = tmp_path / "m.png"
    Image.fromarray(colors[ids]).save(path)
    np.testing.assert_array_equal(data.read_mask(path, classes), [[0, 1], [2, IGNORE_INDEX]])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored (landscape) pixels
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(tmp_path / "phone.jpg", exif=exif, quality=100)
    shown = data.read_image(tmp_path / "phone.jpg")
    assert shown.shape == (60, 20, 3)  # portrait once oriented
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # the band is now on top


def test_read_image_converts_unusual_modes(tmp_path):
    gray16 = Image.fromarray((np.arange(64 * 8).reshape(8, 64) * 100).astype(np.uint16))
    gray16.save(tmp_path / "deep.png")
    out = data.read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (8, 64, 3)
    assert out.max() == round(511 * 100 / 65535 * 255)  # scaled from 16 bits, not clipped
    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert tuple(data.read_image(tmp_path / "cmyk.jpg")[0, 0]) == pytest.approx((255, 0, 0), abs=8)
    Image.new("RGBA", (5, 4), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert tuple(data.read_image(tmp_path / "clear.png")[0, 0]) == (255, 255, 255)
    with pytest.raises(ValueError, match="limit"):
        data.read_image(tmp_path / "cmyk.jpg", max_pixels=10)


def test_resize_keeps_aspect_and_labels_and_leaves_originals(dataset, tmp_path):
    images, masks, _ = dataset
    write_pair(images, masks, "big", size=(400, 300))
    before = {p: p.read_bytes() for p in [*images.iterdir(), *masks.iterdir()]}
    out_images, out_masks = data.resize_dataset(images, masks, tmp_path / "small", max_side=100,
                                                progress=False)
    assert data.read_image(out_images / "big.jpg").shape == (75, 100, 3)
    small_mask = data.read_raw_mask(out_masks / "big.png")
    assert small_mask.shape == (75, 100)
    assert set(np.unique(small_mask)) <= {0, 1, 2, 11}  # nearest: no blended label values
    assert data.read_raw_mask(out_masks / "photo_00.png").shape == (30, 40)  # never enlarged
    assert before == {p: p.read_bytes() for p in before}
    with pytest.raises(ValueError, match="overwrite"):
        data.resize_dataset(images, masks, images.parent, progress=False)


def test_split_is_seeded_saved_and_reused(dataset, tmp_path):
    images, masks, _ = dataset
    first = data.load_or_make_split(images, masks, "mine", seed=3, splits_dir=tmp_path / "splits")
    assert [len(first[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert (tmp_path / "splits" / "mine.csv").is_file()
    again = data.load_or_make_split(images, masks, "mine", seed=3, splits_dir=tmp_path / "splits")
    assert again == first  # read back, not drawn again
    fresh = data.split_pairs(data.pair_files(images, masks)[0][:10], seed=3)
    assert fresh == data.split_pairs(list(reversed(data.pair_files(images, masks)[0][:10])), seed=3)


def test_camvid_official_splits(camvid_dir):
    counts = {s: len(data.camvid_pairs(camvid_dir, s)) for s in data.CAMVID_SPLITS}
    assert counts == {"train": 367, "val": 101, "test": 233}
    image_path, mask_path = data.camvid_pairs(camvid_dir, "train")[0]
    raw = data.read_raw_mask(mask_path)
    mask = data.read_mask(mask_path, data.CAMVID_CLASSES)
    assert mask.shape == (360, 480) and data.read_image(image_path).shape == (360, 480, 3)
    np.testing.assert_array_equal(mask == IGNORE_INDEX, raw == 11)


def test_missing_camvid_names_the_variable_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMVID_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="CAMVID_DIR"):
        data.find_camvid()
    monkeypatch.delenv("CAMVID_DIR")
    monkeypatch.chdir(tmp_path)  # no data/CamVid under this "repository"
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "helpers").mkdir()
    # ... and no shared copy beside it (../shared/data/camvid/CamVid).
    from helpers import downloads

    repository = tmp_path / "repository"
    monkeypatch.setattr(downloads, "project_path", lambda *parts: repository.joinpath(*parts))
    with pytest.raises(FileNotFoundError, match="python -m helpers.data download"):
        data.find_camvid(download=False)
    with pytest.raises(FileNotFoundError, match="download failed"):
        data.download_camvid(tmp_path / "data", url="http://127.0.0.1:9/none.tar.gz")


# --------------------------------------------------------------------------- campus photos


@pytest.fixture
def photo_host(campus_dir, tmp_path):
    """A local HTTP server standing in for GitHub's raw-file host, serving a copy of the photos."""
    import functools
    import http.server
    import shutil
    import threading

    served = tmp_path / "served"
    shutil.copytree(campus_dir, served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_download_campus_fetches_and_verifies_the_pinned_photos(photo_host, tmp_path, capsys):
    url, served = photo_host
    dest = data.download_campus(tmp_path / "campus", base_url=url)
    assert sorted(p.name for p in dest.iterdir()) == sorted(data.CAMPUS_PHOTOS)
    assert "campus photos" in capsys.readouterr().err  # the progress bar
    # Photos already there and intact are kept; a damaged one is fetched again.
    (dest / "UNH_DL_55.jpg").write_bytes(b"damaged")
    (served / "UNH_DL_63.jpg").unlink()  # would fail if it were fetched again
    data.download_campus(dest, base_url=url, progress=False)
    assert (dest / "UNH_DL_55.jpg").read_bytes() == (served / "UNH_DL_55.jpg").read_bytes()
    # A file that differs from the pinned one is refused and not kept.
    (dest / "UNH_DL_64.jpg").unlink()
    (served / "UNH_DL_64.jpg").write_bytes(b"not the photo")
    with pytest.raises(ValueError, match="UNH_DL_64.jpg: got 13 bytes"):
        data.download_campus(dest, base_url=url, progress=False)
    assert not (dest / "UNH_DL_64.jpg").exists() and not list(dest.glob(".*"))  # no temporary


def test_download_campus_without_network_says_the_photos_are_optional(tmp_path):
    with pytest.raises(FileNotFoundError, match="optional"):
        data.download_campus(tmp_path / "campus", base_url="http://127.0.0.1:9/", progress=False)


def test_campus_photos_missing_gives_an_empty_list_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAMPUS_DIR", str(tmp_path / "nowhere"))
    assert data.campus_photos() == []
    assert "CAMPUS_DIR" in capsys.readouterr().out
    monkeypatch.setenv("CAMPUS_DIR", str(tmp_path))
    assert data.campus_photos() == []
    assert "download-campus" in capsys.readouterr().out
    Image.new("RGB", (8, 6)).save(tmp_path / "b.jpg")
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    assert [p.name for p in data.campus_photos(limit=1)] == ["a.png"]
