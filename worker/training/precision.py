"""Mixed precision for the training loops: bf16 autocast where the hardware computes bf16 natively.

On a CPU with AVX512-BF16 or AMX, oneDNN runs bf16 convolutions about 2.5x faster than fp32 (the
classifier's step, 0.25 -> 0.10 s a batch of 128 on 2 cores, docs/BENCHMARKS.md); on a CPU without
them bf16 is emulated and slower, so it stays off. bf16 keeps fp32's exponent range, so unlike fp16
it needs no loss scaling. Weights, optimizer state and inference stay fp32: a checkpoint gives the
same numbers wherever it is loaded.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import torch

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in NATIVE_BF16_FLAGS)


def autocast_dtype(device: torch.device, mode: str = "auto") -> torch.dtype | None:
    """bf16 when `mode` is "bf16", or "auto" and the device computes it natively; None (fp32) for
    "off" (TrainParams.mixed_precision, from the ATELIER_MIXED_PRECISION setting)."""
    if mode not in ("auto", "bf16", "off"):
        raise ValueError(f"mixed precision must be auto, bf16 or off, not {mode!r}")
    if mode == "off":
        return None
    if mode == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The forward pass's context: autocast to `dtype`, or nothing when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def as_float(value: Any) -> Any:
    """A forward pass's outputs back in fp32 for the losses: a tensor, a dict of them, or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: v.float() for k, v in value.items()}
    return value.float()
