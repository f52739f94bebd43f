"""Pieces the pages share: cached loaders, the attention overlay, image thumbnails, the result grid.

Caches are keyed on the catalog's build time ("stamp"), so after a rebuild the next run loads
the new catalog while every run before it keeps using the old one.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageOps

from app.serving import served
from app.settings import Settings, load_settings
from embedder.images import ImageError, decode_image
from embedder.progress import ProgressCallback
from index.catalog.loaded import Catalog
from index.search.service import SearchService
from index.catalog.store import INFO_FILE, INTERNAL_COLUMNS

THUMB_SIDE = 224  # pixels: thumbnails are scaled to this longest side
PICKER_MAX_ITEMS = 2_000  # bigger catalogs are picked by id: a list of every item would be sent on each run
SAME_COLOUR, OTHER_COLOUR = (46, 160, 67), (218, 54, 51)  # frames in the galleries: same / another product


def settings() -> Settings:
    """Read on every run (cheap), so the environment of each session/test is honoured; the catalog
    and model a catalog manager chose to serve on the Quality page (app.serving) over the start-up ones."""
    return served(load_settings())


def catalog_stamp(folder: str | Path) -> str | None:
    """A cheap version tag of a catalog folder (its build time), or None if there is no catalog."""
    info_file = Path(folder) / INFO_FILE
    try:
        info = json.loads(info_file.read_text())
        return f"{info['version']}|{info.get('built_at', '')}|{info_file.stat().st_mtime_ns}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_catalogs(catalogs_dir: str | Path) -> list[Path]:
    folder = Path(catalogs_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if (p / INFO_FILE).is_file())


@st.cache_resource(max_entries=4, show_spinner="Loading the model and the catalog…")
def _service(catalog: str, model: str, device: str, stamp: str) -> SearchService:
    return SearchService(catalog, model, device=device)


def search_service(cfg: Settings | None = None) -> SearchService:
    """The search service of the configured catalog; raises if it cannot be opened."""
    cfg = cfg or settings()
    stamp = catalog_stamp(cfg.catalog)
    if stamp is None:
        raise FileNotFoundError(f"no catalog at {cfg.catalog}")
    return _service(str(cfg.catalog), str(cfg.model), cfg.device, stamp)


@st.cache_resource(max_entries=8, show_spinner="Loading the catalog…")
def _catalog(folder: str, stamp: str) -> Catalog:
    return Catalog.load(folder)


def load_catalog(folder: str | Path) -> Catalog | None:
    stamp = catalog_stamp(folder)
    return None if stamp is None else _catalog(str(Path(folder).absolute()), stamp)


def catalog_items(catalog: Catalog) -> pd.DataFrame:
    """The catalog's rows as shown to people: id, metadata, image_path (no bookkeeping columns)."""
    return catalog.metadata.drop(columns=[c for c in INTERNAL_COLUMNS if c in catalog.metadata])


# ---------------------------------------------------------------- images and overlays

def thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    """Scale to `side` on the longest edge; tiny images (28 px) are enlarged with crisp pixels."""
    if side >= max(image.size):
        method = Image.Resampling.NEAREST if max(image.size) <= 64 else Image.Resampling.BICUBIC
    else:
        method = Image.Resampling.LANCZOS
    return ImageOps.contain(image, (side, side), method)


# A perceptual blue -> cyan -> yellow -> red ramp (like "turbo"), as control points in [0, 1].
_RAMP_AT = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([[48, 18, 59], [40, 150, 230], [60, 220, 120], [250, 190, 40], [200, 20, 10]], dtype=np.float64)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """HxW values in [0, 1] -> HxWx3 float RGB (0-255)."""
    heat = np.clip(heat, 0.0, 1.0)
    return np.stack([np.interp(heat, _RAMP_AT, _RAMP_RGB[:, c]) for c in range(3)], axis=-1)


def overlay(image: Image.Image, heat: np.ndarray, strength: float = 0.6) -> Image.Image:
    """Blend an attention map (any size, values in [0, 1]) over an RGB image of any size.

    The map covers the whole image (the model sees the whole image squashed to a square), so it
    is stretched back to the image's own size. Hot areas are tinted strongly, cold ones lightly.
    """
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat_img = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8), mode="L")
    heat_img = heat_img.resize(image.size, Image.Resampling.BILINEAR)
    h = np.asarray(heat_img, dtype=np.float64) / 255.0
    weight = (strength * (0.3 + 0.7 * h))[..., None]
    blended = (1 - weight) * base + weight * heat_colours(h)
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), mode="RGB")


def show_image(image: Image.Image, heat: Callable[[Image.Image], np.ndarray] | None = None) -> None:
    """Show a thumbnail, with the attention overlay when `heat` is given."""
    shown = thumbnail(image)
    if heat is not None:  # the model sees the whole image; the map is laid over the thumbnail
        shown = overlay(shown, heat(image))
    st.image(shown, width="stretch")


# ---------------------------------------------------------------- the query region

CROP_PIXELS = 800  # longest side of the photo sent to the crop box: sharp in a wide column, light to send
BOX_COLOUR = "#ff4b4b"
CROP_FOLDER = Path(__file__).parent / "crop_box"  # the crop box's page (index.html), served by Streamlit


@st.cache_resource
def _crop_component():
    import streamlit.components.v1 as components

    return components.declare_component("crop_box", path=str(CROP_FOLDER))


def crop_box(image: Image.Image, default: tuple[int, int, int, int], key: str) -> tuple[int, int, int, int] | None:
    """The shopper's query region over the photo, starting at `default` (the automatic product
    region): a thin box to drag or resize by its corners, the photo as wide as its column, the
    handles inside the frame even when the box is the whole photo. The box comes back once per drag,
    when it ends. Returns it in the photo's pixels, or None while it is still the automatic region
    (then the search finds the product itself)."""
    import base64
    import io

    shown = ImageOps.contain(image, (CROP_PIXELS, CROP_PIXELS), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    shown.save(buffer, format="JPEG", quality=88)
    start = [default[0] / image.width, default[1] / image.height, default[2] / image.width, default[3] / image.height]
    drawn = _crop_component()(image="data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode(),
                              box=start, colour=BOX_COLOUR, key=key, default=None)
    if drawn is None:
        return None
    return box_in_pixels(drawn, image.size, default)


def box_in_pixels(fractions, size: tuple[int, int], default) -> tuple[int, int, int, int] | None:
    """A box sent by the crop box (shares of the photo's sides) in whole pixels inside the photo; None
    when it is the automatic region still (within a pixel)."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in fractions)
    box = (max(0, round(x0 * w)), max(0, round(y0 * h)), min(w, round(x1 * w)), min(h, round(y1 * h)))
    if max(abs(a - b) for a, b in zip(box, default)) <= 1:
        return None
    return box


def show_model_view(view: np.ndarray) -> None:
    """What the model sees of the query (uint8 C x H x W): the product cropped and brought into
    the catalog's style."""
    array = view[0] if view.shape[0] == 1 else view.transpose(1, 2, 0)
    st.image(thumbnail(Image.fromarray(array), 160), width=160,
             caption="What the model sees: the product, cropped and prepared like the catalog's photos")


# ---------------------------------------------------------------- results

# Columns a result card shows itself, or that are bookkeeping: the details list the rest.
_CARD_COLUMNS = {"rank", "score", "image_path", "query_copy", "matched_photos", "product_photos", "duplicate_of",
                 *INTERNAL_COLUMNS}
PRODUCT_CHARS = 22  # the card's first line is cut to this (the details give it whole), so every card has two
CAPTION_HEIGHT = 68  # pixels: room for the two caption lines, and a third where the tags wrap


def column_label(name: str) -> str:
    """A metadata column as people read it: `fine_label` -> "Fine label", `path` -> "File"."""
    return {"id": "Catalog id", "path": "File", "product_id": "Product"}.get(name, name.replace("_", " ").capitalize())


def product_label(row: pd.Series) -> str:
    """What a result is, in a few words: its title, else its product, else its file name."""
    for column in ("title", "product_id"):
        if column in row and pd.notna(row[column]) and str(row[column]).strip():
            return str(row[column])
    return Path(str(row.get("path", row.get("image_path", "")))).name


def _cut(text: str, limit: int = PRODUCT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def result_caption(row: pd.Series) -> str:
    """The card's two lines: rank and product; score, the category as a tag and what marks the card."""
    place = f"≈ #{int(row['rank'])}" if "duplicate_of" in row else f"#{int(row['rank'])}"  # a hidden one: ≈
    first = f"**{place}** · {_cut(product_label(row))}"
    second = [f"score **{float(row['score']):.3f}**"]
    if "category" in row and pd.notna(row["category"]):
        second.append(f":gray-badge[{row['category']}]")
    if bool(row.get("query_copy", False)):
        second.append(":orange-badge[your photo]")
    if "matched_photos" in row and pd.notna(row["matched_photos"]):
        second.append(f":blue-badge[{int(row['matched_photos'])}/{int(row['product_photos'])} photos]")
    return f"{first}  \n{' '.join(second)}"


def result_details(row: pd.Series) -> str:
    """Every other fact of a result, labelled for people (markdown)."""
    lines = [f"**{product_label(row)}**"]
    if bool(row.get("query_copy", False)):
        lines.append("The catalog's copy of your photo (the same picture).")
    if "matched_photos" in row and pd.notna(row["matched_photos"]):
        lines.append(f"{int(row['matched_photos'])} of this product's {int(row['product_photos'])} photos match at "
                     "least as well as the last product shown; this is its best.")
    if "duplicate_of" in row and pd.notna(row["duplicate_of"]):
        lines.append(f"Almost the same image as catalog item {int(row['duplicate_of'])}, which is shown.")
    for name, value in row.items():
        if name in _CARD_COLUMNS or pd.isna(value) or str(value) == "":
            continue
        shown = Path(str(value)).name if name == "path" else value
        lines.append(f"{column_label(str(name))}: `{shown}`")
    lines.append(f"Score (cosine similarity): {float(row['score']):.3f}")
    return "  \n".join(lines)


def padded_square(shown: Image.Image) -> Image.Image:
    """A thumbnail padded to a square (light grey), so every card's picture is the same height."""
    side = max(shown.size)
    if shown.width == shown.height:
        return shown
    return ImageOps.pad(shown.convert("RGB"), (side, side), color=(242, 242, 242))


def result_grid(results: pd.DataFrame, *, columns: int = 3,
                heat: Callable[[Image.Image], np.ndarray] | None = None,
                search_from: Callable[[int], None] | None = None, key: str = "search") -> None:
    """The matches as cards of equal height: a square picture (with the attention overlay when
    `heat` is given), two caption lines, the details on demand and, with `search_from`, a button
    that searches from that item (called with its id)."""
    rows = list(results.iterrows())
    for start in range(0, len(rows), columns):
        for column, (_, row) in zip(st.columns(columns), rows[start:start + columns]):
            item = int(row["id"])
            with column.container(border=True):
                try:
                    image = decode_image(row["image_path"])
                    shown = thumbnail(image)
                    if heat is not None:  # the map covers the whole image: laid over it before the padding
                        shown = overlay(shown, heat(image))
                    st.image(padded_square(shown), width="stretch")
                except ImageError as exc:
                    st.warning(f"image unavailable: {exc}")
                with st.container(height=CAPTION_HEIGHT, border=False):  # every card as tall, however it wraps
                    st.caption(result_caption(row))
                with st.container(horizontal=True, gap="small"):
                    if search_from is not None:
                        st.button("Search from this", key=f"{key}_from_{item}", icon=":material/image_search:",
                                  on_click=search_from, args=(item,), help="Find items like this one")
                    with st.popover("Details", icon=":material/info:"):
                        st.markdown(result_details(row))


def result_strip(results: pd.DataFrame, same: Callable[[pd.Series], bool] | None = None, side: int = 104) -> None:
    """A compact row of thumbnails (galleries) with rank, score and category under each.

    With `same(row)`, each thumbnail is framed green (same product as the query, ✓) or red (✗).
    """
    images, captions = [], []
    for _, row in results.iterrows():
        try:
            image = thumbnail(decode_image(row["image_path"]), side)
        except ImageError:
            image = Image.new("RGB", (side, side), (235, 235, 235))
        prefix = ""
        if same is not None:
            hit = bool(same(row))
            image = ImageOps.expand(image, border=5, fill=SAME_COLOUR if hit else OTHER_COLOUR)
            prefix = "✓ " if hit else "✗ "
        images.append(image)
        category = f" · {row['category']}" if "category" in row else ""
        captions.append(f"{prefix}#{int(row['rank'])} {float(row['score']):.2f}{category}")
    if images:
        st.image(images, caption=captions, width=side + 10)


# ---------------------------------------------------------------- progress of catalog operations

def progress_to(bar, label: str) -> ProgressCallback:
    """A catalog operation's progress callback that moves a Streamlit progress bar."""
    def report(stage: str, done: int, total: int) -> None:
        if total > 0:
            bar.progress(min(done / total, 1.0), text=f"{label}: {stage} {done:,} / {total:,}")
        else:  # a message without a count (e.g. a tuning step)
            bar.progress(0.0, text=f"{label}: {stage.strip()}")
    return report


@contextlib.contextmanager
def catalog_progress(label: str) -> Iterator[ProgressCallback]:
    """Show an st.progress bar; the callback given follows the catalog operation run in the block."""
    bar = st.progress(0.0, text=f"{label}…")
    yield progress_to(bar, label)
    bar.progress(1.0, text=f"{label}: done")
