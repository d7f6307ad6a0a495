"""Scoring of product copy on hand-written good and bad descriptions, and the request a prompt or
explicit attributes turn into."""

from __future__ import annotations

import pytest

from shared.schemas import AttributesInput
from worker.describing import from_attributes, from_interpretation, ranked
from worker.description_scoring import CopyIndex, Requested, adherence, details_in, lexicon, type_names
from worker.prompts import PromptInterpreter

JUMPSUIT = Requested(type="Jumpsuit", colour="Black", details=("short sleeves",))


@pytest.mark.parametrize("text", [
    "Black solid jumpsuit, has a round neck, short sleeves, and a zip closure",
    "Jet black playsuit with half sleeves and two pockets",  # synonyms for all three
    "A black solid basic jumpsuit, has a V-neck, short-sleeved, waist tie-up, and white piping",  # white later
])
def test_good_copy_adheres(text: str) -> None:
    result = adherence(text, JUMPSUIT)
    assert result.adherent and result.score == 1.0, result.public()


@pytest.mark.parametrize(("text", "missing", "contradiction"), [
    ("Navy blue solid jumpsuit, has a round neck, short sleeves", "colour", "colour"),
    ("Black solid maxi dress, has a round neck, short sleeves", "type", "type"),
    ("Black solid jumpsuit, has a round neck, long sleeves", "detail:short sleeves", "sleeves"),
    ("Solid jumpsuit, has a round neck, short sleeves", "colour", None),
    ("Black solid jumpsuit, has a round neck and a zip closure", "detail:short sleeves", None),
    ("Design Details: a pair of navy blue playsuits, has short sleeves", "colour", "colour"),  # after a label
])
def test_bad_copy_is_caught(text: str, missing: str, contradiction: str | None) -> None:
    result = adherence(text, JUMPSUIT)
    assert not result.adherent and result.present[missing] is False, result.public()
    if contradiction:
        assert result.score == 0.0 and result.contradictions[0].startswith(contradiction), result.public()
    else:
        assert not result.contradictions and 0 < result.score < 1


def test_details_are_not_read_as_types() -> None:
    shirt = Requested(type="Tops", colour="White")
    result = adherence("White solid top, has a shirt collar, cap sleeves and button closure", shirt)
    assert result.adherent, result.public()
    assert details_in("black short sleeve v-neck jumpsuit with pockets") == ["short sleeves", "v-neck", "pockets"]


def test_copy_check_flags_repeated_training_text_only() -> None:
    training = ["Black solid jumpsuit, has a round neck, short sleeves, a zip closure, two pockets, and a tie-up "
                "belt at the waist",
                "Navy blue printed shirt, has a spread collar, long sleeves, button placket, curved hem and one "
                "patch pocket"]
    index = CopyIndex(training)
    verbatim = index.check(training[0])
    assert verbatim.flagged and verbatim.share == 1.0 and verbatim.source == 0
    one_word_changed = index.check(training[0].replace("zip", "button"))
    assert one_word_changed.flagged and one_word_changed.shared_words == verbatim.shared_words - 1
    template = index.check("Red solid dress, has a round neck, short sleeves, and flared hem")
    assert not template.flagged and template.shared_words >= 4  # shared phrasing is not copying
    assert not index.check("A pair of white sneakers with a cushioned footbed").flagged


def test_a_prompt_becomes_a_product_name_and_the_checks() -> None:
    lex = lexicon()
    interpreter = PromptInterpreter(None)  # exact words and synonyms only: no embeddings needed here
    vocab = interpreter.vocabulary(lex.type_values, lex.colour_values)
    request = from_interpretation("jumpsuit in navy with short sleeves for women",
                                  interpreter.interpret("jumpsuit in navy with short sleeves for women", vocab))
    assert request.context == "Women Navy Blue Short Sleeves Jumpsuit"
    assert request.requested == Requested("Jumpsuit", "Navy Blue", ("short sleeves",))
    assert request.query == "jumpsuit in navy with short sleeves for women"
    unknown = from_interpretation("lehenga choli", interpreter.interpret("lehenga choli", vocab))
    assert unknown.context == "lehenga choli" and unknown.requested == Requested()


def test_attributes_become_a_product_name_and_the_checks() -> None:
    request = from_attributes(AttributesInput(type="tee", colour="navy", details=["half sleeves", "pockets"],
                                              gender="Men", brand="Roadster"))
    assert request.context == "Roadster Men Navy Half Sleeves Pockets Tee"
    assert request.requested == Requested("Tshirts", "Navy Blue", ("short sleeves", "pockets"))
    assert from_attributes(AttributesInput(type="lehenga")).requested.details == ("lehenga",)
    with pytest.raises(ValueError, match="at least one"):
        AttributesInput(brand="Roadster")


def test_ranking_puts_copies_last_then_adherence_then_similarity() -> None:
    def candidate(seed: int, score: float, sim: float, copy: bool) -> dict:
        return {"seed": seed, "adherence": {"score": score}, "similarity": sim, "copy": {"flagged": copy}}

    order = ranked([candidate(1, 1.0, 0.9, True), candidate(2, 0.5, 0.9, False), candidate(3, 1.0, 0.4, False),
                    candidate(4, 1.0, 0.6, False)])
    assert [c["seed"] for c in order] == [4, 3, 2, 1] and [c["rank"] for c in order] == [1, 2, 3, 4]


def test_types_are_spelled_as_the_training_names_spell_them() -> None:
    names = ["Roadster Men Black T-shirt", "HRX Men Navy T-shirt", "Nike Men White Tee",
             "Vero Moda Women Red Shift Dress", "Mango Women Black Dress", "Puma Men Blue Running Shoes",
             "Only Women White Shirt Collar Top"]
    spelled = type_names(names)
    assert spelled["Tshirts"] == "T-shirt" and spelled["Dresses"] == "Dress" and spelled["Tops"] == "Top"
    assert spelled["Sports Shoes"] == "Running Shoes" and "Shirts" not in spelled  # "Shirt Collar" is a detail
    lex = lexicon()
    interpreter = PromptInterpreter(None)
    vocab = interpreter.vocabulary(lex.type_values, lex.colour_values)
    request = from_interpretation("black tshrt", interpreter.interpret("black tshrt", vocab), spelled)
    assert request.context == "Black T-shirt" and request.requested.type == "Tshirts"


def test_the_opening_is_the_catalog_way_of_naming_the_product() -> None:
    request = from_attributes(AttributesInput(type="tee", colour="navy", details=["printed", "short sleeves"]),
                              {"Tshirts": "T-shirt"})
    assert request.opening() == "Navy Blue printed T-shirt, has short sleeves"
    v_neck = from_attributes(AttributesInput(type="tee", colour="navy", details=["v neck", "long sleeves", "pockets"]),
                             {"Tshirts": "T-shirt"})
    assert v_neck.opening() == "Navy Blue T-shirt, has a V-neck, long sleeves, pockets"
    assert from_attributes(AttributesInput(type="jumpsuit", colour="Black"), {"Jumpsuit": "Jumpsuit"}).opening() == \
        "Black jumpsuit"
    assert from_attributes(AttributesInput(type="jumpsuit")).opening() == ""  # copy opens with the colour
    assert from_attributes(AttributesInput(colour="black", details=["short sleeves"])).opening() == "Black"
