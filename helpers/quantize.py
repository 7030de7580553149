"""int8 on the CPU: a checkpoint quantized for onnxruntime, with its accuracy measured and stored.

Quantization stores a convolution's weights as 8-bit integers (one scale per output channel)
and its input activations as 8-bit integers with one scale and zero point per tensor, found by
*calibration*: running training images through the float32 network and recording the range of
every activation. The CPU's int8 units (AVX512-VNNI, AMX) then multiply four times as many
values per instruction as in float32 and read a quarter of the memory.

The artefact is an ONNX file in the QDQ format (QuantizeLinear/DequantizeLinear pairs around
the quantized operators, which onnxruntime fuses into int8 kernels), made by
:func:`quantize_checkpoint`, by default ``best.int8.onnx`` beside ``best.pt`` where
``--runtime auto`` finds it:

* calibration on training images only (evenly spaced over CamVid's videos), never validation
  or test;
* the first convolution (it sees the raw image) kept in float32 (:data:`KEEP_FLOAT`); the
  segmentation head in int8 with its output channels padded to 16 (:func:`pad_head_channels`:
  an 11-channel int8 convolution is slow in onnxruntime), which lost no validation accuracy;
  keeping more in float32 (the head, depthwise convolutions, upsampling) gained no accuracy
  here (docs/int8.md);
* both the float32 export and the int8 model scored on the validation split; the two mIoU,
  the calibration and the SHA-256 of the source checkpoint are stored in the file's metadata.

:func:`int8_record` reads that record back and :func:`check_artefact` refuses a file that is
not an int8 artefact (:class:`helpers.errors.CheckpointError`) or whose checkpoint changed
since the export (:class:`StaleArtefactError`). :mod:`helpers.runtime` offers the artefact to
``--runtime auto`` only when its stored loss is within :data:`ACCURACY_BUDGET`.

Command line::

    python -m helpers.quantize --checkpoint runs/quick/unet-effnet-lite0/best.pt
        [--out FILE] [--calibration-images 32] [--keep-float stem] [--calibration-method minmax]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoint import read_checkpoint
from .errors import CheckpointError
from .export import OPSET, export_onnx, load_onnx
from .files import write_bytes
from .inference import labels_from_logits, onnx_logits, pad_to_stride
from .metrics import ConfusionMatrix

FORMAT = "helpers-segmentation-onnx-int8/1"
# The most validation mIoU an int8 artefact may lose against float32 and still be chosen by
# --runtime auto (the project's accuracy target: 0.005 on the test split).
ACCURACY_BUDGET = 0.005
CALIBRATION_IMAGES = 32
CALIBRATION_METHOD = "minmax"
# Layers kept in float32, by kind (see excluded_nodes); benchmarks/int8_candidates.py measures
# the choices (docs/int8.md). The head runs in int8 with its output channels padded to
# HEAD_CHANNEL_MULTIPLE (pad_head_channels).
KEEP_FLOAT = ("stem",)
HEAD_CHANNEL_MULTIPLE = 16
LAYER_KINDS = ("stem", "head", "depthwise", "upsampling")
SUFFIX = ".int8.onnx"


class StaleArtefactError(CheckpointError):
    """An int8 artefact whose source checkpoint has changed since it was exported."""


def artefact_path(checkpoint: str | Path) -> Path:
    """Return where the int8 artefact of a checkpoint lives: ``best.pt`` -> ``best.int8.onnx``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def excluded_nodes(model, keep_float: tuple[str, ...] = KEEP_FLOAT) -> list[str]:
    """Return the names of the nodes of an ONNX model to keep in float32.

    ``keep_float`` names kinds of layer: ``stem`` (the first convolution, on the raw image),
    ``head`` (the last convolution, the logits), ``depthwise`` (convolutions with one group per
    channel) and ``upsampling`` (the decoder's ``Resize``).
    """
    unknown = set(keep_float) - set(LAYER_KINDS)
    if unknown:
        raise ValueError(f"unknown layer kinds {sorted(unknown)}: choose from {LAYER_KINDS}")
    convolutions = [node for node in model.graph.node if node.op_type == "Conv"]
    names = []
    if "stem" in keep_float and convolutions:
        names.append(convolutions[0].name)
    if "head" in keep_float and convolutions:
        names.append(convolutions[-1].name)
    if "depthwise" in keep_float:
        names += [node.name for node in convolutions
                  if any(a.name == "group" and a.i > 1 for a in node.attribute)]
    if "upsampling" in keep_float:
        names += [node.name for node in model.graph.node if node.op_type == "Resize"]
    return names


def fuse_pad_into_conv(model) -> int:
    """Fold zero ``Pad`` nodes into the convolutions they feed (ONNX ``Conv`` takes asymmetric
    pads); return how many were folded.

    The encoder's "same" padding (:func:`helpers.export.fix_same_padding`) exports as a ``Pad``
    before each strided convolution: in an int8 graph that ``Pad`` would run in float32 between
    a dequantization and a quantization, and cost more than the convolution after it.
    """
    from onnx import helper, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in model.graph.output}
    folded = []
    for node in model.graph.node:
        if node.op_type != "Pad" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        value = node.input[2] if len(node.input) > 2 else ""
        if mode != "constant" or (value and (value not in initializers or numpy_helper.to_array(
                initializers[value]).any())) or (len(node.input) > 3 and node.input[3]):
            continue
        pads = numpy_helper.to_array(initializers[node.input[1]]).tolist()
        users = consumers.get(node.output[0], [])
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or node.output[0] in outputs \
                or not users or any(u.op_type != "Conv" or u.input[0] != node.output[0] for u in users):
            continue
        for conv in users:
            existing = next((list(a.ints) for a in conv.attribute if a.name == "pads"), [0, 0, 0, 0])
            merged = [existing[0] + pads[2], existing[1] + pads[3], existing[2] + pads[6],
                      existing[3] + pads[7]]
            for attribute in [a for a in conv.attribute if a.name in ("pads", "auto_pad")]:
                conv.attribute.remove(attribute)
            conv.attribute.append(helper.make_attribute("pads", merged))
            conv.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    return len(folded)


def pad_head_channels(model, multiple: int = HEAD_CHANNEL_MULTIPLE) -> int:
    """Give the last convolution (the head) a multiple of ``multiple`` output channels, then
    slice the logits back to the classes; return how many channels were added.

    onnxruntime's int8 convolution is fast for channel counts that fill its vector registers and
    slow otherwise: with CamVid's 11-channel head in int8 the whole network took 37.5 ms at
    384x480, with the head padded to 16 channels 32.9 ms (the extra filters are zeros, their
    logits sliced off before any argmax), on 2 Xeon cores (docs/int8.md). The float32 logits are
    unchanged.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    if not convolutions:
        return 0
    head = convolutions[-1]
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    if head.input[1] not in initializers:
        return 0
    weight = numpy_helper.to_array(initializers[head.input[1]])
    classes = weight.shape[0]
    padded = -(-classes // multiple) * multiple
    if padded == classes:
        return 0
    for name in head.input[1:3]:
        values = numpy_helper.to_array(initializers[name])
        wider = np.zeros((padded,) + values.shape[1:], values.dtype)
        wider[:classes] = values
        initializers[name].CopyFrom(numpy_helper.from_array(wider, name))
    logits = head.output[0]
    head.output[0] = f"{logits}_padded"
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == logits:
                node.input[index] = head.output[0]
    bounds = [f"{logits}_{name}" for name in ("starts", "ends", "axes")]
    for name, value in zip(bounds, ([0], [classes], [1]), strict=True):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    graph.node.insert(list(graph.node).index(head) + 1, helper.make_node(
        "Slice", [head.output[0], *bounds], [logits], name=f"{head.name}_classes"))
    for info in [info for info in graph.value_info if info.name == logits]:
        graph.value_info.remove(info)
    return padded - classes

def fix_upsampling_scales(model, probe_sizes=((384, 480), (256, 352))) -> int:
    """Give the decoder's upsamplings constant scales; return how many ``Resize`` nodes changed.

    smp's decoder upsamples each stage to the size of the next skip connection, which exports as
    ``Shape`` -> ``Gather`` -> ``Concat`` feeding each ``Resize``: in the int8 graph every such
    ``Shape`` needs its tensor dequantized at full size, for nothing. For inputs that are
    multiples of the stride (the exported model's
    contract) each ``Resize`` scales by a constant factor; it is read from ONNX shape inference at
    ``probe_sizes`` and used only where every probe agrees on a whole factor.
    """
    import copy

    import onnx
    from onnx import numpy_helper

    factors: dict[str, tuple | None] = {}
    for height, width in probe_sizes:
        probe = copy.deepcopy(model)
        dims = probe.graph.input[0].type.tensor_type.shape.dim
        for dim, size in zip(dims, (1, 3, height, width), strict=True):
            dim.Clear()
            dim.dim_value = size
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
        shapes = {info.name: [dim.dim_value for dim in info.type.tensor_type.shape.dim]
                  for info in [*inferred.graph.value_info, *inferred.graph.output]}
        for node in inferred.graph.node:
            if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
                continue
            before, after = shapes.get(node.input[0]), shapes.get(node.output[0])
            known = before and after and len(before) == len(after) == 4 and all(before) and all(after)
            factor = tuple(a / b for a, b in zip(after, before, strict=True)) if known else None
            if factor is None or any(f != int(f) for f in factor):
                factor = None
            factors[node.name] = factor if factors.get(node.name, factor) == factor else None
    changed = 0
    for node in model.graph.node:
        factor = factors.get(node.name)
        if node.op_type != "Resize" or factor is None:
            continue
        name = f"{node.name}_scales"
        model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), name))
        del node.input[3]
        node.input[2] = name
        changed += 1
    _remove_dead_nodes(model)
    return changed


def _remove_dead_nodes(model) -> None:
    """Remove the nodes and initializers no graph output depends on."""
    needed = {output.name for output in model.graph.output}
    alive = set()
    for index in reversed(range(len(model.graph.node))):
        node = model.graph.node[index]
        if any(name in needed for name in node.output):
            alive.add(index)
            needed.update(name for name in node.input if name)
    for index in reversed(range(len(model.graph.node))):
        if index not in alive:
            del model.graph.node[index]
    for tensor in [t for t in model.graph.initializer if t.name not in needed]:
        model.graph.initializer.remove(tensor)

def calibration_images(config, count: int = CALIBRATION_IMAGES) -> list[torch.Tensor]:
    """Return ``count`` training images, evenly spaced, as 0-1 tensors (1, 3, H, W) padded to the stride.

    Untransformed (no crop, flip or colour change): the images the deployed network will see.
    Calibration uses the training split only, so validation and test stay unseen.
    """
    from .datasets import build_datasets, evenly_spaced
    from .transforms import to_tensor

    train = build_datasets(config)["train"]
    indices = evenly_spaced(range(len(train)), count)
    return [pad_to_stride(to_tensor(train.load(index)[0])[None]) for index in indices]


def score_session(session, dataset, progress: bool = False, desc: str = "score") -> float:
    """Return the mIoU of an onnxruntime session on every image of a dataset (one confusion matrix).

    The same inference path as :func:`helpers.evaluate.evaluate` (padding to the stride,
    cropping back, labels from the logits, void ignored).
    """
    from tqdm.auto import tqdm

    confusion = ConfusionMatrix(len(dataset.classes.names), torch.device("cpu"))
    for index in tqdm(range(len(dataset)), desc=desc, disable=not progress, leave=False):
        image, mask = dataset[index]
        logits = onnx_logits(session, image[None])
        confusion.update(labels_from_logits(logits), mask[None])
    return float(confusion.compute()["miou"])


def quantize_onnx(fp32_bytes: bytes, batches: list[torch.Tensor], keep_float: tuple[str, ...],
                  method: str, pad_head: bool = True) -> tuple[bytes, list[str]]:
    """Return ``(model, float_nodes)``: a float32 ONNX model (bytes) statically quantized to
    int8 in the QDQ format, calibrated on ``batches``, and the names of the nodes kept in float32.

    ``method`` is ``minmax``, ``percentile`` or ``entropy`` (onnxruntime's calibrators). An
    int8 head gets its channels padded (:func:`pad_head_channels`) unless ``pad_head`` is false.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, not {method!r}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch.numpy()}

    # The calibration's sessions would log graph notes (unused initializers) that need no action.
    onnxruntime.set_default_logger_severity(3)
    # The quantizer writes its intermediate models to files: keep them out of the user's folders.
    with tempfile.TemporaryDirectory(prefix="int8-") as folder:
        source, prepared, out = (Path(folder) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        model = onnx.load_from_string(fp32_bytes)
        if pad_head and "head" not in keep_float:
            pad_head_channels(model)
        source.write_bytes(model.SerializeToString())
        # Graph optimisation and ONNX shape inference first (onnxruntime's advice for static
        # quantization); the symbolic pass cannot follow the encoder's size-dependent padding.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        fuse_pad_into_conv(model)
        fix_upsampling_scales(model)
        onnx.save(model, str(prepared))
        excluded = excluded_nodes(model, keep_float)
        quantize_static(
            str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded, calibrate_method=methods[method],
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        return out.read_bytes(), excluded


def quantize_checkpoint(checkpoint: str | Path, out: str | Path | None = None,
                        count: int = CALIBRATION_IMAGES, keep_float: tuple[str, ...] = KEEP_FLOAT,
                        method: str = CALIBRATION_METHOD, score_split: str = "val",
                        progress: bool = True) -> Path:
    """Write the int8 artefact of a checkpoint and return its path (default: :func:`artefact_path`).

    Calibrates on ``count`` training images of the checkpoint's own dataset, keeps the layer
    kinds ``keep_float`` in float32 (see :func:`excluded_nodes`), and scores the float32 export
    and the int8 model on ``score_split``; both mIoU go into the file's metadata with the
    calibration and the checkpoint's SHA-256 (:func:`int8_record` reads them).
    """
    import onnx

    from .datasets import build_datasets

    checkpoint = Path(checkpoint)
    out = Path(out) if out is not None else artefact_path(checkpoint)
    payload = read_checkpoint(checkpoint)
    from .config import Config

    config = Config.from_dict(payload["config"])
    started = time.perf_counter()
    fp32_bytes = export_onnx(checkpoint)
    batches = calibration_images(config, count)
    int8_bytes, excluded = quantize_onnx(fp32_bytes, batches, tuple(keep_float), method)
    quantize_seconds = time.perf_counter() - started
    dataset = build_datasets(config)[score_split]
    fp32_session, metadata = load_onnx(fp32_bytes)
    int8_session, _ = load_onnx(int8_bytes)
    fp32_miou = score_session(fp32_session, dataset, progress, f"{score_split} float32")
    int8_miou = score_session(int8_session, dataset, progress, f"{score_split} int8")
    accuracy = {"split": score_split, "images": len(dataset), "fp32_miou": round(fp32_miou, 5),
                "int8_miou": round(int8_miou, 5), "loss": round(fp32_miou - int8_miou, 5),
                "budget": ACCURACY_BUDGET}
    calibration = {"split": "train", "images": len(batches), "method": method,
                   "format": "QDQ", "activations": "uint8, per tensor",
                   "weights": "int8, per output channel, symmetric",
                   "kept_float": list(keep_float), "float_nodes": excluded,
                   "seconds": round(quantize_seconds, 1)}
    proto = onnx.load_from_string(int8_bytes)
    metadata.update({
        "format": FORMAT,
        "precision": "int8",
        "source_checkpoint_sha256": file_sha256(checkpoint),
        "accuracy": json.dumps(accuracy),
        "calibration": json.dumps(calibration),
        "exporter": f"{metadata.get('exporter', f'opset {OPSET}')}; onnxruntime "
                    f"{_onnxruntime_version()} static quantization",
    })
    onnx.helper.set_model_props(proto, metadata)
    return write_bytes(out, proto.SerializeToString())


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def is_int8(metadata: dict) -> bool:
    """Return whether an exported model's metadata is that of an int8 artefact."""
    return metadata.get("precision") == "int8" or metadata.get("format") == FORMAT


def int8_record(metadata: dict) -> dict | None:
    """Return the stored accuracy record of an int8 artefact (``fp32_miou``, ``int8_miou``,
    ``loss``, ``split``, ``images``), or None when it has none or it does not parse."""
    try:
        record = json.loads(metadata.get("accuracy") or "null")
        if isinstance(record, dict) and all(isinstance(record.get(k), int | float)
                                            for k in ("fp32_miou", "int8_miou")):
            record.setdefault("loss", record["fp32_miou"] - record["int8_miou"])
            return record
    except (TypeError, ValueError):
        pass
    return None


def within_budget(record: dict | None, budget: float = ACCURACY_BUDGET) -> tuple[bool, str]:
    """Return ``(usable, reason)``: whether a stored accuracy record is within ``budget``."""
    if record is None:
        return False, "it has no accuracy record (make it again with python -m helpers.quantize)"
    loss = record["fp32_miou"] - record["int8_miou"]
    words = (f"{record.get('split', 'validation')} mIoU {record['int8_miou']:.4f} in int8 vs "
             f"{record['fp32_miou']:.4f} in float32, a loss of {loss:.4f}")
    if loss > budget:
        return False, f"{words}, over the budget of {budget}"
    return True, f"{words}, within the budget of {budget}"


def check_artefact(path: str | Path, checkpoint: str | Path | None = None, threads: int | None = None):
    """Return ``(session, metadata)`` of an int8 artefact, refusing a bad or stale one.

    Raises :class:`helpers.errors.CheckpointError` for a file that is missing, corrupt or not
    an int8 artefact, and :class:`StaleArtefactError` when ``checkpoint`` (default: the source
    checkpoint named in the artefact, where it lies beside it) has changed since the export.
    """
    path = Path(path)
    fix = "make it again with python -m helpers.quantize --checkpoint CHECKPOINT"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such int8 model; {fix}")
    try:
        session, metadata = load_onnx(path, threads)
    except Exception as error:  # onnxruntime raises its own types for a damaged file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable int8 model ({first_line[:160]}); "
                              f"{fix}") from None
    if not is_int8(metadata):
        raise CheckpointError(f"{path}: not an int8 model (no int8 metadata); {fix}")
    if checkpoint is None and metadata.get("source_checkpoint"):
        beside = path.with_name(metadata["source_checkpoint"])
        checkpoint = beside if beside.is_file() else None
    stored = metadata.get("source_checkpoint_sha256")
    if checkpoint is not None and stored and file_sha256(checkpoint) != stored:
        raise StaleArtefactError(f"{path}: stale: {Path(checkpoint).name} has changed since this "
                                 f"int8 model was exported from it; {fix}")
    return session, metadata


def quantize_tensor(values: torch.Tensor, axis: int | None = None, bits: int = 8):
    """Return ``(integers, scale)``: symmetric int8 quantization of a tensor, per ``axis`` or whole.

    ``scale`` is the largest magnitude over 127 (per channel along ``axis``); ``integers *
    scale`` is the dequantized tensor, within ``scale / 2`` of the original.
    """
    limit = 2 ** (bits - 1) - 1
    if axis is None:
        scale = values.abs().max().clamp_min(1e-12) / limit
    else:
        dims = [d for d in range(values.dim()) if d != axis]
        scale = values.abs().amax(dim=dims, keepdim=True).clamp_min(1e-12) / limit
    integers = torch.clamp(torch.round(values / scale), -limit, limit).to(torch.int8)
    return integers, scale



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.quantize", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a best.pt written by helpers.train")
    parser.add_argument("--out", default=None,
                        help="the int8 .onnx file to write (default: best.int8.onnx beside the "
                             "checkpoint, where --runtime auto finds it)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES, metavar="N",
                        help="training images to calibrate on")
    parser.add_argument("--calibration-method", default=CALIBRATION_METHOD,
                        choices=("minmax", "percentile", "entropy"))
    parser.add_argument("--keep-float", default=",".join(KEEP_FLOAT), metavar="KIND,...",
                        help="layer kinds kept in float32: stem, head, depthwise, upsampling, "
                             "or none")
    args = parser.parse_args(argv)
    keep = tuple(k for k in args.keep_float.split(",") if k and k != "none")
    try:
        start = time.perf_counter()
        path = quantize_checkpoint(args.checkpoint, args.out, args.calibration_images, keep,
                                   args.calibration_method)
        _, metadata = load_onnx(path)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    record = int8_record(metadata)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {metadata['model_name']}) in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"  {record['split']} mIoU ({record['images']} images): float32 "
          f"{record['fp32_miou']:.4f}, int8 {record['int8_miou']:.4f}, "
          f"loss {record['loss']:.4f} (budget {record['budget']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
