"""The Quality page's "what shoppers get": Recall@k of shopper-style photos of a sample of the
catalog's items (plain and textured backdrops; training.shopper_recall) beside the catalog photos'
own Recall@k of the same items.

Measured on request (a few hundred photos, with a progress bar) with the catalog's own model, and
kept per catalog version for every session.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import components as ui
from app.settings import Settings
from embedder.embed import Embedder
from index.catalog.projection import projecting_embedder
from training.shopper_recall import BACKDROP_KINDS, SHOPPER_ITEMS, ShopperRecall, shopper_recall


@st.cache_resource(max_entries=1)
def _measured() -> dict[tuple[str, str], ShopperRecall]:
    """(catalog folder, catalog stamp) -> its measurement, shared by the sessions of this server."""
    return {}


@st.cache_resource(max_entries=2, show_spinner="Loading the catalog's model…")
def _embedder(model: str, device: str) -> Embedder:
    return Embedder.from_checkpoint(model, device=device)


def catalog_embedder(folder: Path, cfg: Settings) -> Embedder | None:
    """The model the catalog was built with: the served one for the served catalog, else the model
    file the catalog names when it is still there and still the same model; None otherwise."""
    catalog = ui.load_catalog(folder)
    if folder.resolve() == cfg.catalog.resolve():
        return ui.search_service(cfg).embedder
    model = catalog.info.model_path
    if not model or not Path(model).is_file():
        return None
    embedder = _embedder(str(model), cfg.device)
    # a catalog of projected vectors: the photos go through its projection (index.catalog.projection)
    return projecting_embedder(embedder, catalog.projection) if embedder.fingerprint == catalog.fingerprint else None


def shopper_table(result: ShopperRecall) -> pd.DataFrame:
    return result.table.rename_axis("queries from").reset_index().rename(columns={"queries": "photos"})


def show_shopper_recall(folder: Path, cfg: Settings) -> None:
    st.subheader("What shoppers' photos get")
    st.caption(f"{SHOPPER_ITEMS} items sampled from the catalog (seeded), each photographed as a shopper would: "
               f"the item's catalog photo made into a product on a {' or a '.join(BACKDROP_KINDS)} backdrop, "
               "under a phone's light, blur, noise and JPEG. Each photo is searched as an upload is (product found, "
               "either facing) with the item itself left out; found at k when another photo of its product is among "
               "the k results. `catalog photos`: the same items' own photos searched the same way.")
    stamp = ui.catalog_stamp(folder)
    measured = _measured()
    result = measured.get((str(folder), stamp))
    if result is None:
        if not st.button(f"Measure with {SHOPPER_ITEMS * len(BACKDROP_KINDS)} shopper photos",
                         icon=":material/photo_camera:", key="shopper_measure"):
            return
        embedder = catalog_embedder(folder, cfg)
        if embedder is None:
            st.info("The model this catalog was built with is not available here, so its shopper photos can't be "
                    "searched as its uploads are.")
            return
        try:
            with ui.catalog_progress("Shopper photos") as progress:
                result = shopper_recall(ui.load_catalog(folder), embedder, progress=progress)
        except ValueError as exc:
            st.info(str(exc))
            return
        measured[(str(folder), stamp)] = result
    table = shopper_table(result)
    recalls = [c for c in table.columns if c.startswith("R@")]
    st.dataframe(table, hide_index=True, key="shopper_table",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in recalls})
    if result.unreadable:
        st.caption(f"{result.unreadable} sampled items' photos could not be read and are left out.")
    st.download_button("Download shopper Recall@k CSV", table.to_csv(index=False, float_format="%.3f"),
                       f"shopper-recall-{folder.name}.csv", "text/csv", icon=":material/download:", key="shopper_csv")
