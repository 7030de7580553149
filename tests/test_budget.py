"""The time budget: fewer epochs only on a CPU training in float32, sized from a measured epoch."""

from __future__ import annotations

import json

import pytest

from helpers import budget, precision
from helpers.config import load_config
from helpers.train import parse_overrides
from tests.test_precision import AMD_WITH_BF16, INTEL_AVX512_NO_BF16, cpu


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path))
    return tmp_path / budget.CACHE_FILE


def on_cpu(monkeypatch, text):
    info = cpu(text)
    monkeypatch.setattr(precision, "cpu_info", lambda: info)
    monkeypatch.setattr(budget, "cpu_info", lambda: info)


def smoke(**changes):
    return load_config("smoke", "unet-effnet-lite0", **changes)


def test_the_quick_profile_carries_a_budget_per_model(monkeypatch):
    assert load_config("quick", "unet-effnet-lite0").train_minutes == 15.0
    assert load_config("quick", "mini-unet").train_minutes == 2.5
    assert load_config("smoke", "unet-effnet-lite0").train_minutes is None
    assert parse_overrides(["train_minutes=7.5"]) == {"train_minutes": 7.5}
    monkeypatch.setenv("SEG_TIME_BUDGET", "off")
    assert load_config("quick", "unet-effnet-lite0").train_minutes is None
    assert parse_overrides(["train_minutes=none"]) == {"train_minutes": None}


def test_a_cpu_with_native_bf16_keeps_the_profiles_epochs(monkeypatch, cache, camvid_dir):
    on_cpu(monkeypatch, AMD_WITH_BF16)
    config = smoke(train_minutes=1e-4)
    assert budget.sized_to_budget(config, "cpu", progress=False) is config
    assert not cache.exists()


def test_float32_training_over_budget_gets_fewer_epochs(monkeypatch, cache, camvid_dir, capsys):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    config = smoke(epochs=6, train_minutes=1e-4)  # far less than one epoch
    sized = budget.sized_to_budget(config, "cpu")
    assert sized.epochs == 1
    record = sized.time_budget
    assert record["profile_epochs"] == 6 and record["train_minutes"] == 1e-4
    assert record["precision"] == "fp32: this CPU has no native bf16"
    assert "no native bf16" in record["cpu"]
    out = capsys.readouterr().out
    assert "1 of the profile's 6 epochs" in out and "measuring one smoke epoch" in out
    (entry,) = json.loads(cache.read_text())["entries"].values()
    seconds = entry["seconds_per_epoch"]
    assert seconds > 0
    # Read back from the cache, not measured again: the same configuration, byte for byte.
    monkeypatch.setattr(budget, "measure_epoch_seconds", lambda *a, **k: pytest.fail("measured twice"))
    assert budget.sized_to_budget(config, "cpu", progress=False) == sized
    # A budget holding every epoch leaves the configuration as it was.
    roomy = smoke(epochs=6, train_minutes=7 * seconds / 60)
    assert budget.sized_to_budget(roomy, "cpu", progress=False) is roomy
    # Sized between: floor(budget / epoch time).
    partial = smoke(epochs=6, train_minutes=3.5 * seconds / 60)
    assert budget.sized_to_budget(partial, "cpu", progress=False).epochs == 3


def test_forcing_float32_on_a_bf16_cpu_simulates_one_without(monkeypatch, cache, camvid_dir):
    on_cpu(monkeypatch, AMD_WITH_BF16)
    config = smoke(epochs=4, train_minutes=1e-4, amp="off")
    assert budget.sized_to_budget(config, "cpu", progress=False).epochs == 1


def test_a_corrupt_or_stale_epoch_time_is_measured_again(monkeypatch, cache, camvid_dir):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    config = smoke(epochs=4, train_minutes=1e-4)
    calls = []
    real = budget.measure_epoch_seconds

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(budget, "measure_epoch_seconds", counted)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text("{truncated")
    with pytest.warns(UserWarning, match="ignored"):
        budget.sized_to_budget(config, "cpu", progress=False)
    assert len(calls) == 1
    data = json.loads(cache.read_text())
    for entry in data["entries"].values():
        entry["seconds_per_epoch"] = -1.0  # nonsense is not trusted
    cache.write_text(json.dumps(data))
    budget.sized_to_budget(config, "cpu", progress=False)
    assert len(calls) == 2
    budget.sized_to_budget(config.replace(crop_size=(64, 64)), "cpu", progress=False)  # another key
    assert len(calls) == 3


def test_the_quick_profile_takes_cheaper_epochs_in_float32(monkeypatch, cache):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    timed = []

    def measured(config, *args, **kwargs):
        timed.append(config)
        return {"seconds_per_epoch": 110 * 0.5 + 34 * 0.5, "seconds_per_train_batch": 0.5,
                "seconds_per_eval_batch": 0.5}

    monkeypatch.setattr(budget, "measure_epoch_seconds", measured)
    monkeypatch.setattr(budget, "epoch_plan", lambda config, datasets: (110, 34, 131))
    quick = load_config("quick", "unet-effnet-lite0")  # 16 epochs, 15 minutes
    sized = budget.sized_to_budget(quick, "cpu", datasets={"timed": "by the stub"}, progress=False)
    recipe = {"frozen_stages": 2, "validate_annealed_only": True}
    assert all(getattr(timed[-1], k) == v for k, v in recipe.items())  # the epochs timed
    assert sized.time_budget["recipe"] == recipe
    assert sized.replace(time_budget=None, epochs=quick.epochs) == quick.replace(**recipe)
    # 55 s of training per epoch, 17 s per validation, from the annealed epoch on: 15 epochs
    # (validated from the 12th) take 825 + 4 x 17 s, 16 would take 880 + 4 x 17 s > 900 s.
    assert sized.epochs == 15 and sized.time_budget["planned_minutes"] == round(893 / 60, 1)
    assert budget.sized_to_budget(sized, "cpu", progress=False) is sized  # sized once only
    scratch = load_config("quick", "mini-unet")  # 2.5 minutes, every epoch validated
    sized = budget.sized_to_budget(scratch, "cpu", datasets={"timed": "by the stub"}, progress=False)
    assert sized.frozen_stages == 0 and not sized.validate_annealed_only
    assert sized.epochs == 2 and sized.time_budget["recipe"] == {}  # 2 x 72 s <= 150 s < 3 x 72
    on_cpu(monkeypatch, AMD_WITH_BF16)  # bf16: the profile's recipe, untouched
    assert budget.sized_to_budget(quick, "cpu", datasets={"timed": "by the stub"}) is quick
