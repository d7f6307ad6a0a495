"""What the training loops share: parameters, results, batching and the checkpoint interface."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from worker.datasets.base import ImageSplit

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]


class CheckpointIO(Protocol):
    def load(self) -> dict[str, Any] | None: ...
    def save(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_minutes: float | None = None  # time budget: training stops at the end of the step that crosses it
    mixed_precision: str = "auto"  # bf16 autocast where the device computes it natively (precision.py)


@dataclass
class TrainResult:
    model: Any
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    resumed_from_epoch: int = 0
    stopped_early: str | None = None  # why training ended before its last epoch (the time budget)

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def to_batch(split: ImageSplit, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """uint8 [B, H, W, C] -> float [B, C, H, W] in [0, 1], and conditions as LongTensors."""
    x = torch.from_numpy(split.images[idx]).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    cond = {k: torch.from_numpy(v[idx]).to(device) for k, v in split.conditions.items()}
    return x, cond


def epoch_order(split: ImageSplit, rng: np.random.Generator, balance_by: str | None = None,
                power: float = 1.0) -> np.ndarray:
    """One epoch's example order: a permutation, or with `balance_by` len(split) draws with
    replacement, each example weighted count(its class)^-power (1: every class equally likely)."""
    if balance_by is None or power == 0:
        return rng.permutation(len(split))
    labels = split.conditions[balance_by]
    counts = np.bincount(labels).astype(np.float64)
    p = counts[labels] ** -power
    return rng.choice(len(split), size=len(split), replace=True, p=p / p.sum())


Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


def batches(split: ImageSplit, batch_size: int, device: torch.device) -> Iterator[Batch]:
    """The split in order, batch by batch."""
    for start in range(0, len(split), batch_size):
        yield to_batch(split, np.arange(start, min(start + batch_size, len(split))), device)


def resume(checkpoint: CheckpointIO | None, result: TrainResult, parts: dict[str, Any]) -> None:
    """Restore what `save_epoch` wrote after the last finished epoch (modules and optimizers by name)
    and the history, so a redelivered job goes on from the next epoch."""
    saved = checkpoint.load() if checkpoint else None
    if saved:
        for name, part in parts.items():
            part.load_state_dict(saved[name])
        result.history = saved["history"]
        result.resumed_from_epoch = len(result.history)


def save_epoch(checkpoint: CheckpointIO | None, result: TrainResult, parts: dict[str, Any]) -> None:
    if checkpoint:
        checkpoint.save({**{name: part.state_dict() for name, part in parts.items()}, "history": result.history})


class TimeBudget:
    """`max_minutes` of training, counted across attempts (a resumed job brings the seconds its earlier
    epochs took). Every trainer checks it at the end of each step, so a run stops at the end of the
    step that crosses it and then evaluates and publishes what it has."""

    def __init__(self, max_minutes: float | None, history: list[dict[str, float]] | None = None) -> None:
        self.max_minutes = max_minutes
        self.budget_s = max_minutes * 60 if max_minutes else None
        self.elapsed_before = sum(row.get("seconds", 0.0) for row in history or [])
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def fraction(self) -> float:
        """Share of the budget used (0 without one)."""
        return self.elapsed() / self.budget_s if self.budget_s else 0.0

    def out_of_time(self) -> bool:
        return self.budget_s is not None and self.elapsed() >= self.budget_s

    def reason(self, epoch: int, step: int | None = None, steps: int | None = None) -> str:
        where = f"at epoch {epoch}, batch {step}/{steps}" if step is not None else f"after epoch {epoch}"
        return f"time budget of {self.max_minutes:g} min reached {where}"
