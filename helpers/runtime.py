"""The inference runtime: which engine runs the network, chosen by measuring them on this machine.

Which engine is fastest depends on the processor more than on the code: on a CPU with native
bf16 PyTorch in bf16 channels-last wins, on one without (where bf16 is emulated) onnxruntime in
float32 measured twice as fast as PyTorch's float32 (issue 10). So ``runtime="auto"`` times
the candidates once on a 360x480 image (CamVid's frame, the prediction command's working scale)
and keeps the fastest. The candidates:

* ``torch-fp32``: PyTorch, float32, channels-last;
* ``torch-bf16``: PyTorch, bf16 autocast, channels-last (only where the CPU has native bf16:
  emulated bf16 is never the fastest and costs seconds to time);
* ``torch-fp32-compiled``, ``torch-bf16-compiled``: the same through
  :func:`helpers.inference.compile_for_inference` (only with ``compile=True``: compiling takes
  tens of seconds per input shape, worth it for a server, not for one photo);
* ``onnx``: onnxruntime, float32, the model exported in memory (:mod:`helpers.export`);
* ``onnx-int8``: onnxruntime, int8, the artefact ``best.int8.onnx`` beside ``best.pt`` made by
  ``python -m helpers.quantize`` (:mod:`helpers.quantize`). ``auto`` times it only when
  its stored accuracy record (validation mIoU in int8 and float32) is within
  :data:`helpers.quantize.ACCURACY_BUDGET`, and says why it took or passed over it; a stale
  or corrupt artefact is passed over by ``auto`` (with the reason) and refused with a
  :class:`helpers.errors.CheckpointError` when forced.

The timings are cached per machine in ``runtimes.json`` under :func:`cache_dir`, keyed by the
CPU model and flags, the torch and onnxruntime versions, the thread count and the network's
configuration: a new machine, library or model is measured again; a corrupt or unreadable
cache is ignored (and rewritten), never fatal. ``torch`` (PyTorch in the precision
:func:`helpers.precision.choose_precision` gives) and every candidate name force a runtime.
On a GPU, ``auto`` is ``torch`` (the onnxruntime package here runs on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from .inference import (
    compile_for_inference,
    onnx_logits,
    pick_device,
    predict_logits,
    prepare_model,
)
from .precision import Precision, choose_precision, cpu_info

CANDIDATES = ("torch-fp32", "torch-bf16", "torch-fp32-compiled", "torch-bf16-compiled", "onnx",
              "onnx-int8")
RUNTIMES = ("auto", "torch", *CANDIDATES)
CACHE_FORMAT = "helpers-runtime-cache/1"
CACHE_FILE = "runtimes.json"
MEASURE_SIZE = (360, 480)


def cache_dir() -> Path:
    """Return the folder of the runtime cache: ``$SEG_CACHE_DIR``, else the user's cache folder.

    The user's cache folder is ``$XDG_CACHE_HOME/helpers-segmentation``, by default
    ``~/.cache/helpers-segmentation``.
    """
    if os.environ.get("SEG_CACHE_DIR"):
        return Path(os.environ["SEG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "helpers-segmentation"


@dataclass
class Runtime:
    """A loaded network behind one function: 0-1 images (N, 3, H, W) in, float32 logits out."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    dtype: torch.dtype | None
    classes: object
    model_name: str
    model: torch.nn.Module | None = None  # the PyTorch module (None for onnxruntime)
    session: object = None  # the onnxruntime session (None for PyTorch)
    precision: Precision | None = None
    choice: dict = field(default_factory=dict)  # how the runtime was chosen (see choose_runtime)
    int8: dict | None = None  # an int8 artefact's stored accuracy record (helpers.quantize)

    def logits(self, images: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
        """Return float32 logits (N, C, H, W); ``tta_flip`` averages the mirrored image's."""
        if tta_flip:
            return self.logits_with_and_without_flip(images)[1]
        return self.run(images).float()

    def logits_with_and_without_flip(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the logits of the images as they are, and averaged with their mirror's."""
        plain = self.run(images).float()
        return plain, 0.5 * (plain + self.run(images.flip(-1)).float().flip(-1))

    def describe(self) -> dict:
        """Return the runtime, its precision and how it was chosen (JSON-ready)."""
        precision = "int8" if self.int8 is not None else \
            str(self.dtype or torch.float32).replace("torch.", "")
        return {"runtime": self.name, "device": str(self.device), "precision": precision,
                "precision_reason": self.precision.reason if self.precision else "",
                "cpu": cpu_info().describe() if self.device.type == "cpu" else None,
                **({"int8_accuracy": self.int8} if self.int8 is not None else {}),
                **({"choice": self.choice} if self.choice else {})}


def load_runtime(name: str, checkpoint: str | Path, device: str | torch.device | None = None,
                 amp: str = "auto", threads: int | None = None) -> Runtime:
    """Return the :class:`Runtime` ``name`` (``torch``, ``onnx`` or a candidate) for a checkpoint.

    ``checkpoint`` is a ``.pt`` from :mod:`helpers.train` or, for ``onnx`` only, an ``.onnx``
    file (a ``.pt`` is exported in memory). ``amp`` is the precision of ``torch`` (see
    :func:`helpers.precision.choose_precision`); the candidates fix theirs.
    """
    checkpoint = Path(checkpoint)
    if name not in RUNTIMES or name == "auto":
        raise ValueError(f"runtime must be one of {RUNTIMES[1:]} here, not {name!r}")
    if name == "onnx-int8":
        return _load_int8(checkpoint, threads)
    if name == "onnx":
        from .export import classes_from_metadata, export_onnx, load_onnx
        from .quantize import is_int8

        source = checkpoint if checkpoint.suffix == ".onnx" else export_onnx(checkpoint)
        session, metadata = load_onnx(source, threads)
        if is_int8(metadata):  # an int8 file given as the model: checked as such
            return _load_int8(checkpoint, threads)
        return Runtime(name, lambda images: onnx_logits(session, images), torch.device("cpu"),
                       None, classes_from_metadata(metadata), metadata.get("model_name", ""),
                       session=session,
                       precision=Precision("cpu", None, False, "onnxruntime runs the float32 export"))
    from .checkpoint import load_model

    if checkpoint.suffix == ".onnx":
        raise ValueError(f"{checkpoint}: an ONNX file needs runtime 'onnx'")
    device = pick_device(device)
    model, info = load_model(checkpoint, device)
    model = prepare_model(model, device, channels_last=True)
    if name == "torch":
        precision = choose_precision(device, amp, model.name)
    else:
        precision = choose_precision(device, "bf16" if "bf16" in name else "off", model.name)
    network = compile_for_inference(model) if name.endswith("-compiled") else model

    def run(images: torch.Tensor) -> torch.Tensor:
        return predict_logits(network, images, dtype=precision.dtype)

    return Runtime(name, run, device, precision.dtype, info["classes"], model.name, model=model,
                   precision=precision)


def onnx_installed() -> bool:
    """Return whether the ``onnx`` extra (onnx and onnxruntime) is installed."""
    from importlib.util import find_spec

    return find_spec("onnx") is not None and find_spec("onnxruntime") is not None


def _load_int8(checkpoint: Path, threads: int | None) -> Runtime:
    """Return the ``onnx-int8`` runtime: the int8 artefact of ``checkpoint`` (or the file given)."""
    from .export import classes_from_metadata
    from .quantize import artefact_path, check_artefact, int8_record

    if checkpoint.suffix == ".onnx":
        session, metadata = check_artefact(checkpoint, threads=threads)
    else:
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
        session, metadata = check_artefact(artefact_path(checkpoint), checkpoint, threads)
    record = int8_record(metadata)
    reason = ("onnxruntime runs the int8 model" + (
        f" (validation mIoU {record['int8_miou']:.4f}, float32 {record['fp32_miou']:.4f})"
        if record else " (no accuracy record)"))
    return Runtime("onnx-int8", lambda images: onnx_logits(session, images), torch.device("cpu"),
                   None, classes_from_metadata(metadata), metadata.get("model_name", ""),
                   session=session, precision=Precision("cpu", None, False, reason),
                   int8=record or {})


def int8_candidate(checkpoint: str | Path) -> tuple[bool, dict]:
    """Return ``(considered, note)``: whether ``auto`` may time the checkpoint's int8 artefact.

    Only an artefact that loads, is not stale and whose stored accuracy loss is within
    :data:`helpers.quantize.ACCURACY_BUDGET` is considered; ``note`` says which file and why.
    """
    from .errors import CheckpointError
    from .quantize import artefact_path, check_artefact, file_sha256, int8_record, within_budget

    path = artefact_path(checkpoint)
    if not path.is_file():
        return False, {}
    note = {"artefact": str(path)}
    if not onnx_installed():
        return False, {**note, "considered": False,
                       "reason": f"{path.name}: onnxruntime is not installed (pip install '.[onnx]')"}
    try:
        _, metadata = check_artefact(path, checkpoint, threads=1)
    except CheckpointError as error:
        return False, {**note, "considered": False, "reason": str(error)}
    usable, reason = within_budget(int8_record(metadata))
    note.update(considered=usable, reason=f"{path.name}: {reason}")
    if usable:
        note["sha256"] = file_sha256(path)
    return usable, note


def candidates_for(device: torch.device, compile: bool = False) -> list[str]:
    """Return the runtimes worth timing on ``device`` (see the module docstring)."""
    if device.type != "cpu":
        return ["torch"]
    names = ["torch-fp32"]
    if onnx_installed():  # an optional extra: pip install '.[onnx]'
        names.append("onnx")
    if cpu_info().native_bf16:
        names.insert(1, "torch-bf16")
    if compile:
        names += [f"{name}-compiled" for name in names if name.startswith("torch")]
    return names


def cache_key(checkpoint: str | Path, candidates: list[str], threads: int | None = None,
              int8_sha256: str | None = None) -> dict:
    """Return what a cached measurement is valid for: this machine, its libraries, this network.

    The network's configuration (name, classes, widths), not its weights: a retrained model of
    the same configuration runs at the same speed. An int8 artefact is identified by its
    ``int8_sha256`` (which layers it keeps in float32 changes its speed).
    """
    from .checkpoint import read_checkpoint

    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    cpu = cpu_info()
    spec = read_checkpoint(checkpoint)["model"]
    key = {
        "cpu": cpu.model,
        "cpu_flags": hashlib.sha256(" ".join(sorted(cpu.flags)).encode()).hexdigest()[:16],
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "threads": threads or torch.get_num_threads(),
        "model": {k: spec.get(k) for k in ("name", "num_classes", "width", "output_stride",
                                           "decoder_channels")},
        "input": list(MEASURE_SIZE),
        "candidates": list(candidates),
        **({"int8": int8_sha256} if int8_sha256 else {}),
    }
    return json.loads(json.dumps(key))  # as it reads back from the cache (tuples become lists)


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def read_cache(path: Path, fmt: str = CACHE_FORMAT) -> dict:
    """Return the cache's entries by key id; an absent, corrupt or foreign file gives ``{}``.

    ``fmt`` is the format name the file must carry (another cache's file is ignored).
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"{path}: unreadable cache ignored ({error})", stacklevel=2)
        return {}
    if not isinstance(data, dict) or data.get("format") != fmt \
            or not isinstance(data.get("entries"), dict):
        warnings.warn(f"{path}: not a {fmt} cache, ignored", stacklevel=2)
        return {}
    return data["entries"]


def write_cache(path: Path, entries: dict, fmt: str = CACHE_FORMAT) -> None:
    """Write the cache atomically; a failure (read-only home...) only warns."""
    from .files import write_json

    try:
        write_json(path, {"format": fmt, "entries": entries})
    except OSError as error:
        warnings.warn(f"{path}: cache not written ({error})", stacklevel=2)


def measure(runtimes: dict[str, Runtime], repetitions: int = 5, warmup: int = 2) -> dict[str, float]:
    """Return each runtime's median milliseconds for one 360x480 image, the runtimes taking turns.

    Taking turns spreads any drift of a shared machine over all of them alike.
    """
    image = torch.rand(1, 3, *MEASURE_SIZE)
    runtimes = dict(runtimes)
    with torch.inference_mode():
        for name, runtime in list(runtimes.items()):
            try:  # compilation happens here, at the first call
                for _ in range(warmup + (2 if name.endswith("-compiled") else 0)):
                    runtime.logits(image)
            except Exception as error:
                if len(runtimes) == 1:
                    raise
                warnings.warn(f"runtime {name} left out: {type(error).__name__}: {error}",
                              stacklevel=2)
                del runtimes[name]
        times: dict[str, list[float]] = {name: [] for name in runtimes}
        for _ in range(repetitions):
            for name, runtime in runtimes.items():
                started = time.perf_counter()
                runtime.logits(image)
                times[name].append(1000 * (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in times.items()}


def choose_runtime(checkpoint: str | Path, device: str | torch.device | None = None,
                   compile: bool = False, threads: int | None = None, cache: Path | None = None,
                   progress: bool = True, loaded: dict | None = None,
                   int8: bool = True) -> tuple[str, dict]:
    """Return ``(name, record)``: the fastest runtime measured on this machine for a checkpoint.

    The record holds the timings (ms for one 360x480 image), the CPU, whether they came from the
    cache, and the cache key. Measures at most once per machine, library versions and network
    configuration (the cache); ``progress`` prints the timings when it measures. ``loaded``,
    a dict, receives the runtimes loaded for measuring (by name), for the caller to reuse.
    An int8 artefact beside the checkpoint is timed only when :func:`int8_candidate` accepts
    it (and ``int8`` is true); the record's ``int8`` entry says why it was or was not.
    """
    device = pick_device(device)
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        return "onnx", {"reason": "an ONNX file runs only with onnxruntime"}
    names = candidates_for(device, compile)
    if names == ["torch"]:
        return "torch", {"reason": f"{device.type}: PyTorch (onnxruntime runs on the CPU here)"}
    int8_usable, int8_note = int8_candidate(checkpoint) if int8 else (False, {})
    if int8_note and not int8_usable and progress:
        print(f"int8 model not considered: {int8_note['reason']}", flush=True)
    if int8_usable:
        names.append("onnx-int8")
    extra = {"int8": int8_note} if int8_note else {}
    path = (cache or cache_dir()) / CACHE_FILE
    key = cache_key(checkpoint, names, threads, int8_note.get("sha256"))
    key_id = _key_id(key)
    entries = read_cache(path)
    entry = entries.get(key_id)
    if isinstance(entry, dict) and entry.get("key") == key and entry.get("fastest") in names:
        return entry["fastest"], {**entry, **extra, "cached": True, "cache": str(path)}
    if progress:
        print(f"timing inference runtimes on this machine ({', '.join(names)}; once, cached in "
              f"{path})", flush=True)
    runtimes = {}
    for name in names:
        try:
            runtimes[name] = load_runtime(name, checkpoint, device, threads=threads)
        except Exception as error:  # an export or compilation this network does not support
            if name == "torch-fp32":
                raise
            warnings.warn(f"runtime {name} left out for {checkpoint}: {type(error).__name__}: "
                          f"{error}", stacklevel=2)
    timings = measure(runtimes)
    if loaded is not None:
        loaded.update(runtimes)
    fastest = min(timings, key=timings.get)
    entry = {"key": key, "timings_ms": {k: round(v, 2) for k, v in timings.items()},
             "fastest": fastest, "cpu": cpu_info().describe(),
             "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if progress:
        print("  " + ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items()) + f" -> {fastest}",
              flush=True)
    entries[key_id] = entry
    write_cache(path, entries)
    return fastest, {**entry, **extra, "cached": False, "cache": str(path)}


def open_runtime(runtime: str, checkpoint: str | Path, device: str | torch.device | None = None,
                 amp: str = "auto", threads: int | None = None, compile: bool = False,
                 progress: bool = True, int8: bool = True) -> Runtime:
    """Return a loaded :class:`Runtime`: ``auto`` picks the fastest measured, any other name forces it.

    ``int8=False`` keeps ``auto`` from considering the checkpoint's int8 model (scoring a
    checkpoint measures the checkpoint itself).
    """
    choice, measured = {"forced": True}, {}
    if runtime == "auto":
        if amp != "auto":  # a forced precision means PyTorch in that precision
            runtime, choice = "torch", {"reason": f"amp={amp!r} forces PyTorch in that precision"}
        else:
            runtime, choice = choose_runtime(checkpoint, device, compile, threads,
                                             progress=progress, loaded=measured, int8=int8)
            if runtime == "onnx-int8" and progress and choice.get("int8"):
                print(f"int8 model chosen, the fastest measured here: {choice['int8']['reason']}",
                      flush=True)
    loaded = measured.get(runtime) or load_runtime(runtime, checkpoint, device, amp, threads)
    loaded.choice = choice
    return loaded
