"""Shared test fixtures.

App fixtures (prefix `tiny_shop`): a tiny product catalog made of generated photos, embedded
with random-init models, so the app can be tested end to end in seconds without any data set.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Tests compare numbers: they run in fp32 on every machine, never in the precision measured fastest
# here (embedder/precision.py); tests of that choice set their own environment.
os.environ.setdefault("COINSP_PRECISION", "fp32")

from embedder.backbones import build_backbone  # noqa: E402
from embedder.checkpoint import save_checkpoint  # noqa: E402
from embedder.preprocess import Preprocessing  # noqa: E402

# ---------------------------------------------------------------- tiny shop (app tests)

TINY_SHOP_CATEGORIES = ["bags", "hats", "shoes", "tops"]
TINY_SHOP_PRODUCTS_PER_CATEGORY = 3
TINY_SHOP_VIEWS = 2  # images per product: Recall@k needs at least two


@dataclass(frozen=True)
class TinyShop:
    root: Path
    manifest: Path  # manifest.csv beside images/ (one row is a corrupt file the build must skip)
    items: pd.DataFrame  # the manifest rows that are real images
    model: Path  # random-init model A
    model_b: Path  # random-init model B (another seed), for comparing models
    catalogs_dir: Path
    catalog: Path  # catalogs/tiny-a, built with `model`
    catalog_b: Path  # catalogs/tiny-b, built with `model_b` from the same manifest
    corrupt_image: Path  # bytes that are not an image, named .jpg

    def image_bytes(self, row: int = 0) -> bytes:
        return (self.manifest.parent / self.items.iloc[row]["path"]).read_bytes()


def _tiny_shop_photo(category: int, product: int, view: int, rng: np.random.Generator) -> Image.Image:
    """A product shot: a category shape in a product colour with a product pattern, on white."""
    size = 64
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in np.random.default_rng(100 + 10 * category + product).integers(20, 230, 3))
    shift = 3 * view
    box = (10 + shift, 10 + shift, 50 + shift, 52 + shift)
    if category == 0:
        draw.rectangle(box, fill=colour)
    elif category == 1:
        draw.ellipse(box, fill=colour)
    elif category == 2:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
    else:
        draw.rectangle((box[0], box[1] + 12, box[2], box[1] + 28), fill=colour)
        draw.rectangle((box[0] + 12, box[1], box[0] + 28, box[3]), fill=colour)
    for stripe in range(product + 1):  # the product's pattern
        y = 16 + 9 * stripe + shift
        draw.line((box[0] + 4, y, box[2] - 4, y), fill=(250, 250, 250), width=2)
    noise = rng.integers(-12, 13, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))


def _tiny_shop_save(image: Image.Image, path: Path, i: int) -> None:
    """Mixed formats and colour modes, as a real catalog has them."""
    kind = i % 6
    if kind == 0:
        image.save(path.with_suffix(".jpg"), quality=92)
    elif kind == 1:
        image.convert("RGBA").save(path.with_suffix(".png"))
    elif kind == 2:
        image.save(path.with_suffix(".webp"), lossless=True)
    elif kind == 3:
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(path.with_suffix(".png"))
    else:
        image.save(path.with_suffix(".png"))


FASHION_INPUT = Preprocessing(size=28, channels=1, mean=(0.286,), std=(0.353,))  # 28-px grey, Fashion-MNIST's levels


def random_model(path: Path, categories, *, seed: int = 0, channels: int = 1, width: int = 8, grid: int = 1,
                 preprocessing: Preprocessing = FASHION_INPUT, config: dict | None = None) -> Path:
    """A smallcnn checkpoint with seeded random weights: enough for catalogs, search and the CLI."""
    torch.manual_seed(seed)
    spec = {"name": "smallcnn", "kwargs": {"in_channels": channels, "width": width, "grid": grid}}
    save_checkpoint(path, backbone_spec=spec, backbone=build_backbone(spec["name"], **spec["kwargs"]),
                    preprocessing=preprocessing, categories=list(categories), config=config or {})
    return path


def tiny_shop_make(root: Path) -> TinyShop:
    """Images, manifest, two models and their two catalogs under `root`."""
    from index.operations import build_catalog

    images = root / "shop" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows, i = [], 0
    for c, category in enumerate(TINY_SHOP_CATEGORIES):
        for p in range(TINY_SHOP_PRODUCTS_PER_CATEGORY):
            for v in range(TINY_SHOP_VIEWS):
                stem = images / f"{category}-{p}-{v}"
                _tiny_shop_save(_tiny_shop_photo(c, p, v, rng), stem, i)
                name = next(images.glob(stem.name + ".*")).name
                rows.append({"path": f"images/{name}", "category": category, "product_id": f"{category}-{p}",
                             "title": f"{category.rstrip('s').title()} no. {p + 1}", "view": v})
                i += 1
    items = pd.DataFrame(rows)
    corrupt = images / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(200))
    manifest = root / "shop" / "manifest.csv"
    pd.concat([items, pd.DataFrame([{"path": "images/broken.jpg", "category": "tops", "product_id": "tops-0",
                                     "title": "Broken", "view": 9}])]).to_csv(manifest, index=False)
    models = root / "models"
    models.mkdir()
    colour = {"channels": 3, "grid": 2, "preprocessing": Preprocessing(size=32, channels=3)}
    model = random_model(models / "tiny-a.pt", TINY_SHOP_CATEGORIES, seed=0, config={"test": "random init", "seed": 0},
                         **colour)
    model_b = random_model(models / "tiny-b.pt", TINY_SHOP_CATEGORIES, seed=1, config={"test": "random init", "seed": 1},
                           **colour)
    catalogs = root / "catalogs"
    catalog_a, catalog_b = catalogs / "tiny-a", catalogs / "tiny-b"
    build_catalog(manifest, model, catalog_a, progress=False)
    build_catalog(manifest, model_b, catalog_b, progress=False)
    return TinyShop(root=root, manifest=manifest, items=items, model=model, model_b=model_b,
                    catalogs_dir=catalogs, catalog=catalog_a, catalog_b=catalog_b, corrupt_image=corrupt)


@pytest.fixture(scope="session")
def tiny_shop(tmp_path_factory) -> TinyShop:
    """A tiny shop built once per test session (read-only: copy it to change it)."""
    return tiny_shop_make(tmp_path_factory.mktemp("tiny-shop"))


@pytest.fixture
def tiny_shop_env(tiny_shop, monkeypatch) -> TinyShop:
    """Point the app's settings (app/settings.py) at the tiny shop."""
    monkeypatch.setenv("COINSP_CATALOG", str(tiny_shop.catalog))
    monkeypatch.setenv("COINSP_MODEL", str(tiny_shop.model))
    monkeypatch.setenv("COINSP_CATALOGS_DIR", str(tiny_shop.catalogs_dir))
    return tiny_shop


# ---------------------------------------------------------------- a shop with wrong best matches

@pytest.fixture(scope="session")
def mixed_up_shop(tiny_shop, tmp_path_factory) -> Path:
    """The tiny shop with the second photo of each product filed under the next product of its
    category, so best matches show another product id: failures and confused pairs exist.
    Returns its catalogs folder (mixed-a and mixed-b, both built with model A)."""
    import shutil

    from index.operations import build_catalog

    root = tmp_path_factory.mktemp("mixed-up")
    shutil.copytree(tiny_shop.manifest.parent, root / "shop")
    items = tiny_shop.items.copy()
    second = items["view"] == 1
    number = items["product_id"].str.rsplit("-", n=1).str[1].astype(int)
    items.loc[second, "product_id"] = items.loc[second, "category"] + "-" + ((number[second] + 1) % 3).astype(str)
    items.to_csv(root / "shop" / "manifest.csv", index=False)
    catalogs = root / "catalogs"
    build_catalog(root / "shop" / "manifest.csv", tiny_shop.model, catalogs / "mixed-a", progress=False)
    build_catalog(root / "shop" / "manifest.csv", tiny_shop.model, catalogs / "mixed-b", progress=False)
    return catalogs


# ---------------------------------------------------------------- Fashion-MNIST shop and shopper photos

KEPT_MODEL = ROOT / "models" / "coinsp-fmnist.pt"
FASHION_SHOP_ITEMS = 400  # the first Fashion-MNIST test photos


@dataclass(frozen=True)
class FashionShop:
    catalog: Path  # the first FASHION_SHOP_ITEMS test photos, embedded with `model`
    model: Path  # the kept model, with a category head
    train_images: np.ndarray  # Fashion-MNIST training photos (never in the catalog): shopper photos are made of them
    train_labels: np.ndarray


def centroid_head(backbone, preprocessing: Preprocessing, images: np.ndarray, coarse: np.ndarray, classes: int) -> dict:
    """A category head (embedder/category_head.py) of nearest class means of the features: what
    a checkpoint trained without one gets here for the tests that need a category prediction."""
    batch = torch.from_numpy(np.stack([preprocessing.to_uint8(Image.fromarray(i).convert("RGB")) for i in images]))
    with torch.inference_mode():
        features = torch.nn.functional.normalize(backbone(preprocessing.normalise(batch)).float(), dim=1)
    means = torch.stack([features[torch.from_numpy(coarse == c)].mean(0) for c in range(classes)])
    return {"input": "feature", "normalise": True, "weight": means, "bias": None, "cosine": True, "scale": 20.0}


@pytest.fixture(scope="session")
def fashion_shop(tmp_path_factory) -> FashionShop:
    """A small Fashion-MNIST catalog searched with the kept model (skipped without the data)."""
    from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
    from index.importers import (FASHION_MNIST_DIR, FASHION_MNIST_GROUPINGS, import_fashion_mnist,
                                 load_fashion_mnist_arrays)
    from index.operations import build_catalog

    if not (FASHION_MNIST_DIR.is_dir() and KEPT_MODEL.is_file()):
        pytest.skip("Fashion-MNIST or the kept model is not installed")
    root = tmp_path_factory.mktemp("fashion-shop")
    payload = load_checkpoint(KEPT_MODEL)
    train_images, train_labels = load_fashion_mnist_arrays("train")
    model = KEPT_MODEL
    if "coarse_head" not in payload:  # same weights and preprocessing (same fingerprint), plus a head
        backbone, preprocessing = backbone_from_checkpoint(payload)
        coarse_of = {fine: payload["categories"].index(name)
                     for name, fines in FASHION_MNIST_GROUPINGS["store"].items() for fine in fines}
        sample = np.arange(30_000, 31_500)  # training photos the tests' shopper photos are not made of
        coarse = np.asarray([coarse_of[int(label)] for label in train_labels[sample]])
        head = centroid_head(backbone, preprocessing, train_images[sample], coarse, len(payload["categories"]))
        model = root / "kept-with-head.pt"
        save_checkpoint(model, backbone_spec=payload["backbone"], backbone=backbone, preprocessing=preprocessing,
                        categories=payload["categories"], config=payload["config"], coarse_head=head)
    manifest = import_fashion_mnist(root / "data", "test", limit=FASHION_SHOP_ITEMS)
    build_catalog(manifest, model, root / "catalog", progress=False)
    return FashionShop(root / "catalog", model, train_images, train_labels)


def shopper_photo(item: np.ndarray, *, size: tuple[int, int] = (900, 700), side: int = 420,
                  at: tuple[int, int] = (300, 160), quality: int = 85) -> bytes:
    """A 28-px light-on-black Fashion-MNIST item as a shopper photographs it: a dark product on a
    white table, upscaled, off-centre, JPEG."""
    import io

    product = Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC)
    darkness = np.asarray(product, np.float32)[..., None] / 255.0
    colour = np.array([40, 45, 60], np.float32)  # a dark navy product
    canvas = np.full((size[1], size[0], 3), 248, np.float32)
    x, y = at
    canvas[y:y + side, x:x + side] = canvas[y:y + side, x:x + side] * (1 - darkness) + colour * darkness
    buffer = io.BytesIO()
    Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


# ---------------------------------------------------------------- uploads

def product_photo(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    """A 48-px photo of a plain product of `colour` on a light background, encoded as `fmt`."""
    import io

    pixels = np.full((48, 48, 3), 240, np.uint8)
    pixels[8:40, 12:36] = colour
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A zip archive holding `entries` (name in the archive -> bytes)."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return out.getvalue()


# ---------------------------------------------------------------- a real browser

@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, one per test module (see tests/streamlit_server.py)."""
    from streamlit_server import chromium_browser

    with chromium_browser() as chromium:
        yield chromium
