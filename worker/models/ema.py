"""The exponential moving average of a network's weights that the GAN and the diffusion model
sample from: one implementation for both."""

from __future__ import annotations

import torch
from torch import nn


def warmed_decay(step: int, decay: float) -> float:
    """EMA decay with a warm-up, so early averages are not dominated by the random initialisation."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter (buffers are the caller's)."""
    for ema_p, p in zip(ema.parameters(), model.parameters(), strict=True):
        ema_p.lerp_(p, 1.0 - decay)
