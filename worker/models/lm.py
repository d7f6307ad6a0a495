"""The description language model (seed 004): GPT-2 (`transformers`) over a byte-level BPE trained
on the product copy itself (`tokenizers`). A training example reads

    <|context|> Vero Moda Women Black Solid Jumpsuit <|description|> Black solid jumpsuit, has ... <|end|>

and generation starts from "<|context|> {prompt} <|description|>". Two ways to a model: a preset
config with a tokenizer learned on the corpus (`build_model`), or a pretrained GPT-2 saved in a local
directory, its tokenizer extended with the special tokens (`from_pretrained`; never the network).
The config dataclass and the full GPT-2 config travel in every checkpoint with the tokenizer's JSON,
so a checkpoint rebuilds its own model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
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
    base_model: str | None = None  # the pretrained base this model was fine-tuned from, if any


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"model": {"vocab_size": 512, "n_positions": 96, "n_embd": 32, "n_layer": 1, "n_head": 2},
             "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3, "max_train_examples": 256,
                       "max_eval_examples": 64}},
    "cpu": {"model": {"vocab_size": 4096, "n_positions": 192, "n_embd": 192, "n_layer": 4, "n_head": 4},
            "train": {"epochs": 4, "batch_size": 32, "learning_rate": 1e-3, "max_minutes": 25}},
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
    """A randomly initialised GPT-2 of the config's size over the tokenizer's vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=config.n_positions, n_embd=config.n_embd,
                      n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
                      embd_pdrop=config.dropout, attn_pdrop=config.dropout,
                      bos_token_id=special_id(tokenizer, CONTEXT), eos_token_id=special_id(tokenizer, END),
                      pad_token_id=special_id(tokenizer, PAD))
    return GPT2LMHeadModel(gpt2)


def fresh(config: LMConfig, tokenizer: Any) -> LanguageModel:
    return LanguageModel(config, tokenizer, build_model(config, tokenizer))


class BaseModelError(ValueError):
    """The directory given as a pretrained base is not a usable GPT-2."""


def from_pretrained(directory: Path, max_positions: int) -> LanguageModel:
    """A GPT-2 saved with `save_pretrained` (config.json, weights, and tokenizer.json or
    vocab.json + merges.txt), its tokenizer given the special tokens and its embeddings resized to
    match. Loaded with local_files_only: a missing file is an error, never a download."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, GPT2LMHeadModel

    try:
        model = GPT2LMHeadModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        if (directory / "tokenizer.json").is_file():
            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        else:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True).backend_tokenizer
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(f"{directory.name}: not a GPT-2 model directory ({exc})") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    model.resize_token_embeddings(tokenizer.get_vocab_size())
    for name, token in (("bos_token_id", CONTEXT), ("eos_token_id", END), ("pad_token_id", PAD)):
        setattr(model.config, name, special_id(tokenizer, token))
    cfg = model.config
    config = LMConfig(vocab_size=tokenizer.get_vocab_size(), n_positions=min(cfg.n_positions, max_positions),
                      n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head, dropout=cfg.resid_pdrop,
                      base_model=directory.name)
    return LanguageModel(config, tokenizer, model)


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
    return {"family": "lm", "config": asdict(lm.config), "gpt2": lm.model.config.to_dict(),
            "tokenizer": lm.tokenizer.to_str(),
            "state_dict": {k: v.detach().cpu() for k, v in lm.model.state_dict().items()}}


def from_checkpoint(checkpoint: dict[str, Any]) -> LanguageModel:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = LMConfig(**checkpoint["config"])
    tokenizer = tokenizer_from_json(checkpoint["tokenizer"])
    # The full GPT-2 config (a fine-tuned base may differ from ours in more than the sizes);
    # checkpoints written before it was stored rebuild from the dataclass.
    gpt2 = checkpoint.get("gpt2")
    model = GPT2LMHeadModel(GPT2Config.from_dict(gpt2)) if gpt2 else build_model(config, tokenizer)
    model.load_state_dict(checkpoint["state_dict"])
    return LanguageModel(config, tokenizer, model.eval())


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 80
    temperature: float = 0.8  # 0 = greedy
    top_p: float = 0.95
    top_k: int = 50  # 0 = no top-k cut
    repetition_penalty: float = 1.1  # 1 = none; as in CTRL: divides positive logits, multiplies negative ones


def filter_logits(logits: torch.Tensor, seen: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """[B, V] next-token logits -> logits with the penalty, temperature, top-k and top-p applied
    (removed tokens at -inf). `seen` [B, V] marks tokens already in each row."""
    if params.repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    logits = logits / max(params.temperature, 1e-5)
    if 0 < params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= params.top_p  # keep the token that crosses p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


@dataclass(frozen=True)
class TextRequest:
    """One job's share of a generation pass: a context, one description per seed, and the opening
    words given rather than sampled (empty: the model writes all of it)."""

    context: str
    seeds: list[int]
    opening: str = ""


def prompt_length(lm: LanguageModel, request: TextRequest) -> int:
    """Tokens a request's rows start from: requests batched together must start from as many, so
    that no row is padded and each row's text is the one it gets alone."""
    prompt, given = _start(lm, request)
    return len(prompt) + len(given)


def _start(lm: LanguageModel, request: TextRequest) -> tuple[list[int], list[int]]:
    """The prompt's ids and the given opening's ids."""
    given = lm.tokenizer.encode(" " + request.opening).ids if request.opening else []
    return prompt_ids(lm.tokenizer, request.context, lm.config.n_positions), given


def generate(lm: LanguageModel, context: str, seeds: list[int], params: SamplingParams | None = None,
             device: torch.device | str = "cpu", opening: str = "") -> list[str]:
    """One description per seed for a context, all rows in one batch. Each row samples from its own
    generator seeded by its seed, so the same (model, context, seed, params) gives the same text.
    A non-empty `opening` is the description's first words, given rather than sampled."""
    return generate_many(lm, [TextRequest(context, seeds, opening)], params, device)[0]


@torch.no_grad()
def generate_many(lm: LanguageModel, requests: list[TextRequest], params: SamplingParams | None = None,
                  device: torch.device | str = "cpu") -> list[list[str]]:
    """`generate` for several requests (jobs batched together) in one batch: each request gets the
    texts it gets alone. They must share the sampling params and start from as many tokens
    (`prompt_length`), so that no row is padded."""
    params = params or SamplingParams()
    lm.model.eval()
    starts = [_start(lm, r) for r in requests]
    if len({len(prompt) + len(given) for prompt, given in starts}) != 1:
        raise ValueError("requests generated together must start from as many tokens")
    length = len(starts[0][0]) + len(starts[0][1])
    max_new = max(1, min(params.max_tokens, lm.config.n_positions - length))
    end, pad = special_id(lm.tokenizer, END), special_id(lm.tokenizer, PAD)
    row_starts = [start for start, r in zip(starts, requests, strict=True) for _ in r.seeds]
    seeds = [seed for r in requests for seed in r.seeds]
    rows = len(seeds)
    generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
    tokens = torch.tensor([prompt + given for prompt, given in row_starts], device=device)  # [B, T]
    vocab = lm.model.config.vocab_size
    # The penalty covers generated tokens only: a description should repeat the name's colour and type.
    seen = torch.zeros(rows, vocab, dtype=torch.bool, device=device)
    done = torch.zeros(rows, dtype=torch.bool)
    out: list[list[int]] = [list(given) for _, given in row_starts]
    past, step_input = None, tokens
    for step in range(max_new):
        mask = torch.ones(rows, length + step, dtype=torch.long, device=device)  # no padding: all ones
        result = lm.model(input_ids=step_input, attention_mask=mask, past_key_values=past, use_cache=True)
        past = result.past_key_values
        logits = filter_logits(result.logits[:, -1, :vocab].float(), seen, params).cpu()  # [B, V]
        if params.temperature == 0:
            chosen = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits, dim=-1)
            chosen = torch.cat([torch.multinomial(probs[r], 1, generator=generators[r]) for r in range(rows)])
        chosen = torch.where(done, torch.full_like(chosen, pad), chosen)
        for r in range(rows):
            if not done[r] and int(chosen[r]) != end:
                out[r].append(int(chosen[r]))
        done |= chosen == end
        if bool(done.all()):
            break
        step_input = chosen.to(device)[:, None]
        seen[torch.arange(rows), step_input[:, 0]] = True
    texts = iter(lm.tokenizer.decode(row).strip() for row in out)
    return [[next(texts) for _ in r.seeds] for r in requests]  # back into requests, in row order
