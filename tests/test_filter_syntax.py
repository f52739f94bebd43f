"""The metadata filter's syntax (index/search/filters.py): a quoted value or column name is taken whole, so the
filter the Search page writes (str(MetadataFilter)) is always read back as the same filter, on the CLI too."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from index.__main__ import main as cli
from index.search.filters import Condition, FilterError, MetadataFilter, parse_filter
from index.catalog.operations import build_catalog
from tests.support.models import random_model
from tests.support.photos import product_photo


def conditions(text: str) -> dict[str, set[str]]:
    return {c.column: set(c.values) for c in parse_filter(text).conditions}


def test_a_quoted_value_is_taken_whole_even_with_and_or_inside():
    assert conditions('brand="x OR y"') == {"brand": {"x OR y"}}
    assert conditions("brand='x AND y' OR brand=z") == {"brand": {"x AND y", "z"}}
    assert conditions('brand="x OR y" AND color="dark blue"') == {"brand": {"x OR y"}, "color": {"dark blue"}}


def test_a_column_name_with_spaces_is_quoted_like_a_value():
    assert conditions('"release year"=2024 AND "brand name"="A OR B"') == {"release year": {"2024"},
                                                                          "brand name": {"A OR B"}}


def test_inside_quotes_a_backslash_escapes_the_quote_and_itself():
    assert conditions(r'title="a \"big\" bag" OR title="back\\slash"') == {"title": {'a "big" bag', "back\\slash"}}


@pytest.mark.parametrize("column, values", [
    ("brand", {"x OR y", "plain"}),
    ("brand name", {"A AND B", "AND", "OR"}),
    ("title", {'say "hi"', "back\\slash", "it's", "a=b"}),
    ("size", {"", " padded "}),
])
def test_every_filter_the_search_page_writes_reads_back_as_the_same_filter(column, values):
    built = MetadataFilter((Condition(column, frozenset(values)), Condition("color", frozenset(["red"]))))
    assert parse_filter(str(built)) == built


@pytest.mark.parametrize("expression, message", [
    ('brand="x OR y', "never closed"),
    ("brand=x OR y", "cannot read 'y'"),
    ("my col=x", "cannot read"),
    ("brand=x y", "expected AND or OR"),
])
def test_what_cannot_be_read_is_a_clear_error(expression, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(expression)


@pytest.fixture(scope="module")
def labelled_shop(tmp_path_factory):
    """Six photos whose brand values hold OR and AND, with a column whose name has a space."""
    root = tmp_path_factory.mktemp("labelled")
    brands = ["x OR y", "x", "y", "A AND B", "x OR y", "x"]
    rows = []
    for i, brand in enumerate(brands):
        (root / f"p{i}.png").write_bytes(product_photo((40 * i, 200 - 30 * i, 90)))
        rows.append({"path": f"p{i}.png", "category": "bags", "product_id": f"p{i}", "brand": brand,
                     "release year": 2020 + i % 2})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    model = random_model(root / "model.pt", ["bags"], grid=2)
    build_catalog(root / "manifest.csv", model, root / "catalog", progress=False)
    return root, model


def test_the_cli_reads_quoted_values_and_column_names(labelled_shop, capsys):
    root, model = labelled_shop
    common = ["search", "--catalog", str(root / "catalog"), "--model", str(model), "--id", "1", "--k", "5", "--json"]
    assert cli([*common, "--filter", 'brand="x OR y"']) == 0
    body = json.loads(capsys.readouterr().out)
    assert {r["brand"] for r in body["results"]} == {"x OR y"} and body["filter"]["matching_items"] == 2
    assert cli([*common, "--filter", '"release year"=2021 AND brand="A AND B" OR brand=x']) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["filter"]["matching_items"] == 3  # rows 1, 3 and 5; the query itself (row 1) is left out
    assert sorted(r["id"] for r in body["results"]) == [3, 5]
