"""Small shops for the tests: the tiny shop of generated photos (app tests, seconds, no data set) and
a Fashion-MNIST shop searched with the kept model."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from embedder.checkpoint import save_checkpoint
from embedder.preprocess import Preprocessing
from tests.support.models import centroid_head, random_model
from tests.support.threads import one_torch_thread

ROOT = Path(__file__).resolve().parents[2]

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

    def copied_catalogs(self, folder: Path, *, with_b: bool = True) -> Path:
        """Private copies of its catalogs (tiny-a, and tiny-b unless with_b is False) in a new catalogs folder:
        a test that switches, builds or serves changes its own copies, never the shared shop."""
        for catalog in (self.catalog, self.catalog_b) if with_b else (self.catalog,):
            shutil.copytree(catalog, folder / catalog.name)
        return folder


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


@one_torch_thread()  # small models: see tests/support/threads.py
def tiny_shop_make(root: Path) -> TinyShop:
    """Images, manifest, two models and their two catalogs under `root`."""
    from index.catalog.operations import build_catalog

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


# ---------------------------------------------------------------- Fashion-MNIST shop

KEPT_MODEL = ROOT / "models" / "coinsp-fmnist.pt"
FASHION_SHOP_ITEMS = 400  # the first Fashion-MNIST test photos


@dataclass(frozen=True)
class FashionShop:
    catalog: Path  # the first FASHION_SHOP_ITEMS test photos, embedded with `model`
    model: Path  # the kept model, with a category head
    train_images: np.ndarray  # Fashion-MNIST training photos (never in the catalog): shopper photos are made of them
    train_labels: np.ndarray


def fashion_mnist_installed() -> bool:
    from index.importers import FASHION_MNIST_DIR

    return FASHION_MNIST_DIR.is_dir() and KEPT_MODEL.is_file()


@one_torch_thread()
def fashion_shop_make(root: Path) -> FashionShop:
    """The first FASHION_SHOP_ITEMS Fashion-MNIST test photos embedded with the kept model under `root`
    (which needs fashion_mnist_installed())."""
    from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
    from index.importers import FASHION_MNIST_GROUPINGS, import_fashion_mnist, load_fashion_mnist_arrays
    from index.catalog.operations import build_catalog

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
