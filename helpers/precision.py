"""Which precision to train and run in, chosen from what the hardware can do, with the reason.

bfloat16 pays only where the processor has bf16 arithmetic units. Elsewhere the libraries
still accept it and emulate it: ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is true on
any AVX512 CPU, where oneDNN converts to float32 and back around every operation, and
``torch.cuda.is_bf16_supported()`` is true on pre-Ampere GPUs such as Colab's T4. Emulated
bf16 measured 3-4x slower than float32 on an Intel Xeon without native bf16 (issue 10). So:

* CPU: bf16 only with native units (x86 ``avx512_bf16`` or ``amx_bf16``; Arm ``bf16``), and
  for DeepLabV3+ only with AMX: its training step measured slower in bf16 than in float32 with
  AVX512-BF16 alone (an AMD EPYC; an Intel Xeon with oneDNN limited to AVX512-BF16, 0.61 s
  against 0.53) and faster with AMX (0.43-0.48 s against 0.54); float32 otherwise.
* CUDA: bf16 from compute capability 8.0 (Ampere) on; fp16 with a gradient scaler below
  (Volta, Turing: the T4 is 7.5).
* Anything else (MPS...): float32.

``amp="bf16" | "fp16" | "off"`` forces a precision whatever the hardware; ``SEG_NATIVE_BF16=0``
makes a CPU with native bf16 behave as one without (:func:`cpu_info`). This module imports
nothing from the project: the capabilities can be given as arguments (tests mock them).
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)
# Compute capability from which a GPU has bf16 tensor cores (Ampere).
CUDA_BF16_CAPABILITY = (8, 0)
HIDE_BF16_ENV = "SEG_NATIVE_BF16"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, architecture and feature flags (from ``/proc/cpuinfo``)."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        """Whether the CPU has bf16 arithmetic units (not oneDNN's emulation)."""
        wanted = ARM_BF16_FLAGS if self.machine.lower() in ("aarch64", "arm64") else X86_BF16_FLAGS
        return any(flag in self.flags for flag in wanted)

    @property
    def amx_bf16(self) -> bool:
        """Whether the CPU has AMX bf16 tile units (recent Intel Xeons), not only AVX512-BF16."""
        return "amx_bf16" in self.flags

    @property
    def bf16_flags(self) -> list[str]:
        """The bf16 flags the CPU reports (empty without native bf16)."""
        return sorted(self.flags & set(X86_BF16_FLAGS + ARM_BF16_FLAGS))

    def describe(self) -> str:
        """Return e.g. ``AMD EPYC (native bf16: avx512_bf16)`` or ``... (no native bf16)``."""
        if self.native_bf16:
            return f"{self.model} (native bf16: {', '.join(self.bf16_flags)})"
        return f"{self.model} (no native bf16)"


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuInfo:
    """Return the :class:`CpuInfo` of a ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features``)."""
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return CpuInfo(model or platform.processor() or platform.machine(),
                   machine or platform.machine(), frozenset(flags))


@lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Return this machine's :class:`CpuInfo` (no flags where ``/proc/cpuinfo`` is unreadable).

    ``SEG_NATIVE_BF16=0`` hides the bf16 flags, so a CPU with native bf16 behaves as one
    without (precision, runtime choice, time budget): how this project simulates the other
    kind of CPU. The model name then says so, and every result that names the CPU with it.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    info = parse_cpuinfo(text)
    if os.environ.get(HIDE_BF16_ENV, "").strip() == "0" and info.bf16_flags:
        info = CpuInfo(f"{info.model} [bf16 flags hidden by {HIDE_BF16_ENV}=0]", info.machine,
                       info.flags - set(X86_BF16_FLAGS + ARM_BF16_FLAGS))
    return info


@dataclass(frozen=True)
class Precision:
    """A precision decision: the autocast dtype (None = float32), the scaler, and why."""

    device: str
    dtype: torch.dtype | None
    grad_scaler: bool
    reason: str
    forced: bool = False
    hardware: str = ""

    @property
    def name(self) -> str:
        """``bf16``, ``fp16`` or ``fp32``."""
        return _NAMES[self.dtype]

    def to_dict(self) -> dict:
        """Return the decision as JSON-ready data (recorded in checkpoints and results)."""
        data = asdict(self)
        data["dtype"] = self.name
        return data

    def __str__(self) -> str:
        return f"{self.name}{' + gradient scaler' if self.grad_scaler else ''}: {self.reason}"


def choose_precision(device: torch.device | str, amp: str = "auto", model_name: str = "",
                     cpu: CpuInfo | None = None,
                     cuda_capability: tuple[int, int] | None = None) -> Precision:
    """Return the :class:`Precision` to train and run ``model_name`` in on ``device``.

    ``amp`` is ``"auto"`` (decide from the hardware), or ``"bf16"``, ``"fp16"``, ``"off"``
    (float32) to force one. ``cpu`` and ``cuda_capability`` default to this machine's.
    An fp16 decision always comes with a gradient scaler (fp16 gradients underflow without one).
    """
    device = torch.device(device)
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, not {amp!r}")
    if device.type == "cuda":
        if cuda_capability is None:
            cuda_capability = torch.cuda.get_device_capability(device)
        hardware = f"CUDA compute capability {cuda_capability[0]}.{cuda_capability[1]}"
    elif device.type == "cpu":
        cpu = cpu or cpu_info()
        hardware = cpu.describe()
    else:
        hardware = device.type
    if amp != "auto":
        dtype = _DTYPES[amp]
        return Precision(device.type, dtype, dtype == torch.float16,
                         f"forced with amp={amp!r}", forced=True, hardware=hardware)
    if device.type == "cuda":
        if tuple(cuda_capability) >= CUDA_BF16_CAPABILITY:
            return Precision("cuda", torch.bfloat16, False,
                             f"this GPU (sm_{cuda_capability[0]}{cuda_capability[1]}) has bf16 "
                             "tensor cores", hardware=hardware)
        return Precision("cuda", torch.float16, True,
                         f"this GPU (sm_{cuda_capability[0]}{cuda_capability[1]}) has no bf16 "
                         "tensor cores (compute capability below 8.0)", hardware=hardware)
    if device.type == "cpu":
        if not cpu.native_bf16:
            return Precision("cpu", None, False, "this CPU has no native bf16", hardware=hardware)
        if model_name.startswith("deeplab") and not cpu.amx_bf16:
            return Precision("cpu", None, False,
                             "DeepLabV3+ measured slower in bf16 than in float32 on a CPU "
                             "without AMX", hardware=hardware)
        return Precision("cpu", torch.bfloat16, False,
                         f"this CPU has native bf16 ({', '.join(cpu.bf16_flags)})", hardware=hardware)
    return Precision(device.type, None, False, f"no mixed precision on {device.type}",
                     hardware=hardware)


_announced: set[str] = set()


def announce(precision: Precision, force: bool = False) -> bool:
    """Print a decision once per process (e.g. ``fp32: this CPU has no native bf16``).

    Returns whether it printed. ``force`` prints even a decision already shown.
    """
    line = str(precision)
    if line in _announced and not force:
        return False
    _announced.add(line)
    print(f"precision {line}", flush=True)
    return True
