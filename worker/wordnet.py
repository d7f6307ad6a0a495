"""WordNet as the prompt interpreter's dictionary for product words no table lists.

A sentence encoder places "anorak" nearer Handbags than Jackets; WordNet knows an anorak is a
parka, a kind of jacket. For an unknown product noun the interpreter walks the noun's artifact
senses and their hypernyms ("mitten" -> glove; "neckerchief" -> kerchief -> scarf) and takes the
first word there that its own tables know. Only artifact senses count, so "bat" (the animal),
"choker" (the strangler) or "banana" never become products, and the walk stops two levels up,
before the broad categories ("clothing", "footwear", "bag") that would make any artifact a product.

The data is Princeton WordNet 3.0 as Debian's `wordnet-base` installs it (/usr/share/wordnet;
`deploy/local/install_wordnet.sh`), read by NLTK. NLTK also wants the lexicographer-file list,
which Debian does not ship, and refuses to read files outside its root, so the database is copied
once into a folder of ours with that list beside it. Without the data the fallback is off.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_DEPTH = 2  # hypernym levels above the word's own sense: kerchief, then scarf; never "garment"
ARTIFACT = "noun.artifact"
DATABASE_FILES = ("data.noun", "index.noun", "noun.exc", "data.verb", "index.verb", "verb.exc", "data.adj",
                  "index.adj", "adj.exc", "data.adv", "index.adv", "adv.exc", "cntlist.rev")
# WordNet 3.0's lexicographer files in number order (lexnames(5WN)); a data line's second field
# indexes this list, which is how a sense is known to be an artifact.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def _prepare(source: Path, folder: Path) -> bool:
    """Copy the database into `folder` with the lexnames file NLTK reads; False when `source` lacks it."""
    if not all((source / name).is_file() for name in DATABASE_FILES):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for name in DATABASE_FILES:
        target = folder / name
        if not target.is_file() or target.stat().st_size != (source / name).stat().st_size:
            _replace(target, (source / name).read_bytes())
    lines = [f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
    lexnames = ("\n".join(lines) + "\n").encode()
    if not (folder / "lexnames").is_file() or (folder / "lexnames").read_bytes() != lexnames:
        _replace(folder / "lexnames", lexnames)
    return True


def _replace(target: Path, data: bytes) -> None:
    # Pool children start together: each writes its own temporary file and renames it into place, so
    # none ever reads a file another is still writing (a reader keeps the inode it opened).
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    temporary.write_bytes(data)
    os.replace(temporary, target)


def load_wordnet(source: Path, folder: Path) -> Any | None:
    """An NLTK WordNet reader over the database in `source`, or None (logged) when it is not installed."""
    if not _prepare(source, folder):
        log.warning("WordNet is not installed at %s (deploy/local/install_wordnet.sh): product words no table "
                    "lists are read by similarity alone", source)
        return None
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class Reader(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None  # maps Open Multilingual WordNet data onto 3.0; there is none, and this is 3.0

    root = str(folder.resolve())
    if root not in nltk.data.path:
        nltk.data.path.append(root)  # NLTK reads only below the roots it was given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": none are used
        return Reader(root, None)


def broader_words(wordnet: Any, phrase: str) -> Iterator[tuple[str, int]]:
    """(word, depth) for the artifact senses of `phrase` (spaces or underscores), most common sense
    first: the sense's own words at depth 0, then its hypernyms' words, up to MAX_DEPTH."""
    seen: set[str] = set()
    for sense in wordnet.synsets(phrase.replace(" ", "_"), pos="n"):
        if sense.lexname() != ARTIFACT:
            continue
        level = [sense]
        for depth in range(MAX_DEPTH + 1):
            for node in level:
                if node.name() in seen:
                    continue
                seen.add(node.name())
                for lemma in node.lemma_names():
                    yield lemma.replace("_", " ").lower(), depth
            level = [h for node in level for h in node.hypernyms()]
