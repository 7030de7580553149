"""The int8 candidates side by side: validation mIoU and latency of each, measured in one run.

* onnxruntime static QDQ (what ``python -m helpers.quantize`` ships), once per choice of
  layers kept in float32 (``--keep-float``: ``none`` quantizes every layer); an int8 head has
  its output channels padded to 16 (``helpers.quantize.pad_head_channels``), and
  ``--unpadded-head`` adds the same candidates with the head's 11 channels as they are;
* PyTorch 2 export quantization with the X86 Inductor quantizer (static, per-channel; lowered
  by Inductor to oneDNN int8 kernels), where ``torchao`` is importable (it left ``torch.ao``);
* OpenVINO with NNCF post-training quantization, where ``openvino`` and ``nncf`` are importable.

Each is calibrated on the same training images and scored on the validation split (never
test); then every runtime, float ones included, is timed in turns on one 360x480 image (batch 1,
``--threads`` threads). Prints a table and writes ``results/<--save-as>.json`` (default
``int8_candidates``)::

    python benchmarks/int8_candidates.py [--checkpoint runs/quick/unet-effnet-lite0/best.pt]
        [--keep-float none stem stem,head stem,head,depthwise] [--unpadded-head]
        [--calibration-images 32] [--repetitions 20] [--compile] [--save-as NAME]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the prediction command runs

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from helpers.checkpoint import load_model, read_checkpoint
from helpers.config import Config, project_path
from helpers.datasets import build_datasets
from helpers.export import export_onnx, fix_same_padding, load_onnx
from helpers.inference import labels_from_logits, onnx_logits, pad_to_stride
from helpers.metrics import ConfusionMatrix
from helpers.precision import cpu_info
from helpers.quantize import calibration_images, quantize_onnx, score_session
from helpers.runtime import load_runtime


def score(logits_fn, dataset) -> float:
    """Return the mIoU of a function from 0-1 images (1, 3, H, W) to logits on a dataset."""
    confusion = ConfusionMatrix(len(dataset.classes.names), torch.device("cpu"))
    with torch.inference_mode():
        for index in range(len(dataset)):
            image, mask = dataset[index]
            confusion.update(labels_from_logits(logits_fn(image[None])), mask[None])
    return float(confusion.compute()["miou"])


def cropped(run):
    """Wrap a function of padded images so that it takes any size (pads, then crops back)."""
    def logits(images):
        height, width = images.shape[-2:]
        return run(pad_to_stride(images))[..., :height, :width]
    return logits


def pt2e_candidate(checkpoint, batches):
    """Return the PT2E int8 model (X86 Inductor quantizer, compiled), or None without torchao."""
    try:
        import torchao.quantization.pt2e.inductor_passes.x86  # noqa: F401 - int8 fusions
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as error:
        print(f"PT2E skipped: {error} (pip install torchao)")
        return None
    import torch._inductor.config as inductor_config

    model, _ = load_model(checkpoint)
    model = model.float().eval()
    fix_same_padding(model)
    exported = torch.export.export(model, (batches[0],)).module()
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
    inductor_config.freezing = True
    compiled = torch.compile(convert_pt2e(prepared))
    return cropped(compiled)


def openvino_candidates(fp32_bytes, batches, threads):
    """Return OpenVINO's float32, bf16 and NNCF int8 runtimes, or {} without openvino/nncf."""
    try:
        import nncf
        import openvino
    except ImportError as error:
        print(f"OpenVINO skipped: {error} (pip install openvino nncf)")
        return {}
    core = openvino.Core()
    folder = tempfile.mkdtemp(prefix="openvino-")
    onnx_path = Path(folder, "model.onnx")
    onnx_path.write_bytes(fp32_bytes)
    source = core.read_model(str(onnx_path))
    quantized = nncf.quantize(core.read_model(str(onnx_path)),
                              nncf.Dataset([b.numpy() for b in batches]),
                              subset_size=len(batches))

    def compiled(model, hint):
        request = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()

        def run(images):
            request.infer({0: images.contiguous().numpy()})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
        return cropped(run)

    runtimes = {"openvino-fp32": compiled(source, "f32"), "openvino-int8-nncf": compiled(quantized, "f32")}
    if cpu_info().native_bf16:
        runtimes["openvino-bf16"] = compiled(source, "bf16")
    return runtimes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quick/unet-effnet-lite0/best.pt")
    parser.add_argument("--keep-float", nargs="+", default=["none", "stem", "stem,head"],
                        help="onnxruntime variants: layer kinds kept in float32, comma-separated")
    parser.add_argument("--unpadded-head", action="store_true",
                        help="also each variant with an int8 head, its channels not padded to 16")
    parser.add_argument("--save-as", default="int8_candidates",
                        help="results/<NAME>.json (default int8_candidates)")
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd float")
    parser.add_argument("--no-pt2e", action="store_true")
    parser.add_argument("--no-openvino", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint if checkpoint.is_absolute() else project_path(args.checkpoint)
    config = Config.from_dict(read_checkpoint(checkpoint)["config"])
    val = build_datasets(config)["val"]
    batches = calibration_images(config, args.calibration_images)
    fp32_bytes = export_onnx(checkpoint)
    cpu = cpu_info().describe()
    print(f"{checkpoint}: {config.model}; CPU: {cpu}; {len(batches)} calibration images (train), "
          f"{len(val)} validation images; {args.threads} threads")

    runtimes, rows = {}, {}
    for name in ["torch-fp32", "onnx"] + (["torch-bf16"] if cpu_info().native_bf16 else []) + \
            ([f"{n}-compiled" for n in ("torch-fp32", "torch-bf16")
              if args.compile and (cpu_info().native_bf16 or "bf16" not in n)]):
        runtimes[name] = load_runtime(name, checkpoint, "cpu", threads=args.threads).logits
    fp32_session, _ = load_onnx(fp32_bytes, args.threads)
    rows["onnx"] = {"kind": "float32", "val_miou": score_session(fp32_session, val)}
    variants = [(tuple(k for k in keep.split(",") if k and k != "none"), True)
                for keep in args.keep_float]
    if args.unpadded_head:
        variants += [(kinds, False) for kinds, _ in variants if "head" not in kinds]
    for kinds, pad_head in variants:
        started = time.perf_counter()
        data, excluded = quantize_onnx(fp32_bytes, batches, kinds, "minmax", pad_head=pad_head)
        session, _ = load_onnx(data, args.threads)
        name = f"onnx-int8 [{'+'.join(kinds) or 'none'} float{'' if pad_head else ', head unpadded'}]"
        runtimes[name] = (lambda s: lambda images: onnx_logits(s, images))(session)
        rows[name] = {"kind": "int8", "keep_float": list(kinds), "float_nodes": excluded,
                      "head_padded": pad_head and "head" not in kinds,
                      "quantize_s": time.perf_counter() - started,
                      "val_miou": score_session(session, val)}
        print(f"  {name}: val mIoU {rows[name]['val_miou']:.4f}", flush=True)
    if not args.no_pt2e:
        started = time.perf_counter()
        pt2e = pt2e_candidate(checkpoint, batches)
        if pt2e is not None:
            rows["pt2e-x86-inductor-int8"] = {"kind": "int8", "val_miou": score(pt2e, val),
                                              "quantize_and_compile_s": time.perf_counter() - started}
            runtimes["pt2e-x86-inductor-int8"] = pt2e
            print(f"  PT2E: val mIoU {rows['pt2e-x86-inductor-int8']['val_miou']:.4f}", flush=True)
    if not args.no_openvino:
        for name, run in openvino_candidates(fp32_bytes, batches, args.threads).items():
            runtimes[name] = run
            if "int8" in name:
                rows[name] = {"kind": "int8", "val_miou": score(run, val)}
                print(f"  {name}: val mIoU {rows[name]['val_miou']:.4f}", flush=True)

    image = torch.rand(1, 3, 360, 480)
    times = {name: [] for name in runtimes}
    with torch.inference_mode():
        for run in runtimes.values():
            for _ in range(3):
                run(image)
        order = list(runtimes)
        for repetition in range(args.repetitions):
            shift = repetition % len(order)
            for name in order[shift:] + order[:shift]:
                started = time.perf_counter()
                runtimes[name](image)
                times[name].append(1000 * (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in times.items()}
    fastest_float = min((n for n in medians if "int8" not in n), key=medians.get)
    reference = rows["onnx"]["val_miou"]
    print(f"\n{'runtime':<40} {'median ms':>9} {'vs ' + fastest_float:>24} {'val mIoU':>9} {'loss':>8}")
    for name, median in sorted(medians.items(), key=lambda item: item[1]):
        row = rows.setdefault(name, {"kind": "float"})
        row.update(median_ms=median, vs_fastest_float=median / medians[fastest_float])
        miou = row.get("val_miou")
        print(f"{name:<40} {median:9.1f} {row['vs_fastest_float']:23.2f}x "
              + (f"{miou:9.4f} {reference - miou:8.4f}" if miou is not None else ""))
    from helpers.report import write_result

    path = write_result(args.save_as, {
        "checkpoint": str(checkpoint), "model": config.model, "cpu": cpu,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "threads": args.threads,
        "repetitions": args.repetitions, "calibration_images": len(batches),
        "validation_images": len(val), "fastest_float": fastest_float, "candidates": rows,
        "summary": {f"{name} ms": row.get("median_ms") for name, row in rows.items()}},
        config.profile)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
