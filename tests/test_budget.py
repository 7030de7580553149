"""Planning a run for this machine: the epochs that fit its time budget, from measured batch times,
on every CPU; nothing planned where there is nothing to plan."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import budget, plan, precision, train
from helpers.config import load_config, parse_overrides
from tests.test_precision import AMD_WITH_BF16, INTEL_AVX512_NO_BF16, cpu


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SEG_TIME_BUDGET", raising=False)
    return tmp_path / plan.CACHE_FILE


def on_cpu(monkeypatch, text):
    info = cpu(text)
    monkeypatch.setattr(precision, "cpu_info", lambda: info)
    monkeypatch.setattr(plan, "cpu_info", lambda: info)


def smoke(**changes):
    return load_config("smoke", "unet-effnet-lite0", **changes)


def test_the_quick_rows_carry_a_budget_and_the_others_none(monkeypatch, cache):
    assert load_config("quick", "unet-effnet-lite0").train_minutes is not None
    assert load_config("quick", "mini-unet").train_minutes is not None
    assert load_config("quick", "deeplabv3plus-effnet-lite0").train_minutes is not None
    assert load_config("smoke", "unet-effnet-lite0").train_minutes is None
    assert load_config("full", "unet-effnet-lite0").train_minutes is None
    assert parse_overrides(["train_minutes=7.5"]) == {"train_minutes": 7.5}
    assert parse_overrides(["train_minutes=none"]) == {"train_minutes": None}
    # Nothing to plan: no budget, a GPU, SEG_TIME_BUDGET=off, a configuration planned already.
    quick = load_config("quick", "unet-effnet-lite0")
    assert not plan.needs_plan(smoke(), torch.device("cpu"))
    assert not plan.needs_plan(quick, torch.device("cuda"))
    assert plan.needs_plan(quick, torch.device("cpu"))
    assert not plan.needs_plan(quick.replace(time_budget={"epochs": 16}), torch.device("cpu"))
    monkeypatch.setenv("SEG_TIME_BUDGET", "off")
    assert budget.plan_run(quick, device="cpu") is quick
    assert not cache.exists()


def test_a_budget_under_one_epoch_plans_one_and_says_why(monkeypatch, cache, camvid_dir, capsys):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    config = smoke(epochs=6, train_minutes=1e-4)  # far less than one epoch
    planned = budget.plan_run(config, device="cpu")
    assert planned.epochs == 1
    record = planned.time_budget
    assert record["table_epochs"] == 6 and record["train_minutes"] == 1e-4
    assert record["precision"] == "fp32: this CPU has no native bf16"
    assert "no native bf16" in record["cpu"]
    out = capsys.readouterr().out
    assert "measuring a few smoke batches" in out and "trains 1 of the table's 6 epochs" in out
    assert "the budget cuts epochs: measured again" in out  # a slow moment must not cut epochs
    assert "SEG_TIME_BUDGET=off" in out and len(out.strip().splitlines()) == 4
    (entry,) = json.loads(cache.read_text())["entries"].values()
    seconds = entry["seconds_per_epoch"]
    assert seconds > 0
    # Read back from the cache, not measured again: the same configuration, byte for byte.
    monkeypatch.setattr(budget, "measure_epoch_seconds", lambda *a, **k: pytest.fail("measured twice"))
    assert budget.plan_run(config, device="cpu", progress=False) == planned
    assert budget.plan_run(planned, device="cpu", progress=False) is planned  # planned once only
    # A budget holding every epoch keeps them, and still records why.
    roomy = budget.plan_run(smoke(epochs=6, train_minutes=7 * seconds / 60), device="cpu")
    assert roomy.epochs == 6 and roomy.time_budget["epochs"] == 6
    assert "trains all 6 epochs" in capsys.readouterr().out
    # Planned between: floor(budget / epoch time).
    partial = smoke(epochs=6, train_minutes=3.5 * seconds / 60)
    assert budget.plan_run(partial, device="cpu", progress=False).epochs == 3


def test_every_cpu_plans_from_its_own_precisions_batch_times(monkeypatch, cache, camvid_dir):
    config = smoke(epochs=4, train_minutes=1e-4)
    on_cpu(monkeypatch, AMD_WITH_BF16)  # native bf16: planned too, from bf16 batch times
    bf16 = budget.plan_run(config, device="cpu", progress=False)
    assert bf16.epochs == 1 and bf16.time_budget["precision"].startswith("bf16")
    forced = budget.plan_run(config.replace(amp="off"), device="cpu", progress=False)
    assert forced.time_budget["precision"].startswith("fp32")  # amp=off: a CPU without bf16
    entries = json.loads(cache.read_text())["entries"].values()
    assert sorted(e["key"]["precision"] for e in entries) == ["bf16", "fp32"]


def test_a_corrupt_or_stale_batch_time_is_measured_again(monkeypatch, cache, camvid_dir):
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
        budget.plan_run(config, device="cpu", progress=False)
    assert len(calls) == 2  # the budget cuts epochs: measured twice
    data = json.loads(cache.read_text())
    for entry in data["entries"].values():
        entry["seconds_per_epoch"] = -1.0  # nonsense is not trusted
    cache.write_text(json.dumps(data))
    budget.plan_run(config, device="cpu", progress=False)
    assert len(calls) == 4
    budget.plan_run(config.replace(crop_size=(64, 64)), device="cpu", progress=False)  # another key
    assert len(calls) == 6
    assert not list(cache.parent.glob(".*.tmp"))  # written atomically


def test_a_slow_first_measurement_that_cuts_epochs_is_taken_again(monkeypatch, cache):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    readings = iter([0.53, 0.41])  # a fresh clone's report: slow just after the set-up

    def measured(config, *args, **kwargs):
        train = next(readings)
        return {"seconds_per_train_batch": train, "seconds_per_eval_batch": 0.47,
                "seconds_per_epoch": 91 * train + 34 * 0.47}

    monkeypatch.setattr(budget, "measure_epoch_seconds", measured)
    monkeypatch.setattr(budget, "epoch_plan", lambda config, datasets: (91, 34, 131))
    monkeypatch.setattr(plan, "epoch_plan", lambda config, datasets: (91, 34, 131))
    quick = load_config("quick", "unet-effnet-lite0", train_minutes=8.5, epochs=16)
    slow = {"seconds_per_train_batch": 0.53, "seconds_per_eval_batch": 0.47}
    assert plan.epochs_within_budget(quick, slow, (91, 34, 131)) == 9  # what one look planned
    planned = budget.plan_run(quick, device="cpu", datasets={"timed": "by the stub"}, progress=False)
    assert planned.epochs == 12 and planned.time_budget["seconds_per_train_batch"] == 0.41
    # Where every epoch fits, one measurement decides.
    readings = iter([0.2])
    roomy = budget.plan_run(quick.replace(crop_size=(192, 256)), device="cpu",
                            datasets={"timed": "by the stub"}, progress=False)
    assert roomy.epochs == 16 and roomy.time_budget["seconds_per_train_batch"] == 0.2


def test_a_training_batch_is_timed_with_its_loading_and_augmentation(camvid_dir):
    # An epoch loads and augments every batch before its step: the plan must pay for both.
    import time

    from helpers.datasets import build_datasets

    config = smoke()
    datasets = build_datasets(config)
    augment = datasets["train"].transform

    def slow(*args, **kwargs):
        time.sleep(0.05)
        return augment(*args, **kwargs)

    datasets["train"].transform = slow
    device = torch.device("cpu")
    timing = budget.measure_epoch_seconds(config, device, precision.choose_precision(device, "off"),
                                          datasets, batches=2)
    assert timing["seconds_per_train_batch"] >= config.batch_size * 0.05


def test_the_quick_plan_counts_the_validated_epochs_only(monkeypatch, cache):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    timed = []

    def measured(config, *args, **kwargs):
        timed.append(config)
        return {"seconds_per_train_batch": 0.5, "seconds_per_eval_batch": 0.5, "seconds_per_epoch": 72.0}

    monkeypatch.setattr(budget, "measure_epoch_seconds", measured)
    monkeypatch.setattr(budget, "epoch_plan", lambda config, datasets: (110, 34, 131))
    monkeypatch.setattr(plan, "epoch_plan", lambda config, datasets: (110, 34, 131))
    quick = load_config("quick", "unet-effnet-lite0", train_minutes=15.0, epochs=16)
    assert quick.frozen_stages == 2 and quick.validate_annealed_only  # the quick recipe
    planned = budget.plan_run(quick, device="cpu", datasets={"timed": "by the stub"}, progress=False)
    assert timed[-1] == quick  # the recipe timed is the one that trains
    assert planned.replace(time_budget=None, epochs=quick.epochs) == quick
    # 55 s of training per epoch, 17 s per validation, from the annealed epoch on: 15 epochs
    # (validated from the 12th) take 825 + 4 x 17 s, 16 would take 880 + 4 x 17 s > 900 s.
    assert planned.epochs == 15 and planned.time_budget["planned_minutes"] == round(893 / 60, 1)
    scratch = load_config("quick", "mini-unet", train_minutes=2.5)  # every epoch validated
    planned = budget.plan_run(scratch, device="cpu", datasets={"timed": "by the stub"}, progress=False)
    assert planned.frozen_stages == 0 and not planned.validate_annealed_only
    assert planned.epochs == 2  # 2 x 72 s <= 150 s < 3 x 72


def test_the_where_command_finds_the_planned_run_without_measuring(monkeypatch, cache, camvid_dir,
                                                                   tmp_path, capsys):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    config = smoke(epochs=4, train_minutes=1e-4, runs_dir=str(tmp_path))
    planned = budget.plan_run(config, device="cpu", progress=False)
    assert planned.epochs == 1
    monkeypatch.setattr(budget, "measure_epoch_seconds", lambda *a, **k: pytest.fail("measured"))
    best = train.ensure_trained(planned, progress=False)  # trains exactly what it is given
    assert len(train.read_history(best)) == 1
    other = train.ensure_trained(config.replace(epochs=2), progress=False)  # beside it
    assert other.parent != best.parent
    args = ["--profile", "smoke", "--epochs", "4", "--set", "train_minutes=0.0001",
            "--set", f"runs_dir={tmp_path}", "--where"]
    assert train.main(args) == 0
    assert capsys.readouterr().out.strip() == str(best.parent)
    monkeypatch.setenv("SEG_TIME_BUDGET", "off")  # the table's epochs: not that run
    assert train.main(args) == 0
    assert capsys.readouterr().out.strip() != str(best.parent)


def test_ensure_trained_trains_exactly_the_configuration_it_is_given(monkeypatch, cache,
                                                                     camvid_dir, tmp_path):
    on_cpu(monkeypatch, INTEL_AVX512_NO_BF16)
    monkeypatch.setattr(budget, "measure_epoch_seconds", lambda *a, **k: pytest.fail("measured"))
    config = smoke(train_minutes=1e-4)  # a budget no epoch fits: never applied by training
    best = train.ensure_trained(config, tmp_path, progress=False)
    assert len(train.read_history(best)) == config.epochs == 2
