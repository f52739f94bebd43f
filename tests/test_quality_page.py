"""The Quality page for merchandisers (AppTest): confused product pairs into the gallery, the
embedding map, the hygiene tables, and the model comparison's labels."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from index.catalog.loaded import Catalog
from index.quality.hygiene import hygiene_report

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")


@pytest.fixture
def quality_page(mixed_up_shop, tiny_shop, monkeypatch):
    monkeypatch.setenv("COINSP_CATALOG", str(mixed_up_shop / "mixed-a"))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(mixed_up_shop))
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/quality.py").run()
    assert not at.exception, at.exception
    return at


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


def tab(at: AppTest, label: str):
    return next(t for t in at.tabs if t.label == label)


def test_confused_pairs_table_opens_a_pair_in_the_gallery(quality_page):
    at = quality_page
    table = at.dataframe(key="pairs_table").value
    assert list(table.columns[:3]) == ["query_product", "matched_product", "failures"]
    assert table["failures"].is_monotonic_decreasing and table["failures"].sum() > 0
    assert (table["query_product"] != table["matched_product"]).all()
    pick = at.selectbox(key="pairs_pick")
    first = f"{table.iloc[0]['query_product']} → {table.iloc[0]['matched_product']}"
    assert pick.value == first
    queries = [c.value for c in tab(at, "Confused pairs").caption if c.value.startswith("**Query**")]
    assert len(queries) == min(6, table.iloc[0]["failures"])
    assert all(f"product {table.iloc[0]['query_product']}" in q for q in queries)

    # The same pair as a filter of the failure gallery, which names the wrong match's product.
    at.selectbox(key="failures_pair").set_value(first).run()
    assert not at.exception
    gallery = tab(at, "Failure gallery")
    verdicts = [c.value for c in gallery.caption if c.value.startswith("best match is product")]
    assert verdicts and all(f"**{table.iloc[0]['matched_product']}**" in v for v in verdicts)
    scores = [float(v.rsplit("score ", 1)[1]) for v in verdicts]
    assert scores == sorted(scores, reverse=True)  # most confidently wrong first


def test_embedding_map_renders_and_opens_an_item(quality_page):
    at = quality_page
    # AppTest has no chart element type: find the Vega-Lite spec among the tab's unknown elements.
    specs = [str(e.proto) for e in walk(tab(at, "Embedding map")) if "principal axis 1" in str(getattr(e, "proto", ""))]
    assert specs, "the embedding map is drawn"
    assert "data:image/png;base64" in specs[0] or "image" in specs[0]
    at.radio(key="map_colour").set_value("product_id").run()
    at.number_input(key="map_item").set_value(3).run()
    assert not at.exception
    queries = [c.value for c in tab(at, "Embedding map").caption if c.value.startswith("**Query**")]
    assert queries == [queries[0]] and "id `3`" in queries[0]


def test_hygiene_tables_match_the_report_and_download_as_csv(quality_page, mixed_up_shop):
    at = quality_page
    expected = hygiene_report(Catalog.load(mixed_up_shop / "mixed-a"))
    hygiene = tab(at, "Hygiene")
    assert [s.value for s in hygiene.subheader] == ["Likely mis-categorised items", "Near-duplicate listings",
                                                    "Products whose photos disagree"]
    tables = [d.value for d in hygiene.dataframe]  # the non-empty reports, in the page's order
    expected_tables = [t for t in (expected.miscategorised, expected.duplicates, expected.products) if len(t)]
    assert len(tables) == len(expected_tables) and len(expected.products) > 0
    pd.testing.assert_series_equal(tables[-1]["product_id"].reset_index(drop=True),
                                   expected.products["product_id"].head(50).reset_index(drop=True))
    for shown, table in zip(tables[:-1], expected_tables[:-1]):
        assert list(shown["id"]) == list(table["id"].head(50))
        assert shown["photo"].str.startswith("data:image/png;base64,").all()
    labels = [b.proto.label for b in hygiene.get("download_button")]
    assert "Download products CSV" in labels


def test_model_comparison_names_models_and_warns_when_they_are_the_same(quality_page):
    at = quality_page
    compare = tab(at, "Compare models")
    lines = next(c.value for c in compare.caption if "fingerprint" in c.value)
    assert "**mixed-a**: model `tiny-a.pt`" in lines and "**mixed-b**: model `tiny-a.pt`" in lines
    assert any("same model" in w.value for w in compare.warning)
    table = next(d.value for d in compare.dataframe if "difference" in d.value.columns)
    assert list(table.columns) == ["k", "mixed-a", "mixed-a 95% interval", "mixed-b", "mixed-b 95% interval",
                                   "difference", "difference 95% interval", "verdict"]
    assert (table["difference"] == 0).all() and (table["difference 95% interval"] == "0.000 – 0.000").all()
    assert (table["verdict"] == "no clear difference").all()
    which = at.selectbox(key="compare_queries")
    assert not which.value.startswith("Only")  # the same model: "Only ... is right" would be empty
