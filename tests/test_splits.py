"""A saved split is written whole and checked against its dataset on every use."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from helpers import data, pairs
from helpers.config import load_config
from helpers.errors import SplitError


def write_pair(images, masks, stem, size=(40, 30)):
    rng = np.random.default_rng(len(stem))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        images / f"{stem}.jpg")
    Image.fromarray(rng.choice(np.array([0, 1, 2], np.uint8), size=(size[1], size[0]))).save(
        masks / f"{stem}.png")


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """Twelve pairs in my_data/images and my_data/masks, a class file, and data/splits/ under
    a working folder of its own (not the repository's)."""
    monkeypatch.chdir(tmp_path)
    images, masks = tmp_path / "my_data" / "images", tmp_path / "my_data" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for index in range(12):
        write_pair(images, masks, f"IMG_{index:02d}")
    class_file = tmp_path / "classes.yaml"
    class_file.write_text("classes:\n  - {id: 0, name: sky, color: [70, 130, 180]}\n"
                          "  - {id: 1, name: road, color: [128, 64, 128]}\n"
                          "  - {id: 2, name: tree, color: [0, 128, 0]}\n")
    return images, masks, class_file


def split_command(images, masks, *extra) -> int:
    return data.main(["split", str(images), str(masks), "--name", "mine", *extra])


def test_the_split_is_written_whole_and_reused(dataset, tmp_path, capsys):
    images, masks, _ = dataset
    assert split_command(images, masks) == 0
    csv = tmp_path / "data" / "splits" / "mine.csv"
    assert "train: 10, val: 1, test: 1" in capsys.readouterr().out
    lines = csv.read_text().splitlines()
    assert lines[0] == "split,image,mask" and len(lines) == 13
    assert sorted(p.name for p in csv.parent.iterdir()) == ["mine.csv"]  # no temporary left
    before = csv.read_bytes()
    assert split_command(images, masks) == 0 and csv.read_bytes() == before


def expect_refusal(images, masks, capsys, *needles):
    assert split_command(images, masks) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.csv" in err and "--resplit" in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("cut", ["mid-row", "row boundary"])
def test_a_split_file_cut_short_is_refused_not_trained_on(dataset, tmp_path, capsys, cut):
    images, masks, _ = dataset
    assert split_command(images, masks) == 0
    capsys.readouterr()
    csv = tmp_path / "data" / "splits" / "mine.csv"
    text = csv.read_text()
    if cut == "mid-row":  # what a kill during a plain (not atomic) write leaves
        csv.write_text(text[: len(text) // 2].rsplit(",", 1)[0])
        expect_refusal(images, masks, capsys, "line ", "a file cut short?")
    else:
        csv.write_text("\n".join(text.splitlines()[:9]) + "\n")
        expect_refusal(images, masks, capsys, "4 pair(s) of the dataset are not in it")


def test_pairs_added_after_the_split_are_not_ignored(dataset, capsys):
    images, masks, _ = dataset
    assert split_command(images, masks) == 0
    for stem in ("new_1", "new_2"):
        write_pair(images, masks, stem)
    expect_refusal(images, masks, capsys, "2 pair(s) of the dataset are not in it, added since "
                                          "it was made (new_1.jpg, new_2.jpg)")
    assert split_command(images, masks, "--resplit") == 0
    assert "train: 11, val: 1, test: 2" in capsys.readouterr().out
    assert split_command(images, masks) == 0


def test_a_pair_removed_after_the_split_is_named(dataset, capsys):
    images, masks, _ = dataset
    assert split_command(images, masks) == 0
    (images / "IMG_03.jpg").unlink()
    (masks / "IMG_03.png").unlink()
    expect_refusal(images, masks, capsys, "1 of its pair(s) are no longer in the dataset",
                   "IMG_03.jpg")


def test_an_empty_validation_split_is_refused(dataset, tmp_path, capsys):
    images, masks, _ = dataset
    assert split_command(images, masks) == 0
    csv = tmp_path / "data" / "splits" / "mine.csv"
    csv.write_text(csv.read_text().replace("\nval,", "\ntrain,"))
    expect_refusal(images, masks, capsys, "the validation split is empty")


@pytest.mark.parametrize("content, needle", [
    ("image,mask\nIMG_00.jpg,IMG_00.png\n", "line 1: expected the header 'split,image,mask'"),
    ("", "line 1: expected the header"),
    ("split,image,mask\nholdout,IMG_00.jpg,IMG_00.png\n", "line 2: expected 'train|val|test"),
    ("split,image,mask\ntrain,IMG_00.jpg,IMG_00.png\ntrain,IMG_00.jpg,IMG_00.png\n",
     "line 3: IMG_00.jpg is listed again (first on line 2)"),
])
def test_a_split_file_that_does_not_parse_names_its_line(dataset, tmp_path, capsys, content,
                                                         needle):
    images, masks, _ = dataset
    csv = tmp_path / "data" / "splits" / "mine.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text(content)
    expect_refusal(images, masks, capsys, needle)


def test_small_datasets_get_a_validation_and_a_test_pair_or_a_clear_refusal(tmp_path):
    pairs_of = [(tmp_path / f"{i}.jpg", tmp_path / f"{i}.png") for i in range(7)]
    assert [len(v) for v in data.split_pairs(pairs_of).values()] == [5, 1, 1]
    assert [len(v) for v in data.split_pairs(pairs_of * 2).values()] == [11, 1, 2]  # as before
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("a", "b"):
        write_pair(images, masks, stem)
    with pytest.raises(SplitError, match="2 image/mask pair.* at least 3"):
        data.load_or_make_split(images, masks, "tiny", splits_dir=tmp_path / "splits")


def test_training_data_pairs_the_folder_once_under_one_split_name(dataset, tmp_path, monkeypatch):
    images, masks, class_file = dataset
    calls = []
    real = pairs.pair_files
    monkeypatch.setattr(pairs, "pair_files", lambda *a: calls.append(a) or real(*a))
    config = load_config("smoke", dataset="folder", images_dir=str(images), masks_dir=str(masks),
                         class_file=str(class_file))
    for _ in range(2):  # makes the split, then reads and checks it
        calls.clear()
        built = data.build_datasets(config)
        assert len(calls) == 1
    assert [len(built[s]) for s in ("train", "val", "test")] == [10, 1, 1]
    name = data.dataset_name(config)
    assert name == data.split_name(config) == "my_data"
    assert [p.name for p in (tmp_path / "data" / "splits").iterdir()] == ["my_data.csv"]
    (masks / "IMG_05.png").unlink()  # the check runs before the split is read
    with pytest.raises(ValueError, match="IMG_05.jpg: image without mask"):
        data.build_datasets(config)
    write_pair(images, masks, "IMG_05")
    write_pair(images, masks, "IMG_99")
    with pytest.raises(SplitError, match="my_data.csv: the saved split does not match"):
        data.build_datasets(config)
    assert [len(d) for d in data.build_datasets(config, resplit=True).values()] == [10, 1, 2]


def test_the_train_command_refuses_a_stale_split_and_takes_resplit(dataset, tmp_path, capsys,
                                                                   monkeypatch):
    from helpers import train

    images, masks, class_file = dataset
    assert split_command(images, masks) == 0
    write_pair(images, masks, "new_1")
    command = ["--profile", "smoke", "--images", str(images), "--masks", str(masks),
               "--classes", str(class_file), "--split", "mine", "--out", str(tmp_path / "run")]
    assert train.main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mine.csv: the saved split does not match" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written

    class Trained(Exception):
        pass

    def fit(config, out_dir, datasets=None, **kwargs):  # the split is what is checked here
        raise Trained(sum(len(d) for d in datasets.values()))

    monkeypatch.setattr(train, "fit", fit)
    with pytest.raises(Trained) as trained:
        train.main([*command, "--resplit"])
    assert trained.value.args == (13,)
    assert "new_1.jpg" in (tmp_path / "data" / "splits" / "mine.csv").read_text()
