"""Writing product copy for a request: what was asked for (a prompt read by the interpreter, or
explicit attributes) -> the context the language model is given, one description per seed, each
scored (adherence, similarity to the request, copy check). Shared by the `describe` job and by
`generate_images` with `descriptions: k`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shared.schemas import AttributesInput, SamplingText
from worker.context import WorkerContext
from worker.description_scoring import Requested, adherence, details_in, fold, lexicon, similarities
from worker.models import lm
from worker.prompt_lexicon import DETAILS
from worker.prompts import Interpretation

Opening = Literal["attributes", "free"]
LEXICON_REF = "lm:text-lexicon"  # cache key of the interpreter tables built from the lexicon


@dataclass(frozen=True)
class CopyRequest:
    """What the model is asked for and what its copy is checked against."""

    context: str  # the product-name-like line the model continues, e.g. "Women Black Short Sleeve Jumpsuit"
    query: str  # what similarity is measured against: the prompt as typed, or the context
    requested: Requested
    interpreted: dict[str, Any] | None = None
    type_words: str | None = None  # the product type as the training names spell it

    def opening(self) -> str:
        """The first words of copy as the catalog writes it: the requested colour, pattern details
        and type, then sleeves, neckline or length when asked for ("Navy Blue printed T-shirt, has
        a V-neck, short sleeves"). Empty without a colour, the way catalog copy opens."""
        if self.requested.colour is None:
            return ""
        known = [d for d in self.requested.details if d in DETAILS]
        patterns = [d for d in known if DETAILS[d][0] is None]
        # what it has, after what it is: "has a V-neck, long sleeves, pockets"
        parts = [f"a {_display(d)}" if DETAILS[d][0] == "neck" else _display(d) for d in known if DETAILS[d][0]]
        kind = " ".join(w.lower() if w[1:].islower() and "-" not in w else w for w in (self.type_words or "").split())
        head = " ".join(filter(None, [self.requested.colour, *patterns, kind]))
        return f"{head}, has {', '.join(parts)}" if parts and kind else head


def _display(detail: str) -> str:
    return detail[0].upper() + detail[1:] if detail[1:2] == "-" else detail  # "v-neck" -> "V-neck"


def _title(text: str) -> str:
    return " ".join(w if any(c.isupper() for c in w) else w.capitalize() for w in text.split())


def _canonical(text: str, table: dict[tuple[str, ...], frozenset[str]], preferred: list[str]) -> str | None:
    """The catalog spelling of a type or colour word ("tee" -> Tshirts), None when no table has it."""
    values = table.get(fold(text), frozenset())
    return min(values & set(preferred), default=min(values, default=None))


def from_interpretation(prompt: str, result: Interpretation, type_names: dict[str, str] | None = None
                        ) -> CopyRequest:
    """A prompt the interpreter has read, rewritten in the order of a product name: the unmapped
    words (brand, gender, fabric) first, then colour, details ("short sleeve") and the product type
    as the training names spell it ("tshrt" -> "T-shirt"; as typed when `type_names` lacks it). A
    product type it did not understand is not checked, and the prompt goes to the model as typed."""
    kind = result.type if result.understood else None
    colour = result.colour if result.colour is not None and result.colour.how != "default" else None
    requested = Requested(kind.value if kind else None, colour.value if colour else None, tuple(details_in(prompt)))
    kind_words = None
    if kind is None:
        context = " ".join(prompt.split())
    else:
        details = [phrase for phrase in result.unmapped if details_in(phrase)]
        others = [phrase for phrase in result.unmapped if phrase not in details]
        kind_words = (type_names or {}).get(kind.value, kind.matched)
        context = _title(" ".join([*others, colour.value if colour else "", *details, kind_words]))
    interpreted = {"type": kind.public() if kind else None, "colour": colour.public() if colour else None,
                   "unmapped": result.unmapped}
    return CopyRequest(context, prompt, requested, interpreted, kind_words)


def from_prompt(ctx: WorkerContext, prompt: str, type_names: dict[str, str]) -> CopyRequest:
    lex = lexicon()
    vocab = ctx.vocabulary(LEXICON_REF, {"type": lex.type_values, "colour": lex.colour_values},
                           {"type": "type", "colour": "colour"})
    return from_interpretation(prompt, ctx.interpreter.interpret(prompt, vocab), type_names)


def from_attributes(attrs: AttributesInput, type_names: dict[str, str] | None = None) -> CopyRequest:
    """Explicit attributes; a type or colour the tables do not know is checked by its words."""
    lex = lexicon()
    kind = _canonical(attrs.type, lex.types, lex.type_values) if attrs.type else None
    colour = _canonical(attrs.colour, lex.colours, lex.colour_values) if attrs.colour else None
    details = [d for text in attrs.details for d in (details_in(text) or [text])]
    details += [text for text, known in ((attrs.type, kind), (attrs.colour, colour)) if text and not known]
    kind_words = (type_names or {}).get(kind, attrs.type) if kind else attrs.type
    context = _title(" ".join(filter(None, [attrs.brand, attrs.gender, attrs.colour, *attrs.details, kind_words])))
    return CopyRequest(context, context, Requested(kind, colour, tuple(dict.fromkeys(details))),
                       type_words=kind_words if kind else None)


def sampling_params(inp: SamplingText) -> lm.SamplingParams:
    return lm.SamplingParams(max_tokens=inp.max_tokens, temperature=inp.temperature, top_p=inp.top_p,
                             top_k=inp.top_k, repetition_penalty=inp.repetition_penalty)


def request_for(ctx: WorkerContext, dataset: str, prompt: str | None, attributes: AttributesInput | None
                ) -> CopyRequest:
    """The request from a prompt or attributes, in the words of the model's training names."""
    names = ctx.training_copy(dataset).type_names
    return from_prompt(ctx, prompt, names) if prompt is not None else from_attributes(attributes, names)


def write_copy(ctx: WorkerContext, ref: str, dataset: str, request: CopyRequest, seeds: list[int],
               params: lm.SamplingParams, opening: Opening = "attributes") -> list[dict[str, Any]]:
    """One scored description per seed, in seed order; "attributes" gives the copy its opening
    words from the request, "free" lets the model write all of it."""
    texts = lm.generate_many(ctx.load_model(ref), [text_request(request, seeds, opening)], params, ctx.device)[0]
    return scored(ctx, dataset, request, seeds, texts)


def text_request(request: CopyRequest, seeds: list[int], opening: Opening = "attributes") -> lm.TextRequest:
    """What the language model is given for a request: its context and, with "attributes", its opening."""
    return lm.TextRequest(request.context, seeds, request.opening() if opening == "attributes" else "")


def scored(ctx: WorkerContext, dataset: str, request: CopyRequest, seeds: list[int], texts: list[str]
           ) -> list[dict[str, Any]]:
    """Each text with its seed, its adherence to the request, its similarity to it and the copy check."""
    sims = similarities(ctx.interpreter.encoder, request.query, texts)
    index = ctx.training_copy(dataset).index
    return [{"seed": seed, "text": text, "adherence": adherence(text, request.requested).public(),
             "similarity": round(sim, 3), "copy": index.check(text).public()}
            for seed, text, sim in zip(seeds, texts, sims, strict=True)]


def ranked(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first: not a copy, then adherence, then similarity to the request."""
    order = sorted(candidates, key=lambda c: (c["copy"]["flagged"], -c["adherence"]["score"], -c["similarity"]))
    return [{"rank": i + 1, **c} for i, c in enumerate(order)]
