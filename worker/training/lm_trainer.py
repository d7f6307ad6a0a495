"""The description model's training loop: next-token loss on the description tokens only (the
product name is given, not predicted), held-out perplexity per epoch, per-epoch checkpoints so a
redelivered job resumes. A plain function with progress and cooperative cancel."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from shared.errors import JobCanceled
from worker.models.lm import LanguageModel, encode_pair, special_id
from worker.training.common import (
    CheckpointIO,
    Progress,
    ShouldStop,
    TimeBudget,
    TrainParams,
    TrainResult,
    resume,
    save_epoch,
)

log = logging.getLogger(__name__)

IGNORE = -100  # label value the loss skips


def collate(lm: LanguageModel, pairs: Sequence[tuple[str, str]], device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(context, description) pairs -> input ids, attention mask and labels [B, T], right-padded."""
    pad = special_id(lm.tokenizer, "<|pad|>")
    encoded = [encode_pair(lm.tokenizer, c, d, lm.config.n_positions) for c, d in pairs]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (tokens, start) in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        labels[row, start:len(tokens)] = torch.tensor(tokens[start:])
    return ids.to(device), mask.to(device), labels.to(device)


@torch.no_grad()
def perplexity(lm: LanguageModel, pairs: Sequence[tuple[str, str]], batch_size: int, device: torch.device) -> float:
    """exp(mean negative log-likelihood per description token) on held-out pairs."""
    lm.model.eval()
    total, count = 0.0, 0
    for start in range(0, len(pairs), batch_size):
        ids, mask, labels = collate(lm, pairs[start:start + batch_size], device)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=IGNORE, reduction="sum")
        total += nll.item()
        count += int((target != IGNORE).sum())
    return math.exp(total / max(count, 1))


VaryContext = Callable[[str, np.random.Generator], str]


def train_lm(build: Callable[[], LanguageModel], params: TrainParams, train: Sequence[tuple[str, str]],
             test: Sequence[tuple[str, str]], *, device: torch.device, progress: Progress, should_stop: ShouldStop,
             checkpoint: CheckpointIO | None = None, vary_context: VaryContext | None = None) -> TrainResult:
    """Trains the model `build` returns: a fresh one from a preset, or a pretrained base to fine-tune
    (called after seeding, so a fresh model's initial weights follow the seed). `vary_context`
    rewrites each training context per epoch (seeded, so a resumed epoch sees the same ones);
    held-out perplexity is always on the contexts as given."""
    torch.manual_seed(params.seed)
    lm = build().to(device)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=params.learning_rate, weight_decay=0.01)
    train = list(train)[: params.max_train_examples] if params.max_train_examples else list(train)
    test = list(test)[: params.max_eval_examples] if params.max_eval_examples else list(test)
    result = TrainResult(model=lm)
    parts = {"model": lm.model, "optimizer": optimizer}
    resume(checkpoint, result, parts)
    budget = TimeBudget(params.max_minutes, result.history)
    steps_per_epoch = max(1, math.ceil(len(train) / params.batch_size))
    total_steps = params.epochs * steps_per_epoch
    for epoch in range(result.resumed_from_epoch, params.epochs):
        if budget.out_of_time():
            result.stopped_early = result.stopped_early or budget.reason(epoch)
            break
        epoch_started = time.monotonic()
        lm.model.train()
        rng = np.random.default_rng([params.seed, epoch])
        order = rng.permutation(len(train))
        torch.manual_seed(params.seed * 1000 + epoch)  # dropout masks: same after a resume
        loss_sum, tokens = 0.0, 0
        for step in range(steps_per_epoch):
            if should_stop():
                raise JobCanceled()
            batch = [train[i] for i in order[step * params.batch_size:(step + 1) * params.batch_size]]
            if vary_context:
                batch = [(vary_context(context, rng), text) for context, text in batch]
            ids, mask, labels = collate(lm, batch, device)
            loss = lm.model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.model.parameters(), 1.0)
            optimizer.step()
            n = int((labels[:, 1:] != IGNORE).sum())
            loss_sum += loss.item() * n
            tokens += n
            progress(max((epoch * steps_per_epoch + step + 1) / total_steps, budget.fraction()),
                     f"epoch {epoch + 1}/{params.epochs}, batch {step + 1}/{steps_per_epoch}, loss {loss.item():.3f}")
            if budget.out_of_time():
                result.stopped_early = budget.reason(epoch + 1, step + 1, steps_per_epoch)
                break
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(tokens, 1),
               "seconds": round(time.monotonic() - epoch_started, 1),
               "test_perplexity": perplexity(lm, test, params.batch_size, device)}
        row["train_perplexity"] = math.exp(row["train_loss"])
        result.history.append(row)
        progress(min(1.0, max((epoch + 1) / params.epochs, budget.fraction())),
                 f"epoch {epoch + 1}/{params.epochs} done, held-out perplexity {row['test_perplexity']:.2f}")
        save_epoch(checkpoint, result, parts)
        if result.stopped_early:
            break
    lm.model.eval()
    return result
