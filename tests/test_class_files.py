"""Class files are validated when read, and a folder dataset's check fails on what cannot train."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import data
from helpers.errors import ClassFileError
from helpers.labels import CAMVID_CLASSES, ClassInfo

GOOD = {"classes": [{"id": 0, "name": "sky", "color": [70, 130, 180]},
                    {"id": 1, "name": "road", "color": [128, 64, 128]}], "ignore_index": 11}


def with_classes(*classes, **extra) -> dict:
    return {"classes": list(classes), **extra}


BAD_CLASS_LISTS = {
    "colour above 255": (with_classes({"id": 0, "name": "sky", "color": [300, 0, 0]},
                                      {"id": 1, "name": "road", "color": [1, 2, 3]}),
                         "class 'sky' has colour [300, 0, 0]: a colour is three integers from 0 to 255"),
    "colour not a triple": (with_classes({"id": 0, "name": "sky", "color": [1, 2]},
                                         {"id": 1, "name": "road", "color": [1, 2, 3]}),
                            "class 'sky' has colour [1, 2]"),
    "negative colour": (with_classes({"id": 0, "name": "sky", "color": [-1, 0, 0]},
                                     {"id": 1, "name": "road", "color": [1, 2, 3]}),
                        "class 'sky' has colour [-1, 0, 0]"),
    "repeated name": (with_classes({"id": 0, "name": "road", "color": [1, 1, 1]},
                                   {"id": 1, "name": "road", "color": [2, 2, 2]}),
                      "each class needs its own name: 'road' appears more than once"),
    "repeated id": (with_classes({"id": 1, "name": "sky", "color": [1, 1, 1]},
                                 {"id": 1, "name": "road", "color": [2, 2, 2]}),
                    "each class needs its own id: 1 appears more than once"),
    "repeated colour": (with_classes({"id": 0, "name": "sky", "color": [9, 9, 9]},
                                     {"id": 1, "name": "road", "color": [9, 9, 9]}),
                        "each class needs its own colour: [9, 9, 9] appears more than once"),
    "one class": (with_classes({"id": 0, "name": "sky"}), "1 class(es) besides the ignored one"),
    "no classes": (with_classes(), "0 class(es) besides the ignored one"),
    "only the ignored class": (with_classes({"id": 0, "name": "void"}, {"id": 1, "name": "sky"},
                                            ignore_index=0), "1 class(es) besides the ignored one"),
    "id above 255": (with_classes({"id": 256, "name": "sky"}, {"id": 1, "name": "road"}),
                     "the id of class 'sky' is 256: ids must lie in 0..255"),
    "id not a number": (with_classes({"id": "one", "name": "sky"}, {"id": 1, "name": "road"}),
                        "the id of class 'sky' must be an integer from 0 to 255, got 'one'"),
    "entry without a name": (with_classes({"id": 0, "color": [1, 2, 3]}, {"id": 1, "name": "r"}),
                             "class 1 must have an id and a name"),
    "no classes list": ({"names": ["sky", "road"]}, "expected a 'classes' list"),
    "ignored colour reused": (with_classes({"id": 0, "name": "sky", "color": [0, 0, 0]},
                                           {"id": 1, "name": "road", "color": [1, 2, 3]},
                                           {"id": 5, "name": "void", "color": [0, 0, 0]},
                                           ignore_index=5),
                              "the colour of unlabelled pixels [0, 0, 0] is also the colour of "
                              "class 'sky'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLASS_LISTS))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_bad_class_list_gets_one_line_naming_the_file(tmp_path, case, suffix):
    import yaml

    content, message = BAD_CLASS_LISTS[case]
    path = tmp_path / f"classes{suffix}"
    path.write_text(json.dumps(content) if suffix == ".json" else yaml.safe_dump(content))
    with pytest.raises(ClassFileError) as error:
        data.load_class_file(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


@pytest.mark.parametrize("name, content, message", [
    ("classes.yaml", "classes:\n  - {id: 0, name: sky\n  - {id: 1, name: road}\n",
     "line 3: not valid YAML"),
    ("classes.yaml", "classes:\n- id: 0\n   name: sky\n", "line 3: not valid YAML"),
    ("classes.json", '{"classes": [{"id": 0, "name": "sky"},]}', "line 1: not valid JSON"),
    ("classes.yaml", "", "the file is empty"),
    ("classes.yaml", "# only a comment\n", "the file is empty"),
])
def test_a_class_file_that_does_not_parse_names_its_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ClassFileError) as error:
        data.load_class_file(path)
    text = str(error.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text, text


def test_a_binary_or_missing_class_file(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ClassFileError, match="not a text file"):
        data.load_class_file(path)
    with pytest.raises(FileNotFoundError, match="no such class file"):
        data.load_class_file(tmp_path / "missing.yaml")


def test_good_class_files_and_the_camvid_classes_pass(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text("classes:\n  - {id: 0, name: sky, color: [70, 130, 180]}\n"
                    "  - {id: 1, name: road}\n  - {id: 11, name: void, color: [0, 0, 0]}\n"
                    "ignore_index: 11\n")
    classes = data.load_class_file(path)
    assert classes.names == ("sky", "road") and classes.ignore_color == (0, 0, 0)
    assert ClassInfo.from_dict(CAMVID_CLASSES.to_dict()).colors == CAMVID_CLASSES.colors
    assert ClassInfo.from_dict(GOOD).ids == (0, 1)


def test_the_check_command_fails_on_a_folder_without_pairs(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    (tmp_path / "classes.json").write_text(json.dumps(GOOD))
    assert data.main(["check", str(images), str(masks), "--classes",
                      str(tmp_path / "classes.json")]) == 1
    err = capsys.readouterr().err
    assert "no image/mask pairs" in err and "OK" not in err
    assert data.main(["split", str(images), str(masks), "--name", "none"]) == 2


def test_a_dangling_symbolic_link_is_reported_as_one(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("a", "b"):
        Image.new("RGB", (8, 6)).save(images / f"{stem}.jpg")
        Image.fromarray(np.zeros((6, 8), np.uint8)).save(masks / f"{stem}.png")
    (images / "b.jpg").unlink()
    os.symlink(tmp_path / "elsewhere" / "b.jpg", images / "b.jpg")
    found, problems = data.pair_files(images, masks)
    assert [image.name for image, _ in found] == ["a.jpg"]
    assert problems == [f"{images / 'b.jpg'}: a symbolic link to {tmp_path / 'elsewhere' / 'b.jpg'}"
                        ", which does not exist; point it at the file or remove it"]
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("image,mask\nimages/a.jpg,masks/a.png\nimages/b.jpg,masks/b.png\n")
    _, problems = data.read_pairs_file(pairs_file)
    assert len(problems) == 1 and "line 3: image" in problems[0]
    assert "is a symbolic link to" in problems[0] and "which does not exist" in problems[0]
