"""Predict class masks for photos of any size: the API behind the command line and the web app.

:class:`Predictor` loads a checkpoint (or an exported ONNX model) once and turns photos into
:class:`Prediction` objects: a class-id mask at the photo's full size (after its EXIF
orientation), each class's share of the picture and the time taken.

Large photos (a 12-megapixel phone photo is 25 times CamVid's 480x360) use one of two
strategies, both with bounded memory:

* ``resize`` (default): JPEGs are decoded at reduced scale (PIL's draft mode), the network runs
  once with the long side at ``--max-side`` (480: CamVid's scale, where objects have the sizes
  the network was trained on), and its logits are upsampled to the full size in horizontal
  bands (:func:`helpers.inference.upsample_labels`).
* ``tile`` (``--tile SIZE``): the network slides a SIZE x SIZE window over a larger working
  scale (long side ``--max-side``, default 960) with overlapping windows blended by Hann
  weights (:func:`helpers.inference.predict_tiled`). Finer detail (poles, signs, distant
  people), at the cost of several network passes and objects larger than in training.

``--crf`` refines the labels with a dense CRF (:mod:`helpers.crf`) at the working scale; the
refined labels are then upsampled by nearest neighbour.

Command line::

    python -m helpers.predict PHOTO_OR_FOLDER... --checkpoint runs/quick/unet-effnet-lite0/best.pt \\
        --out predictions [--tile 384] [--crf] [--runtime auto|torch|onnx|...] [--json]

The network runs on the runtime measured fastest on this machine (``--runtime auto``, timed
once per machine and model configuration and cached: :mod:`helpers.runtime`); ``--runtime``
forces one and ``--amp`` forces PyTorch's precision. ``auto`` also times the int8 model
``best.int8.onnx`` beside the checkpoint (``python -m helpers.quantize``) when its stored
accuracy loss is within budget, and says so when it picks it; ``--runtime onnx-int8`` forces
it. ``--runtime onnx`` runs an exported model with onnxruntime: give the ``.onnx`` file from
:mod:`helpers.export` as ``--checkpoint``, or a ``.pt`` checkpoint, which is then exported in
memory at start-up (a few seconds).

For each photo it writes ``<stem>_mask.png`` (8-bit, one channel, class ids, full size) and
``<stem>_overlay.jpg`` (the colours over the photo with a legend, long side at most
``--overlay-max-side``, 0 = full size), and prints each class's share of the pixels. A file
that cannot be read is reported and skipped; the exit status is 1 if any failed.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Idle OpenMP threads sleep instead of spinning. On a CPU shared with other work (or with
    # the resizing of the next photo) spinning threads starve the busy ones: measured 2.3 s
    # instead of 0.13 s per network pass on 2 busy cores. Read once, when torch loads OpenMP.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from .files import write_bytes
from .imageio import (
    DEFAULT_MAX_DECODE_BYTES,
    IMAGE_SUFFIXES,
    decode_photo,
    encode_jpeg,
    encode_png,
    resize_image,
    working_size,
)
from .inference import (
    predict_tiled,
    resize_labels_nearest,
    upsample_labels,
)
from .labels import ClassInfo
from .runtime import RUNTIMES
from .transforms import to_tensor

# Long side of the working scale: CamVid's 480 for one pass; twice that for sliding windows.
DEFAULT_MAX_SIDE = 480
DEFAULT_TILE_MAX_SIDE = 960
DEFAULT_OVERLAP = 0.25
# Overlays are for looking at: 1600 pixels keep them sharp on a screen, and a 12 MP JPEG then
# decodes at half scale (4x fewer pixels to decode, blend and write).
DEFAULT_OVERLAY_MAX_SIDE = 1600
# Larger images are refused before decoding (a decompression bomb decodes to gigabytes).
# 60 MP admits every phone camera's photos and stays under PIL's own bomb warning (89 MP).
DEFAULT_MAX_PIXELS = 60_000_000


@dataclass
class Prediction:
    """The result of one photo: a full-size class-id mask and what the picture is made of."""

    mask: np.ndarray  # (H, W) uint8 class ids at the photo's full size after EXIF orientation
    classes: ClassInfo
    shares: np.ndarray  # (num_classes,) fraction of the picture's pixels per class, sums to 1
    inference_ms: float  # the network alone (all windows in tile mode)
    total_ms: float  # decoding (when given a file), resizing, network, upsampling, CRF
    image: np.ndarray  # the photo as decoded, RGB uint8; smaller than the mask for large JPEGs
    mode: str  # "resize" or "tile"
    working_size: tuple[int, int]  # (height, width) the network saw
    crf: bool = False
    timings: dict = field(default_factory=dict)  # milliseconds per step

    @property
    def height(self) -> int:
        return int(self.mask.shape[0])

    @property
    def width(self) -> int:
        return int(self.mask.shape[1])

    def share_by_class(self) -> dict[str, float]:
        """Return each class's share of the picture's pixels (0-1), by class name."""
        return {name: float(share) for name, share in zip(self.classes.names, self.shares, strict=True)}

    def overlay(self, max_side: int | None = DEFAULT_OVERLAY_MAX_SIDE, alpha: float = 0.5,
                legend: bool = True) -> np.ndarray:
        """Return the photo blended with the class colours, RGB uint8, long side at most ``max_side``.

        ``max_side`` None or 0 means the full mask size. ``legend`` draws the classes present
        with their shares in the top-left corner.
        """
        from .plots import blend_colors, draw_legend

        size = (self.height, self.width)
        if max_side:
            size = working_size(self.height, self.width, max_side)
        image = resize_image(self.image, size)
        mask = resize_labels_nearest(self.mask, size)
        picture = blend_colors(image, mask, self.classes, alpha)
        if legend:
            draw_legend(picture, self.classes, self.shares)
        return picture

    def summary(self) -> dict:
        """Return a JSON-ready summary: size, mode, timings and shares."""
        return {
            "width": self.width, "height": self.height, "mode": self.mode,
            "working_size": list(self.working_size), "crf": self.crf,
            "inference_ms": round(self.inference_ms, 1), "total_ms": round(self.total_ms, 1),
            "shares": {k: round(v, 5) for k, v in self.share_by_class().items()},
        }


# --------------------------------------------------------------------------- the predictor


class Predictor:
    """A model loaded once, turning RGB photos into full-size class masks.

    ``checkpoint`` is a ``best.pt`` from :mod:`helpers.train`, or with ``runtime="onnx"`` an
    ``.onnx`` file from :mod:`helpers.export` (a ``.pt`` is then exported in memory first).
    ``max_side``, ``tile`` and ``overlap`` are the defaults of :meth:`predict` (see the module
    docstring). Safe to share between threads: network calls take a lock (one at a time keeps
    memory bounded and the cores to one computation); resizing, upsampling and drawing run in
    parallel.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None, runtime: str = "auto",
                 amp: str = "auto", max_side: int | None = None, tile: int | None = None,
                 overlap: float = DEFAULT_OVERLAP, batch_size: int = 4, threads: int | None = None,
                 compile: bool = False, progress: bool = True):
        from .runtime import open_runtime

        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"{self.checkpoint}: no such checkpoint (train one with "
                                    "python -m helpers.train, or give the path of a best.pt)")
        self.max_side, self.tile, self.overlap = max_side, tile, overlap
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._crf_params = None
        loaded = open_runtime(runtime, self.checkpoint, device, amp, threads, compile, progress)
        self.runtime_info = loaded
        self.runtime = loaded.name
        self.device, self.dtype = loaded.device, loaded.dtype
        self.model, self.session = loaded.model, loaded.session
        self.classes: ClassInfo = loaded.classes
        self.model_name = loaded.model_name
        self._logits = loaded.run

    def describe(self) -> dict:
        """Return what is loaded: model, runtime, precision (and why), classes with colours."""
        return {"model": self.model_name, "checkpoint": self.checkpoint.name,
                **self.runtime_info.describe(),
                "classes": [{"name": n, "color": list(c)}
                            for n, c in zip(self.classes.names, self.classes.colors, strict=True)]}

    def warmup(self) -> None:
        """Run the network once per orientation of a 4:3 photo at the default working scale.

        The first call at a new input size is several times slower (kernel selection, bf16
        weight packing); a server calls this before taking requests.
        """
        for height, width in (360, 480), (480, 360):
            self.predict(np.zeros((height, width, 3), dtype=np.uint8))

    def _timed_logits(self, images: torch.Tensor, spent: list[float]) -> torch.Tensor:
        with self._lock, torch.inference_mode():
            start = time.perf_counter()
            logits = self._logits(images).float().cpu()
            spent.append(1000 * (time.perf_counter() - start))
        return logits

    def crf_params(self):
        """Return the CRF parameters for this checkpoint (:func:`helpers.crf.params_for_checkpoint`)."""
        crf = _crf_module()
        if self._crf_params is None:
            self._crf_params = crf.params_for_checkpoint(self.checkpoint)
        return self._crf_params

    def predict(self, image: np.ndarray, size: tuple[int, int] | None = None, crf: bool = False,
                tile: int | None = None, max_side: int | None = None) -> Prediction:
        """Return the :class:`Prediction` for an RGB uint8 image (h, w, 3).

        ``size`` is the full (H, W) of the photo when ``image`` is a reduced decode of it
        (same aspect ratio); the mask has that size. ``tile`` (window side in pixels) selects
        sliding windows; ``max_side`` overrides the working scale.
        """
        start = time.perf_counter()
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        image = np.ascontiguousarray(image)
        size = tuple(size or image.shape[:2])
        tile = self.tile if tile is None else tile
        max_side = max_side or self.max_side or (DEFAULT_TILE_MAX_SIDE if tile else DEFAULT_MAX_SIDE)
        working = resize_image(image, working_size(*size, max_side))
        tensor = to_tensor(working)
        spent: list[float] = []
        timings = {"resize": 1000 * (time.perf_counter() - start)}
        logits_fn = partial(self._timed_logits, spent=spent)
        if tile:
            scores = predict_tiled(logits_fn, tensor, tile, self.overlap, self.batch_size)
        else:
            scores = logits_fn(tensor[None])[0]
        timings["network"] = sum(spent)
        step = time.perf_counter()
        if crf:
            crf_module = _crf_module()
            probabilities = scores if tile else scores.softmax(0)
            params = self.crf_params()
            if hasattr(params, "for_size"):  # widths are given for a 360x480 frame
                params = params.for_size(*working.shape[:2])
            labels = crf_module.refine(working, probabilities.numpy().astype(np.float32), params)
            mask = resize_labels_nearest(np.asarray(labels, dtype=np.uint8), size)
        else:
            mask = upsample_labels(scores, size)
        counts = class_counts(mask, self.classes.num_classes)
        timings["upsample" if not crf else "crf_and_upsample"] = 1000 * (time.perf_counter() - step)
        return Prediction(
            mask=mask, classes=self.classes,
            shares=counts / max(1, mask.size),
            inference_ms=timings["network"], total_ms=1000 * (time.perf_counter() - start),
            image=image, mode="tile" if tile else "resize", working_size=working.shape[:2],
            crf=crf, timings=timings)

    def predict_file(self, source, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                     overlay_max_side: int | None = DEFAULT_OVERLAY_MAX_SIDE, crf: bool = False,
                     tile: int | None = None, max_side: int | None = None,
                     max_decode_bytes: int | None = DEFAULT_MAX_DECODE_BYTES) -> Prediction:
        """Return the :class:`Prediction` for a photo file (path, bytes or file object).

        The photo is decoded only as large as the network and an overlay of
        ``overlay_max_side`` need (0 or None: full size); the mask is always full size.
        Raises :class:`~helpers.errors.PhotoError` (a ``ValueError``) for a file that is not a
        photo in an accepted format or cannot be read, :class:`ImageTooLarge` over
        ``max_pixels`` or when decoding would take more memory than allowed
        (:func:`helpers.imageio.decode_photo`).
        """
        start = time.perf_counter()
        tile = self.tile if tile is None else tile
        needed = max_side or self.max_side or (DEFAULT_TILE_MAX_SIDE if tile else DEFAULT_MAX_SIDE)
        decode_side = max(needed, overlay_max_side) if overlay_max_side else None
        image, full_size = decode_photo(source, max_pixels, decode_side, max_decode_bytes)
        decoded = time.perf_counter()
        prediction = self.predict(image, full_size, crf=crf, tile=tile, max_side=max_side)
        prediction.timings = {"decode": 1000 * (decoded - start), **prediction.timings}
        prediction.total_ms = 1000 * (time.perf_counter() - start)
        return prediction


def class_counts(mask: np.ndarray, num_classes: int, band_rows: int = 512) -> np.ndarray:
    """Return the pixel count of each class id in a (H, W) uint8 mask, length ``num_classes``.

    Counted in bands: ``np.bincount`` copies its input to 64-bit integers, 8 bytes per pixel.
    """
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, mask.shape[0], band_rows):
        counts += np.bincount(mask[start:start + band_rows].ravel(), minlength=256)
    return counts[:num_classes]


def _crf_module():
    try:
        from . import crf
    except ImportError as error:
        raise RuntimeError(f"CRF refinement needs helpers/crf.py and pydensecrf2 ({error})") from error
    crf.densecrf()  # a clear error, with how to install it, when pydensecrf2 is missing
    return crf


# --------------------------------------------------------------------------- command line


def collect_photos(paths: list[str]) -> list[Path]:
    """Return the photos named on the command line: files as given, folders' images (sorted).

    Files are kept whatever their suffix (an unreadable one is reported when read); folders
    contribute their files with an image suffix, not recursively. Raises FileNotFoundError
    for a path that does not exist.
    """
    photos: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            photos.extend(sorted(p for p in path.iterdir()
                                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            photos.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return photos


def output_stems(photos: list[Path]) -> list[str]:
    """Return one output name per photo: its stem, with ``-2``, ``-3`` ... when stems repeat."""
    seen: dict[str, int] = {}
    stems = []
    for photo in photos:
        count = seen.get(photo.stem, 0) + 1
        seen[photo.stem] = count
        stems.append(photo.stem if count == 1 else f"{photo.stem}-{count}")
    return stems


def write_outputs(prediction: Prediction, out_dir: Path, stem: str,
                  overlay_max_side: int | None = DEFAULT_OVERLAY_MAX_SIDE) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` (class ids) and ``<stem>_overlay.jpg``; return their paths."""
    mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.jpg"
    write_bytes(mask_path, encode_png(prediction.mask))
    write_bytes(overlay_path, encode_jpeg(prediction.overlay(overlay_max_side)))
    return mask_path, overlay_path


def format_shares(prediction: Prediction, min_share: float = 0.001) -> str:
    """Return the classes covering at least ``min_share`` of the picture, largest first."""
    shares = sorted(prediction.share_by_class().items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares if share >= min_share)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos and/or folders of photos")
    parser.add_argument("--checkpoint", required=True,
                        help="best.pt from helpers.train (or a .onnx file with --runtime onnx)")
    parser.add_argument("--out", required=True, help="folder for the masks and overlays")
    parser.add_argument("--runtime", choices=RUNTIMES, default="auto",
                        help="auto: the fastest measured on this machine (timed once, cached; "
                             "the int8 model beside the checkpoint only within its accuracy "
                             "budget); torch, onnx, onnx-int8 or a timed variant forces it")
    parser.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default="auto",
                        help="PyTorch's precision (auto: bf16 only with native bf16 units); "
                             "forcing one runs PyTorch")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd variants (tens of seconds to compile; "
                             "pays off over many photos)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: best available)")
    parser.add_argument("--max-side", type=int, default=None,
                        help=f"long side of the working scale (default {DEFAULT_MAX_SIDE}, "
                             f"{DEFAULT_TILE_MAX_SIDE} with --tile)")
    parser.add_argument("--tile", type=int, default=None, metavar="SIZE",
                        help="sliding windows of SIZE pixels at the working scale, e.g. 384")
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                        help="overlap of neighbouring windows, a fraction of SIZE")
    parser.add_argument("--crf", action="store_true", help="refine the labels with a dense CRF")
    parser.add_argument("--overlay-max-side", type=int, default=DEFAULT_OVERLAY_MAX_SIDE,
                        help="long side of the overlay picture (0 = the photo's full size)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="refuse larger images (decompression-bomb guard)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        photos = collect_photos(args.paths)
        predictor = Predictor(args.checkpoint, device=args.device, runtime=args.runtime,
                              amp=args.amp, max_side=args.max_side, tile=args.tile,
                              overlap=args.overlap, threads=args.threads, compile=args.compile,
                              progress=not args.json)
        if args.crf:
            predictor.crf_params()  # fail now, not on every photo, when the CRF is unavailable
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not photos:
        print("error: no photos found in " + ", ".join(args.paths), file=sys.stderr)
        return 2
    if not args.json:
        info = predictor.describe()
        how = ("forced" if info.get("choice", {}).get("forced")
               else "the fastest measured on this machine")
        print(f"network: {info['runtime']} in {info['precision']} ({how})", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, failures = [], 0
    bar = tqdm(list(zip(photos, output_stems(photos), strict=True)), desc="predicting",
               unit="photo", disable=args.no_progress or len(photos) < 2, file=sys.stderr)
    for photo, stem in bar:
        try:
            prediction = predictor.predict_file(photo, args.max_pixels, args.overlay_max_side,
                                                crf=args.crf)
            mask_path, overlay_path = write_outputs(prediction, out_dir, stem, args.overlay_max_side)
        except (ValueError, OSError) as error:
            failures += 1
            results.append({"file": str(photo), "error": str(error)})
            tqdm.write(f"{photo}: skipped: {error}", file=sys.stderr)
            continue
        results.append({"file": str(photo), "mask": str(mask_path), "overlay": str(overlay_path),
                        **prediction.summary()})
        if not args.json:
            tqdm.write(f"{photo} ({prediction.width}x{prediction.height}, "
                       f"{prediction.total_ms:.0f} ms): {format_shares(prediction)}")
    bar.close()
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "runtime": predictor.describe()["runtime"],
                          "precision": predictor.describe()["precision"],
                          "classes": predictor.classes.to_dict()["classes"],
                          "photos": results, "failed": failures}, indent=2))
    elif failures:
        print(f"{failures} of {len(photos)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
