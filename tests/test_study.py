import json
import math

import matplotlib
import pytest

from helpers import checkpoint, study, train
from helpers.data import CAMVID_CLASSES

SMOKE = study.STUDY_PROFILES["smoke"]


def test_subsets_are_nested_and_seeded():
    small, large = study.subset_indices(367, 23, seed=0), study.subset_indices(367, 46, seed=0)
    assert len(set(small)) == 23 and len(set(large)) == 46
    assert set(small) <= set(large)
    assert set(large) <= set(study.subset_indices(367, 367, seed=0)) == set(range(367))
    assert study.subset_indices(367, 23, seed=0) == small
    assert study.subset_indices(367, 23, seed=1) != small
    assert not set(study.subset_indices(367, 46, seed=1)) <= set(large)
    with pytest.raises(ValueError, match="between 1 and 367"):
        study.subset_indices(367, 368, seed=0)


def test_repeated_subset_shows_every_image_equally_often(camvid_dir):
    source = study.study_datasets("smoke")["train"]
    indices = study.subset_indices(len(source), 5, seed=3)
    passes = study.RepeatedSubset(source, indices, length=12)
    assert len(passes) == 12 and passes.pairs == [source.pairs[i] for i in indices]
    shown = [passes.indices[i % 5] for i in range(len(passes))]
    assert sorted({shown.count(i) for i in indices}) == [2, 3]
    image, mask = passes.load(7)
    assert (image == source.load(indices[2])[0]).all() and (mask == source.load(indices[2])[1]).all()
    with pytest.raises(ValueError, match="cannot show all 5 images"):
        study.RepeatedSubset(source, indices, length=4)


def test_a_plan_that_cannot_keep_the_schedule_equal_is_refused():
    with pytest.raises(ValueError, match="multiple"):
        study.check_plan("smoke", SMOKE.replace(steps=6))
    with pytest.raises(ValueError, match="choose sizes up to 8"):
        study.check_plan("smoke", SMOKE.replace(sizes=(4, 16)))


@pytest.fixture(scope="module")
def smoke_study(camvid_dir, tmp_path_factory):
    """The smoke study (2 sizes, 1 seed, 2 models) in a temporary folder."""
    root = tmp_path_factory.mktemp("study")
    results = root / "label_efficiency.json"
    outcome = study.run_study("smoke", SMOKE, "cpu", root / "runs", results, progress=False)
    return root / "runs", results, outcome


@pytest.mark.slow
def test_every_run_takes_the_same_number_of_optimizer_steps(smoke_study):
    runs_root, _, outcome = smoke_study
    assert len(outcome["trained"]) == 4 and not outcome["skipped"]
    for model in study.MODELS:
        for size in SMOKE.sizes:
            folder = study.run_folder(runs_root, model, size, seed=0)
            state = checkpoint.read_checkpoint(folder / "last.pt")["training_state"]
            adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
            assert adam_steps == {SMOKE.steps}, (model, size, adam_steps)
            assert state["scheduler"]["total_steps"] == state["scheduler"]["last_epoch"] == SMOKE.steps
            history = json.loads((folder / "history.json").read_text())
            assert len(history) == SMOKE.evaluations  # validated after the same steps at every size


@pytest.mark.slow
def test_results_file_holds_every_field(smoke_study):
    _, results, _ = smoke_study
    runs = json.loads(results.read_text())["runs"]
    assert {(r["model"], r["size"], r["seed"]) for r in runs} == {
        (m, s, 0) for m in study.MODELS for s in SMOKE.sizes}
    for run in runs:
        assert run["profile"] == "smoke" and run["hardware"] and run["git_commit"]
        assert 0.0 <= run["test_miou"] <= 1.0 and run["optimizer_steps"] == SMOKE.steps
        assert list(run["per_class_iou"]) == list(CAMVID_CLASSES.names)
        assert run["test_images"] == 4  # the smoke profile's test images; quick and full use all
    digests = {(r["size"], r["subset_digest"]) for r in runs}
    assert len(digests) == 2  # both models saw the same subset at each size


@pytest.mark.slow
def test_a_finished_study_trains_nothing_again(smoke_study, monkeypatch):
    runs_root, results, _ = smoke_study
    before = results.read_text()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "fit", refuse)
    outcome = study.run_study("smoke", SMOKE, "cpu", runs_root, results, progress=False)
    assert not outcome["trained"] and len(outcome["skipped"]) == 4
    assert results.read_text() == before
    results.unlink()  # a lost results file is rebuilt from the runs' score.json markers
    study.run_study("smoke", SMOKE, "cpu", runs_root, results, progress=False)
    assert json.loads(results.read_text()) == json.loads(before)


def test_a_run_finished_before_a_config_field_existed_stays_finished(smoke_study):
    runs_root, _, _ = smoke_study
    marker = next(runs_root.rglob("score.json"))
    saved = json.loads(marker.read_text())
    config = study.study_config("smoke", saved["entry"]["model"], saved["entry"]["size"],
                                saved["entry"]["seed"], SMOKE)
    assert study.finished_entry(config, marker.parent) == saved["entry"]
    older = {k: v for k, v in saved["config"].items() if k != "frozen_stages"}  # a newer field
    marker.write_text(json.dumps({**saved, "config": older}))
    try:
        assert study.finished_entry(config, marker.parent) == saved["entry"]
        assert study.finished_entry(config.replace(seed=config.seed + 1), marker.parent) is None
    finally:
        marker.write_text(json.dumps(saved))


@pytest.mark.slow
def test_an_interrupted_study_continues_where_it_stopped(camvid_dir, tmp_path, monkeypatch):
    plan = SMOKE.replace(sizes=(4,))
    runs_root, results = tmp_path / "runs", tmp_path / "label_efficiency.json"
    real_fit = train.fit
    calls, interrupt_call = [], [2]  # the second run stops after its first validation

    def interrupted_fit(config, out_dir, resume=False, **kwargs):
        calls.append((config.model, resume))
        if len(calls) in interrupt_call:

            def stop(row):
                raise KeyboardInterrupt

            kwargs["epoch_callback"] = stop
        return real_fit(config, out_dir, resume=resume, **kwargs)

    monkeypatch.setattr(train, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        study.run_study("smoke", plan, "cpu", runs_root, results, progress=False)
    assert [r["model"] for r in json.loads(results.read_text())["runs"]] == ["unet-effnet-lite0"]
    calls.clear()
    interrupt_call.clear()
    outcome = study.run_study("smoke", plan, "cpu", runs_root, results, progress=False)
    assert calls == [("mini-unet", True)]  # the finished run skipped, the other resumed
    assert [e["model"] for e in outcome["skipped"]] == ["unet-effnet-lite0"]
    folder = study.run_folder(runs_root, "mini-unet", 4, seed=0)
    assert [row["epoch"] for row in json.loads((folder / "history.json").read_text())] == [1, 2]
    assert len(json.loads(results.read_text())["runs"]) == 2


def test_images_needed_interpolates_on_the_log_axis():
    assert study.images_needed([10, 100], [0.2, 0.4], 0.3) == pytest.approx(math.sqrt(10 * 100))
    assert study.images_needed([10, 100], [0.2, 0.4], 0.1) == 10
    assert study.images_needed([10, 100, 1000], [0.2, 0.3, 0.5], 0.4) == pytest.approx(math.sqrt(100 * 1000))
    assert study.images_needed([10, 100], [0.2, 0.4], 0.45) is None


def _runs(values: dict) -> list[dict]:
    return [{"model": model, "size": size, "seed": seed, "test_miou": value, "profile": "quick",
             "per_class_iou": {"sky": value, "pole": None if seed else value / 2}}
            for model, sizes in values.items() for size, seeds in sizes.items()
            for seed, value in enumerate(seeds)]


def test_the_answer_is_computed_from_the_curves():
    runs = _runs({"unet-effnet-lite0": {10: [0.39, 0.40, 0.41], 100: [0.5, 0.5, 0.5]},
                  "mini-unet": {10: [0.19, 0.20, 0.21], 100: [0.59, 0.60, 0.61]}})
    curves = study.label_curves(runs)
    assert curves["mini-unet"]["mean"] == pytest.approx([0.2, 0.6])
    assert curves["mini-unet"]["std"] == pytest.approx([0.01, 0.01])
    answer = study.equivalent_labels(curves, 10)
    assert answer["needed"] == pytest.approx(math.sqrt(10 * 100))  # 0.4 is halfway from 0.2 to 0.6
    assert answer["low"] < answer["needed"] < answer["high"]
    assert "the scratch model needs about 32" in study.answer_sentence(answer)
    never = study.equivalent_labels(curves, 100) | {"target": 0.7, "needed": None, "low": None}
    assert "does not reach it with all 100" in study.answer_sentence(never)
    assert "upper ±1 std band stays below" in study.answer_sentence(never)
    per_class = study.per_class_at(runs, 10)
    assert per_class["mini-unet"]["pole"] == pytest.approx(0.095)  # a missing IoU is left out
    assert "0.400 ± 0.010 (3)" in study.curves_table(runs)


def test_label_efficiency_figure_has_a_log_axis_and_the_study_marker(tmp_path):
    matplotlib.use("Agg")
    runs = _runs({"unet-effnet-lite0": {23: [0.3, 0.32], 92: [0.5, 0.52]},
                  "mini-unet": {23: [0.1, 0.12], 92: [0.2, 0.25]}})
    path = study.save_figure(runs, tmp_path)
    assert path.name == "label_efficiency.png" and path.stat().st_size > 10_000
    from helpers import plots

    fig = plots.label_efficiency(study.label_curves(runs), marker=104)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [23, 92]
    assert any(list(line.get_xdata()) == [104, 104] for line in ax.get_lines())  # the study's 104
    assert len(ax.collections) >= 2  # one ±1 std band per model


def test_readme_block_shows_each_profile_and_the_answer():
    from helpers import report

    runs = [r | {"hardware": "2 CPU cores (AMD EPYC)", "git_commit": "abc1234"}
            for r in _runs({"unet-effnet-lite0": {10: [0.39, 0.40, 0.41], 100: [0.5, 0.5, 0.5]},
                            "mini-unet": {10: [0.19, 0.20, 0.21], 100: [0.59, 0.60, 0.61]}})]
    block = report.label_efficiency_table({"label_efficiency": {"runs": runs}})
    assert "Profile `quick`" in block and "2 CPU cores (AMD EPYC); commit abc1234" in block
    assert "| from scratch (mini U-Net) | 0.200 ± 0.010 (3) | 0.600 ± 0.010 (3) |" in block
    assert "With 10 labelled photos" in block and "needs about 32" in block
    assert "12 of the 24 planned runs so far" in block
    assert "Not measured yet" in report.label_efficiency_table({})
    one_seed = report.label_efficiency_table({"label_efficiency": {"runs": [r for r in runs if r["seed"] == 0]}})
    assert "no uncertainty yet" in one_seed and "±1 std bands" not in one_seed
