"""Training with several processes (torchrun, DistributedDataParallel) on the CPU with gloo."""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import checkpoint, distributed, runs, train
from helpers.config import load_config
from helpers.evaluate import main as evaluate_main
from helpers.models import build_model

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 11


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join(rank: int, world_size: int, port: int) -> distributed.Processes:
    """Join a gloo group as torchrun would have described it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return distributed.setup("cpu")


def test_a_single_process_is_left_as_it_is(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    processes = distributed.setup()
    assert not processes.is_distributed and processes.world_size == 1 and processes.device is None
    assert distributed.is_main_process() and distributed.world_size() == 1
    assert distributed.shard_indices(5) == [0, 1, 2, 3, 4]
    # sync_batchnorm changes nothing in one process: a run's identity (and folder hash) is kept.
    full = load_config("full", "unet-effnet-lite0")
    assert full.sync_batchnorm and not load_config("quick").sync_batchnorm
    assert runs.run_identity(full) == runs.run_identity(full.replace(sync_batchnorm=False))
    two = runs.run_identity(full, world_size=2)
    assert two["world_size"] == 2 and two != runs.run_identity(full)
    assert runs.run_identity({**full.to_dict(), "world_size": 2}) == two


def test_synchronised_batchnorm_on_the_cpu_keeps_the_model_it_converts():
    torch.manual_seed(0)
    model = build_model("unet-effnet-lite0", NUM_CLASSES, pretrained=False).train()
    original = copy.deepcopy(model)
    parameters = list(original.parameters())
    converted = distributed.convert_sync_batchnorm(original, torch.device("cpu"))
    # The same parameter objects: an optimizer built before the conversion still updates them.
    assert all(a is b for a, b in zip(converted.parameters(), parameters, strict=True))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    synced = [m for m in converted.modules() if isinstance(m, distributed.CPUSyncBatchNorm)]
    assert len(synced) == len(norms) > 0
    # EfficientNet's timm BatchNormAct2d layers keep their activation.
    assert any(isinstance(getattr(m, "act", None), torch.nn.ReLU6) for m in synced)
    assert list(converted.state_dict()) == list(model.state_dict())
    images = torch.rand(2, 3, 64, 96)
    for mode in (True, False):  # in one process: plain BatchNorm, training and eval
        model.train(mode), converted.train(mode)
        torch.testing.assert_close(converted(images), model(images), rtol=0, atol=0)


def test_on_device_batches_give_each_process_a_disjoint_share_of_one_shuffled_order():
    from helpers.batch_transforms import DeviceBatches

    count = 11
    # Every mask holds its image's index: the centre pixel of a batch says which images it drew.
    masks = torch.arange(count).view(-1, 1, 1).expand(count, 8, 8).clone()
    images = torch.zeros(count, 8, 8, 3, dtype=torch.uint8)

    def drawn(rank, num_replicas, epoch_seed=7):
        batches = DeviceBatches(images, masks, 2, (8, 8), rotate_limit=0,
                                generator=torch.Generator().manual_seed(epoch_seed),
                                rank=rank, num_replicas=num_replicas)
        return [int(i) for _, batch_masks in batches for i in batch_masks[:, 4, 4]], len(batches)

    (first, steps), (second, _) = drawn(0, 2), drawn(1, 2)
    assert steps == count // 2 // 2 and len(first) == len(second) == 4
    assert not set(first) & set(second)  # disjoint shares
    whole, _ = drawn(0, 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(7)).tolist()
    assert whole == order[:10] and first == order[0:8:2] and second == order[1:8:2]
    assert drawn(0, 2, epoch_seed=8)[0] != first  # a new epoch, a new order


def _batch(batch_size: int):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, 32, 32, generator=generator)
    # Every pixel labelled: each process's mean cross-entropy then weighs its pixels as the
    # single process's mean over the whole batch does.
    masks = torch.randint(0, NUM_CLASSES, (batch_size, 32, 32), generator=generator)
    return images, masks


def _one_step(model, images, masks):
    """The project's training step (train_one_epoch over one batch); return the loss and the
    parameters' gradients."""
    config = load_config("smoke", "mini-unet")
    optimizer = train.build_optimizer(model, config, torch.device("cpu"))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=10)
    state = train.TrainState(model, optimizer, scheduler, torch.device("cpu"), channels_last=False)
    stats = train.train_one_epoch(state, [(images, masks)], progress=False)
    parameters = getattr(model, "module", model).named_parameters()  # without DDP's prefix
    return stats["loss"], {name: p.grad.clone() for name, p in parameters}


def _step_worker(rank: int, world_size: int, port: int, batch: int, sync: bool, out: str):
    from torch.nn.parallel import DistributedDataParallel

    _join(rank, world_size, port)
    torch.manual_seed(0)
    model = build_model("mini-unet", NUM_CLASSES, width=4)
    if sync:
        model = distributed.convert_sync_batchnorm(model, torch.device("cpu"))
    images, masks = _batch(batch * world_size)
    share = slice(rank * batch, (rank + 1) * batch)  # rank r: samples r*B .. (r+1)*B-1
    loss, grads = _one_step(DistributedDataParallel(model), images[share], masks[share])
    if rank == 0:
        torch.save({"loss": loss, "grads": grads, "state": model.state_dict()}, out)
    distributed.cleanup()


def _two_process_step(tmp_path, batch: int, sync: bool) -> dict:
    out = tmp_path / f"step_sync{sync}.pt"
    torch.multiprocessing.spawn(_step_worker, args=(2, _free_port(), batch, sync, str(out)),
                                nprocs=2)
    return torch.load(out, weights_only=True)


@pytest.mark.slow
def test_two_processes_take_the_step_of_one_process_with_twice_the_batch(tmp_path):
    batch = 2
    torch.manual_seed(0)
    model = build_model("mini-unet", NUM_CLASSES, width=4)
    loss, grads = _one_step(model, *_batch(2 * batch))
    two = _two_process_step(tmp_path, batch, sync=True)

    assert two["loss"] == pytest.approx(loss, rel=1e-5)
    for name, grad in grads.items():  # DDP's average = the gradient of the 2B-batch mean
        torch.testing.assert_close(two["grads"][name], grad, rtol=1e-3, atol=1e-6)
    for name, value in model.state_dict().items():  # weights and BatchNorm running statistics
        torch.testing.assert_close(two["state"][name], value, rtol=1e-4, atol=1e-6)

    # The control: BatchNorm per process normalises each half of the batch on its own.
    apart = _two_process_step(tmp_path, batch, sync=False)
    differences = [float((apart["grads"][name] - grad).abs().max()) for name, grad in grads.items()]
    assert max(differences) > 1e-3, "per-process BatchNorm should change the gradients"


def _resume_worker(rank: int, world_size: int, port: int, out: str):
    _join(rank, world_size, port)
    config = load_config("smoke", "unet-effnet-lite0", sync_batchnorm=True)
    whole = train.fit(config, Path(out) / "whole", progress=False)

    def interrupt(row):
        raise KeyboardInterrupt

    try:
        train.fit(config, Path(out) / "resumed", progress=False, epoch_callback=interrupt)
    except KeyboardInterrupt:
        distributed.barrier()  # rank 0 has written last.pt
    resumed = train.fit(config, Path(out) / "resumed", resume=True, progress=False)
    if rank == 0:
        (Path(out) / "histories.json").write_text(json.dumps([whole.history, resumed.history]))
    distributed.cleanup()


@pytest.mark.slow
def test_a_distributed_run_resumes_where_an_uninterrupted_one_ends(camvid_dir, tmp_path):
    torch.multiprocessing.spawn(_resume_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    whole, resumed = json.loads((tmp_path / "histories.json").read_text())
    assert [row["epoch"] for row in resumed] == [1, 2] and resumed[0]["world_size"] == 2
    for ours, theirs in zip(resumed, whole, strict=True):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    a = checkpoint.read_checkpoint(tmp_path / "resumed" / "last.pt")["state_dict"]
    b = checkpoint.read_checkpoint(tmp_path / "whole" / "last.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torchrun_trains_once_and_the_checkpoint_loads_for_evaluation(camvid_dir, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "CAMVID_DIR": str(camvid_dir), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "helpers.train", "--profile", "smoke", "--out", str(out),
               "--set", "sync_batchnorm=true",
               # A frozen first epoch leaves the encoder without gradients (DDP must allow it).
               "--freeze-encoder-epochs", "1"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Rank 0 alone writes and reports: one set of files, one summary line per epoch.
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt", "config.json", "done.json", "history.csv", "history.json", "last.pt"]
    printed = done.stdout + done.stderr
    assert printed.count("epoch 1/2: train loss") == 1 and printed.count("best epoch") == 1
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["world_size"] == 2 for row in history)
    assert json.loads((out / "config.json").read_text())["world_size"] == 2

    payload = checkpoint.read_checkpoint(out / "best.pt")
    assert payload["world_size"] == 2 and payload["config"]["sync_batchnorm"] is True
    assert not any(key.startswith("module.") for key in payload["state_dict"])
    model, info = checkpoint.load_model(out / "best.pt")
    assert info["world_size"] == 2 and model.num_classes == NUM_CLASSES

    # A folder trained by two processes is another run for one process: kept, not mixed in.
    one_process = load_config("smoke", "unet-effnet-lite0", sync_batchnorm=True,
                              freeze_encoder_epochs=1)
    assert runs.other_run_in(out, one_process) == ["world_size: 2 -> 1"]

    capsys.readouterr()
    assert evaluate_main(["--checkpoint", str(out / "best.pt"), "--split", "val", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["images"] == 4 and 0.0 <= scores["miou"] <= 1.0
    # Validation during training scored the whole split (both processes' shares summed): the
    # same mIoU as one process scoring the saved model (its loss is unweighted, training's not).
    assert payload["metrics"]["val"]["pixels"] == scores["pixels"] > 0
    assert scores["miou"] == pytest.approx(history[payload["epoch"] - 1]["val_miou"], abs=2e-3)
