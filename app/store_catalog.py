"""A store's own photos as a served catalog, in one command (`./run.sh --images FOLDER`):

    python -m app.store_catalog FOLDER_OR_MANIFEST [--out catalogs/NAME] [--env-file FILE]

imports the folder (category/[product/]image, or a manifest), picks the model that suits the photos,
embeds them (progress shown) and writes the catalog; --env-file receives COINSP_CATALOG and
COINSP_MODEL for the app. Nothing is written into the store's folder: each store has a work folder
stores/<name>-<hash of its path>/ (its manifest, a link to its photos, its own served model) and a
catalog catalogs/store-<name>-<hash>, so stores whose folders share a name never collide.
Which model, and why:
  - photos of at most 32 px in grey, like Fashion-MNIST: the kept model (models/coinsp-fmnist.pt);
  - otherwise the store's own copy of the frozen ImageNet features (EfficientNet-Lite0 from the installed
    weights package, written once as models/efficientnet-lite0-imagenet.pt), with a category head made
    from the catalog's category means; `python -m training.store` (or the Catalog page's button) trains
    the store's CoInsP head and replaces it only when the head finds held-out products better.
The Catalog page tells the same story from the served checkpoint (`serving_story`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint, save_checkpoint
from embedder.files import atomic_path
from embedder.images import ImageError, decode_image
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN

REPOSITORY = Path(__file__).resolve().parents[1]
KEPT_MODEL = REPOSITORY / "models" / "coinsp-fmnist.pt"
IMAGENET_MODEL = REPOSITORY / "models" / "efficientnet-lite0-imagenet.pt"
SMALL_GREY_SIDE = 32  # pixels: photos this small and grey are what the kept model was trained on
SAMPLE = 200  # photos looked at to decide
TRAIN_EPOCHS = 15
TRAINING_RATE_REPORT = REPOSITORY / "reports" / "store-import" / "report.json"
STORE_TRAINING_RATE_REPORT = REPOSITORY / "reports" / "colour-products" / "report.json"
PHOTOS_LINK = "photos"  # in a store's work folder: a link to the store's own folder
CATEGORY_SCALE = 20.0  # 1 / temperature of the catalog-means category head


@dataclass(frozen=True)
class ServingStory:
    model: str  # what serves, in words
    why: str
    train_command: str | None  # the one command that trains a better model on these categories
    expected_time: str | None  # of that command on this machine, from the measured rate


def store_run_folder(manifest: Path) -> Path:
    """Where the command below trains a model on this store's categories."""
    return REPOSITORY / "runs" / f"store-{manifest.parent.name}"


def train_command(manifest: Path) -> str:
    return (f"python -m training --train-manifest {shlex.quote(str(manifest))} --backbone efficientnet_lite0 "
            f"--pretrained imagenet --grid 1 --val-fraction 0.1 --epochs {TRAIN_EPOCHS} "
            f"--out {shlex.quote(str(store_run_folder(manifest)))}")


def expected_training_time(photos: int, epochs: int = TRAIN_EPOCHS) -> str | None:
    """From the training rate measured on this machine by benchmarks/store_import.py (None: not measured)."""
    try:
        rate = float(json.loads(TRAINING_RATE_REPORT.read_text())["training"]["photos_per_second"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    seconds = photos * epochs / rate
    took = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"
    return (f"about {took} for {photos:,} photos × {epochs} epochs at the {rate:.1f} photos/s "
            f"measured on this machine (reports/store-import/)")


def small_grey_photos(paths: list[Path]) -> bool:
    """True when the sampled photos are all at most 32 px and grey (three equal bands once decoded)."""
    step = max(1, len(paths) // SAMPLE)
    for path in paths[::step][:SAMPLE]:
        try:  # a larger photo comes out SMALL_GREY_SIDE + 1 px long: enough to tell
            bands = decode_image(path, max_side=SMALL_GREY_SIDE + 1).split()
        except ImageError:
            continue  # an unreadable file is skipped by the build; it does not decide the model
        if max(bands[0].size) > SMALL_GREY_SIDE:
            return False
        if bands[0].tobytes() != bands[1].tobytes() or bands[1].tobytes() != bands[2].tobytes():
            return False
    return True


def _source_name(manifest: str) -> str:
    """A training manifest named by its two folders, e.g. fashion-mnist/train."""
    return "/".join(Path(manifest).parent.parts[-2:])


def store_trainable(record: dict, model: Path) -> bool:
    """Whether `python -m training.store` may train and switch this served model: a store's own copy (never a
    shared model) of frozen pretrained features, or a head trained on them before."""
    if any(model.absolute() == shared.absolute() for shared in (KEPT_MODEL, IMAGENET_MODEL)):
        return False
    spec, config = record.get("backbone") or {}, record.get("config") or {}
    frozen = config.get("epochs") == 0 or config.get("frozen_features")
    return spec.get("name") == "trunk_head" or bool(frozen and config.get("pretrained"))


def store_training_command(catalog: str | Path) -> str:
    return f"python -m training.store --catalog {shlex.quote(str(catalog))}"


def expected_store_training_time(photos: int, views: int = 4, epochs: int = 30) -> str | None:
    """From the rates benchmarks/colour_products.py measured on this machine (None: not measured)."""
    try:
        rates = json.loads(STORE_TRAINING_RATE_REPORT.read_text())["rates"]
        seconds = photos * (views * float(rates["trunk_s_per_view"]) + epochs * float(rates["head_s_per_photo_epoch"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    took = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{max(1, round(seconds / 60))} min"
    return (f"about {took} for {photos:,} photos: {views} views each through the frozen trunk once, then {epochs} "
            "epochs of the head, at the rates measured on this machine (reports/colour-products/)")


def serving_story(checkpoint: dict, manifest: str | None, photos: int, catalog: str | Path | None = None) -> ServingStory:
    """Which model serves a catalog and why, from its checkpoint's record of how it was made. With the
    catalog's folder, a frozen model's story offers the store's head training (python -m training.store)."""
    config, spec = checkpoint.get("config") or {}, checkpoint.get("backbone") or {}
    pre = checkpoint.get("preprocessing") or {}
    backbone = spec.get("name", config.get("backbone", "?"))
    frozen = config.get("epochs") == 0 or config.get("frozen_features")
    command = train_command(Path(manifest)) if manifest else None
    expected = expected_training_time(photos) if manifest else None
    if catalog is not None:
        command, expected = store_training_command(catalog), expected_store_training_time(photos)
    trained_on = config.get("train_manifest")
    if backbone == "trunk_head":
        trunk = (spec.get("kwargs") or {}).get("trunk", "?")
        return ServingStory(f"{trunk} with this store's CoInsP head ({pre.get('size')} px, colour)",
                            "the head was trained on this catalog's photos and categories and found held-out products "
                            "better than the frozen ImageNet features; it replaced them.", command, expected)
    if frozen and config.get("pretrained"):
        return ServingStory(
            f"{backbone} with frozen ImageNet features ({pre.get('size')} px, colour)",
            "these are colour photos of ordinary size, which the kept 28 px grey model was not made for, and no "
            "model has been trained on this store's categories yet: ImageNet features find look-alikes of any "
            "kind of product without training.", command, expected)
    if manifest and trained_on and Path(trained_on).resolve() == Path(manifest).resolve():
        return ServingStory(f"{backbone} trained on this catalog's categories ({config.get('preset', '?')})",
                            "it was trained on this catalog's own photos and categories.", None, None)
    grey_small = pre.get("channels") == 1 and (pre.get("size") or 999) <= SMALL_GREY_SIDE
    if grey_small and trained_on:
        return ServingStory(
            f"{backbone} trained on {_source_name(trained_on)} ({pre.get('size')} px grey)",
            "the kept model is the one for small grey product photos like Fashion-MNIST's: it was trained on "
            "them and finds the same product best there.", None, None)
    made = f"trained on {_source_name(trained_on)}" if trained_on else "with no record of its training"
    return ServingStory(
        f"{backbone} {made} ({pre.get('size')} px, {'grey' if pre.get('channels') == 1 else 'colour'})",
        "it was chosen when the app was started (--model / COINSP_MODEL); it was not trained on this "
        "catalog's categories.", command, expected)


def run(command: list[str]) -> None:
    print("$", " ".join(shlex.quote(c) for c in command), flush=True)
    subprocess.run(command, check=True, cwd=REPOSITORY)


def imagenet_model(manifest: Path) -> Path:
    """The frozen ImageNet checkpoint, written once (the weights come from the installed package).

    `--epochs 0` trains nothing, so a few photos per category stand in for the whole manifest
    (training loads its manifest into memory first).
    """
    if IMAGENET_MODEL.is_file():
        return IMAGENET_MODEL
    from index.manifest import CATEGORY_COLUMN, read_manifest, write_manifest

    table = read_manifest(manifest)
    seed = manifest.parent / ".frozen-model-seed.csv"  # beside the manifest: its paths are relative to it
    write_manifest(table.groupby(CATEGORY_COLUMN, sort=False).head(4), seed)
    run_dir = REPOSITORY / "runs" / "efficientnet-lite0-imagenet"
    try:
        run([sys.executable, "-m", "training", "--train-manifest", str(seed), "--preset", "cos",
             "--backbone", "efficientnet_lite0", "--pretrained", "imagenet", "--grid", "1", "--epochs", "0",
             "--out", str(run_dir)])
    finally:
        seed.unlink(missing_ok=True)
    IMAGENET_MODEL.parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "model.pt").replace(IMAGENET_MODEL)
    return IMAGENET_MODEL


STORES = REPOSITORY / "stores"  # one work folder per store: its manifest, its own served model
CATALOGS = REPOSITORY / "catalogs"


def store_key(source: Path) -> str:
    """A store's name: its folder's name and a short hash of the folder's absolute path, so two stores whose
    folders share a name (/a/shop, /b/shop) never share a catalog."""
    source = source.absolute()
    folder = source if source.is_dir() else source.parent
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-.") or "store"
    return f"{name[:40]}-{hashlib.sha256(str(source).encode()).hexdigest()[:8]}"


def store_folder(source: Path) -> Path:
    return STORES / store_key(source)


def folder_manifest(source: Path, work: Path | None = None) -> Path:
    """The store's manifest, written in its work folder (never into the store's own folder). The photos are
    reached through work/photos/, a mirror of the store's tree made of hard links (the same bytes on disk,
    nothing copied; a copy where the work folder is on another file system), so the manifest's paths stay
    relative to its folder and no link leads outside it. Rewritten only when the photos changed."""
    import pandas as pd

    from index.importers import image_folder_table
    from index.manifest import read_manifest, resolve_image_paths, write_manifest

    source = source.absolute()
    work = work or store_folder(source)
    if source.is_dir():
        table, photos = image_folder_table(source), source
    else:
        table, photos = read_manifest(source), source.parent
    originals = resolve_image_paths(table, photos)  # refuses paths outside the store's folder, as written
    relative = [f"{PHOTOS_LINK}/{p.relative_to(photos).as_posix()}" for p in originals]
    for original, rel in zip(originals, relative):
        mirror_photo(original, work / rel)
    table = table.assign(**{PATH_COLUMN: relative})
    manifest = work / "manifest.csv"
    try:
        if pd.read_csv(manifest).astype(str).equals(table.astype(str)):
            return manifest
    except (OSError, ValueError):
        pass
    return write_manifest(table, manifest)


def mirror_photo(original: Path, mirror: Path) -> None:
    """mirror: the original's bytes under the work folder (a hard link, else a copy); a missing or unreadable
    original is left for the build to skip with its reason."""
    try:
        if mirror.exists() and os.path.samefile(original, mirror):
            return
    except OSError:
        pass
    try:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.unlink(missing_ok=True)
        try:
            os.link(original, mirror)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(original, mirror)
    except OSError:
        pass


def store_model(manifest: Path, work: Path) -> Path:
    """The store's own served model file (work/model.pt): a copy of the frozen ImageNet checkpoint at first;
    replaced by a trained head only when it wins (python -m training.store). Shared models are never changed."""
    own = work / "model.pt"
    if not own.is_file():
        with atomic_path(own) as tmp:
            shutil.copyfile(imagenet_model(manifest), tmp)
    return own


def choose_model(manifest: Path, work: Path | None = None) -> tuple[Path, str]:
    from index.manifest import read_manifest, resolve_image_paths

    paths = resolve_image_paths(read_manifest(manifest), manifest.parent.absolute())
    if small_grey_photos(paths):
        return KEPT_MODEL, f"photos of at most {SMALL_GREY_SIDE} px in grey: the kept model"
    own = store_model(manifest, work or manifest.parent)
    if load_checkpoint(own)["backbone"]["name"] == "trunk_head":
        return own, "this store's own trained head (it beat the frozen features on held-out products)"
    return own, "colour photos: frozen ImageNet features (EfficientNet-Lite0)"


def category_head_from_catalog(model: Path, catalog: Path) -> None:
    """A frozen store model learns to name categories without training: each category's mean catalog vector
    becomes its class weight (a cosine classifier on f(x)), so searches show the predicted category.
    The weights and so the model's fingerprint do not change."""
    import numpy as np
    import torch

    from index.catalog.loaded import Catalog

    payload = load_checkpoint(model)
    if payload["backbone"]["name"] == "trunk_head" or model == KEPT_MODEL:
        return  # a trained head has its own category head; the kept model is not a store's to change
    loaded = Catalog.load(catalog)
    names = sorted(loaded.metadata[CATEGORY_COLUMN].astype(str).unique())
    vectors = np.asarray(loaded.embeddings, np.float32)
    labels = loaded.metadata[CATEGORY_COLUMN].astype(str).to_numpy()
    weight = torch.from_numpy(np.stack([vectors[labels == n].mean(0) for n in names]))
    head = {"input": "feature", "normalise": True, "weight": weight, "bias": None, "cosine": True,
            "scale": CATEGORY_SCALE}
    backbone, pre = backbone_from_checkpoint(payload)
    save_checkpoint(model, backbone_spec=payload["backbone"], backbone=backbone, preprocessing=pre,
                    categories=names, config={**(payload.get("config") or {}), "category_head": "catalog means"},
                    coarse_head=head)


class ImportFailed(RuntimeError):
    """A store import that did not finish, with what to do, in one line."""


def prepare(source: Path, out: Path | None) -> tuple[Path, Path]:
    source = source.absolute()
    work = store_folder(source)
    try:
        manifest = folder_manifest(source, work)
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"{source} could not be read as a store ({str(exc).splitlines()[0]}); expected "
                           "FOLDER/<category>/[<product>/]<image> or a manifest with relative paths") from None
    out = out or CATALOGS / f"store-{work.name}"
    model, why = choose_model(manifest, work)
    print(f"model: {model.relative_to(REPOSITORY) if model.is_relative_to(REPOSITORY) else model} ({why})", flush=True)
    from index.__main__ import main as index_main

    ensure = ["ensure", "--manifest", str(manifest), "--model", str(model), "--out", str(out)]
    print("$ python -m index", " ".join(shlex.quote(c) for c in ensure), flush=True)
    try:  # in this process: no second start of Python and torch
        code, reason = index_main(ensure), "its reason is printed above"
    except Exception as exc:  # noqa: BLE001 - any failure of the build ends in the one line below
        code, reason = 1, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if code:
        raise ImportFailed(f"the catalog {out} could not be built from {source} (python -m index ensure: {reason}): "
                           f"fix that, or remove {out} to start it again, then run ./run.sh --images again")
    category_head_from_catalog(model, out)
    return out, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.store_catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder of <category>/[<product>/]<image>, or a manifest")
    parser.add_argument("--out", type=Path, help="catalog folder (default catalogs/store-<folder name>)")
    parser.add_argument("--env-file", type=Path, help="write COINSP_CATALOG and COINSP_MODEL here for the app")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    try:
        out, model = prepare(args.source, args.out)
    except ImportFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.env_file:
        # Photos uploaded on the Catalog page go below the catalog's root, the store's work folder (unless a
        # data root is set): never into the store's own folder.
        data_root = os.environ.get("COINSP_DATA_ROOT") or str(store_folder(args.source))
        args.env_file.write_text(f"COINSP_CATALOG={shlex.quote(str(out))}\nCOINSP_MODEL={shlex.quote(str(model))}\n"
                                 f"COINSP_DATA_ROOT={shlex.quote(data_root)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
