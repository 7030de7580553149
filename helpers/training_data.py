"""What a run trains on: its split, the loss's class weights, the input statistics of a network
trained from scratch, and each epoch's seeded batches.

Every epoch reseeds everything random from the run's seed and the epoch's number, so a resumed
run draws the same crops and flips as an uninterrupted one.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from .config import Config
from .datasets import SegmentationDataset, class_pixel_counts, median_frequency_weights


def training_split(config: Config, datasets: dict):
    """Return the split a run trains on: ``train``, or ``train`` and ``val`` together."""
    if config.fit_on == "train":
        return datasets["train"]
    if config.fit_on != "train+val":
        raise ValueError(f"fit_on must be 'train' or 'train+val', not {config.fit_on!r}")
    train, val = datasets["train"], datasets["val"]
    return SegmentationDataset(train.pairs + val.pairs, train.classes, train.transform,
                               cache=config.cache_images)


def class_weights_for(config: Config, train_dataset) -> torch.Tensor | None:
    """Return the cross-entropy class weights the configuration asks for (or None).

    ``median_frequency`` is SegNet's ``median(freq) / freq``; ``sqrt_median_frequency`` its
    square root, a softer balance that over-predicts rare classes less on short schedules.
    """
    if config.class_weighting == "none":
        return None
    if config.class_weighting not in ("median_frequency", "sqrt_median_frequency"):
        raise ValueError("class_weighting must be 'none', 'median_frequency' or "
                         f"'sqrt_median_frequency', not {config.class_weighting!r}")
    weights = median_frequency_weights(class_pixel_counts(train_dataset))
    if config.class_weighting == "sqrt_median_frequency":
        weights = np.sqrt(weights)
    return torch.tensor(weights, dtype=torch.float32)


def normalization_for(config: Config, train_dataset) -> tuple[tuple, tuple] | tuple[None, None]:
    """Return (mean, std) for the from-scratch model: the statistics of its training images.

    Pretrained encoders return (None, None): they keep their pretraining statistics.
    """
    if not config.model.startswith("mini-unet"):
        return None, None
    from .stats import training_stats

    stats = training_stats(config, [image for image, _ in train_dataset.pairs])
    return tuple(stats["mean"]), tuple(stats["std"])


def tracked_test_images(config: Config, datasets: dict) -> SegmentationDataset | None:
    """Return the evenly spaced test images scored after each validated epoch (report only;
    ``Config.track_test_each_epoch``), or None."""
    if not config.track_test_each_epoch:
        return None
    from .datasets import evenly_spaced

    full = datasets["test"]
    return SegmentationDataset(evenly_spaced(full.pairs, config.track_test_each_epoch),
                               full.classes, full.transform, cache=config.cache_images)


def epoch_seed(config: Config, epoch: int) -> int:
    """Return the seed of an epoch: what shuffles the training split (the same in every process)."""
    return config.seed * 1000 + epoch


def seed_epoch(config: Config, epoch: int, dataset, rank: int = 0) -> torch.Generator:
    """Seed everything random for one epoch, so a resumed run repeats an uninterrupted one.

    Each process of a distributed run gets its own seed (rank 0 that of a single process), so
    the processes draw different augmentations. Returns the generator that shuffles the split.
    """
    seed = epoch_seed(config, epoch) + rank * 1_000_003
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if dataset.transform is not None and hasattr(dataset.transform, "set_random_seed"):
        dataset.transform.set_random_seed(seed)
    return torch.Generator().manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """Seed a DataLoader worker from the seed torch gave it (its augmentations included)."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)
