"""The Search page as a shopper uses it (AppTest): search from a result and back, one result per
product, metadata filters, picking a catalog item by browsing, near-duplicates hidden and listed,
the photo's own catalog copy marked."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from index.catalog.loaded import Catalog

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"


def start() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=60).run()


def result_ids(at: AppTest, prefix: str = "search_from_") -> list[int]:
    return [int(b.key.removeprefix(prefix)) for b in at.button if str(b.key).startswith(prefix)]


def result_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("**#")]


def record_searches(monkeypatch, option: str) -> list:
    """Every search the page runs from now on, as the value of one of its options (searches still run)."""
    from index.search.service import SearchService

    asked, search = [], SearchService.search

    def recording(self, query, *args, **kwargs):
        asked.append(kwargs.get(option))
        return search(self, query, *args, **kwargs)

    monkeypatch.setattr(SearchService, "search", recording)
    return asked


def metadata(shop):
    return Catalog.load(shop.catalog).metadata.set_index("id")


def pick_item_mode(at: AppTest) -> AppTest:
    return at.radio(key="search_mode").set_value("Pick a catalog item").run()


def test_a_result_searches_from_itself_and_back_returns_to_the_photo(tiny_shop_env):
    shop = tiny_shop_env
    at = start()
    at.file_uploader(key="search_upload").set_value(("mine.png", shop.image_bytes(4), "image/png")).run()
    first = result_ids(at)
    assert len(first) == 10
    chosen = first[3]
    at.button(key=f"search_from_{chosen}").click().run()
    assert not at.exception and at.session_state["search_item"] == chosen
    assert any(c.value == f"Catalog item {chosen}" for c in at.caption)
    assert chosen not in result_ids(at) and len(result_ids(at)) == 10  # the item itself is left out
    again = result_ids(at)[0]
    at.button(key=f"search_from_{again}").click().run()
    assert at.session_state["search_item"] == again
    at.button(key="search_back").click().run()  # back to the item searched from
    assert at.session_state["search_item"] == chosen
    at.button(key="search_back").click().run()  # back to the uploaded photo, though the uploader forgot it
    assert not at.exception and at.radio(key="search_mode").value == "Upload a photo"
    assert any("earlier photo **mine.png**" in c.value for c in at.caption)
    assert result_ids(at) == first


def test_one_result_per_product_still_returns_k_products(tiny_shop_env):
    shop = tiny_shop_env
    items = metadata(shop)
    at = pick_item_mode(start())
    at.slider(key="search_k").set_value(6).run()
    at.toggle(key="search_group").set_value(True).run()
    ids = result_ids(at)
    products = [items.loc[i, "product_id"] for i in ids]
    assert len(ids) == 6 and len(set(products)) == 6
    assert at.subheader[0].value.startswith("6 products")
    assert all(":blue-badge[" in c and "photos]" in c for c in result_captions(at))


def test_a_metadata_filter_keeps_only_matching_items_and_says_when_none_match(tiny_shop_env):
    shop = tiny_shop_env
    items = metadata(shop)
    at = pick_item_mode(start())
    at.multiselect(key="search_filter_columns").set_value(["view", "product_id"]).run()
    at.multiselect(key="search_filter_view").set_value(["1"]).run()
    at.multiselect(key="search_filter_product_id").set_value(["hats-0", "shoes-2", "tops-1"]).run()
    assert any(c.value == "Filter: `view=1 AND product_id=hats-0 OR product_id=shoes-2 OR product_id=tops-1`"
               for c in at.caption)
    ids = result_ids(at)
    assert 1 <= len(ids) <= 3 and not at.exception
    assert all(items.loc[i, "view"] == 1 and items.loc[i, "product_id"] in {"hats-0", "shoes-2", "tops-1"}
               for i in ids)
    at.selectbox(key="search_category").set_value("bags").run()  # with the category: no item is all of these
    assert result_ids(at) == []
    assert any("No item matches the filter" in w.value for w in at.warning)


def test_a_catalog_item_is_picked_by_browsing_with_filters(tiny_shop_env):
    shop = tiny_shop_env
    items = metadata(shop)
    at = pick_item_mode(start())
    at.toggle(key="search_browse_open").set_value(True).run()
    at.selectbox(key="search_browse_category").set_value("hats").run()
    at.text_input(key="search_browse_text").set_value("no. 3").run()
    shown = result_ids(at, "search_browse_use_")
    assert shown and all(items.loc[i, "category"] == "hats" and items.loc[i, "title"] == "Hat no. 3" for i in shown)
    at.button(key=f"search_browse_use_{shown[0]}").click().run()
    assert not at.exception and at.session_state["search_item"] == shown[0]
    assert any(c.value == f"Catalog item {shown[0]}" for c in at.caption)
    assert shown[0] not in result_ids(at) and len(result_ids(at)) == 10


def test_near_duplicate_hiding_says_what_it_hid_and_the_photos_own_copy_hides_none(tiny_shop_env):
    shop = tiny_shop_env
    at = start()
    at.file_uploader(key="search_upload").set_value(("mine.png", shop.image_bytes(4), "image/png")).run()
    at.toggle(key="search_hide_duplicates").set_value(True).run()
    at.slider(key="search_dup_threshold").set_value(0.99).run()
    captions = result_captions(at)
    assert "your photo" in captions[0]  # the catalog's copy of the uploaded photo, marked
    assert len(captions) >= 2  # the copy did not take its close variants with it
    label = at.toggle(key="search_show_hidden").label  # what was hidden is said, and shown on demand
    assert label.endswith("near-duplicates hidden — show")
    at.toggle(key="search_show_hidden").set_value(True).run()
    hidden = result_ids(at, "search_hidden_from_")
    assert len(hidden) == int(label.split()[0]) >= 1 and not set(hidden) & set(result_ids(at))



def test_a_photo_is_searched_either_facing_unless_the_shopper_turns_it_off(tiny_shop_env, monkeypatch):
    """The page hands its "Match either facing" toggle to the search (index.search.service: the photo and
    its mirror image, each item scored by the better; tested with asymmetric photos there)."""
    asked = record_searches(monkeypatch, "mirror")
    at = start()
    assert at.toggle(key="search_mirror").value is True  # on by default
    at.file_uploader(key="search_upload").set_value(("mine.png", tiny_shop_env.image_bytes(4), "image/png")).run()
    assert asked[-1] is True and len(result_ids(at)) == 10
    at.toggle(key="search_mirror").set_value(False).run()
    assert not at.exception and asked[-1] is False and len(result_ids(at)) == 10


def test_the_shopper_can_search_another_thing_in_the_photo_than_the_one_found(tiny_shop_env, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    from index.search.service import object_regions

    pixels = np.full((300, 400, 3), 245, np.uint8)
    pixels[80:230, 140:270] = (40, 40, 60)  # the thing most likely the product
    pixels[120:200, 20:80] = (150, 30, 30)  # another thing beside it
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    regions = object_regions(Image.fromarray(pixels))
    asked = record_searches(monkeypatch, "box")
    at = start()
    at.file_uploader(key="search_upload").set_value(("table.png", buffer.getvalue(), "image/png")).run()
    choice = next(r for r in at.radio if r.label == "Things in your photo")
    assert choice.value == 0 and asked[-1] is None  # the automatic crop first
    choice.set_value(1).run()
    assert not at.exception and tuple(asked[-1]) == regions[1] and len(result_ids(at)) == 10


def test_the_page_bounds_each_search_as_the_api_does_and_searches_once_per_query(tiny_shop_env, monkeypatch):
    from app.limits import MAX_CANDIDATES, SEARCH_BUDGET_S

    bounds = record_searches(monkeypatch, "max_candidates")
    at = start()
    at.file_uploader(key="search_upload").set_value(("mine.png", tiny_shop_env.image_bytes(4), "image/png")).run()
    assert bounds == [MAX_CANDIDATES] and len(result_ids(at)) == 10
    at.run()  # a rerun that changes neither the photo, its box nor the options: the same results, no search
    assert bounds == [MAX_CANDIDATES] and len(result_ids(at)) == 10
    at.slider(key="search_k").set_value(5).run()
    assert bounds == [MAX_CANDIDATES] * 2 and len(result_ids(at)) == 5
    assert SEARCH_BUDGET_S > 0 and at.slider(key="search_k").max <= 50


def test_the_crop_box_answer_is_read_in_the_photos_pixels_and_the_untouched_box_searches_automatically():
    from app.components import box_in_pixels

    whole = (0, 0, 400, 300)
    assert box_in_pixels([0, 0, 1, 1], (400, 300), whole) is None  # not moved: the product is found automatically
    assert box_in_pixels([0, 0, 0.75, 0.75], (400, 300), whole) == (0, 0, 300, 225)
    assert box_in_pixels([-0.1, 0.5, 1.2, 1.0], (400, 300), (10, 10, 20, 20)) == (0, 150, 400, 300)  # inside the photo
