"""Cleaning product copy for the description model, on hand-written and real Myntra rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.datasets.descriptions import (
    DEMO_FILE,
    DescriptionColumns,
    clean_pairs,
    colour_from_name,
    read_csv,
    split_glued_sentences,
    vary_context,
)


def test_glued_sentences_are_split_without_breaking_names() -> None:
    assert split_glued_sentences("secured with a TSA lockOne handle on the top") == \
        "secured with a TSA lock. One handle on the top"
    assert split_glued_sentences("Warranty: 5 yearsWarranty provided") == "Warranty: 5 years. Warranty provided"
    assert split_glued_sentences("size chart.How to measure") == "size chart. How to measure"
    assert split_glued_sentences("a McDonald print, has a V-neck and iPhone pocket") == \
        "a McDonald print, has a V-neck and iPhone pocket"


@pytest.mark.parametrize(("name", "colour"), [
    ("DKNY Unisex Black & Grey Printed Medium Trolley Bag", "Black"),
    ("Roadster Men Navy Blue Slim Fit Jeans", "Navy Blue"),
    ("Vero Moda Women Navy Solid Jumpsuit", "Navy Blue"),
    ("HRX Men Gray Running Shoes", "Grey"),
    ("Mast & Harbour Women Off White Top", "Off White"),
    ("Puma Unisex Printed Backpack", None),
])
def test_colour_comes_from_the_name(name: str, colour: str | None) -> None:
    assert colour_from_name(name) == colour


def test_duplicates_and_empty_rows_are_dropped_and_counted() -> None:
    rows = [{"ProductID": "1", "ProductName": "A Women Red Dress", "Description": "Red dress, has a round neckShort",
             "PrimaryColor": " Blue"},
            {"ProductID": "2", "ProductName": "A Women Red Dress", "Description": "Red dress, has a round neckShort",
             "PrimaryColor": " Red"},
            {"ProductID": "3", "ProductName": "B Men Shirt", "Description": "", "PrimaryColor": ""},
            {"ProductID": "4", "ProductName": "C Tee", "Description": "Nice", "PrimaryColor": ""}]
    pairs, report = clean_pairs(rows, DescriptionColumns())
    assert [p.id for p in pairs] == ["1"] and pairs[0].colour == "Red"
    assert pairs[0].description == "Red dress, has a round neck. Short"
    assert report.skipped == {"duplicate": 1, "missing_name_or_description": 1, "too_short": 1}
    assert report.colour_column_disagrees == 1 and report.glued_fixed == 1


def test_shared_template_descriptions_stay_on_one_side_of_the_split() -> None:
    template = "Solid casual shirt, has a spread collar, long sleeves, button placket, curved hem"
    rows = [{"ProductID": str(i), "ProductName": f"Brand Men {colour} Shirt", "Description": template}
            for i, colour in enumerate(["Red", "Blue", "Green", "Black", "White", "Olive"])]
    pairs, _ = clean_pairs(rows, DescriptionColumns(colour=None), test_fraction=0.5)
    assert len({p.split for p in pairs}) == 1


def test_real_myntra_rows(tmp_path: Path) -> None:
    from tests.support import datasets_dir

    folder = datasets_dir()
    if folder is None or not (folder / DEMO_FILE).is_file():
        pytest.skip("ATELIER_DATASETS/myntra-products-catalog is not available")
    pairs, report = clean_pairs(read_csv(folder / DEMO_FILE, DescriptionColumns()), DescriptionColumns())
    assert report.rows == 12_491 and report.skipped["duplicate"] >= 700
    assert report.glued_fixed > 4_000 and report.colour_column_disagrees > 500
    trolley = next(p for p in pairs if p.id == "10017413")
    assert "TSA lock. One handle" in trolley.description and trolley.colour == "Black"
    test_share = sum(p.split == "test" for p in pairs) / len(pairs)
    assert 0.07 < test_share < 0.13
    by_text: dict[str, set[str]] = {}
    for p in pairs:
        by_text.setdefault(p.description.lower(), set()).add(p.split)
    assert all(len(splits) == 1 for splits in by_text.values())  # no template on both sides


def test_training_contexts_vary_like_typed_prompts() -> None:
    rng = np.random.default_rng(0)
    seen = {vary_context("Roadster Women Black Solid Jumpsuit", rng) for _ in range(200)}
    assert seen == {"Roadster Women Black Solid Jumpsuit", "Women Black Solid Jumpsuit", "Black Solid Jumpsuit"}
    assert vary_context("INCOLOR 18 IN 1 Eyeshadow Kit 2", rng) == "INCOLOR 18 IN 1 Eyeshadow Kit 2"
