"""Product copy for the description model: (product name -> description) pairs from a catalog CSV
such as the Myntra demo (`myntra-products-catalog/myntra_products_catalog.csv`), cleaned:

- sentences the scraper glued together ("...TSA lockOne handle...") are split again;
- exact duplicate (name, description) pairs are dropped;
- the colour comes from the product name, not the unreliable colour column;
- the held-out split is chosen by a hash of the description text, so colour variants that share a
  template description never sit on both sides of the split (which would flatter held-out scores).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import ValidationFailed
from worker.prompt_lexicon import COLOUR_ALIASES

DEMO_FILE = "myntra-products-catalog/myntra_products_catalog.csv"
# Colours a product name may carry, longest first so "Navy Blue" wins over "Blue".
BASE_COLOURS = (
    "Black", "White", "Blue", "Brown", "Grey", "Red", "Green", "Navy Blue", "Pink", "Purple", "Silver", "Yellow",
    "Beige", "Gold", "Maroon", "Orange", "Olive", "Multi", "Cream", "Steel", "Charcoal", "Off White", "Peach",
    "Grey Melange", "Lavender", "Khaki", "Teal", "Magenta", "Tan", "Mustard", "Bronze", "Copper", "Turquoise Blue",
    "Rust", "Metallic", "Burgundy", "Coffee Brown", "Sea Green", "Nude", "Mauve", "Rose", "Lime Green",
    "Fluorescent Green", "Taupe", "Mushroom Brown", "Gray", "Violet", "Coral", "Navy", "Wine", "Ivory",
)
_GLUED = re.compile(r"(?<=[a-z]{3})(?=[A-Z][a-z])")  # "lockOne" -> "lock. One"; "McDonald" stays
_NO_SPACE_AFTER_STOP = re.compile(r"(?<=[a-z][.?!:])(?=[A-Z])")  # "size.How" -> "size. How"


@dataclass(frozen=True)
class DescriptionColumns:
    id: str = "ProductID"
    name: str = "ProductName"
    description: str = "Description"
    colour: str | None = "PrimaryColor"  # read only to measure how often it disagrees with the name


@dataclass(frozen=True)
class Pair:
    id: str
    context: str  # the product name: what the model is conditioned on
    description: str
    colour: str | None
    split: str


@dataclass
class CleaningReport:
    rows: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    glued_fixed: int = 0
    colour_column_disagrees: int = 0  # the name says one colour, the column another

    def as_dict(self) -> dict:
        out = asdict(self)
        out["skipped"] = dict(self.skipped)
        return out


def split_glued_sentences(text: str) -> str:
    text = _GLUED.sub(". ", text)
    text = _NO_SPACE_AFTER_STOP.sub(" ", text)
    return re.sub(r"\s+", " ", text).strip()


def _colour_pattern() -> re.Pattern[str]:
    names = sorted({*BASE_COLOURS, *COLOUR_ALIASES}, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b", re.IGNORECASE)


_COLOURS = _colour_pattern()
_CANONICAL = {**{c.lower(): c for c in BASE_COLOURS}, **{k: v[0] for k, v in COLOUR_ALIASES.items()},
              "gray": "Grey", "navy": "Navy Blue"}


def colour_from_name(name: str) -> str | None:
    """The first colour word in a product name, in catalog spelling ("Navy" -> "Navy Blue")."""
    match = _COLOURS.search(name)
    return _CANONICAL.get(match.group(1).lower(), match.group(1).title()) if match else None


GENDER_WORDS = frozenset({"Men", "Women", "Boys", "Girls", "Unisex", "Kids"})


def vary_context(name: str, rng: np.random.Generator) -> str:
    """A product name as a merchandiser might type it, for training: the full name ("Roadster
    Women Black Solid Jumpsuit"), or without the brand ("Women Black Solid Jumpsuit"), or
    without brand and gender ("Black Solid Jumpsuit"), so short prompts are contexts the model
    has seen. Names with no gender word stay whole (the brand cannot be told apart)."""
    words = name.split()
    cut = next((i for i, w in enumerate(words) if w in GENDER_WORDS), None)
    draw = rng.random()
    if cut is None or draw < 0.4:
        return name
    return " ".join(words[cut:] if draw < 0.7 else words[cut + 1:]) or name


def held_out(description: str, fraction: float) -> bool:
    digest = hashlib.sha256(f"atelier-desc:{description.lower()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def clean_pairs(rows: Iterable[dict[str, str]], columns: DescriptionColumns, *, test_fraction: float = 0.1,
                min_words: int = 3) -> tuple[list[Pair], CleaningReport]:
    report = CleaningReport()
    seen: set[tuple[str, str]] = set()
    pairs: list[Pair] = []
    for row in rows:
        report.rows += 1
        name = " ".join((row.get(columns.name) or "").split())
        raw = row.get(columns.description) or ""
        if not name or not raw.strip():
            report.skipped["missing_name_or_description"] += 1
            continue
        text = split_glued_sentences(raw)
        if len(text.split()) < min_words:
            report.skipped["too_short"] += 1
            continue
        if (name.lower(), text.lower()) in seen:
            report.skipped["duplicate"] += 1
            continue
        seen.add((name.lower(), text.lower()))
        report.glued_fixed += text != " ".join(raw.split())
        colour = colour_from_name(name)
        column = (row.get(columns.colour) or "").strip() if columns.colour else ""
        if colour and column and column.lower() != colour.lower():
            report.colour_column_disagrees += 1
        pairs.append(Pair(str(row.get(columns.id) or report.rows), name, text, colour,
                          "test" if held_out(text, test_fraction) else "train"))
    report.kept = len(pairs)
    return pairs, report


def read_csv(path: Path, columns: DescriptionColumns) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for role in ("name", "description"):
            if getattr(columns, role) not in header:
                raise ValidationFailed(f"the CSV has no column {getattr(columns, role)!r}; its columns are {header}",
                                       code="unknown_column", field=f"columns.{role}")
        return list(reader)
