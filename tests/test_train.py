import json
import math

import numpy as np
import pytest
import torch

from helpers import checkpoint, finetune, schedule, train
from helpers.config import load_config, parse_overrides
from helpers.data import CAMVID_CLASSES, build_datasets
from helpers.evaluate import evaluate
from helpers.evaluate import main as evaluate_main
from helpers.metrics import IGNORE_INDEX


def test_checkpoint_describes_itself(smoke_run):
    model, info = checkpoint.load_model(smoke_run.best_checkpoint)
    assert model.name == "unet-effnet-lite0" and model.num_classes == 11
    assert info["classes"].names == CAMVID_CLASSES.names
    assert info["classes"].colors == CAMVID_CLASSES.colors
    assert info["config"].profile == "smoke" and info["config"].lr == 1e-3
    assert "miou" in info["metrics"]["val"] and info["versions"]["torch"] == torch.__version__
    payload = checkpoint.read_checkpoint(smoke_run.best_checkpoint)
    assert payload["ignore_index"] == IGNORE_INDEX
    assert payload["model"]["mean"] == [0.5, 0.5, 0.5]
    assert payload["training_state"] is None  # only last.pt carries the optimizer state
    rows = (smoke_run.out_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + len(smoke_run.history) == 3
    assert set(smoke_run.history[0]) >= {"train_loss", "val_loss", "val_miou", "val_dice", "lr"}


def test_resumed_run_ends_where_an_uninterrupted_run_ends(smoke_run, tmp_path):
    config = load_config("smoke", "unet-effnet-lite0")

    def interrupt(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(config, tmp_path, progress=False, epoch_callback=interrupt)
    assert json.loads((tmp_path / "history.json").read_text())[0]["epoch"] == 1
    resumed = train.fit(config, tmp_path, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    for ours, theirs in zip(resumed.history, smoke_run.history, strict=True):
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
    a = checkpoint.read_checkpoint(resumed.last_checkpoint)["state_dict"]
    b = checkpoint.read_checkpoint(smoke_run.last_checkpoint)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_early_stopping_counts_epochs_without_a_lower_loss():
    stopper = schedule.EarlyStopping(patience=3)
    improved = [stopper.step(loss, epoch) for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.8, 0.85])]
    assert improved == [True, True, False, False, False]
    assert stopper.should_stop and stopper.best_epoch == 1 and stopper.best_loss == 0.8
    resumed = schedule.EarlyStopping(3, **schedule.EarlyStopping(3, 0.5, 4, 2).state_dict())
    assert not resumed.should_stop and resumed.step(0.6, 7) is False and resumed.should_stop


def test_evaluation_scores_every_labelled_pixel_once_and_never_padding(smoke_checkpoint):
    model, info = checkpoint.load_model(smoke_checkpoint)
    test_set = build_datasets(info["config"])["test"]
    labelled = sum(int((test_set.load(i)[1] != IGNORE_INDEX).sum()) for i in range(len(test_set)))
    result = evaluate(model, test_set, batch_size=2, progress=False)
    # predict_logits pads the 360 rows to 384 for the encoder and crops the logits back: the
    # padding is never scored.
    assert test_set[0][0].shape[-2:] == (360, 480)
    assert result["pixels"] == int(result["confusion_matrix"].sum()) == labelled
    assert 0.0 <= result["miou"] <= 1.0 and math.isfinite(result["loss"])
    flipped = evaluate(model, test_set, batch_size=4, tta_flip=True, progress=False)
    assert flipped["pixels"] == labelled and not np.allclose(flipped["iou"], result["iou"], equal_nan=True)



def test_one_pass_scores_what_the_plain_and_flipped_evaluations_score(smoke_checkpoint):
    from helpers.evaluate import evaluate_checkpoint, evaluate_checkpoint_with_and_without_flip

    plain, flipped = evaluate_checkpoint_with_and_without_flip(smoke_checkpoint, "test",
                                                               runtime="torch", progress=False)
    for result, tta_flip in ((plain, False), (flipped, True)):
        alone = evaluate_checkpoint(smoke_checkpoint, "test", tta_flip=tta_flip, runtime="torch",
                                    progress=False)
        assert torch.equal(result["confusion_matrix"], alone["confusion_matrix"])
        assert result["loss"] == pytest.approx(alone["loss"], rel=1e-6)
        assert result["per_image_miou"] == pytest.approx(alone["per_image_miou"])
    assert not torch.equal(plain["confusion_matrix"], flipped["confusion_matrix"])

def test_ensure_trained_reuses_a_finished_run(smoke_run):
    config = load_config("smoke", "unet-effnet-lite0")
    before = smoke_run.best_checkpoint.stat().st_mtime_ns
    assert train.ensure_trained(config, smoke_run.out_dir, progress=False) == smoke_run.best_checkpoint
    assert smoke_run.best_checkpoint.stat().st_mtime_ns == before


def test_evaluate_command_prints_json(smoke_checkpoint, capsys):
    assert evaluate_main(["--checkpoint", str(smoke_checkpoint), "--split", "val", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["images"] == 4 and len(printed["iou"]) == 11
    assert evaluate_main(["--checkpoint", "missing.pt"]) == 2


def test_mini_unet_trains_with_dataset_statistics(camvid_dir, tmp_path, monkeypatch):
    config = load_config("smoke", "mini-unet")
    assert config.weight_decay == 5e-4
    result = train.fit(config, tmp_path, progress=False)
    model, info = checkpoint.load_model(result.best_checkpoint)
    mean = model.mean.flatten().tolist()
    assert mean != pytest.approx([0.485, 0.456, 0.406]) and all(0.2 < m < 0.6 for m in mean)
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_depthwise_convolutions_run_in_float32_under_cpu_bf16_autocast():
    from helpers.models import build_model

    model = build_model("unet-effnet-lite0", 11, pretrained=False)
    depthwise = [m for m in model.modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1]
    dtypes = {}

    def record(module, args, output):
        dtypes[module] = output.dtype

    hooks = [m.register_forward_hook(record) for m in (depthwise[0], model.net.segmentation_head[0])]
    images = torch.rand(2, 3, 64, 64)
    with train.depthwise_convs_in_float32(model) as count, torch.autocast("cpu", torch.bfloat16):
        logits = model(images)
    assert count == len(depthwise) == 16  # one per MBConv block of EfficientNet-Lite0
    assert dtypes[depthwise[0]] == torch.float32
    assert dtypes[model.net.segmentation_head[0]] == torch.bfloat16
    logits.float().sum().backward()
    assert depthwise[0].weight.grad is not None
    for hook in hooks:
        hook.remove()
    dtypes.clear()
    with torch.autocast("cpu", torch.bfloat16):  # hooks gone with the context
        model(images)
    assert not any(m._forward_pre_hooks for m in depthwise)


def test_checkpoint_records_the_decoder_widths(smoke_run, tmp_path):
    from helpers.models import LITE_DECODER_CHANNELS, SMP_DECODER_CHANNELS, build_model

    payload = checkpoint.read_checkpoint(smoke_run.best_checkpoint)
    assert tuple(payload["model"]["decoder_channels"]) == LITE_DECODER_CHANNELS
    # A checkpoint without the field holds smp's default decoder, and loads as such.
    old = build_model("unet-effnet-lite0", 11, pretrained=False, decoder_channels=SMP_DECODER_CHANNELS)
    payload["model"].pop("decoder_channels")
    payload["state_dict"] = old.state_dict()
    torch.save(payload, tmp_path / "old.pt")
    model, _ = checkpoint.load_model(tmp_path / "old.pt")
    assert model.net.decoder.blocks[0].conv1[0].out_channels == SMP_DECODER_CHANNELS[0]


def test_train_command_takes_decoder_widths_and_field_overrides(camvid_dir, tmp_path):
    assert train.main(["--profile", "smoke", "--out", str(tmp_path),
                       "--decoder-channels", "64,32,16,16,8",
                       "--set", "crop_size=64,64", "--set", "rotate_limit=5"]) == 0
    model, info = checkpoint.load_model(tmp_path / "best.pt")
    assert model.decoder_channels == (64, 32, 16, 16, 8)
    assert model.net.segmentation_head[0].in_channels == 8
    assert info["config"].decoder_channels == (64, 32, 16, 16, 8)
    assert info["config"].crop_size == (64, 64) and info["config"].rotate_limit == 5.0
    assert json.loads((tmp_path / "config.json").read_text())["crop_size"] == [64, 64]


def test_field_overrides_take_each_fields_type():
    overrides = parse_overrides([
        "crop_size=224,320", "lr=2e-3", "epochs=3", "tta_flip=true", "max_train_images=none",
        "num_workers=2", "class_weighting=none", "scale_limit=0.25",
    ])
    assert overrides == {"crop_size": (224, 320), "lr": 2e-3, "epochs": 3, "tta_flip": True,
                         "max_train_images": None, "num_workers": 2, "class_weighting": "none",
                         "scale_limit": 0.25}
    for bad in ("bogus=1", "epochs", "tta_flip=maybe", "extra=1"):
        with pytest.raises(ValueError, match="--set"):
            parse_overrides([bad])


def test_train_command_rejects_an_unknown_field(camvid_dir, tmp_path, capsys):
    assert train.main(["--profile", "smoke", "--out", str(tmp_path), "--set", "crops=64"]) == 2
    assert "crop_size" in capsys.readouterr().err  # the message lists the known fields
    assert not (tmp_path / "best.pt").exists()


@pytest.mark.parametrize("name", ["unet-effnet-lite0", "unet-effnet-lite2", "unet-mobilenet_v2"])
def test_encoder_stages_end_at_each_skip_resolution(name):
    from helpers.models import build_model

    model = build_model(name, 11, pretrained=False)
    sizes = []
    for stage in finetune.encoder_stages(model):
        stage[-1].register_forward_hook(lambda module, args, out: sizes.append(out.shape[-2:]))
    model(torch.rand(1, 3, 64, 96))
    assert sizes == [(64 // 2**k, 96 // 2**k) for k in range(1, 6)]


def _frozen_names(model, stages):
    frozen = {id(p) for stage in finetune.encoder_stages(model)[:stages] for module in stage
              for p in module.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in frozen}


def test_frozen_stages_get_no_gradient():
    from helpers.models import build_model

    model = build_model("unet-effnet-lite0", 11, pretrained=False)
    finetune.freeze_stages(model, 2)
    logits = model(torch.rand(2, 3, 64, 64))
    torch.nn.functional.cross_entropy(logits, torch.zeros(2, 64, 64, dtype=torch.long)).backward()
    frozen = _frozen_names(model, 2)
    assert {"net.encoder.model.conv_stem.weight", "net.encoder.model.blocks.1.1.conv_pwl.weight"} <= frozen
    assert not any(".blocks.2." in name for name in frozen)
    for name, parameter in model.named_parameters():
        assert (parameter.grad is None) == (name in frozen), name


def test_a_run_with_frozen_stages_keeps_their_imagenet_weights(camvid_dir, tmp_path):
    from helpers.models import build_model

    config = load_config("smoke", "unet-effnet-lite0", frozen_stages=2)
    result = train.fit(config, tmp_path, progress=False)
    trained = checkpoint.read_checkpoint(result.last_checkpoint)["state_dict"]
    model = build_model(config.model, 11)  # the ImageNet weights the run started from
    initial = model.state_dict()
    frozen = _frozen_names(model, 2)
    for name in frozen:
        assert torch.equal(trained[name], initial[name]), name
    for name in ("net.encoder.model.blocks.2.0.conv_pw.weight", "net.decoder.blocks.0.conv1.0.weight"):
        assert not torch.equal(trained[name], initial[name]), name
    # The frozen stages' BatchNorm statistics are ImageNet's still; the next stage's adapted.
    assert torch.equal(trained["net.encoder.model.bn1.running_mean"],
                       initial["net.encoder.model.bn1.running_mean"])
    assert torch.equal(trained["net.encoder.model.blocks.1.1.bn3.running_var"],
                       initial["net.encoder.model.blocks.1.1.bn3.running_var"])
    assert not torch.equal(trained["net.encoder.model.blocks.2.0.bn1.running_mean"],
                           initial["net.encoder.model.blocks.2.0.bn1.running_mean"])


def test_frozen_stages_normalise_as_in_evaluation_while_the_rest_trains():
    from helpers.models import build_model

    model = build_model("unet-effnet-lite0", 11, pretrained=False)
    finetune.freeze_stages(model, 2)
    model.eval().train()
    frozen = {id(m) for stage in finetune.encoder_stages(model)[:2] for layer in stage
              for m in layer.modules()}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(model.frozen_norms) == sum(id(m) in frozen for m in norms) > 0
    for norm in norms:
        assert norm.training == (id(norm) not in frozen)
    # So a frozen stage computes in a training step what it computes in evaluation.
    images = torch.rand(2, 3, 64, 64)
    stem = torch.nn.Sequential(*finetune.encoder_stages(model)[0])
    training_output = stem(images)
    model.eval()
    assert torch.allclose(training_output, stem(images))


def test_a_network_trained_from_scratch_has_no_stages_to_freeze():
    from helpers.models import build_model

    with pytest.raises(ValueError, match="no pretrained encoder"):
        finetune.freeze_stages(build_model("mini-unet", 11, width=8), 1)
    assert load_config("quick", "mini-unet").frozen_stages == 0


def test_a_run_validated_once_annealed_scores_and_keeps_only_those_epochs(camvid_dir, tmp_path):
    from helpers import plots

    config = load_config("smoke", "unet-effnet-lite0", epochs=5, validate_annealed_only=True)
    result = train.fit(config, tmp_path, progress=False)
    steps = len(build_datasets(config)["train"]) // config.batch_size
    first = train.annealed_epoch(config.epochs, steps, config.early_stop_lr_fraction)
    assert 0 < first < config.epochs - 1
    validated = [row["epoch"] for row in result.history if "val_loss" in row]
    assert validated == list(range(first + 1, config.epochs + 1))
    assert all("test_miou" in row for row in result.history if "val_loss" in row)
    assert all("test_miou" not in row for row in result.history if "val_loss" not in row)
    best = checkpoint.read_checkpoint(result.best_checkpoint)
    assert best["epoch"] == result.best_epoch >= first + 1 and "loss" in best["metrics"]["val"]
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + config.epochs and "val_loss" in rows[0]
    fig = plots.training_curves({"run": result.history})
    val_line = [line for line in fig.axes[0].lines if line.get_label() == "run val"][0]
    assert np.isnan(val_line.get_ydata()[:first]).all() and not np.isnan(val_line.get_ydata()[first:]).any()


def test_resuming_from_a_checkpoint_without_training_state_is_a_one_line_error(smoke_run, tmp_path,
                                                                                capsys):
    import shutil

    from helpers.errors import CheckpointError

    for name in ("best.pt", "config.json", "history.json"):
        shutil.copy(smoke_run.out_dir / name, tmp_path / name)
    shutil.copy(smoke_run.best_checkpoint, tmp_path / "last.pt")  # a best.pt where last.pt was
    before = (tmp_path / "last.pt").read_bytes()
    config = load_config("smoke", "unet-effnet-lite0")
    with pytest.raises(CheckpointError, match="holds no training state") as caught:
        train.fit(config, tmp_path, resume=True, progress=False)
    assert "\n" not in str(caught.value) and str(tmp_path / "last.pt") in str(caught.value)
    assert train.main(["--profile", "smoke", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "--out" in err
    assert (tmp_path / "last.pt").read_bytes() == before  # nothing written over it


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"PK\x03\x04 cut short"])
def test_an_unreadable_last_checkpoint_or_init_file_is_a_one_line_error(smoke_run, tmp_path,
                                                                         capsys, content):
    import shutil

    shutil.copy(smoke_run.best_checkpoint, tmp_path / "best.pt")
    (tmp_path / "last.pt").write_bytes(content)
    assert train.main(["--profile", "smoke", "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "last.pt") in err
    assert "Traceback" not in err
    bad = tmp_path / "init.pt"
    bad.write_bytes(content)
    out = tmp_path / "fine-tuned"
    assert train.main(["--profile", "smoke", "--out", str(out), "--init-from", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --init-from {bad}") and len(err.strip().splitlines()) == 1
    assert not (out / "best.pt").exists()


def test_the_steps_of_a_run_each_do_one_thing(camvid_dir, tmp_path):
    """build_run, train_epoch (loader, one epoch, validate, save) and restore, called alone."""
    from helpers import distributed

    config = load_config("smoke", "unet-effnet-lite0", epochs=3, validate_annealed_only=True)
    processes = distributed.setup("cpu")
    torch.manual_seed(config.seed)
    run = train.build_run(config, tmp_path, processes, torch.device("cpu"), None, False, False)
    assert run.start_epoch == 0 and run.history == [] and run.first_validated == 2
    train.prepare_loaders(run)
    row, improved = train.train_epoch(run, 0)
    assert row["epoch"] == 1 and "val_loss" not in row and not improved  # not validated yet
    assert (tmp_path / "last.pt").is_file() and not (tmp_path / "best.pt").exists()
    assert json.loads((tmp_path / "history.json").read_text()) == run.history
    assert train.validate(run, 2, {}) and not train.validate(run, 1, {})
    assert train.keep_best(run, 2, {"loss": 1.0}) and not train.keep_best(run, 2, {})
    again = train.build_run(config, tmp_path, processes, torch.device("cpu"), None, False, True)
    train.restore(again)
    assert again.start_epoch == 1 and again.history == run.history
    saved = checkpoint.read_checkpoint(tmp_path / "last.pt")["state_dict"]
    for key, value in again.network.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_run_files_are_replaced_whole_and_never_left_half_written(tmp_path, monkeypatch):
    import os

    from helpers import runs

    runs.write_history([{"epoch": 1, "train_loss": 2.0}], tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("history.csv", "history.json")}

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        runs.write_history([{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}],
                           tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "history.json"]
