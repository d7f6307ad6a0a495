"""The prompt interpreter with the real all-MiniLM-L6-v2 encoder (offline, from its wheel)."""

from __future__ import annotations

import pytest

from worker.prompts import PromptInterpreter, Vocabulary, load_encoder, normalize, not_understood, singular

TYPES = ["Tshirts", "Shirts", "Casual Shoes", "Sports Shoes", "Formal Shoes", "Tops", "Dresses", "Jeans",
         "Trousers", "Jumpsuit", "Rompers", "Handbags", "Watches", "Sweatshirts", "Jackets", "Heels", "Shorts"]
COLOURS = ["Black", "White", "Blue", "Navy Blue", "Red", "Grey", "Green", "Pink", "Olive", "Off White", "Maroon",
           "Burgundy", "Beige"]
ROLES = {"type": "articleType", "colour": "baseColour"}


@pytest.fixture(scope="module")
def interpreter() -> PromptInterpreter:
    return PromptInterpreter(load_encoder())


@pytest.fixture(scope="module")
def vocab(interpreter: PromptInterpreter) -> Vocabulary:
    return interpreter.vocabulary(TYPES, COLOURS)


@pytest.mark.parametrize(("prompt", "kind", "colour"), [
    ("black short sleeve jumpsuit", "Jumpsuit", "Black"),
    ("Jumpsuit, black", "Jumpsuit", "Black"),  # word order
    ("playsuit in navy", "Jumpsuit", "Navy Blue"),  # synonyms
    ("blk tee", "Tshirts", "Black"),  # abbreviations
    ("white sneakers", "Casual Shoes", "White"),
    ("grey hoodie", "Sweatshirts", "Grey"),
    ("jumsuit in blakc", "Jumpsuit", "Black"),  # typos
    ("off-white denim jacket", "Jackets", "Off White"),
    ("shirt dress in olive", "Dresses", "Olive"),  # the head noun is the product
    ("maroon romper with short sleeves", "Rompers", "Maroon"),  # "short" is a detail, not Shorts
    ("scarlet athletic footwear", "Sports Shoes", "Red"),  # neither word is listed: embeddings
])
def test_type_and_colour(interpreter: PromptInterpreter, vocab: Vocabulary, prompt: str, kind: str,
                         colour: str) -> None:
    result = interpreter.interpret(prompt, vocab)
    assert result.understood
    assert (result.type.value, result.colour.value) == (kind, colour), result.public(ROLES)
    assert 0 < result.type.confidence <= 1 and 0 < result.colour.confidence <= 1


def test_unmapped_words_are_reported_in_phrases(interpreter: PromptInterpreter, vocab: Vocabulary) -> None:
    result = interpreter.interpret("Please generate a black short sleeve jumpsuit with a belted waist", vocab)
    public = result.public(ROLES)
    assert public["unmapped"] == ["short sleeve", "belted waist"]
    assert public["articleType"]["how"] == "exact" and public["articleType"]["matched"] == "jumpsuit"


def test_missing_colour_defaults_to_the_most_common_with_zero_confidence(interpreter: PromptInterpreter,
                                                                          vocab: Vocabulary) -> None:
    result = interpreter.interpret("jumpsuit", vocab, colour_counts={"Jumpsuit": {"Blue": 3, "Black": 9}})
    assert result.colour.value == "Black" and result.colour.confidence == 0.0 and result.colour.how == "default"


def test_nonsense_is_not_understood_and_names_the_closest(interpreter: PromptInterpreter, vocab: Vocabulary) -> None:
    result = interpreter.interpret("a spaceship made of cheese", vocab)
    assert not result.understood and len(result.closest) == 3
    error = not_understood("a spaceship made of cheese", result, ROLES)
    assert error.code == "prompt_not_understood" and error.field == "input.prompt"
    assert result.closest[0]["value"] in error.message


def test_fashion_mnist_vocabulary_without_colours(interpreter: PromptInterpreter) -> None:
    vocab = interpreter.vocabulary(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                    "Sneaker", "Bag", "Ankle boot"], [])
    for prompt, kind in [("a tee", "T-shirt/top"), ("ankle boots", "Ankle boot"), ("hoodie", "Pullover"),
                         ("red trainers", "Sneaker"), ("handbag", "Bag")]:
        result = interpreter.interpret(prompt, vocab)
        assert result.type.value == kind, prompt
        assert result.colour is None


def test_normalisation_helpers() -> None:
    assert normalize("Women's T-Shirt/Top") == ["women", "t", "shirt", "top"]
    assert [singular(w) for w in ["dresses", "shoes", "watches", "jeans", "glass"]] == \
           ["dress", "shoe", "watch", "jean", "glass"]
