"""The inference runtime: measured choice, its cache (corrupt or stale: ignored), forcing one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import precision, runtime
from helpers.evaluate import evaluate_checkpoint
from helpers.predict import Predictor
from helpers.runtime import CACHE_FILE, choose_runtime, open_runtime

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty runtime cache folder, and timings on a small image to keep the tests short."""
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(runtime, "MEASURE_SIZE", (64, 96))
    return tmp_path


def test_auto_measures_once_then_reads_the_cache(cache, smoke_checkpoint):
    name, record = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    expected = {"torch-fp32", "onnx"} | ({"torch-bf16"} if precision.cpu_info().native_bf16 else set())
    assert set(record["timings_ms"]) == expected
    assert name == min(record["timings_ms"], key=record["timings_ms"].get)
    assert record["cached"] is False
    assert record["cpu"] == precision.cpu_info().describe()
    entries = json.loads((cache / CACHE_FILE).read_text())["entries"]
    assert len(entries) == 1
    again, second = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    assert (again, second["cached"], second["timings_ms"]) == (name, True, record["timings_ms"])


def test_the_cached_choice_is_the_one_used(cache, smoke_checkpoint):
    """A cache entry for this machine decides without measuring (here: planted as onnx)."""
    choose_runtime(smoke_checkpoint, "cpu", progress=False)
    path = cache / CACHE_FILE
    data = json.loads(path.read_text())
    (entry,) = data["entries"].values()
    for forced in ("onnx", "torch-fp32"):
        entry["fastest"] = forced
        path.write_text(json.dumps(data))
        predictor = Predictor(smoke_checkpoint, progress=False)
        assert predictor.runtime == forced
        assert predictor.describe()["choice"]["cached"] is True
        assert (predictor.session is not None) == (forced == "onnx")


@pytest.mark.parametrize("content", [b"{not json", b"[]", b"\xff\xfe\x00 binary",
                                     json.dumps({"format": "other", "entries": {}}).encode()])
def test_a_corrupt_cache_is_ignored_and_rewritten(cache, smoke_checkpoint, content):
    path = cache / CACHE_FILE
    path.write_bytes(content)
    with pytest.warns(UserWarning, match="ignored"):
        name, record = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    assert record["cached"] is False and name in record["timings_ms"]
    assert choose_runtime(smoke_checkpoint, "cpu", progress=False)[1]["cached"] is True


def test_a_stale_cache_entry_is_measured_again(cache, smoke_checkpoint, monkeypatch):
    """Another torch version (or CPU, thread count, network) does not reuse the timings."""
    choose_runtime(smoke_checkpoint, "cpu", progress=False)
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    _, record = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    assert record["cached"] is False
    assert record["key"]["torch"] == "0.0.0-other"
    assert len(json.loads((cache / CACHE_FILE).read_text())["entries"]) == 2
    # A planted entry whose key does not match its id is not trusted either.
    data = json.loads((cache / CACHE_FILE).read_text())
    for entry in data["entries"].values():
        entry["key"]["threads"] = 999
    (cache / CACHE_FILE).write_text(json.dumps(data))
    assert choose_runtime(smoke_checkpoint, "cpu", progress=False)[1]["cached"] is False


def test_an_unwritable_cache_only_warns(tmp_path, monkeypatch, smoke_checkpoint):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SEG_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(runtime, "MEASURE_SIZE", (64, 96))
    with pytest.warns(UserWarning, match="not written"):
        name, _ = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    assert name in runtime.CANDIDATES


@pytest.mark.parametrize("name, dtype", [("torch-fp32", None), ("torch-bf16", torch.bfloat16),
                                         ("onnx", None)])
def test_forcing_a_runtime_skips_the_measurement(tmp_path, monkeypatch, smoke_checkpoint, name, dtype):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path))
    predictor = Predictor(smoke_checkpoint, runtime=name)
    assert (predictor.runtime, predictor.dtype) == (name, dtype)
    assert predictor.describe()["choice"] == {"forced": True}
    assert not (tmp_path / CACHE_FILE).exists()
    mask = predictor.predict(np.zeros((90, 120, 3), dtype=np.uint8)).mask
    assert mask.shape == (90, 120)


def test_forcing_amp_runs_pytorch_in_that_precision(tmp_path, monkeypatch, smoke_checkpoint):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path))
    for amp, dtype in (("off", None), ("bf16", torch.bfloat16)):
        loaded = open_runtime("auto", smoke_checkpoint, "cpu", amp=amp)
        assert (loaded.name, loaded.dtype) == ("torch", dtype)
        assert loaded.describe()["precision_reason"] == f"forced with amp={amp!r}"
    assert not (tmp_path / CACHE_FILE).exists()


def test_an_unknown_runtime_is_refused(smoke_checkpoint):
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor(smoke_checkpoint, runtime="tensorrt")


def test_runtimes_agree_and_evaluation_records_the_one_used(cache, smoke_checkpoint, camvid_dir):
    """ONNX and PyTorch float32 score the same; the result says which runtime ran and why."""
    results = {name: evaluate_checkpoint(smoke_checkpoint, "test", runtime=name, progress=False)
               for name in ("torch-fp32", "onnx")}
    assert results["onnx"]["miou"] == pytest.approx(results["torch-fp32"]["miou"], abs=1e-3)
    assert results["onnx"]["runtime"]["runtime"] == "onnx"
    assert results["torch-fp32"]["runtime"]["precision"] == "float32"
    auto = evaluate_checkpoint(smoke_checkpoint, "test", tta_flip=True, progress=False)
    assert auto["runtime"]["runtime"] in runtime.CANDIDATES
    assert auto["runtime"]["choice"]["cached"] is False
    json.dumps(auto["runtime"])  # recorded as JSON in the results


def test_a_runtime_that_fails_to_load_is_left_out(cache, smoke_checkpoint, monkeypatch):
    real = runtime.load_runtime

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise RuntimeError("unsupported operator")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(runtime, "load_runtime", no_onnx)
    with pytest.warns(UserWarning, match="onnx left out"):
        name, record = choose_runtime(smoke_checkpoint, "cpu", progress=False)
    assert "onnx" not in record["timings_ms"] and name.startswith("torch")
