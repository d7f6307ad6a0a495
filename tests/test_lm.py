"""The description language model: tokenizer, masking, training loop and sampling as plain functions."""

from __future__ import annotations

import pytest
import torch

from shared.errors import JobCanceled
from tests.support import MemoryCheckpoint
from worker.models import lm
from worker.training.common import TrainParams
from worker.training.lm_trainer import IGNORE, collate, perplexity, train_lm

CPU = torch.device("cpu")
COLOURS = ["black", "red", "blue", "green", "white", "navy", "olive", "pink"]
TYPES = ["jumpsuit", "dress", "shirt", "tshirt"]
PAIRS = [(f"Brand Women {c.title()} Solid {t.title()}", f"{c.title()} solid {t}, has a round neck, short sleeves")
         for c in COLOURS for t in TYPES]
CONFIG = lm.LMConfig(vocab_size=300, n_positions=48, n_embd=32, n_layer=1, n_head=2, dropout=0.0)


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return lm.train_tokenizer([f"{c} {d}" for c, d in PAIRS], CONFIG.vocab_size)


def params(epochs: int) -> TrainParams:
    return TrainParams(epochs=epochs, batch_size=8, learning_rate=1e-2, seed=1)


def test_special_tokens_and_round_trip(tokenizer: object) -> None:
    assert [lm.special_id(tokenizer, t) for t in lm.SPECIAL_TOKENS] == [0, 1, 2, 3]
    ids = tokenizer.encode(" Black solid jumpsuit").ids
    assert tokenizer.decode(ids).strip() == "Black solid jumpsuit"
    assert lm.tokenizer_from_json(tokenizer.to_str()).encode(" navy").ids == tokenizer.encode(" navy").ids


def test_loss_covers_only_the_description(tokenizer: object) -> None:
    model = lm.LanguageModel(CONFIG, tokenizer, lm.build_model(CONFIG, tokenizer))
    ids, mask, labels = collate(model, PAIRS[:2], CPU)
    encoded, start = lm.encode_pair(tokenizer, *PAIRS[0], CONFIG.n_positions)
    assert ids[0, :len(encoded)].tolist() == encoded
    assert (labels[0, :start] == IGNORE).all() and labels[0, start:len(encoded)].tolist() == encoded[start:]
    assert encoded[-1] == lm.special_id(tokenizer, lm.END) and mask[0].sum() == len(encoded)


def test_training_lowers_held_out_perplexity_and_generation_is_seeded(tokenizer: object) -> None:
    train, test = PAIRS[::2], PAIRS[1::2]
    untrained = lm.LanguageModel(CONFIG, tokenizer, lm.build_model(CONFIG, tokenizer))
    before = perplexity(untrained, test, 8, CPU)
    result = train_lm(CONFIG, params(6), train, test, tokenizer, device=CPU, progress=lambda *_: None,
                      should_stop=lambda: False)
    after = result.history[-1]["test_perplexity"]
    assert after < before / 3, (before, after)
    texts = lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2], max_tokens=20)
    assert texts == lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2], max_tokens=20)
    assert all(isinstance(t, str) and t for t in texts)
    restored = lm.from_checkpoint(lm.to_checkpoint(result.model))
    assert lm.generate(restored, "Brand Women Navy Solid Dress", [1], max_tokens=20) == texts[:1]



def test_resume_matches_an_uninterrupted_run(tokenizer: object) -> None:
    whole = train_lm(CONFIG, params(2), PAIRS, PAIRS[:8], tokenizer, device=CPU, progress=lambda *_: None,
                     should_stop=lambda: False)
    checkpoint, calls = MemoryCheckpoint(), {"n": 0}

    def stop_in_epoch_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 6  # 4 batches per epoch

    with pytest.raises(JobCanceled):
        train_lm(CONFIG, params(2), PAIRS, PAIRS[:8], tokenizer, device=CPU, progress=lambda *_: None,
                 should_stop=stop_in_epoch_two, checkpoint=checkpoint)
    resumed = train_lm(CONFIG, params(2), PAIRS, PAIRS[:8], tokenizer, device=CPU, progress=lambda *_: None,
                       should_stop=lambda: False, checkpoint=checkpoint)
    assert resumed.resumed_from_epoch == 1
    assert resumed.history[-1]["test_perplexity"] == pytest.approx(whole.history[-1]["test_perplexity"], rel=1e-4)
