"""Run configuration: one dataclass, one table of every run's settings, the project's paths.

:data:`RECIPES` has one row per (profile, model), the label-efficiency study's runs included;
:func:`load_config` looks a row up. The profile is chosen by the ``SEG_PROFILE`` environment
variable (``smoke``, ``quick`` or ``full``), so the same notebook runs in seconds in CI, in
minutes on a laptop CPU and at full length on a GPU.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

PROFILE_ENV = "SEG_PROFILE"
DEFAULT_PROFILE = "quick"


@dataclass
class Config:
    """Every hyperparameter of a run; printed at the start and saved inside each checkpoint."""

    profile: str = "quick"
    seed: int = 42
    # "camvid", or "folder" for your own images/masks folders with a class file.
    dataset: str = "camvid"
    images_dir: str | None = None
    masks_dir: str | None = None
    class_file: str | None = None
    # Name of the seeded 80/10/10 split of a folder dataset (data/splits/<name>.csv).
    split_name: str | None = None
    # Or a CSV of image,mask paths (e.g. from MATLAB's Image Labeler), instead of the two folders.
    pairs_file: str | None = None
    # Model name, see helpers.models.MODEL_NAMES.
    model: str = "unet-effnet-lite0"
    # Base width of the mini U-Net (64 = the classic 64..1024, 32 = a lighter 32..512).
    width: int = 32
    # U-Net decoder widths, deepest first; None = the model's default (the EfficientNet-Lite
    # U-Nets' light 128, 64, 32, 16, 16; smp's is 256, 128, 64, 32, 16).
    decoder_channels: tuple[int, ...] | None = None
    # DeepLabV3+ output stride: 16 (atrous rates 6, 12, 18) or 8 (12, 24, 36).
    output_stride: int = 16
    # Training crop (height, width); evaluation always runs at the native resolution.
    crop_size: tuple[int, int] = (224, 320)
    # Augmentation: rotation up to +-rotate_limit degrees (half the crops), and a random rescale
    # by a factor in [1 - scale_limit, 1 + scale_limit] before cropping (0 = off).
    rotate_limit: float = 10.0
    scale_limit: float = 0.0
    batch_size: int = 4
    epochs: int = 12
    # AdamW and OneCycleLR (max_lr = lr), stepped once per batch.
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # Early stopping: stop after this many epochs without a lower validation loss, counted only
    # once the one-cycle learning rate has annealed to early_stop_lr_fraction of its peak or
    # lower (helpers.schedule.EarlyStopping explains why).
    patience: int = 7
    early_stop_lr_fraction: float = 0.25
    # Score the validation split (and the tracked test images) only from the epoch early
    # stopping may count from: the epochs the best model is chosen among in practice, the
    # one-cycle rate annealed. Saves the evaluations of the rising and peak phases (the quick
    # recipe); the history has no validation figures for those epochs.
    validate_annealed_only: bool = False
    # "none", "median_frequency" (SegNet's weighting of the cross-entropy for CamVid) or
    # "sqrt_median_frequency" (its square root: a softer balance).
    class_weighting: str = "sqrt_median_frequency"
    # Use at most this many images per split (None = all). The smoke profile uses a handful.
    max_train_images: int | None = None
    max_val_images: int | None = None
    max_test_images: int | None = None
    # Keep decoded images in memory: CamVid's train split is ~190 MB as uint8.
    cache_images: bool = True
    # DataLoader workers; None = sized to the machine (0 on 2-core machines, where workers
    # compete with the compute threads).
    num_workers: int | None = None
    # Mixed precision and memory format: "auto" picks what measured fastest per device.
    amp: str = "auto"
    channels_last: bool = True
    # Minutes of training this run may take on a CPU: helpers.budget.plan_run (what the
    # notebooks call) plans fewer epochs where the batch times it measures say `epochs` would
    # not fit. None = always `epochs`. Not part of a run's identity (helpers.runs).
    train_minutes: float | None = None
    # Set by helpers.budget.plan_run when it planned the epochs: the measurement and the decision.
    time_budget: dict | None = None
    # Set by helpers.study for a run of the label-efficiency study: its subset and schedule.
    label_study: dict | None = None
    # Evaluate with horizontal-flip test-time augmentation.
    tta_flip: bool = False
    # Train on "train", or on "train+val" (the final-fit protocol of many CamVid papers: no
    # held-out model selection is left, so the last epoch is kept and the run is labelled so).
    fit_on: str = "train"
    # Augment whole batches on the training device (helpers.batch_transforms) instead of one
    # image at a time in DataLoader workers: on a GPU the per-image pipeline sets the pace.
    augment_on_device: bool = False
    # Several processes (torchrun): compute BatchNorm's batch statistics over the global batch
    # (SyncBatchNorm) instead of each process's own few images. No effect in one process.
    sync_batchnorm: bool = False
    # Also score this many (evenly spaced) test images after every epoch, 0 = off. Only for
    # showing how much choosing the epoch on test inflates the result; model selection always
    # uses validation.
    track_test_each_epoch: int = 0
    # Where runs are written (checkpoints, history); relative paths are under the repository.
    runs_dir: str = "runs"
    # Fine-tuning onto new classes: start from this checkpoint's encoder and decoder (the
    # classifier is re-initialised for this dataset's classes), with the encoder frozen for
    # the first freeze_encoder_epochs epochs.
    init_from: str | None = None
    freeze_encoder_epochs: int = 0
    # Keep the ImageNet weights and BatchNorm statistics of the pretrained encoder's first
    # stages (the stem with the first): 2 = every layer at 1/2 and 1/4 resolution, whose
    # backward pass then never runs (helpers.finetune.freeze_stages). 0 = fine-tune the whole encoder.
    frozen_stages: int = 0
    # Log loss, mIoU and learning rate per epoch for TensorBoard (OUT/tensorboard/).
    tensorboard: bool = False

    def replace(self, **changes) -> Config:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Return the configuration as plain JSON-friendly data."""
        data = dataclasses.asdict(self)
        data["crop_size"] = list(self.crop_size)
        if self.decoder_channels is not None:
            data["decoder_channels"] = list(self.decoder_channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """Rebuild a configuration saved with :meth:`to_dict`, ignoring unknown keys.

        Configurations saved before ``decoder_channels`` and ``output_stride`` were fields kept
        them in an untyped ``extra`` dict; they are read from there.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        data = {**(data.get("extra") or {}), **data}
        kwargs = {k: v for k, v in data.items() if k in names}
        for name in ("crop_size", "decoder_channels"):
            if kwargs.get(name) is not None:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)

    def __str__(self) -> str:
        rows = [f"  {k:<24} {v}" for k, v in self.to_dict().items()]
        return "Config(\n" + "\n".join(rows) + "\n)"


# ---------------------------------------------------------------------------------------------
# One row per (profile, model): every setting of a run. A profile's rows share its data, crops and
# batch (the dicts below); a model without a row of its own (the other pretrained encoders) trains
# with the row of the profile's transfer U-Net. The label-efficiency study's runs have rows of
# their own under "<profile> label study" (helpers.study adds each run's subset and schedule).

PROFILE_NAMES = ("smoke", "quick", "full")
DEFAULT_MODEL = "unet-effnet-lite0"
DEEPLAB = "deeplabv3plus-effnet-lite0"
STUDY = "label study"

# CI: a handful of images, tiny crops, two epochs; checks that everything runs.
_SMOKE = dict(profile="smoke", crop_size=(64, 96), batch_size=2, epochs=2, max_train_images=8,
              max_val_images=4, max_test_images=4, width=8)
# The CPU main job: the whole report in about 20 minutes on 2 cores.
_QUICK = dict(profile="quick", crop_size=(224, 320), batch_size=4, width=16)
# A GPU run at full length and resolution, augmented on the GPU, objects rescaled by 0.5-1.5x
# (benchmarks/gpu_full.sh runs it with seeds and levers).
_FULL = dict(profile="full", crop_size=(352, 480), scale_limit=0.5, batch_size=8, width=64,
             augment_on_device=True, sync_batchnorm=True)
# The from-scratch network's recipe in the study: heavier weight decay, more epochs.
_SCRATCH = dict(model="mini-unet", weight_decay=5e-4)
# The quick recipe of the pretrained networks on every CPU: the encoder's first two stages (1/2
# and 1/4 resolution) keep their ImageNet weights and BatchNorm statistics, which skips their
# backward pass (helpers.finetune.freeze_stages), and validation starts once the schedule has
# annealed; helpers.budget.plan_run fits the epochs to the measured batch times and
# train_minutes (docs/training-recipe-measurements.md: the runs that chose it).
_QUICK_PRETRAINED = dict(frozen_stages=2, validate_annealed_only=True)

RECIPES: dict[tuple[str, str], Config] = {
    ("smoke", DEFAULT_MODEL): Config(**_SMOKE, track_test_each_epoch=4),
    ("smoke", "mini-unet"): Config(**_SMOKE, **_SCRATCH, track_test_each_epoch=4),
    ("smoke", DEEPLAB): Config(**_SMOKE, model=DEEPLAB, track_test_each_epoch=4),
    # 12 of make report's 20 minutes train (the rest: set-up, and notebooks 01-07 apart from
    # training, docs/training-recipe-measurements.md): most for the transfer U-Net, whose
    # accuracy the report's comparison rests on; the others show what a few epochs show.
    ("quick", DEFAULT_MODEL): Config(**_QUICK, **_QUICK_PRETRAINED, epochs=16, train_minutes=8.5,
                                     track_test_each_epoch=30),
    ("quick", "mini-unet"): Config(**_QUICK, **_SCRATCH, epochs=8, train_minutes=1.5,
                                   track_test_each_epoch=30),
    ("quick", DEEPLAB): Config(**_QUICK, **_QUICK_PRETRAINED, model=DEEPLAB, epochs=5,
                               train_minutes=2.0, track_test_each_epoch=30),
    ("full", DEFAULT_MODEL): Config(**_FULL, epochs=80, track_test_each_epoch=233),
    ("full", "mini-unet"): Config(**_FULL, **_SCRATCH, epochs=30, track_test_each_epoch=233),
    ("full", DEEPLAB): Config(**_FULL, model=DEEPLAB, epochs=80, track_test_each_epoch=233),
    # The label-efficiency study (helpers.study): no per-epoch test scores, no time budget; the
    # quick study on smaller crops than the report's so that its 24 runs fit about an hour.
    (f"smoke {STUDY}", DEFAULT_MODEL): Config(**_SMOKE),
    (f"smoke {STUDY}", "mini-unet"): Config(**_SMOKE, **_SCRATCH),
    (f"quick {STUDY}", DEFAULT_MODEL): Config(**{**_QUICK, "crop_size": (192, 256)}),
    (f"quick {STUDY}", "mini-unet"): Config(**{**_QUICK, "crop_size": (192, 256)}, **_SCRATCH),
    (f"full {STUDY}", DEFAULT_MODEL): Config(**_FULL, num_workers=3),
    (f"full {STUDY}", "mini-unet"): Config(**_FULL, **_SCRATCH, num_workers=3),
}

# SEG_TIME_BUDGET=off keeps every epoch of the table (helpers.budget.plan_run plans nothing).
TIME_BUDGET_ENV = "SEG_TIME_BUDGET"


def get_profile() -> str:
    """Return the profile named by ``SEG_PROFILE`` (default ``quick``)."""
    name = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE).strip() or DEFAULT_PROFILE
    if name not in PROFILE_NAMES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; choose one of {sorted(PROFILE_NAMES)}")
    return name


def load_config(profile: str | None = None, model: str | None = None, **overrides) -> Config:
    """Return the configuration of a profile for a model: its row of :data:`RECIPES`, with
    any field overridden.

    ``profile`` defaults to ``$SEG_PROFILE`` (:func:`get_profile`), ``model`` to the transfer
    U-Net. A model without a row of its own takes the row of the profile's transfer U-Net.
    What the row says is what trains: :func:`helpers.budget.plan_run` plans the epochs of a
    quick run for the machine, visibly, before training.
    """
    profile = profile or get_profile()
    model = model or DEFAULT_MODEL
    if (profile, DEFAULT_MODEL) not in RECIPES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILE_NAMES)}")
    config = RECIPES.get((profile, model)) or RECIPES[(profile, DEFAULT_MODEL)].replace(model=model)
    return config.replace(**overrides) if overrides else config


def parse_overrides(assignments: list[str]) -> dict:
    """Turn ``FIELD=VALUE`` strings into Config overrides, each value cast to its field's type.

    ``crop_size=224,320`` gives a tuple, ``max_train_images=none`` gives None, and booleans
    read ``true``/``false``. An unknown field is an error naming the known ones.
    """
    fields = {f.name: f for f in dataclasses.fields(Config)}  # annotations as text: "int | None"
    defaults = Config()
    overrides = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or name not in fields or name == "profile":
            known = ", ".join(n for n in fields if n != "profile")
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of {known}")
        default = getattr(defaults, name)
        if default is None and text.lower() in ("none", "null"):
            value = None
        elif isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"--set {assignment!r}: {name} takes true or false")
            value = text.lower() in ("true", "1")
        elif isinstance(default, tuple) or fields[name].type.startswith("tuple"):
            value = tuple(int(part) for part in text.split(","))
        elif isinstance(default, float) or fields[name].type.startswith("float"):
            value = float(text)
        elif isinstance(default, int) or fields[name].type.startswith("int"):
            value = int(text)
        else:
            value = text
        overrides[name] = value
    return overrides


def repo_root(start: Path | str | None = None) -> Path:
    """Return the repository root: the nearest folder upwards holding ``pyproject.toml``.

    Starts from the working directory (not ``__file__``, which points into site-packages after
    a non-editable install).
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "helpers").is_dir():
            return folder
    return here


def project_path(*parts: str) -> Path:
    """Return a path under the repository root, creating nothing."""
    return repo_root().joinpath(*parts)


def output_dir(kind: str, profile: str | None = None) -> Path:
    """Return where report outputs of a kind (``figures``, ``results``) go for a profile.

    The smoke profile (CI) writes under ``build/smoke/`` so it never overwrites the report's
    committed figures and results.
    """
    profile = profile or get_profile()
    if profile == "smoke":
        return project_path("build", "smoke", kind)
    return project_path(kind)
