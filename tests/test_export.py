"""ONNX export: metadata, parity with PyTorch on real CamVid images, dynamic shapes, the onnx runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers.checkpoint import load_model
from helpers.data import read_image
from helpers.export import PARITY_ATOL, classes_from_metadata, export_onnx, load_onnx, main
from helpers.inference import onnx_logits, predict_logits
from helpers.predict import Predictor


@pytest.fixture(scope="module")
def onnx_path(smoke_checkpoint, tmp_path_factory):
    return export_onnx(smoke_checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="module")
def torch_model(smoke_checkpoint):
    model, info = load_model(smoke_checkpoint, "cpu")
    return model.float().eval(), info


@pytest.fixture(scope="module")
def camvid_batch(camvid_dir):
    paths = sorted((camvid_dir / "test").glob("*.png"))[::80][:3]  # three scenes of the test split
    images = np.stack([read_image(p) for p in paths])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (3, 3, 360, 480)


def test_metadata_describes_the_model(onnx_path, torch_model):
    session, metadata = load_onnx(onnx_path)
    _, info = torch_model
    assert classes_from_metadata(metadata) == info["classes"]
    assert metadata["model_name"] == "unet-effnet-lite0" and metadata["num_classes"] == "11"
    assert "0-1" in metadata["input"] and metadata["stride"] == "32"
    assert json.loads(metadata["classes"])["classes"][3]["name"] == "road"
    inputs = session.get_inputs()[0]
    assert inputs.name == "image" and inputs.shape[1] == 3
    assert all(isinstance(dim, str) for dim in (inputs.shape[0], inputs.shape[2], inputs.shape[3]))


def test_parity_with_pytorch_on_camvid_images(onnx_path, torch_model, camvid_batch):
    session, _ = load_onnx(onnx_path)
    model, _ = torch_model
    reference = predict_logits(model, camvid_batch, dtype=None, channels_last=False)  # fp32
    logits = onnx_logits(session, camvid_batch)  # fp32, padded to 384x480 and cropped back
    assert logits.shape == reference.shape == (3, 11, 360, 480)
    difference = (logits - reference).abs().max().item()
    assert difference <= PARITY_ATOL, f"max |logit difference| {difference:.2e}"
    agreement = (logits.argmax(1) == reference.argmax(1)).float().mean().item()
    assert agreement >= 0.999


def test_dynamic_batch_and_size(onnx_path, torch_model, camvid_batch):
    session, _ = load_onnx(onnx_path)
    model, _ = torch_model
    crop = camvid_batch[:2, :, :200, :300]  # another batch size and a size that needs padding
    logits = onnx_logits(session, crop)
    assert logits.shape == (2, 11, 200, 300)
    reference = predict_logits(model, crop, dtype=None, channels_last=False)
    assert (logits - reference).abs().max().item() <= PARITY_ATOL


def test_onnx_runtime_predictor_matches_torch(onnx_path, smoke_checkpoint, camvid_dir):
    image = read_image(sorted((camvid_dir / "test").glob("*.png"))[5])
    torch_mask = Predictor(smoke_checkpoint, runtime="torch", amp="off").predict(image).mask
    from_file = Predictor(onnx_path, runtime="onnx")
    assert from_file.classes.names[0] == "sky" and from_file.model_name == "unet-effnet-lite0"
    assert (from_file.predict(image).mask == torch_mask).mean() >= 0.999
    on_the_fly = Predictor(smoke_checkpoint, runtime="onnx")  # exports in memory
    assert (on_the_fly.predict(image).mask == torch_mask).mean() >= 0.999
    with pytest.raises(ValueError, match="runtime 'onnx'"):
        Predictor(onnx_path, runtime="torch")


def test_command_line(smoke_checkpoint, tmp_path, capsys):
    out = tmp_path / "exported.onnx"
    assert main(["--checkpoint", str(smoke_checkpoint), "--out", str(out)]) == 0
    assert out.is_file() and "11 classes" in capsys.readouterr().out
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["unet-effnet-lite1", "unet-effnet-lite2"])
def test_a_larger_lite_unet_checkpoint_loads_exports_and_predicts(name, camvid_batch, tmp_path):
    from helpers.checkpoint import save_checkpoint
    from helpers.config import load_config
    from helpers.labels import CAMVID_CLASSES
    from helpers.models import build_model

    model = build_model(name, 11).eval()
    path = save_checkpoint(tmp_path / "best.pt", model, load_config("smoke", name), CAMVID_CLASSES)
    loaded, _ = load_model(path)
    images = camvid_batch[:2, :, :200, :300]
    reference = predict_logits(model, images, dtype=None, channels_last=False)
    assert torch.equal(predict_logits(loaded, images, dtype=None, channels_last=False), reference)
    session, metadata = load_onnx(export_onnx(path, tmp_path / "model.onnx"))
    assert metadata["model_name"] == name
    assert (onnx_logits(session, images) - reference).abs().max().item() <= PARITY_ATOL
    image = (camvid_batch[0].permute(1, 2, 0) * 255).round().byte().numpy()
    mask = Predictor(path, runtime="torch", amp="off", progress=False).predict(image).mask
    assert mask.shape == (360, 480)
    labels = predict_logits(model, camvid_batch[:1], dtype=None, channels_last=False).argmax(1)[0]
    assert (mask == labels.numpy()).mean() >= 0.999
