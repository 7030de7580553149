"""Run configuration: one dataclass, three named profiles, and the project's paths.

The profile is chosen by the ``SEG_PROFILE`` environment variable (``smoke``, ``quick`` or
``full``), so the same notebook runs in seconds in CI, in minutes on a laptop CPU and at full
length on a GPU.
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
    # lower (helpers.train.EarlyStopping explains why).
    patience: int = 7
    early_stop_lr_fraction: float = 0.25
    # Score the validation split (and the tracked test images) only from the epoch early
    # stopping may count from: the epochs the best model is chosen among in practice, the
    # one-cycle rate annealed. Saves the evaluations of the rising and peak phases (the CPU
    # float32 recipe, helpers.budget); the history has no validation figures for those epochs.
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
    # Minutes of training this run may take on a CPU without native bf16 (float32 there):
    # fewer epochs where the measured epoch time says the profile's would not fit
    # (helpers.budget; make report's notebooks). None = always `epochs`.
    train_minutes: float | None = None
    # Set by helpers.budget when it sized the epochs: the measurement and the decision.
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
    # backward pass then never runs (helpers.train.freeze_stages). 0 = fine-tune the whole encoder.
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


PROFILES: dict[str, Config] = {
    # CI: a handful of images, tiny crops, two epochs; checks that everything runs.
    "smoke": Config(
        profile="smoke",
        crop_size=(64, 96),
        batch_size=2,
        epochs=2,
        patience=7,
        max_train_images=8,
        max_val_images=4,
        max_test_images=4,
        width=8,
        track_test_each_epoch=4,
    ),
    # The CPU main job: the whole report in about half an hour on 2 cores.
    "quick": Config(profile="quick", crop_size=(224, 320), batch_size=4, epochs=16, width=16,
                    track_test_each_epoch=30),
    # A GPU run at full length and resolution, augmented on the GPU, objects rescaled by
    # 0.5-1.5x (benchmarks/gpu_full.sh runs it with seeds and levers).
    "full": Config(
        profile="full",
        crop_size=(352, 480),
        scale_limit=0.5,
        batch_size=8,
        epochs=80,
        width=64,
        num_workers=None,
        augment_on_device=True,
        sync_batchnorm=True,
        track_test_each_epoch=233,
    ),
}


@dataclass(frozen=True)
class DeepLabCRFSettings:
    """What notebook 07 (DeepLabV3+ and the dense CRF, measured) runs in a profile."""

    # DeepLabV3+'s training epochs; None = the profile's ``epochs``.
    deeplab_epochs: int | None
    # The CRF parameter search on the validation split: images, parameter sets, and mean-field
    # iterations per set (DeepLab used 10).
    search_images: int
    search_candidates: int
    crf_iterations: int
    # Test images the CRF is scored on, evenly spaced; None = all.
    crf_test_images: int | None
    # Models also scored without the CRF on the whole test split.
    full_test_models: tuple[str, ...]


DEEPLAB_CRF_MODELS = ("U-Net", "DeepLabV3+", "mini U-Net")
DEEPLAB_CRF_SETTINGS: dict[str, DeepLabCRFSettings] = {
    "smoke": DeepLabCRFSettings(None, search_images=2, search_candidates=2, crf_iterations=2,
                                crf_test_images=None, full_test_models=DEEPLAB_CRF_MODELS),
    # About 8 minutes on 2 CPU cores including DeepLabV3+'s training: fewer epochs than the
    # U-Nets, a small search, the CRF on 40 test images. Only DeepLabV3+ is scored on the whole
    # test split here; the U-Nets' full-test scores come from notebooks 03 and 04.
    "quick": DeepLabCRFSettings(5, search_images=8, search_candidates=6, crf_iterations=5,
                                crf_test_images=40, full_test_models=("DeepLabV3+",)),
    "full": DeepLabCRFSettings(None, search_images=40, search_candidates=24, crf_iterations=10,
                               crf_test_images=None, full_test_models=DEEPLAB_CRF_MODELS),
}


def deeplab_crf_settings(config: Config) -> DeepLabCRFSettings:
    """Return notebook 07's settings for a configuration's profile, epochs filled in."""
    settings = DEEPLAB_CRF_SETTINGS[config.profile]
    return dataclasses.replace(settings, deeplab_epochs=settings.deeplab_epochs or config.epochs)


# The quick profile's training time per model on a CPU without native bf16 (helpers.budget):
# 20 of the report's 30 minutes, most of them for the transfer U-Net, whose accuracy the
# report's comparison rests on (the others show what they show in a few epochs). Its 15
# minutes fit the 15 epochs its float32 recipe needs for 0.55 test mIoU up to batch times 1.65x
# those of the AMD EPYC in the README's float32 report; there the mini U-Net's 2.5 fit 2 epochs
# and DeepLabV3+'s 3 (benchmarks/report_budget.py --cached prints the plans).
# SEG_TIME_BUDGET=off keeps every epoch (more accuracy, a longer report).
TIME_BUDGET_ENV = "SEG_TIME_BUDGET"
TRAIN_MINUTES = {"quick": {"unet-effnet-lite0": 15.0, "mini-unet": 2.5,
                           "deeplabv3plus-effnet-lite0": 2.5}}
# There the pretrained networks also take cheaper epochs, so that more of them fit: the
# encoder's first two stages (1/2 and 1/4 resolution) kept at their ImageNet weights and
# BatchNorm statistics, which skips their backward pass (helpers.train.freeze_stages), and
# validation only once the schedule has annealed.
FLOAT32_RECIPE = {"quick": {model: {"frozen_stages": 2, "validate_annealed_only": True}
                            for model in ("unet-effnet-lite0", "deeplabv3plus-effnet-lite0")}}

# The from-scratch network's recipe in the study: heavier weight decay, 30 epochs.
SCRATCH_OVERRIDES = {"weight_decay": 5e-4, "frozen_stages": 0}
SCRATCH_EPOCHS = {"smoke": 2, "quick": 8, "full": 30}


def get_profile() -> str:
    """Return the profile named by ``SEG_PROFILE`` (default ``quick``)."""
    name = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE).strip() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r} is not a profile; choose one of {sorted(PROFILES)}")
    return name


def load_config(profile: str | None = None, model: str | None = None, **overrides) -> Config:
    """Return the configuration of a profile for a model, with any field overridden.

    The mini U-Net gets the study's scratch recipe (weight decay 5e-4, its own epoch count).
    Quick-profile models get their time budget (``train_minutes``) unless ``SEG_TIME_BUDGET=off``.
    """
    profile = profile or get_profile()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    config = PROFILES[profile]
    if model is not None:
        config = config.replace(model=model)
    if config.model.startswith("mini-unet"):
        config = config.replace(**SCRATCH_OVERRIDES, epochs=SCRATCH_EPOCHS[profile])
    budget_off = os.environ.get(TIME_BUDGET_ENV, "").strip().lower() in ("0", "off", "none")
    if config.model in TRAIN_MINUTES.get(profile, {}) and not budget_off:
        config = config.replace(train_minutes=TRAIN_MINUTES[profile][config.model])
    return config.replace(**overrides) if overrides else config


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
