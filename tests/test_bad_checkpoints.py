"""Every file that is not a usable checkpoint gets one line naming it and the fix, at every
entry point (exit code 2, no traceback), and checkpoints are written whole."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from helpers import checkpoint
from helpers.config import load_config
from helpers.errors import CheckpointError
from helpers.labels import CAMVID_CLASSES, ClassInfo
from helpers.models import build_model


@pytest.fixture(scope="module")
def payload(smoke_checkpoint):
    return checkpoint.read_checkpoint(smoke_checkpoint)


def edited(payload, change) -> dict:
    import copy

    copied = copy.deepcopy(payload)
    change(copied)
    return copied


def bad_files(payload, folder) -> dict:
    """Each kind of bad checkpoint, written under ``folder``, with what its message must say."""
    folder.mkdir(exist_ok=True)
    three = ClassInfo(("sky", "road", "tree"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)), (0, 1, 2))
    files = {
        "text": ("a text file, not a checkpoint", lambda p: p.write_text("model = unet\n")),
        "empty": ("the file is empty (0 bytes)", lambda p: p.write_bytes(b"")),
        "cut short": ("damaged or cut short",
                      lambda p: p.write_bytes(folder.joinpath("whole.pt").read_bytes()[:50_000])),
        "binary": ("not a PyTorch file, not a checkpoint", lambda p: p.write_bytes(bytes(range(256)))),
        "another program's": ("not a checkpoint written by helpers.checkpoint",
                              lambda p: torch.save({"weights": torch.zeros(2)}, p)),
        "without fields": ("an incomplete checkpoint, without state_dict, model.num_classes",
                           lambda p: torch.save(edited(payload, lambda c: (
                               c.pop("state_dict"), c["model"].pop("num_classes"))), p)),
        "fewer classes": ("the model predicts 11 classes but its class list has 3 (sky, road, tree)",
                          lambda p: torch.save(edited(payload, lambda c: c.update(
                              classes=three.to_dict())), p)),
        "colour over 255": ("its class list is invalid (class 'sky' has colour [300, 0, 0]",
                            lambda p: torch.save(edited(payload, lambda c: c["classes"]["classes"][0]
                                                        .update(color=[300, 0, 0])), p)),
        "weights of another width": ("its weights do not fit a unet-effnet-lite0 with 11 classes",
                                     lambda p: torch.save(edited(payload, lambda c: c["model"].update(
                                         decoder_channels=[64, 32, 16, 16, 8])), p)),
    }
    torch.save(payload, folder / "whole.pt")
    made = {}
    for name, (message, write) in files.items():
        path = folder / f"{name.replace(' ', '_')}.pt"
        write(path)
        made[name] = (path, message)
    return made


@pytest.fixture(scope="module")
def bad(payload, tmp_path_factory):
    return bad_files(payload, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("kind", ["text", "empty", "cut short", "binary", "another program's",
                                  "without fields", "fewer classes", "colour over 255",
                                  "weights of another width"])
def test_the_loader_names_the_file_and_what_is_wrong(bad, kind):
    path, message = bad[kind]
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_model(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_folder_given_as_a_checkpoint_points_at_its_best_pt(smoke_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match=rf"a folder, not a checkpoint; did you mean "
                                              rf"{smoke_checkpoint.parent / 'best.pt'}"):
        checkpoint.read_checkpoint(smoke_checkpoint.parent)
    with pytest.raises(CheckpointError, match="give the path of a best.pt"):
        checkpoint.read_checkpoint(tmp_path)


@pytest.mark.parametrize("kind", ["text", "cut short", "without fields", "fewer classes",
                                  "colour over 255"])
def test_every_command_answers_one_line_and_exit_code_2(bad, kind, tmp_path, capsys):
    from helpers.evaluate import main as evaluate_main
    from helpers.export import main as export_main
    from helpers.predict import main as predict_main
    from helpers.webapp.__main__ import main as webapp_main

    path, message = bad[kind]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(photo)
    runs = {
        "predict": lambda: predict_main([str(photo), "--checkpoint", str(path),
                                         "--out", str(tmp_path / "out"), "--no-progress"]),
        "predict onnx": lambda: predict_main([str(photo), "--checkpoint", str(path), "--runtime",
                                              "onnx", "--out", str(tmp_path / "out")]),
        "evaluate": lambda: evaluate_main(["--checkpoint", str(path)]),
        "export": lambda: export_main(["--checkpoint", str(path), "--out", str(tmp_path / "m.onnx")]),
        "webapp": lambda: webapp_main(["--checkpoint", str(path), "--port", "0"]),
    }
    for name, run in runs.items():
        assert run() == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"error: {path}: ") and message in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
    assert not (tmp_path / "m.onnx").exists()


def test_an_onnx_file_that_is_not_one_is_refused(tmp_path):
    from helpers.export import load_onnx

    path = tmp_path / "model.onnx"
    path.write_text("not a model")
    with pytest.raises(CheckpointError, match=r"model.onnx: not an ONNX model onnxruntime can "
                                              r"load .*; export one with python -m helpers.export"):
        load_onnx(path)


def test_evaluation_refuses_a_model_for_other_classes_than_its_dataset(tmp_path, camvid_dir):
    from helpers.evaluate import evaluate_checkpoint

    three = ClassInfo(("sky", "road", "tree"), ((1, 1, 1), (2, 2, 2), (3, 3, 3)), (0, 1, 2))
    config = load_config("smoke", "mini-unet").replace(width=4)
    path = checkpoint.save_checkpoint(tmp_path / "best.pt", build_model("mini-unet", 3, width=4),
                                      config, three)
    with pytest.raises(CheckpointError, match="the model predicts 3 classes but CamVid has 11 "
                                              r"\(sky, building, pole, road, pavement, tree, ...\)"):
        evaluate_checkpoint(path, "val", progress=False, runtime="torch")


def test_the_class_count_check_names_both_counts_and_the_fix():
    with pytest.raises(CheckpointError) as error:
        checkpoint.check_class_count("runs/x/best.pt", 4, CAMVID_CLASSES, "the class file c.yaml")
    assert str(error.value) == (
        "runs/x/best.pt: the model predicts 4 classes but the class file c.yaml has 11 (sky, "
        "building, pole, road, pavement, tree, ...); use a checkpoint trained on this class list "
        "(python -m helpers.train --classes ...), or the class list it was trained on")
    checkpoint.check_class_count("runs/x/best.pt", 11, CAMVID_CLASSES)


def test_a_checkpoint_write_that_fails_leaves_the_previous_one(tmp_path, monkeypatch):
    config = load_config("smoke", "mini-unet").replace(width=4)
    model = build_model("mini-unet", 11, width=4)
    path = checkpoint.save_checkpoint(tmp_path / "best.pt", model, config, CAMVID_CLASSES, epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def killed(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(handle.tell() // 2)
        raise KeyboardInterrupt  # as a kill half-way through would leave it

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint(path, model, config, CAMVID_CLASSES, epoch=2)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["best.pt"]
    assert checkpoint.read_checkpoint(path)["epoch"] == 1
