"""A store's own photos as a served catalog, in one command (`./run.sh --images FOLDER`):

    python -m app.store_catalog FOLDER_OR_MANIFEST [--out catalogs/NAME] [--env-file FILE]

imports the folder (category/[product/]image, or a manifest), picks the model that suits the photos,
embeds them (progress shown) and writes the catalog; --env-file receives COINSP_CATALOG and
COINSP_MODEL for the app. Which model, and why:
  - photos of at most 32 px in grey, like Fashion-MNIST: the kept model (models/coinsp-fmnist.pt);
  - a model trained on this store's categories, when its run folder holds one (the command below);
  - otherwise frozen ImageNet features: EfficientNet-Lite0 from the installed weights package,
    written once as models/efficientnet-lite0-imagenet.pt (`python -m training ... --epochs 0`).
The Catalog page tells the same story from the served checkpoint (`serving_story`).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from embedder.images import ImageError, decode_image

REPOSITORY = Path(__file__).resolve().parents[1]
KEPT_MODEL = REPOSITORY / "models" / "coinsp-fmnist.pt"
IMAGENET_MODEL = REPOSITORY / "models" / "efficientnet-lite0-imagenet.pt"
SMALL_GREY_SIDE = 32  # pixels: photos this small and grey are what the kept model was trained on
SAMPLE = 200  # photos looked at to decide
TRAIN_EPOCHS = 15
TRAINING_RATE_REPORT = REPOSITORY / "reports" / "store-import" / "report.json"


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


def serving_story(checkpoint: dict, manifest: str | None, photos: int) -> ServingStory:
    """Which model serves a catalog and why, from its checkpoint's record of how it was made."""
    config, spec = checkpoint.get("config") or {}, checkpoint.get("backbone") or {}
    pre = checkpoint.get("preprocessing") or {}
    backbone = spec.get("name", config.get("backbone", "?"))
    frozen = config.get("epochs") == 0 or config.get("frozen_features")
    command = train_command(Path(manifest)) if manifest else None
    expected = expected_training_time(photos) if manifest else None
    trained_on = config.get("train_manifest")
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


def choose_model(manifest: Path) -> tuple[Path, str]:
    from index.manifest import read_manifest, resolve_image_paths

    paths = resolve_image_paths(read_manifest(manifest), manifest.parent.absolute())
    if small_grey_photos(paths):
        return KEPT_MODEL, f"photos of at most {SMALL_GREY_SIDE} px in grey: the kept model"
    trained = store_run_folder(manifest) / "model.pt"
    if trained.is_file():
        return trained, "a model trained on this store's categories"
    return imagenet_model(manifest), "colour photos: frozen ImageNet features (EfficientNet-Lite0)"


FOLDER_MANIFEST = ".store-manifest.csv"  # beside the photos (manifest paths are relative to it); a store's
# own manifest.csv is left alone


def folder_manifest(folder: Path) -> Path:
    """The manifest of a category/[product/]image tree, written as FOLDER/.store-manifest.csv when it changed."""
    import pandas as pd

    from index.importers import image_folder_table
    from index.manifest import write_manifest

    table, manifest = image_folder_table(folder), folder / FOLDER_MANIFEST
    try:
        if pd.read_csv(manifest).astype(str).equals(table.astype(str)):
            return manifest
    except (OSError, ValueError):
        pass
    return write_manifest(table, manifest)


def prepare(source: Path, out: Path | None) -> tuple[Path, Path]:
    source = source.absolute()
    manifest = folder_manifest(source) if source.is_dir() else source
    out = out or REPOSITORY / "catalogs" / f"store-{manifest.parent.name}"
    model, why = choose_model(manifest)
    print(f"model: {model.relative_to(REPOSITORY) if model.is_relative_to(REPOSITORY) else model} ({why})", flush=True)
    run([sys.executable, "-m", "index", "ensure", "--manifest", str(manifest), "--model", str(model), "--out", str(out)])
    return out, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.store_catalog", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder of <category>/[<product>/]<image>, or a manifest")
    parser.add_argument("--out", type=Path, help="catalog folder (default catalogs/store-<folder name>)")
    parser.add_argument("--env-file", type=Path, help="write COINSP_CATALOG and COINSP_MODEL here for the app")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"{args.source} does not exist")
    out, model = prepare(args.source, args.out)
    if args.env_file:
        args.env_file.write_text(f"COINSP_CATALOG={shlex.quote(str(out))}\nCOINSP_MODEL={shlex.quote(str(model))}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
