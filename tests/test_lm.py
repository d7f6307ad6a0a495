"""The description language model: tokenizer, masking, training loop and sampling as plain functions."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import torch

from tests.support import whole_and_resumed
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


def fresh(tokenizer: object) -> Callable[[], lm.LanguageModel]:
    return partial(lm.fresh, CONFIG, tokenizer)


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
    result = train_lm(fresh(tokenizer), params(6), train, test, device=CPU, progress=lambda *_: None,
                      should_stop=lambda: False)
    after = result.history[-1]["test_perplexity"]
    assert after < before / 3, (before, after)
    short = lm.SamplingParams(max_tokens=20, temperature=1.0)
    texts = lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2, 3, 4], short)
    assert texts == lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2, 3, 4], short)
    assert all(isinstance(t, str) and t for t in texts)
    # A row's text depends on its seed only, not on the batch it was sampled in.
    assert lm.generate(result.model, "Brand Women Navy Solid Dress", [3], short) == texts[2:3]
    restored = lm.from_checkpoint(lm.to_checkpoint(result.model))
    assert lm.generate(restored, "Brand Women Navy Solid Dress", [1], short) == texts[:1]
    opened = lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2], short, opening="Navy solid dress")
    assert all(t.startswith("Navy solid dress") and len(t) > len("Navy solid dress") for t in opened)
    greedy = lm.generate(result.model, "Brand Women Navy Solid Dress", [1, 2], lm.SamplingParams(temperature=0))
    assert greedy[0] == greedy[1] and greedy[0]  # temperature 0: greedy, the seed does not matter

    # Jobs batched together (worker/batching.py): each request gets the texts it gets alone.
    first = lm.TextRequest("Brand Women Navy Solid Dress", [1, 2, 3, 4])
    length = lm.prompt_length(result.model, first)
    others = ["Brand Men Blue Shirt", "Brand Women Black Solid Top", "Brand Women Red Dress", "Brand Men Grey Tshirt"]
    same = [r for r in (lm.TextRequest(c, [7, 1]) for c in others) if lm.prompt_length(result.model, r) == length]
    longer = lm.TextRequest("Brand Women Navy Blue Printed Maxi Dress With Pockets", [1])
    assert same and lm.prompt_length(result.model, longer) != length
    together = lm.generate_many(result.model, [first, *same], short)
    assert together[0] == texts and together[1:] == [lm.generate(result.model, r.context, r.seeds, short)
                                                     for r in same]
    with pytest.raises(ValueError, match="as many tokens"):
        lm.generate_many(result.model, [first, longer], short)


def test_logit_filters() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, -1.0]])
    none = torch.zeros_like(logits, dtype=torch.bool)
    kept = lambda out: torch.isfinite(out[0]).tolist()  # noqa: E731
    assert kept(lm.filter_logits(logits, none, lm.SamplingParams(top_k=2, top_p=1.0, repetition_penalty=1))) == [
        True, True, False, False, False]
    # softmax(4,3,2,1,-1) ~ .64 .24 .09 .03 .00: top-p 0.8 keeps the two whose mass first crosses 0.8
    assert kept(lm.filter_logits(logits, none, lm.SamplingParams(top_k=0, top_p=0.8, repetition_penalty=1))) == [
        True, True, False, False, False]
    seen = torch.tensor([[True, False, False, False, True]])
    out = lm.filter_logits(logits, seen, lm.SamplingParams(temperature=1, top_k=0, top_p=1, repetition_penalty=2))
    assert out[0].tolist() == [2.0, 3.0, 2.0, 1.0, -2.0]


def save_small_base(directory: Path) -> torch.nn.Module:
    """A small GPT-2 with its own tokenizer (trained on other text), saved as a pretrained base is."""
    from transformers import PreTrainedTokenizerFast

    other = lm.train_tokenizer(["the quick brown fox jumps over the lazy dog"] * 20 + [c for c, _ in PAIRS], 280)
    base_config = lm.LMConfig(vocab_size=280, n_positions=64, n_embd=32, n_layer=1, n_head=2, dropout=0.0)
    torch.manual_seed(0)
    base = lm.build_model(base_config, other)
    base.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=other).save_pretrained(directory)
    return base


def test_fine_tunes_a_local_pretrained_base(tokenizer: object, tmp_path: Path) -> None:
    """The other training path: a GPT-2 saved with save_pretrained, loaded offline, given the
    special tokens, then fine-tuned on the pairs."""
    base = save_small_base(tmp_path / "tiny-gpt2")

    loaded = lm.from_pretrained(tmp_path / "tiny-gpt2", max_positions=48)
    assert loaded.config.base_model == "tiny-gpt2" and loaded.config.n_positions == 48
    assert [lm.special_id(loaded.tokenizer, t) is not None for t in lm.SPECIAL_TOKENS] == [True] * 4
    assert loaded.model.get_input_embeddings().weight.shape[0] == loaded.tokenizer.get_vocab_size()
    shared_rows = base.get_input_embeddings().weight.shape[0]
    assert torch.equal(loaded.model.get_input_embeddings().weight[:shared_rows], base.get_input_embeddings().weight)

    train, test = PAIRS[::2], PAIRS[1::2]
    before = perplexity(lm.from_pretrained(tmp_path / "tiny-gpt2", 48), test, 8, CPU)
    result = train_lm(partial(lm.from_pretrained, tmp_path / "tiny-gpt2", 48), params(6), train, test, device=CPU,
                      progress=lambda *_: None, should_stop=lambda: False)
    assert result.history[-1]["test_perplexity"] < before / 3
    restored = lm.from_checkpoint(lm.to_checkpoint(result.model))
    assert restored.config.base_model == "tiny-gpt2"
    assert perplexity(restored, test, 8, CPU) == pytest.approx(result.history[-1]["test_perplexity"], rel=1e-4)


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with pytest.raises(lm.BaseModelError, match="notes"):
        lm.from_pretrained(tmp_path / "notes", 48)



def test_resume_matches_an_uninterrupted_run(tokenizer: object) -> None:
    whole, resumed, _ = whole_and_resumed(
        lambda should_stop, checkpoint: train_lm(fresh(tokenizer), params(2), PAIRS, PAIRS[:8], device=CPU,
                                                 progress=lambda *_: None, should_stop=should_stop,
                                                 checkpoint=checkpoint))
    assert resumed.resumed_from_epoch == 1
    assert resumed.history[-1]["test_perplexity"] == pytest.approx(whole.history[-1]["test_perplexity"], rel=1e-4)
