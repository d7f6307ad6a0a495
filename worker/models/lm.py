"""The description language model (seed 004): GPT-2 (`transformers`) over a byte-level BPE trained
on the product copy itself (`tokenizers`). A training example reads

    <|context|> Vero Moda Women Black Solid Jumpsuit <|description|> Black solid jumpsuit, has ... <|end|>

and generation starts from "<|context|> {prompt} <|description|>". The config dataclass travels in
every checkpoint with the tokenizer's JSON, so a checkpoint rebuilds its own model. No I/O and no
network here: a pretrained base, when used, is passed in as a local directory by the caller.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

CONTEXT, DESCRIPTION, END, PAD = "<|context|>", "<|description|>", "<|end|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, CONTEXT, DESCRIPTION, END]


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int = 4096  # BPE merges learned on the corpus (the tokenizer may end up smaller)
    n_positions: int = 256  # context + description tokens; longer copy is cut at training time
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 4
    dropout: float = 0.1


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"vocab_size": 512, "n_positions": 96, "n_embd": 32, "n_layer": 1, "n_head": 2},
             "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "max_train_examples": 256,
                       "max_eval_examples": 64}},
    "cpu": {"model": {"vocab_size": 4096, "n_positions": 192, "n_embd": 192, "n_layer": 4, "n_head": 4},
            "train": {"epochs": 4, "batch_size": 32, "learning_rate": 1e-3}},
    "gpu": {"model": {"vocab_size": 8192, "n_positions": 256, "n_embd": 512, "n_layer": 8, "n_head": 8},
            "train": {"epochs": 10, "batch_size": 64, "learning_rate": 5e-4}},
}


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """Byte-level BPE learned on the corpus, with the special tokens at fixed ids 0..3."""
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)
    return tokenizer._tokenizer  # the plain `tokenizers.Tokenizer`, serialisable to JSON


def tokenizer_from_json(text: str) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(text)


def special_id(tokenizer: Any, token: str) -> int:
    return int(tokenizer.token_to_id(token))


def build_model(config: LMConfig, tokenizer: Any) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=config.n_positions, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      bos_token_id=special_id(tokenizer, CONTEXT), eos_token_id=special_id(tokenizer, END),
                      pad_token_id=special_id(tokenizer, PAD))
    return GPT2LMHeadModel(gpt2)


def encode_pair(tokenizer: Any, context: str, description: str, max_len: int) -> tuple[list[int], int]:
    """Token ids of one training example and where the description starts (the loss covers only the
    description and its end token, not the name the model is given)."""
    head = [special_id(tokenizer, CONTEXT), *tokenizer.encode(" " + context).ids, special_id(tokenizer, DESCRIPTION)]
    body = [*tokenizer.encode(" " + description).ids, special_id(tokenizer, END)]
    head = head[: max_len // 2]  # a very long name never crowds out the description
    return (head + body)[:max_len], len(head)


def prompt_ids(tokenizer: Any, context: str, max_len: int) -> list[int]:
    head = [special_id(tokenizer, CONTEXT), *tokenizer.encode(" " + context).ids]
    return [*head[: max_len // 2 - 1], special_id(tokenizer, DESCRIPTION)]


@dataclass
class LanguageModel:
    """The network and its tokenizer, as the worker keeps them loaded."""

    config: LMConfig
    tokenizer: Any
    model: torch.nn.Module

    def to(self, device: torch.device | str) -> LanguageModel:
        self.model.to(device)
        return self


def to_checkpoint(lm: LanguageModel) -> dict[str, Any]:
    return {"family": "lm", "config": asdict(lm.config), "tokenizer": lm.tokenizer.to_str(),
            "state_dict": {k: v.detach().cpu() for k, v in lm.model.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> LanguageModel:
    config = LMConfig(**checkpoint["config"])
    tokenizer = tokenizer_from_json(checkpoint["tokenizer"])
    model = build_model(config, tokenizer)
    model.load_state_dict(checkpoint["state_dict"])
    return LanguageModel(config, tokenizer, model.eval())


@torch.no_grad()
def generate(lm: LanguageModel, context: str, seeds: list[int], *, max_tokens: int = 80, temperature: float = 0.8,
             top_p: float = 0.95, top_k: int = 50, repetition_penalty: float = 1.1,
             device: torch.device | str = "cpu") -> list[str]:
    """One description per seed for a context; the same seed gives the same text. One sampling call
    per seed, so a description never depends on which other seeds were asked for with it."""
    lm.model.eval()
    ids = prompt_ids(lm.tokenizer, context, lm.config.n_positions)
    max_new = max(1, min(max_tokens, lm.config.n_positions - len(ids)))
    end = special_id(lm.tokenizer, END)
    texts = []
    # One seed per row: sampling is seeded per row so a description does not depend on the batch.
    for seed in seeds:
        torch.manual_seed(seed)
        out = lm.model.generate(torch.tensor([ids], device=device), do_sample=temperature > 0,
                                temperature=max(temperature, 1e-5), top_p=top_p, top_k=top_k,
                                repetition_penalty=repetition_penalty, max_new_tokens=max_new,
                                eos_token_id=end, pad_token_id=special_id(lm.tokenizer, PAD))
        new = [t for t in out[0, len(ids):].tolist() if t != end]
        texts.append(lm.tokenizer.decode(new).strip())
    return texts
