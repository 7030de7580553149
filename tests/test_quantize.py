"""The int8 model: its stored accuracy, parity with float32 on CamVid, the runtime choice, bad files."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from helpers import quantize, runtime
from helpers.checkpoint import load_model, read_checkpoint
from helpers.data import read_image
from helpers.errors import CheckpointError
from helpers.export import export_onnx, fix_same_padding, load_onnx
from helpers.inference import onnx_logits, predict_logits
from helpers.quantize import StaleArtefactError, artefact_path, int8_record
from helpers.quantize import main as quantize_main

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

# Parity of the int8 model with float32 on three CamVid test images, for the smoke model (two
# epochs on 8 images, so its logits are close together): wherever float32's two best classes
# are more than MARGIN apart, int8 gives the same label on at least LABEL_AGREEMENT of the
# pixels (measured 0.9998), and the mean |logit difference| stays under LOGIT_ATOL (measured
# 0.08, logits of mean magnitude 0.6). A label can flip only where the two classes are closer
# than the quantization error; docs/int8.md gives the same figures for the quick-profile model.
MARGIN = 0.5
LABEL_AGREEMENT = 0.995
LOGIT_ATOL = 0.15


@pytest.fixture(scope="module")
def int8_run(smoke_checkpoint, tmp_path_factory):
    """A copy of the smoke checkpoint with its int8 model beside it, made by the command line."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = shutil.copy(smoke_checkpoint, folder / "best.pt")
    assert quantize_main(["--checkpoint", str(checkpoint)]) == 0
    return folder / "best.pt", artefact_path(folder / "best.pt")


@pytest.fixture(scope="module")
def camvid_batch(camvid_dir):
    paths = sorted((camvid_dir / "test").glob("*.png"))[::80][:3]  # three scenes of the test split
    images = np.stack([read_image(p) for p in paths])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (3, 3, 360, 480)


def with_metadata(source, target, **changes):
    """Copy an ONNX file with metadata entries changed (None removes one); return the target."""
    proto = onnx.load(str(source))
    metadata = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, str(target))
    return target


def test_quantize_tensor_per_channel():
    weights = torch.randn(8, 4, 3, 3) * torch.logspace(-2, 1, 8)[:, None, None, None]
    integers, scale = quantize.quantize_tensor(weights, axis=0)
    assert integers.dtype == torch.int8 and scale.shape == (8, 1, 1, 1)
    assert integers.abs().amax(dim=(1, 2, 3)).eq(127).all()  # each channel uses the full range
    assert ((integers * scale - weights).abs() <= scale / 2 + 1e-7).all()
    whole, one_scale = quantize.quantize_tensor(weights)
    # One scale for the tensor crushes the small channels: per-channel is far closer there.
    assert (whole * one_scale - weights)[0].abs().max() > 10 * (integers * scale - weights)[0].abs().max()


def test_fixed_same_padding_equals_timm_on_stride_multiples(smoke_checkpoint):
    model, _ = load_model(smoke_checkpoint)
    model = model.float().eval()
    images = torch.rand(2, 3, 96, 160)
    reference = model(images)
    assert fix_same_padding(model) == 5  # the encoder's five strided convolutions
    assert torch.allclose(model(images), reference, atol=1e-5)


def test_folding_pads_into_convolutions_keeps_the_outputs(smoke_checkpoint):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    proto = onnx.load_from_string(export_onnx(smoke_checkpoint))
    # Constant-fold first, as the quantizer's pre-processing does, so that pads are initializers.
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "a.onnx").write_bytes(proto.SerializeToString())
        quant_pre_process(str(Path(folder, "a.onnx")), str(Path(folder, "b.onnx")),
                          skip_symbolic_shape=True)
        folded = onnx.load(str(Path(folder, "b.onnx")))
    before = sum(node.op_type == "Pad" for node in folded.graph.node)
    assert quantize.fuse_pad_into_conv(folded) == before == 5
    assert not any(node.op_type == "Pad" for node in folded.graph.node)
    images = torch.rand(1, 3, 64, 96)
    original, _ = load_onnx(proto.SerializeToString())
    fused, _ = load_onnx(folded.SerializeToString())
    assert torch.allclose(onnx_logits(fused, images), onnx_logits(original, images), atol=1e-5)



def test_constant_upsampling_scales_keep_the_float32_logits(smoke_checkpoint):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "a.onnx").write_bytes(export_onnx(smoke_checkpoint))
        quant_pre_process(str(Path(folder, "a.onnx")), str(Path(folder, "b.onnx")),
                          skip_symbolic_shape=True)
        proto = onnx.load(str(Path(folder, "b.onnx")))
    original, _ = load_onnx(proto.SerializeToString())
    assert quantize.fix_upsampling_scales(proto) == 5  # the U-Net decoder's five upsamplings
    assert not {"Shape", "Gather"} & {node.op_type for node in proto.graph.node}
    fixed, _ = load_onnx(proto.SerializeToString())
    for height, width in ((64, 96), (96, 160), (360, 480)):  # padded to multiples of 32
        images = torch.rand(1, 3, height, width)
        assert torch.equal(onnx_logits(fixed, images), onnx_logits(original, images))


def test_padding_the_head_keeps_the_float32_logits(smoke_checkpoint):
    proto = onnx.load_from_string(export_onnx(smoke_checkpoint))
    original, _ = load_onnx(proto.SerializeToString())
    assert quantize.pad_head_channels(proto) == 5  # CamVid's 11 classes -> 16 filters
    assert quantize.pad_head_channels(proto) == 0  # already a multiple of 16
    padded, _ = load_onnx(proto.SerializeToString())
    images = torch.rand(2, 3, 64, 96)
    expected = onnx_logits(original, images)
    assert expected.shape == (2, 11, 64, 96)
    assert torch.equal(onnx_logits(padded, images), expected)

def test_the_artefact_records_its_accuracy_and_calibration(int8_run):
    checkpoint, path = int8_run
    session, metadata = quantize.check_artefact(path, checkpoint)
    record = int8_record(metadata)
    assert record["split"] == "val" and record["images"] == 4  # the smoke profile's validation
    assert 0 <= record["int8_miou"] <= 1 and 0 <= record["fp32_miou"] <= 1
    assert record["loss"] == pytest.approx(record["fp32_miou"] - record["int8_miou"], abs=2e-5)
    calibration = json.loads(metadata["calibration"])
    assert calibration["split"] == "train" and calibration["images"] == 8  # all smoke training images
    assert any("conv_stem" in n for n in calibration["float_nodes"])
    assert not any("segmentation_head" in n for n in calibration["float_nodes"])
    assert metadata["source_checkpoint_sha256"] == quantize.file_sha256(checkpoint)
    assert metadata["model_name"] == "unet-effnet-lite0" and metadata["precision"] == "int8"
    graph = onnx.load(str(path)).graph
    types = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= types and "Pad" not in types
    assert "Shape" not in types  # the upsamplings' sizes are constant scales
    # The head in int8, its 11 classes padded to 16 filters and sliced back (pad_head_channels).
    weights = {tensor.name: tensor for tensor in graph.initializer}
    head = next(node for node in graph.node if node.name == "/net/segmentation_head/segmentation_head.0/Conv")
    scale = next(node for node in graph.node if node.output[0] == head.input[1]).input[1]
    assert list(weights[scale].dims) == [16]
    assert [dim.dim_value for dim in graph.output[0].type.tensor_type.shape.dim][1] == 11
    assert path.stat().st_size < 0.5 * len(export_onnx(checkpoint))  # int8 weights: ~4x smaller


def test_int8_parity_with_float32_on_camvid_images(int8_run, camvid_batch):
    checkpoint, path = int8_run
    model, _ = load_model(checkpoint)
    reference = predict_logits(model.float(), camvid_batch, dtype=None, channels_last=False)
    session, _ = quantize.check_artefact(path)
    logits = onnx_logits(session, camvid_batch)
    assert logits.shape == reference.shape == (3, 11, 360, 480)
    best_two = reference.topk(2, dim=1).values
    clear = best_two[:, 0] - best_two[:, 1] > MARGIN
    agreement = (logits.argmax(1) == reference.argmax(1))[clear].float().mean().item()
    assert clear.float().mean() > 0.1, "too few pixels with a clear label to compare"
    assert agreement >= LABEL_AGREEMENT, f"labels agree on {agreement:.4f} of the clear pixels"
    difference = (logits - reference).abs().mean().item()
    assert 0 < difference <= LOGIT_ATOL, f"mean |logit difference| {difference:.3f}"


def test_evaluate_scores_the_int8_model_as_stored(int8_run):
    from helpers.evaluate import evaluate_checkpoint

    checkpoint, path = int8_run
    record = int8_record(load_onnx(path)[1])
    result = evaluate_checkpoint(checkpoint, "val", runtime="onnx-int8", progress=False)
    assert result["runtime"]["runtime"] == "onnx-int8" and result["runtime"]["precision"] == "int8"
    assert result["miou"] == pytest.approx(record["int8_miou"], abs=1e-4)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "MEASURE_SIZE", (64, 96))
    return tmp_path / "cache"


@pytest.fixture
def beside(int8_run, tmp_path):
    """A fresh copy of the checkpoint and its int8 model, for tests that change them."""
    checkpoint, path = int8_run
    copy = shutil.copy(checkpoint, tmp_path / "best.pt")
    shutil.copy(path, artefact_path(copy))
    return tmp_path / "best.pt", artefact_path(copy)


def test_auto_times_an_artefact_within_budget_and_says_so_when_it_picks_it(beside, cache, capsys):
    checkpoint, path = beside
    with_metadata(path, path, accuracy=json.dumps(
        {"split": "val", "images": 4, "fp32_miou": 0.5, "int8_miou": 0.497, "loss": 0.003}))
    name, record = runtime.choose_runtime(checkpoint, "cpu", progress=False)
    assert "onnx-int8" in record["timings_ms"] and record["int8"]["considered"] is True
    assert "within the budget" in record["int8"]["reason"]
    # Plant onnx-int8 as the measured fastest: auto then runs it and says why it may.
    data = json.loads((cache / runtime.CACHE_FILE).read_text())
    (entry,) = data["entries"].values()
    entry["fastest"] = "onnx-int8"
    (cache / runtime.CACHE_FILE).write_text(json.dumps(data))
    capsys.readouterr()
    loaded = runtime.open_runtime("auto", checkpoint, "cpu", progress=True)
    assert loaded.name == "onnx-int8" and loaded.describe()["precision"] == "int8"
    out = capsys.readouterr().out
    assert "int8 model chosen" in out and "loss of 0.0030, within the budget of 0.005" in out


@pytest.mark.parametrize("accuracy, words", [
    (None, "no accuracy record"),
    (json.dumps({"split": "val", "images": 4, "fp32_miou": 0.5, "int8_miou": 0.48}),
     "over the budget of 0.005"),
    ("{broken", "no accuracy record"),
])
def test_auto_refuses_an_artefact_without_or_over_its_accuracy_record(beside, cache, capsys,
                                                                      accuracy, words):
    checkpoint, path = beside
    with_metadata(path, path, accuracy=accuracy)
    name, record = runtime.choose_runtime(checkpoint, "cpu", progress=True)
    assert name != "onnx-int8" and "onnx-int8" not in record["timings_ms"]
    assert record["int8"]["considered"] is False and words in record["int8"]["reason"]
    out = capsys.readouterr().out
    assert "int8 model not considered: best.int8.onnx" in out and words in out
    # Forced, it still runs: the record decides auto's choice, not what a user may run.
    assert runtime.load_runtime("onnx-int8", checkpoint, "cpu").name == "onnx-int8"


def test_a_stale_artefact_gives_a_clear_error(beside, cache, capsys):
    checkpoint, path = beside
    payload = read_checkpoint(checkpoint)
    payload["metrics"] = {"val": {"miou": 0.123}}  # the checkpoint changes (e.g. retrained)
    torch.save(payload, checkpoint)
    with pytest.raises(StaleArtefactError, match=r"best.int8.onnx: stale: best.pt has changed .*"
                                                 r"python -m helpers.quantize"):
        runtime.load_runtime("onnx-int8", checkpoint, "cpu")
    with pytest.raises(CheckpointError, match="stale"):  # the file given directly: same check
        runtime.load_runtime("onnx", path, "cpu")
    name, record = runtime.choose_runtime(checkpoint, "cpu", progress=True)
    assert name != "onnx-int8" and "stale" in record["int8"]["reason"]
    assert "int8 model not considered" in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", None])
def test_a_corrupt_or_foreign_artefact_gives_a_clear_one_line_error(beside, content, capsys):
    from helpers.evaluate import main as evaluate_main
    from helpers.predict import main as predict_main

    checkpoint, path = beside
    if content is None:  # a float32 export under the int8 name
        path.write_bytes(export_onnx(checkpoint))
        words = "not an int8 model"
    else:
        path.write_bytes(content)
        words = "not a readable int8 model"
    with pytest.raises(CheckpointError, match=words):
        runtime.load_runtime("onnx-int8", checkpoint, "cpu")
    photo = sorted(checkpoint.parent.glob("*.pt"))[0]  # any file: the model fails first
    assert predict_main([str(photo), "--checkpoint", str(checkpoint), "--out",
                         str(checkpoint.parent / "out"), "--runtime", "onnx-int8"]) == 2
    assert evaluate_main(["--checkpoint", str(checkpoint), "--split", "val",
                          "--runtime", "onnx-int8"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(words in line and "helpers.quantize" in line for line in errors)


def test_scoring_a_checkpoint_never_picks_its_int8_model(beside, cache):
    from helpers.evaluate import evaluate_checkpoint

    checkpoint, path = beside
    with_metadata(path, path, accuracy=json.dumps(
        {"split": "val", "images": 4, "fp32_miou": 0.5, "int8_miou": 0.5, "loss": 0.0}))
    assert runtime.int8_candidate(checkpoint)[0] is True  # the prediction command would time it
    result = evaluate_checkpoint(checkpoint, "val", runtime="auto", progress=False)
    assert result["runtime"]["precision"] != "int8"
    assert "onnx-int8" not in result["runtime"]["choice"].get("timings_ms", {})


def test_a_checkpoint_without_an_artefact(smoke_checkpoint, tmp_path, cache):
    checkpoint = shutil.copy(smoke_checkpoint, tmp_path / "best.pt")
    name, record = runtime.choose_runtime(checkpoint, "cpu", progress=False)
    assert "int8" not in record and "onnx-int8" not in record["timings_ms"]
    with pytest.raises(CheckpointError, match="no such int8 model"):
        runtime.load_runtime("onnx-int8", checkpoint, "cpu")
