"""Scores for generated product copy, so the `describe` job can rank its candidates and the
benchmark can count what it claims:

- attribute adherence: the requested colour, product type and details appear by word or synonym
  (the interpreter's tables: "navy" is Navy Blue, "tee" is a T-shirt, "half sleeves" are short
  sleeves), and nothing contradicts them: no other colour or type in the opening phrase, where
  product copy names the product ("Navy solid jumpsuit, has ..."), and no other detail of an
  exclusive group (sleeve length, neckline, length) anywhere;
- similarity to the prompt: cosine of the sentence-transformer embeddings;
- copy check: how much of the text repeats one training description verbatim (in runs of three
  words or more); a description that is a training text with a word or two changed is flagged.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import cache
from typing import Any

from worker.datasets.descriptions import BASE_COLOURS
from worker.prompt_lexicon import COLOUR_ALIASES, DETAILS, EXCLUSIVE, TYPE_ALIASES
from worker.prompts import normalize, singular

Phrase = tuple[str, ...]
_HEAD_END = re.compile(r"[,.;:!?]")
_LABEL = re.compile(r"^\s*[A-Za-z ]{1,30}:\s*")  # "Design Details: Navy blue saree ..." -> "Navy blue saree ..."
COPY_SHINGLE = 6  # words per indexed run; shorter shared runs are common phrasing, not copying
COPY_RUN = 3  # shorter common runs ("has a") are coincidence
COPY_MIN_WORDS = 12  # a flagged copy repeats at least this many words of one training description ...
COPY_SHARE = 0.9  # ... and they make up this share of its own: that text with a word or two changed


def fold(text: str) -> Phrase:
    return tuple(singular(w) for w in normalize(text))


@dataclass(frozen=True)
class Lexicon:
    """Folded phrase -> the canonical values it may name."""

    types: dict[Phrase, frozenset[str]]
    colours: dict[Phrase, frozenset[str]]
    details: dict[Phrase, str]
    groups: dict[str, str | None]  # detail -> its group; details of an EXCLUSIVE group exclude each other

    @property
    def type_values(self) -> list[str]:
        return sorted({targets[0] for targets in TYPE_ALIASES.values()})

    @property
    def colour_values(self) -> list[str]:
        return sorted({v for values in self.colours.values() for v in values})


@cache
def lexicon() -> Lexicon:
    """Built once from the constant tables (pure data, so caching it is safe)."""
    types: dict[Phrase, set[str]] = defaultdict(set)
    for phrase, targets in TYPE_ALIASES.items():
        types[fold(phrase)].update(targets)
        for target in targets:
            types[fold(target)].add(target)
    colours: dict[Phrase, frozenset[str]] = {fold(c): frozenset({c}) for c in BASE_COLOURS}
    colours |= {fold(phrase): frozenset(targets) for phrase, targets in COLOUR_ALIASES.items()}
    details = {fold(p): name for name, (_, phrases) in DETAILS.items() for p in (*phrases, name)}
    return Lexicon({k: frozenset(v) for k, v in types.items()}, colours, details,
                   {name: group for name, (group, _) in DETAILS.items()})


@dataclass(frozen=True)
class Mention:
    values: frozenset[str]
    start: int  # word positions start..end
    end: int


def mentions(words: Phrase, table: dict[Phrase, Any], used: list[bool]) -> list[Mention]:
    """Non-overlapping phrases of `table` in the words, longest first; marks the words taken."""
    longest = max((len(k) for k in table), default=0)
    found = []
    for n in range(longest, 0, -1):
        for start in range(len(words) - n + 1):
            phrase = words[start:start + n]
            if phrase in table and not any(used[start:start + n]):
                value = table[phrase]
                found.append(Mention(value if isinstance(value, frozenset) else frozenset({value}), start,
                                     start + n))
                used[start:start + n] = [True] * n
    return sorted(found, key=lambda m: m.start)


def details_in(text: str) -> list[str]:
    """The known garment details named in a text, in order ("short sleeve" -> "short sleeves")."""
    words = fold(text)
    return [next(iter(m.values)) for m in mentions(words, lexicon().details, [False] * len(words))]


def type_names(names: Iterable[str]) -> dict[str, str]:
    """Each product type as product names in the data spell it most often ("Tshirts" -> "T-shirt",
    "Casual Shoes" -> "Sneakers"), so a prompt's "tshrt" or "boiler suit" reaches the model in the
    words it was trained on."""
    lex = lexicon()
    primary = {phrase: sorted(values)[0] for phrase, values in lex.types.items()}
    primary |= {fold(target): target for targets in TYPE_ALIASES.values() for target in targets}
    primary |= {fold(phrase): targets[0] for phrase, targets in TYPE_ALIASES.items()}  # "dress": Dresses
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name in names:
        tokens = name.split()
        words: list[str] = []
        owner: list[int] = []  # folded word -> the name token it came from ("T-shirt" -> t, shirt)
        for i, token in enumerate(tokens):
            folded = fold(token)
            words += folded
            owner += [i] * len(folded)
        used = [False] * len(words)
        mentions(tuple(words), lex.details, used)
        found = mentions(tuple(words), lex.types, used)
        if found:  # the product is the last type named; credited to the type it names first
            head = found[-1]
            surface = " ".join(tokens[owner[head.start]:owner[head.end - 1] + 1]).strip(".,;:()")
            counts[primary[tuple(words[head.start:head.end])]][surface] += 1
    # One-word forms first: "Dress" rather than the more specific "Shift Dress".
    return {value: max(forms, key=lambda f: (" " not in f, forms[f])) for value, forms in counts.items()}


@dataclass(frozen=True)
class Requested:
    """What a description is checked against; None / empty = not asked for."""

    type: str | None = None
    colour: str | None = None
    details: tuple[str, ...] = ()

    def public(self) -> dict[str, Any]:
        return {"type": self.type, "colour": self.colour, "details": list(self.details)}


@dataclass
class Adherence:
    present: dict[str, bool] = field(default_factory=dict)  # "colour", "type", "detail:<name>" -> found
    contradictions: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Share of requested attributes present, 0 when anything contradicts the request."""
        if self.contradictions:
            return 0.0
        return sum(self.present.values()) / len(self.present) if self.present else 1.0

    @property
    def adherent(self) -> bool:
        return not self.contradictions and all(self.present.values())

    def public(self) -> dict[str, Any]:
        return {"score": round(self.score, 3), "adherent": self.adherent, "present": self.present,
                "contradictions": self.contradictions}


def adherence(description: str, requested: Requested) -> Adherence:
    lex = lexicon()
    words = fold(description)
    label = _LABEL.match(description)
    head_len = len(fold(description[:label.end()] if label else "")) + len(
        fold(_HEAD_END.split(description[label.end() if label else 0:], maxsplit=1)[0]))
    used = [False] * len(words)
    # Details first, so "shirt collar" or "cap sleeves" are never read as a type.
    details = mentions(words, lex.details, used)
    colours = mentions(words, lex.colours, used)
    types = mentions(words, lex.types, used)
    result = Adherence()
    for role, wanted, found in (("colour", requested.colour, colours), ("type", requested.type, types)):
        if wanted is None:
            continue
        result.present[role] = any(wanted in m.values for m in found)
        head = [m for m in found if m.start < head_len]
        if head and not any(wanted in m.values for m in head):
            named = sorted({v for m in head for v in m.values})[:3]
            result.contradictions.append(f"{role}: opens with {' / '.join(named)}, not {wanted}")
    named_details = [next(iter(m.values)) for m in details]
    for wanted in requested.details:
        if wanted in lex.groups:
            result.present[f"detail:{wanted}"] = wanted in named_details
            group = lex.groups[wanted]
            others = [d for d in named_details if group in EXCLUSIVE and lex.groups[d] == group and d != wanted]
            if others and wanted not in named_details:
                result.contradictions.append(f"{group}: says {others[0]}, not {wanted}")
        else:  # a detail no table lists: its words, in order, anywhere
            result.present[f"detail:{wanted}"] = _contains(words, fold(wanted))
    return result


def _contains(words: Phrase, phrase: Phrase) -> bool:
    n = len(phrase)
    return n > 0 and any(words[i:i + n] == phrase for i in range(len(words) - n + 1))


@dataclass(frozen=True)
class CopyCheck:
    flagged: bool
    shared_words: int  # words found in order in one training description, in runs of COPY_RUN or more
    share: float  # ... as a share of the description's words
    source: int | None  # index of that training description

    def public(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "shared_words": self.shared_words, "share": round(self.share, 3)}


class CopyIndex:
    """Training descriptions indexed by runs of COPY_SHINGLE words, to find the few that share long
    verbatim runs with a generated text without comparing it with all of them."""

    def __init__(self, descriptions: Iterable[str], max_postings: int = 32) -> None:
        self.docs: list[list[str]] = []
        self.postings: dict[int, list[int]] = defaultdict(list)
        for doc_id, text in enumerate(descriptions):
            words = normalize(text)
            self.docs.append(words)
            for shingle in {hash(tuple(words[i:i + COPY_SHINGLE])) for i in range(len(words) - COPY_SHINGLE + 1)}:
                if len(self.postings[shingle]) < max_postings:  # template phrases: enough examples kept
                    self.postings[shingle].append(doc_id)

    def check(self, text: str, candidates: int = 8) -> CopyCheck:
        """The training description this text repeats the most of: the words of their common
        verbatim runs (COPY_RUN words or longer, in order), so a training text with a word changed
        here and there still counts as repeated."""
        words = normalize(text)
        votes: dict[int, int] = defaultdict(int)
        for i in range(len(words) - COPY_SHINGLE + 1):
            for doc_id in self.postings.get(hash(tuple(words[i:i + COPY_SHINGLE])), ()):
                votes[doc_id] += 1
        best, source = 0, None
        for doc_id in sorted(votes, key=votes.get, reverse=True)[:candidates]:
            blocks = SequenceMatcher(None, words, self.docs[doc_id], autojunk=False).get_matching_blocks()
            shared = sum(b.size for b in blocks if b.size >= COPY_RUN)
            if shared > best:
                best, source = shared, doc_id
        share = best / len(words) if words else 0.0
        return CopyCheck(best >= COPY_MIN_WORDS and share >= COPY_SHARE, best, share, source)


@dataclass(frozen=True)
class TrainingCopy:
    """What scoring and prompting need from a description model's training data, built once."""

    index: CopyIndex
    type_names: dict[str, str]

    @classmethod
    def build(cls, pairs: Sequence[tuple[str, str]]) -> TrainingCopy:
        return cls(CopyIndex(text for _, text in pairs), type_names(name for name, _ in pairs))


def similarities(encoder: Any, prompt: str, texts: Sequence[str]) -> list[float]:
    """Cosine similarity of each text to the prompt (normalised sentence embeddings)."""
    if not texts:
        return []
    vectors = encoder.encode([prompt, *texts], normalize_embeddings=True, convert_to_numpy=True,
                             show_progress_bar=False)
    return [float(v @ vectors[0]) for v in vectors[1:]]
