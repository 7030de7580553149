"""Export a checkpoint to ONNX and run it with onnxruntime.

The ONNX model takes what the PyTorch model takes: float32 RGB images on the 0-1 scale, NCHW,
any batch size, height and width multiples of 32 (the normalization of the encoder is inside
the graph). It returns float32 logits (N, num_classes, H, W). The file carries everything a
user needs in its metadata (``metadata_props``): the class names and colours, the model name,
the input convention and the checkpoint's metrics, so ``--runtime onnx`` in
:mod:`helpers.predict` and the web app run it without the checkpoint.

Command line::

    python -m helpers.export --checkpoint runs/quick/unet-effnet-lite0/best.pt --out model.onnx

The int8 model is made by ``python -m helpers.quantize`` (:mod:`helpers.quantize`).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from .checkpoint import check_class_count, load_model
from .errors import CheckpointError, ClassFileError, one_line
from .files import write_bytes
from .inference import STRIDE
from .labels import ClassInfo

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Worst |logit difference| between onnxruntime and PyTorch (both float32) that the parity
# check accepts: measured at most 2e-5 on CamVid test images, logits of magnitude up to ~10.
PARITY_ATOL = 2e-3


def _optional(module: str):
    """Import a module of the ``onnx`` extra, or raise ``ModuleNotFoundError`` saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"ONNX needs the optional packages onnx, onnxruntime and "
                                  f"onnxscript ({error}): pip install '.[onnx]' from the "
                                  "repository, or pip install -r requirements.txt") from error


class StaticSamePadConv(torch.nn.Module):
    """A TensorFlow-style "same" convolution of stride 1 or 2 with its padding fixed.

    timm's ``Conv2dSame`` (the EfficientNet-Lite encoders' strided and dilated convolutions)
    computes its padding from the input size at run time, which exports as a float shape
    computation in front of every such convolution. The padding is in fact a constant here:
    ``(k - 1) * d`` pixels for stride 1, and ``(k - 1) * d - 1`` for stride 2 on an even size
    (``(n / 2 - 1) * 2 + (k - 1) * d + 1 - n``), and every input of the exported model is a
    multiple of 32. So it exports as a plain ``Pad`` (split as TensorFlow splits it), which the
    int8 quantizer and onnxruntime's optimizer handle.
    """

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        self.conv = conv
        pads = []
        for kernel, dilation, stride in zip(reversed(conv.kernel_size), reversed(conv.dilation),
                                            reversed(conv.stride), strict=True):
            total = max((kernel - 1) * dilation + 1 - stride, 0)
            pads += [total // 2, total - total // 2]
        self.pads = tuple(pads)  # (left, right, top, bottom), as F.pad takes them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(x, self.pads)
        return torch.nn.functional.conv2d(x, self.conv.weight, self.conv.bias, self.conv.stride,
                                          0, self.conv.dilation, self.conv.groups)


def fix_same_padding(model: torch.nn.Module) -> int:
    """Replace the "same" convolutions of timm encoders (stride 1 or 2) by :class:`StaticSamePadConv`.

    Only valid for inputs whose sides are multiples of the encoder's stride (the exported model's
    contract). Returns how many were replaced; other convolutions are left as they are.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "Conv2dSame" and set(child.stride) <= {1, 2}:
                setattr(parent, name, StaticSamePadConv(child))
                replaced += 1
    return replaced


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, opset: int = OPSET):
    """Export a checkpoint to ONNX; return the written path, or the model bytes when ``out`` is None.

    Uses the TorchScript-based exporter (``dynamo=False``), which handles the smp models with
    dynamic batch, height and width in one pass. The encoder's "same" padding is exported as
    constants (:func:`fix_same_padding`).
    """
    onnx = _optional("onnx")

    model, info = load_model(checkpoint, "cpu")
    model = model.float().eval()
    fix_same_padding(model)
    example = torch.rand(1, 3, 8 * STRIDE, 8 * STRIDE)
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy exporter announces its deprecation; it is chosen on purpose (see above).
        warnings.simplefilter("ignore", DeprecationWarning)
        # The encoder's size-dependent padding slices cannot be constant-folded; nothing to fix.
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            model, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
        )
    proto = onnx.load_from_string(buffer.getvalue())
    validation = (info.get("metrics") or {}).get("val") or {}
    metadata = {
        "format": "helpers-segmentation-onnx/1",
        "model_name": model.name,
        "num_classes": str(model.num_classes),
        "classes": json.dumps(info["classes"].to_dict()),
        "input": "float32 RGB on the 0-1 scale, NCHW, height and width multiples of 32",
        "output": "float32 logits (N, num_classes, H, W)",
        "stride": str(STRIDE),
        "source_checkpoint": Path(checkpoint).name,
        "profile": info["config"].profile,
        "epoch": str(info.get("epoch")),
        "val_miou": "" if validation.get("miou") is None else f"{validation['miou']:.4f}",
        "exporter": f"torch {torch.__version__}, opset {opset}",
    }
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if out is None:
        return data
    return write_bytes(out, data)


def session_options(threads: int | None = None):
    """Return the onnxruntime session options every project session runs with.

    ``threads`` intra-op threads (default: PyTorch's thread count, so both runtimes use the same
    cores), one inter-op thread, every graph optimisation, errors-only logging; with
    ``OMP_WAIT_POLICY=PASSIVE`` idle threads sleep, as PyTorch's do.
    """
    onnxruntime = _optional("onnxruntime")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: its graph notes (unused initializers) need no action
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        # As PyTorch's OpenMP threads: idle threads sleep rather than spin after a run, which on
        # 2 cores would slow whatever runs next (resizing, upsampling, another runtime).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_onnx(source: str | Path | bytes, threads: int | None = None):
    """Return ``(session, metadata)``: an onnxruntime CPU session and the file's metadata dict.

    ``source`` is a path or the model bytes; ``threads`` as in :func:`session_options`.
    """
    onnxruntime = _optional("onnxruntime")

    options = session_options(threads)
    name = "ONNX model"
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file (make one with python -m helpers.export)")
        source = name = str(path)
    try:
        session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime's own exception types
        raise CheckpointError(f"{name}: not an ONNX model onnxruntime can load "
                              f"({one_line(error, 160)}); export one with python -m "
                              "helpers.export") from None
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    if "classes" not in metadata:
        raise CheckpointError(f"{name}: no class metadata; export it with python -m helpers.export")
    classes = classes_from_metadata(metadata, name)
    outputs = session.get_outputs()[0].shape
    if len(outputs) == 4 and isinstance(outputs[1], int):
        check_class_count(name, outputs[1], classes, "its metadata's class list",
                          "the file is damaged or was edited: export it again")
    return session, metadata


def classes_from_metadata(metadata: dict, source: str = "ONNX model") -> ClassInfo:
    """Return the label set stored in an exported model's metadata (``source`` names the file
    in errors)."""
    try:
        return ClassInfo.from_dict(json.loads(metadata["classes"]))
    except (json.JSONDecodeError, ClassFileError) as error:
        raise CheckpointError(f"{source}: its class metadata is invalid ({one_line(error, 160)}); "
                              "export it again with python -m helpers.export") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a best.pt written by helpers.train")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=OPSET)
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        path = export_onnx(args.checkpoint, args.out, args.opset)
        session, metadata = load_onnx(path)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classes = classes_from_metadata(metadata)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {metadata['model_name']}, "
          f"{classes.num_classes} classes) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
