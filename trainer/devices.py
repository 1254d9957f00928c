"""Where the model computes and in which precision: CUDA when the worker has it, else the CPU.

Pure torch (no Django): the services pass the settings (``TRAINING_DEVICE`` for training,
``INFERENCE_DEVICE`` for sample-and-rank and the discriminator filter of dataset builds), each
``auto`` (CUDA when ``torch.cuda.is_available()``, else the CPU), ``cpu`` or ``cuda``; ``cuda`` on
a worker without it is an error that says so, never a silent fall back to the CPU.

Precision: bf16 autocast (master weights stay fp32) where it pays off — on CUDA when the card
computes bf16 (``torch.cuda.is_bf16_supported()``), on the CPU where it does so in hardware
(AVX-512 BF16 or AMX; elsewhere PyTorch emulates it, many times slower); a job's ``bf16``
hyperparameter, when set, overrides the rule. On CUDA, fp32 matmuls use TF32 (Ampere and later).

What a job records (``TrainingJob.device``, ``ModelVersion.device``): ``describe``, e.g. "cpu",
"cpu x2", "cuda (NVIDIA H100 80GB HBM3) x2"; precision "bf16" or "fp32".
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

CHOICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The device a setting asks for is not there (``TRAINING_DEVICE=cuda`` without CUDA)."""


def bf16_in_hardware() -> bool:
    """Whether this CPU computes bfloat16 itself (AVX-512 BF16 or AMX), so autocast pays off."""
    cpu = torch.cpu
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # torch.cpu's private probes; without them, assume emulation
        return False


BF16_IN_HARDWARE = bf16_in_hardware()


def choose(setting: str, *, name: str = "TRAINING_DEVICE") -> torch.device:
    """The device ``setting`` (auto, cpu, cuda) means on this machine; ``name`` is the setting's,
    for the error."""
    if setting not in CHOICES:
        raise DeviceError(f"{name}={setting!r}: expected one of {', '.join(CHOICES)}")
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"{name}=cuda, but this worker has no CUDA device (torch.cuda.is_available() is False)"
        )
    return torch.device("cuda", torch.cuda.current_device())


def rank_device(kind: str, rank: int) -> torch.device:
    """The device of data-parallel rank ``rank``: its own GPU on CUDA, else the CPU."""
    return torch.device("cuda", rank) if kind == "cuda" else torch.device("cpu")


def prepare(device: torch.device) -> None:
    """Settings a device wants before it computes: TF32 matmuls and cuDNN convolutions on CUDA."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def uses_bf16(device: torch.device, bf16: bool | None = None) -> bool:
    """Whether training autocasts to bf16 on ``device``: ``bf16`` when set (a job's
    hyperparameter), else where the device computes it in hardware."""
    if bf16 is not None:
        return bf16
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return BF16_IN_HARDWARE


def precision(device: torch.device, bf16: bool | None = None) -> str:
    """What a job records: "bf16" (autocast) or "fp32"."""
    return "bf16" if uses_bf16(device, bf16) else "fp32"


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def describe(device: torch.device, world_size: int = 1) -> str:
    """What a job records: "cpu", "cpu x2", "cuda (NVIDIA H100 80GB HBM3)", "… x2"."""
    label = "cpu" if device.type == "cpu" else f"{device.type} ({torch.cuda.get_device_name(device)})"
    return label if world_size == 1 else f"{label} x{world_size}"


def check_world_size(device: torch.device, world_size: int) -> None:
    """On CUDA, one GPU a rank: refuse a world size larger than the GPUs this worker sees."""
    if device.type == "cuda" and world_size > torch.cuda.device_count():
        raise DeviceError(
            f"world_size {world_size} needs {world_size} CUDA devices (one a rank); this worker has "
            f"{torch.cuda.device_count()}"
        )
