"""Fully connected CRF refinement of a network's softmax output (DeepLab's post-processing).

Krähenbühl & Koltun (2011) define a CRF over every pair of pixels with the energy

    E(x) = sum_i -log p_i(x_i)
           + sum_{i<j} mu(x_i, x_j) [ w1 exp(-|p_i - p_j|^2 / 2 theta_alpha^2
                                              - |I_i - I_j|^2 / 2 theta_beta^2)
                                      + w2 exp(-|p_i - p_j|^2 / 2 theta_gamma^2) ]

(Potts compatibility mu, p pixel positions, I colours) and minimise it approximately by a few
mean-field iterations with permutohedral-lattice filtering. The *bilateral* kernel (weight
w1, widths theta_alpha in pixels and theta_beta in colour levels) pulls pixels of similar
colour nearby to the same label, so labels snap to colour edges; the *Gaussian* kernel (w2,
theta_gamma) removes isolated specks. DeepLab (Chen et al. 2015/2018) runs it on the
upsampled softmax of the network; here it runs on the probabilities of the project's one
inference path, on the image at its native resolution, through ``pydensecrf2``.

Defaults (:data:`DEFAULT_PARAMS`) are DeepLab-LargeFOV's published PASCAL VOC values,
w1 = 4, theta_alpha = 121, theta_beta = 5, w2 = 3, theta_gamma = 3, 10 iterations, with the
spatial widths scaled by the ratio of image diagonals (CamVid 360x480: 600 px; VOC up to
500x375: 625 px), i.e. theta_alpha = 116. The widths are in pixels of a 360x480 frame:
:meth:`CRFParams.scaled` adapts them to another resolution. The study picks its own values
per checkpoint on the validation split (:func:`choose_params`), never on test, and saves them
as ``crf.json`` next to the checkpoint, where :func:`params_for_checkpoint` finds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import write_json

# A floor on the probabilities before -log: a float32 softmax underflows to exactly 0, and an
# infinite unary would forbid a label the pairwise terms should still be able to choose.
PROBABILITY_FLOOR = 1e-5
REFERENCE_SIZE = (360, 480)  # (height, width) the spatial widths are given for
CRF_FILE = "crf.json"


@dataclass(frozen=True)
class CRFParams:
    """Kernel widths, weights and iteration count of the dense CRF.

    ``*_sxy`` are standard deviations in pixels of a 360x480 frame, ``bilateral_srgb`` in
    colour levels (0-255), ``*_compat`` the kernel weights (Potts compatibility).
    """

    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 116.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 4.0
    iterations: int = 10

    def to_dict(self) -> dict:
        """Return the parameters as plain JSON-friendly data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> CRFParams:
        """Rebuild parameters saved with :meth:`to_dict`; missing keys take the defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown CRF parameter(s) {sorted(unknown)}; expected {sorted(names)}")
        values = {k: (int(v) if k == "iterations" else float(v)) for k, v in data.items()}
        return cls(**values)

    def scaled(self, factor: float) -> CRFParams:
        """Return the parameters with the spatial widths multiplied by ``factor``.

        For an image whose diagonal is ``factor`` times a 360x480 frame's (600 px), so a
        kernel covers the same part of the scene.
        """
        return dataclasses.replace(self, gaussian_sxy=self.gaussian_sxy * factor,
                                   bilateral_sxy=self.bilateral_sxy * factor)

    def for_size(self, height: int, width: int) -> CRFParams:
        """Return the parameters scaled to an image of ``height`` x ``width`` pixels."""
        return self.scaled(math.hypot(height, width) / math.hypot(*REFERENCE_SIZE))


DEFAULT_PARAMS = CRFParams()


# --------------------------------------------------------------------------- inference


# pydensecrf2 ships as source only and compiles C++ on install, so it is an optional extra.
INSTALL_HINT = ("pip install '.[crf]' from the repository (or pip install pydensecrf2==1.1); it "
                "compiles C++, so it needs a C++ compiler and the Python headers")


def available() -> bool:
    """Return whether the dense-CRF package (``pydensecrf2``) is installed."""
    import importlib.util

    return importlib.util.find_spec("pydensecrf") is not None


def densecrf():
    """Return the ``pydensecrf.densecrf`` module, or raise ``RuntimeError`` saying how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as error:
        raise RuntimeError(f"the dense CRF needs the optional package pydensecrf2 ({error}): "
                           f"{INSTALL_HINT}") from None
    return dcrf


def mean_field(image: np.ndarray, probabilities: np.ndarray,
               params: CRFParams | None = None) -> np.ndarray:
    """Return the CRF's marginals, float32 (C, H, W), for an image and class probabilities.

    ``image``: uint8 RGB (H, W, 3); ``probabilities``: float (C, H, W), e.g. a softmax.
    Deterministic: the same input gives the same output.
    """
    params = params or DEFAULT_PARAMS
    image = np.asarray(image)
    probabilities = np.asarray(probabilities)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if probabilities.ndim != 3 or probabilities.shape[1:] != image.shape[:2]:
        raise ValueError(f"probabilities must be (C, H, W) with H, W = {image.shape[:2]}, "
                         f"got {probabilities.shape}")
    dcrf = densecrf()
    num_classes, height, width = probabilities.shape
    unary = -np.log(np.clip(probabilities.astype(np.float32, copy=False), PROBABILITY_FLOOR, 1.0))
    crf = dcrf.DenseCRF2D(width, height, num_classes)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(num_classes, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.ascontiguousarray(image), compat=params.bilateral_compat)
    marginals = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    return marginals.reshape(num_classes, height, width)


def refine(image: np.ndarray, probabilities: np.ndarray,
           params: CRFParams | None = None) -> np.ndarray:
    """Return uint8 class ids (H, W): the most probable label after the dense CRF.

    ``image``: uint8 RGB (H, W, 3) at the resolution of ``probabilities`` (float32 (C, H, W),
    C <= 255). ``params`` default to :data:`DEFAULT_PARAMS`.
    """
    if np.asarray(probabilities).shape[0] > 255:
        raise ValueError("refine returns uint8 labels: at most 255 classes")
    return mean_field(image, probabilities, params).argmax(0).astype(np.uint8)


def refine_batch(images, probabilities, params: CRFParams | None = None) -> np.ndarray:
    """Return uint8 class ids (N, H, W) for images (N, H, W, 3) and probabilities (N, C, H, W)."""
    return np.stack([refine(image, probs, params)
                     for image, probs in zip(images, probabilities, strict=True)])


def softmax_probabilities(model, image: np.ndarray, dtype=None) -> np.ndarray:
    """Return float32 softmax probabilities (C, H, W) of a model for one uint8 RGB image,
    through the project's inference path (:func:`helpers.inference.predict_logits`)."""
    import torch

    from .inference import predict_logits
    from .transforms import to_tensor

    batch = to_tensor(image)[None]
    logits = predict_logits(model, batch, dtype=dtype)
    return torch.softmax(logits[0], dim=0).numpy()


def predict_with_crf(model, image: np.ndarray, params: CRFParams | None = None,
                     dtype=None) -> np.ndarray:
    """Return uint8 class ids (H, W) for one uint8 RGB image: model softmax, then the CRF."""
    return refine(image, softmax_probabilities(model, image, dtype), params)


def most_changed_window(before: np.ndarray, after: np.ndarray, height: int,
                        width: int) -> tuple[int, int]:
    """Return (top, left) of the ``height`` x ``width`` window where two label maps differ most
    (the first such window; (0, 0) when they are equal). Used to show a CRF's edits."""
    changed = (np.asarray(before) != np.asarray(after)).astype(np.int64)
    height, width = min(height, changed.shape[0]), min(width, changed.shape[1])
    integral = np.pad(changed.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (integral[height:, width:] - integral[:-height, width:]
            - integral[height:, :-width] + integral[:-height, :-width])
    top, left = np.unravel_index(np.argmax(sums), sums.shape)
    return int(top), int(left)


# --------------------------------------------------------------------------- parameter search


def candidate_params(count: int, seed: int = 0, iterations: int = 10) -> list[CRFParams]:
    """Return ``count`` parameter sets: the defaults first, then a seeded random search.

    Ranges cover the values published for DeepLab and Krähenbühl & Koltun: bilateral width
    20-160 px (log-uniform), colour width 3-15, weights 2-10 (bilateral) and 1-5 (Gaussian),
    Gaussian width 1-5 px. Values are rounded (one decimal) so a saved set reads well.
    """
    rng = np.random.default_rng(seed)
    candidates = [dataclasses.replace(DEFAULT_PARAMS, iterations=iterations)]
    while len(candidates) < count:
        candidates.append(CRFParams(
            gaussian_sxy=round(float(rng.uniform(1, 5)), 1),
            gaussian_compat=round(float(rng.uniform(1, 5)), 1),
            bilateral_sxy=round(float(np.exp(rng.uniform(np.log(20), np.log(160)))), 1),
            bilateral_srgb=round(float(rng.uniform(3, 15)), 1),
            bilateral_compat=round(float(rng.uniform(2, 10)), 1),
            iterations=iterations,
        ))
    return candidates[:count]


def miou_of(predictions, targets, num_classes: int) -> float:
    """Return the dataset-level mIoU (one confusion matrix, void ignored) of label maps."""
    import torch

    from .metrics import ConfusionMatrix

    confusion = ConfusionMatrix(num_classes)
    for pred, target in zip(predictions, targets, strict=True):
        confusion.update(torch.from_numpy(np.asarray(pred)), torch.from_numpy(np.asarray(target)))
    return confusion.compute()["miou"]


def search_params(samples, num_classes: int, candidates: list[CRFParams],
                  progress: bool = False) -> dict:
    """Return the search's outcome: the candidate with the highest mIoU on ``samples``.

    ``samples`` are ``(image uint8 (H, W, 3), probabilities (C, H, W), target (H, W))``
    triples from the validation split. Returns a dict: ``best`` (a :class:`CRFParams`),
    ``best_miou``, ``miou_without_crf`` (argmax of the same probabilities), ``trials``
    (params and mIoU of every candidate, in order) and ``seconds``. Ties go to the earlier
    candidate, so the outcome depends only on the samples and the candidate list.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    targets = [target for _, _, target in samples]
    baseline = miou_of([probs.argmax(0) for _, probs, _ in samples], targets, num_classes)
    trials = []
    for params in tqdm(candidates, desc="CRF search", disable=not progress, leave=False):
        predictions = [refine(image, probs, params) for image, probs, _ in samples]
        trials.append({"params": params.to_dict(), "miou": miou_of(predictions, targets, num_classes)})
    best = max(range(len(trials)), key=lambda i: (trials[i]["miou"], -i))
    return {
        "best": CRFParams.from_dict(trials[best]["params"]),
        "best_miou": trials[best]["miou"],
        "miou_without_crf": baseline,
        "trials": trials,
        "seconds": time.perf_counter() - started,
    }


def collect_samples(model, dataset, indices, dtype=None) -> list[tuple]:
    """Return ``(image, probabilities, target)`` triples for some images of a dataset.

    Images and masks come from ``dataset.load`` at native resolution; probabilities from the
    model through :func:`softmax_probabilities`.
    """
    samples = []
    for index in indices:
        image, mask = dataset.load(index)
        samples.append((image, softmax_probabilities(model, image, dtype), mask))
    return samples


def file_digest(path: str | Path) -> str:
    """Return the SHA-256 of a file (identifies the checkpoint a ``crf.json`` was chosen for)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def choose_params(checkpoint_path: str | Path, model, val_dataset, max_images: int = 16,
                  count: int = 8, seed: int = 0, iterations: int = 10, dtype=None,
                  progress: bool = True) -> dict:
    """Return the CRF parameters chosen on validation for a checkpoint, searching if needed.

    Scores ``count`` candidates (:func:`candidate_params` with ``seed``) on ``max_images``
    evenly spaced images of ``val_dataset`` by mIoU and writes ``crf.json`` next to the
    checkpoint (params, the search settings and every trial). A ``crf.json`` made for the same
    checkpoint file with the same settings is reused. The returned dict is the file's content
    with ``params`` as a :class:`CRFParams`.
    """
    from .datasets import evenly_spaced

    checkpoint_path = Path(checkpoint_path)
    path = checkpoint_path.parent / CRF_FILE
    settings = {"split": "val", "max_images": max_images, "count": count, "seed": seed,
                "iterations": iterations}
    digest = file_digest(checkpoint_path)
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("checkpoint_sha256") == digest and saved.get("search") == settings:
            return {**saved, "params": CRFParams.from_dict(saved["params"])}
    indices = evenly_spaced(range(len(val_dataset)), max_images)
    samples = collect_samples(model, val_dataset, indices, dtype)
    outcome = search_params(samples, model.num_classes,
                            candidate_params(count, seed, iterations), progress)
    record = {
        "params": outcome["best"].to_dict(),
        "checkpoint": checkpoint_path.name,
        "checkpoint_sha256": digest,
        "search": settings,
        "val_images": len(indices),
        "val_miou_with_crf": outcome["best_miou"],
        "val_miou_without_crf": outcome["miou_without_crf"],
        "trials": outcome["trials"],
        "seconds": outcome["seconds"],
    }
    write_json(path, record)
    return {**record, "params": outcome["best"]}


def params_for_checkpoint(checkpoint_path: str | Path) -> CRFParams:
    """Return the CRF parameters for a checkpoint: its ``crf.json`` if present, else the defaults.

    ``crf.json`` (next to the checkpoint) holds either ``{"params": {...}, ...}`` as written by
    :func:`choose_params` or a bare parameter dict. A file chosen for a different checkpoint
    (the checkpoint was retrained since) is ignored with a warning.
    """
    checkpoint_path = Path(checkpoint_path)
    path = checkpoint_path.parent / CRF_FILE
    if not path.is_file():
        return DEFAULT_PARAMS
    try:
        saved = json.loads(path.read_text())
        params = CRFParams.from_dict(saved.get("params", saved))
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a CRF parameter file ({error}); delete it to use the "
                         "defaults or rerun helpers.crf.choose_params") from error
    expected = saved.get("checkpoint_sha256")
    if expected and checkpoint_path.is_file() and file_digest(checkpoint_path) != expected:
        warnings.warn(f"{path} was chosen for another version of {checkpoint_path.name}; using the "
                      "default CRF parameters (rerun helpers.crf.choose_params)", stacklevel=2)
        return DEFAULT_PARAMS
    return params


# --------------------------------------------------------------------------- evaluation


def evaluate_with_crf(model, dataset, params: CRFParams | None = None, crf_indices=None,
                      dtype=None, boundary_tolerance: float | None = None, indices=None,
                      progress: bool = True, desc: str = "evaluate + CRF") -> dict:
    """Score a model on a dataset without and with the CRF, in one pass over the images.

    Every image listed in ``indices`` (default: all) goes through
    :func:`helpers.inference.predict_logits` once (batch of one, native resolution); the argmax
    is scored on all of them, the CRF (on the softmax) on those also in ``crf_indices``
    (default: all), where the argmax is scored separately too so the two are compared on the
    same images. Returns a dict with ``without_crf`` (all scored images),
    ``without_crf_subset`` and ``with_crf`` (the CRF images): each the
    :func:`helpers.metrics.summarize` keys plus ``per_image_miou``, ``boundary`` (a
    :class:`helpers.boundary.BoundaryScore` summary) and ``images``; plus ``forward_ms`` and
    ``crf_ms`` (median milliseconds per image), ``indices``, ``crf_indices`` and ``params``.
    """
    import torch
    from tqdm.auto import tqdm

    from . import metrics
    from .boundary import BoundaryScore
    from .inference import labels_from_logits, predict_logits
    from .transforms import to_tensor

    num_classes = model.num_classes
    names = list(dataset.classes.names) if hasattr(dataset, "classes") else None
    indices = list(range(len(dataset)) if indices is None else indices)
    crf_set = set(indices if crf_indices is None else crf_indices) & set(indices)
    parts = {key: {"confusion": metrics.ConfusionMatrix(num_classes),
                   "per_image": [], "boundary": BoundaryScore(num_classes, boundary_tolerance)}
             for key in ("without_crf", "without_crf_subset", "with_crf")}
    forward_times, crf_times = [], []

    def add(key, pred, target):
        part = parts[key]
        part["confusion"].update(pred, target)
        part["per_image"].append(metrics.per_image_confusion_matrices(pred[None], target[None],
                                                                      num_classes))
        part["boundary"].update(pred, target)

    was_training = model.training
    model.eval()
    for index in tqdm(indices, desc=desc, disable=not progress, leave=False):
        image, mask = dataset.load(index)
        target = torch.from_numpy(mask.astype(np.int64))
        batch = to_tensor(image)[None]
        started = time.perf_counter()
        logits = predict_logits(model, batch, dtype=dtype)
        pred = labels_from_logits(logits)[0].cpu()
        forward_times.append(time.perf_counter() - started)
        add("without_crf", pred, target)
        if index in crf_set:
            add("without_crf_subset", pred, target)
            started = time.perf_counter()
            probabilities = torch.softmax(logits[0], dim=0).cpu().numpy()
            refined = refine(image, probabilities, params)
            crf_times.append(time.perf_counter() - started)
            add("with_crf", torch.from_numpy(refined.astype(np.int64)), target)
    model.train(was_training)

    result = {}
    for key, part in parts.items():
        summary = part["confusion"].compute(names)
        summary["confusion_matrix"] = part["confusion"].matrix.tolist()
        summary["per_image_miou"] = (metrics.per_image_mean_iou(torch.cat(part["per_image"]))
                                     if part["per_image"] else math.nan)
        summary["boundary"] = part["boundary"].summary()
        summary["images"] = len(part["per_image"])
        result[key] = summary
    result["forward_ms"] = 1000 * float(np.median(forward_times)) if forward_times else math.nan
    result["crf_ms"] = 1000 * float(np.median(crf_times)) if crf_times else math.nan
    result["indices"] = indices
    result["crf_indices"] = sorted(crf_set)
    result["params"] = (params or DEFAULT_PARAMS).to_dict()
    return result


@dataclass(frozen=True)
class DeepLabCRFSettings:
    """What notebook 07 (DeepLabV3+ and the dense CRF, measured) runs in a profile; DeepLabV3+'s
    own training is its row of :data:`helpers.config.RECIPES`."""

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
    "smoke": DeepLabCRFSettings(search_images=2, search_candidates=2, crf_iterations=2,
                                crf_test_images=None, full_test_models=DEEPLAB_CRF_MODELS),
    # On 2 CPU cores: a small search (6 validation images, 4 parameter sets: about 8 s a model)
    # and the CRF on 24 test images (about 0.35 s each with the network). Only DeepLabV3+ is
    # scored on the whole test split here; the U-Nets' full-test scores come from notebooks 03
    # and 04.
    "quick": DeepLabCRFSettings(search_images=6, search_candidates=4, crf_iterations=5,
                                crf_test_images=24, full_test_models=("DeepLabV3+",)),
    "full": DeepLabCRFSettings(search_images=40, search_candidates=24, crf_iterations=10,
                               crf_test_images=None, full_test_models=DEEPLAB_CRF_MODELS),
}


def deeplab_crf_settings(config) -> DeepLabCRFSettings:
    """Return notebook 07's CRF settings for a configuration's profile."""
    return DEEPLAB_CRF_SETTINGS[config.profile]
