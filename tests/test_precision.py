"""The precision decision: bf16 only with native units, fp16 + scaler on pre-Ampere GPUs, forcing."""

from __future__ import annotations

import pytest
import torch

from helpers import inference, precision
from helpers.checkpoint import load_model, save_checkpoint
from helpers.config import load_config
from helpers.data import CAMVID_CLASSES
from helpers.models import build_model
from helpers.precision import choose_precision, parse_cpuinfo

COMMON_X86 = "fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma"
# Abridged /proc/cpuinfo texts of the kinds of CPU the project runs on.
INTEL_AVX512_NO_BF16 = f"""processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU @ 2.50GHz
flags\t\t: {COMMON_X86} avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
AMD_WITH_BF16 = f"""processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: {COMMON_X86} avx512f avx512dq avx512_bf16 avx512_vnni
"""
INTEL_AMX = f"""model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: {COMMON_X86} avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ARM_BF16 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm sve bf16 i8mm
CPU implementer\t: 0x41
"""
ARM_NO_BF16 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
"""


def cpu(text: str, machine: str = "x86_64") -> precision.CpuInfo:
    return parse_cpuinfo(text, machine)


@pytest.mark.parametrize("text, machine, native", [
    (INTEL_AVX512_NO_BF16, "x86_64", False),
    (AMD_WITH_BF16, "x86_64", True),
    (INTEL_AMX, "x86_64", True),
    (ARM_BF16, "aarch64", True),
    (ARM_NO_BF16, "aarch64", False),
    ("", "x86_64", False),  # /proc/cpuinfo unreadable: no flags, no bf16
])
def test_native_bf16_comes_from_the_cpu_flags(text, machine, native):
    assert cpu(text, machine).native_bf16 is native


def test_cpu_without_native_bf16_trains_in_float32():
    intel = cpu(INTEL_AVX512_NO_BF16)
    choice = choose_precision("cpu", "auto", "unet-effnet-lite0", cpu=intel)
    assert choice.dtype is None and not choice.grad_scaler and not choice.forced
    assert str(choice) == "fp32: this CPU has no native bf16"
    assert choice.hardware == "Intel(R) Xeon(R) CPU @ 2.50GHz (no native bf16)"


@pytest.mark.parametrize("text, machine, flag", [
    (AMD_WITH_BF16, "x86_64", "avx512_bf16"),
    (INTEL_AMX, "x86_64", "amx_bf16"),
    (ARM_BF16, "aarch64", "bf16"),
])
def test_cpu_with_native_bf16_trains_the_unets_in_bf16(text, machine, flag):
    for model in ("unet-effnet-lite0", "mini-unet"):
        choice = choose_precision("cpu", "auto", model, cpu=cpu(text, machine))
        assert choice.dtype == torch.bfloat16 and not choice.grad_scaler
        assert flag in choice.reason


def test_deeplab_trains_in_bf16_only_with_amx():
    # AVX512-BF16 alone: its step measured slower in bf16 than in float32; with AMX, faster.
    choice = choose_precision("cpu", "auto", "deeplabv3plus-effnet-lite0", cpu=cpu(AMD_WITH_BF16))
    assert choice.dtype is None
    assert "DeepLabV3+" in choice.reason and "without AMX" in choice.reason
    choice = choose_precision("cpu", "auto", "deeplabv3plus-effnet-lite0", cpu=cpu(INTEL_AMX))
    assert choice.dtype is torch.bfloat16 and "amx_bf16" in choice.reason
    assert cpu(INTEL_AMX).amx_bf16 and not cpu(AMD_WITH_BF16).amx_bf16
    # The U-Nets take bf16 with either kind of native unit.
    for flags in (AMD_WITH_BF16, INTEL_AMX):
        choice = choose_precision("cpu", "auto", "unet-effnet-lite0", cpu=cpu(flags))
        assert choice.dtype is torch.bfloat16


@pytest.mark.parametrize("capability, dtype, scaler", [
    ((7, 5), torch.float16, True),   # Colab's T4
    ((7, 0), torch.float16, True),   # V100
    ((8, 0), torch.bfloat16, False),  # A100
    ((8, 6), torch.bfloat16, False),
    ((9, 0), torch.bfloat16, False),  # H100
])
def test_cuda_uses_bf16_from_ampere_and_fp16_with_a_scaler_before(capability, dtype, scaler):
    choice = choose_precision("cuda", "auto", "unet-effnet-lite0", cuda_capability=capability)
    assert (choice.dtype, choice.grad_scaler) == (dtype, scaler)
    assert f"sm_{capability[0]}{capability[1]}" in choice.reason
    assert choice.to_dict()["dtype"] == ("fp16" if scaler else "bf16")


@pytest.mark.parametrize("amp, dtype, scaler", [
    ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True), ("off", None, False)])
def test_forcing_a_precision_overrides_the_hardware(amp, dtype, scaler):
    for device, kwargs in (("cpu", {"cpu": cpu(INTEL_AVX512_NO_BF16)}),
                           ("cpu", {"cpu": cpu(AMD_WITH_BF16)}),
                           ("cuda", {"cuda_capability": (7, 5)})):
        choice = choose_precision(device, amp, "unet-effnet-lite0", **kwargs)
        assert (choice.dtype, choice.grad_scaler, choice.forced) == (dtype, scaler, True)
        assert amp in choice.reason


def test_unknown_amp_is_refused():
    with pytest.raises(ValueError, match="amp must be one of"):
        choose_precision("cpu", "float16")


def test_amp_dtype_follows_the_flags_not_onednn(monkeypatch):
    """oneDNN claims bf16 on any AVX512 CPU; the decision must not follow it."""
    monkeypatch.setattr(inference, "cpu_info", lambda: cpu(INTEL_AVX512_NO_BF16))
    monkeypatch.setattr(precision, "cpu_info", lambda: cpu(INTEL_AVX512_NO_BF16))
    assert inference.amp_dtype(torch.device("cpu"), "auto", "unet-effnet-lite0") is None
    assert not inference.cpu_supports_bf16()
    monkeypatch.setattr(precision, "cpu_info", lambda: cpu(AMD_WITH_BF16))
    assert inference.amp_dtype(torch.device("cpu"), "auto", "unet-effnet-lite0") == torch.bfloat16


def test_this_machines_cpu_is_read(tmp_path):
    info = precision.cpu_info()
    assert info.model
    assert info.describe().startswith(info.model)


def test_the_decision_is_printed_once(capsys):
    choice = choose_precision("cpu", "auto", "unet-effnet-lite0", cpu=cpu(INTEL_AVX512_NO_BF16))
    precision._announced.discard(str(choice))
    assert precision.announce(choice)
    assert not precision.announce(choice)
    assert capsys.readouterr().out == "precision fp32: this CPU has no native bf16\n"


def test_training_records_its_precision_in_the_checkpoints(smoke_run):
    expected = choose_precision("cpu", "auto", "unet-effnet-lite0")
    for path in (smoke_run.best_checkpoint, smoke_run.last_checkpoint):
        _, info = load_model(path)
        assert info["precision"]["dtype"] == expected.name
        assert info["precision"]["reason"] == expected.reason
        assert info["precision"]["hardware"] == expected.hardware


def test_checkpoints_without_a_recorded_precision_still_load(tmp_path):
    config = load_config("smoke", "unet-effnet-lite0")
    model = build_model(config.model, CAMVID_CLASSES.num_classes, pretrained=False)
    path = save_checkpoint(tmp_path / "old.pt", model, config, CAMVID_CLASSES)
    payload = torch.load(path, weights_only=False)
    del payload["precision"]  # as written before the precision was recorded
    torch.save(payload, path)
    loaded, info = load_model(path)
    assert info["precision"] is None
    assert loaded.num_classes == CAMVID_CLASSES.num_classes


def test_hiding_the_bf16_flags_simulates_a_cpu_without(monkeypatch):
    monkeypatch.setattr(precision.Path, "read_text", lambda self: AMD_WITH_BF16)
    precision.cpu_info.cache_clear()
    try:
        assert precision.cpu_info().native_bf16
        monkeypatch.setenv("SEG_NATIVE_BF16", "0")
        precision.cpu_info.cache_clear()
        hidden = precision.cpu_info()
        assert not hidden.native_bf16 and "avx512_bf16" not in hidden.flags
        assert hidden.describe() == "AMD EPYC [bf16 flags hidden by SEG_NATIVE_BF16=0] (no native bf16)"
        assert choose_precision("cpu", "auto", "unet-effnet-lite0").dtype is None
    finally:
        monkeypatch.undo()
        precision.cpu_info.cache_clear()
