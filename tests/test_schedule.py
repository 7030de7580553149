"""Early stopping never cuts a one-cycle schedule short; a train+val fit keeps its last epoch."""

import json

import pytest

from helpers import schedule, train, training_data
from helpers.config import load_config


@pytest.mark.parametrize("epochs,steps_per_epoch", [(8, 91), (16, 91), (30, 45), (80, 45), (80, 1)])
def test_a_one_cycle_schedule_is_never_stopped_while_rising_or_near_its_peak(epochs, steps_per_epoch):
    rates = schedule.one_cycle_learning_rates(epochs, steps_per_epoch)
    peak = max(range(epochs), key=rates.__getitem__)
    armed = schedule.annealed_epoch(epochs, steps_per_epoch, fraction=0.25)
    assert armed > peak and (rates[armed] <= 0.25 or armed == epochs - 1)
    # The worst case: the validation loss rises every epoch after the first.
    stopper = schedule.EarlyStopping(patience=7, armed_from=armed)
    stopped = None
    for epoch in range(epochs):
        stopper.step(1.0 + epoch, epoch)
        if stopper.should_stop:
            stopped = epoch
            break
    assert stopped is None or stopped >= armed + 6
    assert stopped is None or rates[stopped] <= 0.25


def test_the_annealed_epoch_of_the_full_profile():
    # 80 epochs: the rate peaks at epoch 24 and falls to a quarter of its peak at epoch 62.
    rates = schedule.one_cycle_learning_rates(80, 45)
    assert max(range(80), key=rates.__getitem__) == 23
    assert schedule.annealed_epoch(80, 45) == 61 and rates[60] > 0.25 >= rates[61]


@pytest.mark.slow
def test_a_train_plus_val_fit_trains_on_both_splits_and_keeps_its_last_epoch(tmp_path):
    config = load_config("smoke", "unet-effnet-lite0", fit_on="train+val", epochs=3)
    seen = []
    result = train.fit(config, tmp_path, progress=False, epoch_callback=seen.append)
    assert result.best_epoch == 3 and len(seen) == 3
    assert json.loads((tmp_path / "done.json").read_text())["best_epoch"] == 3
    datasets = {"train": list(range(8)), "val": list(range(4))}
    with pytest.raises(ValueError, match="fit_on"):
        training_data.training_split(config.replace(fit_on="val"), datasets)


@pytest.mark.slow
def test_on_device_augmentation_trains_and_resumes_like_an_uninterrupted_run(tmp_path):
    config = load_config("smoke", "unet-effnet-lite0", augment_on_device=True,
                         track_test_each_epoch=0)
    whole = train.fit(config, tmp_path / "whole", progress=False)

    def interrupt(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(config, tmp_path / "split", progress=False, epoch_callback=interrupt)
    resumed = train.fit(config, tmp_path / "split", resume=True, progress=False)
    for ours, theirs in zip(resumed.history, whole.history, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
