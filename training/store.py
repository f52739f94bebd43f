"""A store's own CoInsP head, trained on its catalog and served only when it finds products better.

    python -m training.store --catalog DIR [--model SERVED.pt] [--epochs 30]

1. The trunk: the catalog's model (frozen ImageNet features, or the trunk of a head trained before).
2. Each photo's views through the trunk, once, cached on disk (training/cached_features.py); a cache
   of another trunk is refused and made again.
3. Held out: a fifth of the products (by product_id), or without product ids a fifth of the photos.
   CoInsP** (training/head_training.py) trains on the rest, from categories only.
4. Recall@1 on the held-out part, frozen vs the head: product R@1 (leave-one-out over the held-out
   products' photos), or without product ids how often an augmented view of a photo finds that
   photo among the held-out ones, beside category agreement of the nearest neighbour.
5. Only if the head wins: its checkpoint replaces the served model file (atomically), then the catalog
   is re-embedded through the head from the cached features (seconds) and committed as a new version
   (atomically: the app follows catalog.json). Otherwise nothing served changes.

Progress, the time estimate and the result go to a small status.json in the work folder
(`.<catalog>.store-head/` beside the catalog), which the Catalog page reads. Nothing is written
into the store's photo folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from embedder.backbones import BACKBONES, TrunkWithHead
from embedder.checkpoint import load_checkpoint, model_fingerprint, preprocessing_from_checkpoint, save_checkpoint
from embedder.embed import EmbedResult, Embedder
from embedder.files import atomic_path
from index.catalog.loaded import Catalog
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, PRODUCT_COLUMN
from index.catalog.operations import rebuild_catalog
from training.cached_features import CachedFeatures, ViewSettings, cached_or_built
from training.head_training import HeadSettings, TrainedHead, recall, train_head

HELD_OUT_SHARE = 0.2
STATUS_FILE = "status.json"
REPOSITORY = Path(__file__).resolve().parents[1]
# Served model files this command never replaces: shared by every catalog that uses them.
SHARED_MODELS = (REPOSITORY / "models" / "coinsp-fmnist.pt", REPOSITORY / "models" / "efficientnet-lite0-imagenet.pt")


class StoreTrainingError(ValueError):
    """Why a store's head cannot be trained or switched, in one line."""


def work_folder(catalog: str | os.PathLike) -> Path:
    catalog = Path(catalog).absolute()
    return catalog.parent / f".{catalog.name}.store-head"


def read_status(catalog: str | os.PathLike) -> dict | None:
    try:
        return json.loads((work_folder(catalog) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


class StatusFile:
    """status.json: state, stage, done/total, the estimate of the time left, and the result."""

    def __init__(self, folder: Path):
        self.path, self.started = folder / STATUS_FILE, time.time()
        self.record: dict = {"state": "running", "started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid()}
        self.stage_started: dict[str, float] = {}

    def write(self, **fields) -> None:
        self.record.update(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.record, indent=1) + "\n")

    def __call__(self, stage: str, done: int, total: int) -> None:
        """The progress callback (embedder/progress.py): also estimates the stage's time left from its rate."""
        now = time.time()
        began = self.stage_started.setdefault(stage, now)
        left = (now - began) / done * (total - done) if done and total else None
        print(f"{stage}: {done:,}/{total:,}" + (f", about {left:.0f} s left" if left is not None else ""), flush=True)
        self.write(stage=stage, done=done, total=total, seconds_left=None if left is None else round(left),
                   elapsed_s=round(now - self.started))


def trunk_of(payload: dict) -> tuple[Embedder, dict]:
    """The frozen trunk as an embedder (fp32, so the cache is the same on every machine), and its spec.
    A head trained before gives its trunk back, with the fingerprint the frozen model had."""
    spec = payload["backbone"]
    pre = preprocessing_from_checkpoint(payload)
    if spec["name"] == "trunk_head":
        trunk_spec = {"name": spec["kwargs"]["trunk"], "kwargs": dict(spec["kwargs"].get("trunk_kwargs") or {})}
        state = {k[len("trunk."):]: v for k, v in payload["backbone_state"].items() if k.startswith("trunk.")}
    else:
        trunk_spec, state = spec, payload["backbone_state"]
    backbone = BACKBONES[trunk_spec["name"]](**trunk_spec["kwargs"])
    backbone.load_state_dict(state)
    fingerprint = model_fingerprint(trunk_spec, state, pre.to_dict())
    return Embedder(backbone, pre, fingerprint=fingerprint, precision="fp32"), trunk_spec


def product_split(items, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, held-out rows, what is held out): a fifth of the products with two photos or more
    (chosen by a hash of the id, so the split is the same on every run), else a fifth of the photos."""
    n = len(items)
    if PRODUCT_COLUMN in items.columns and items[PRODUCT_COLUMN].notna().all():
        products = items[PRODUCT_COLUMN].astype(str)
        sizes = products.map(products.value_counts())
        ranked = products.map(lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
        candidates = sorted(set(ranked[sizes >= 2]))
        chosen = set(candidates[:max(2, round(HELD_OUT_SHARE * len(set(products))))]) if len(candidates) >= 4 else set()
        if chosen:
            held = ranked.isin(chosen).to_numpy()
            return np.flatnonzero(~held), np.flatnonzero(held), "products"
    order = np.random.default_rng(seed).permutation(n)
    cut = max(2, round(HELD_OUT_SHARE * n))
    return np.sort(order[cut:]), np.sort(order[:cut]), "photos"


def held_out_recall(plain: torch.Tensor, shopper: torch.Tensor, items, held: np.ndarray, kind: str,
                    vectors) -> dict:
    """R@1 and R@5 of the held-out part for one representation `vectors` (unit trunk features -> vectors)."""
    gallery = vectors(plain[held])
    categories = items[CATEGORY_COLUMN].astype(str).to_numpy()[held]
    result = {"category_agreement": recall(gallery, categories, ks=(1,))[1]}
    if kind == "products":
        labels = items[PRODUCT_COLUMN].astype(str).to_numpy()[held]
        found = recall(gallery, labels)
        shopper_found = recall(vectors(shopper[held]), labels, gallery=gallery, gallery_labels=labels)
        result.update({"R@1": found[1], "R@5": found[5], "shopper_R@1": shopper_found[1]})
    else:  # each photo's first augmented view looks for the photo itself among the held-out photos
        labels = np.arange(len(held))
        found = recall(vectors(shopper[held]), labels, gallery=gallery, gallery_labels=labels)
        result.update({"R@1": found[1], "R@5": found[5]})
    return result


@dataclass
class StoreReport:
    held_out: str  # "products" or "photos"
    held_out_count: int
    frozen: dict
    head: dict
    wins: bool
    switched: bool
    train_seconds: float
    cache_seconds: float
    model: str | None

    def summary(self) -> str:
        what = "product R@1" if self.held_out == "products" else "R@1 of augmented views"
        verdict = ("the head wins: the catalog now serves it" if self.switched else
                   "the head wins (not switched: --no-switch)" if self.wins else "the frozen model stays")
        return (f"held-out {self.held_out} ({self.held_out_count:,}): {what} frozen {self.frozen['R@1']:.3f} -> head "
                f"{self.head['R@1']:.3f}, category agreement {self.frozen['category_agreement']:.3f} -> "
                f"{self.head['category_agreement']:.3f}; {verdict}")


class CachedEmbedder(Embedder):
    """The head's vectors of the catalog's photos from their cached trunk features (no trunk run);
    a photo not in the cache is embedded the ordinary way."""

    def __init__(self, embedder: Embedder, trained: TrainedHead, cache: CachedFeatures):
        self.__dict__.update(embedder.__dict__)
        self.trained, self.cache = trained, cache
        self.row_of_path = {p: i for i, p in enumerate(cache.paths) if cache.usable[i]}

    def embed_files(self, paths, *, batch_size=256, num_workers=None, progress=None) -> EmbedResult:
        paths = [str(p) for p in paths]
        known = [i for i, p in enumerate(paths) if p in self.row_of_path]
        rows = [self.row_of_path[paths[i]] for i in known]
        vectors = self.trained.vectors(torch.from_numpy(np.asarray(self.cache.features[rows, 0], np.float32)))
        others = [i for i, p in enumerate(paths) if p not in self.row_of_path]
        result = EmbedResult(vectors, np.asarray(known, np.int64))
        if others:
            extra = super().embed_files([paths[i] for i in others], batch_size=batch_size, num_workers=num_workers)
            result = EmbedResult(np.concatenate([vectors, extra.embeddings]),
                                 np.concatenate([result.embedded, np.asarray(others, np.int64)[extra.embedded]]),
                                 [(others[i], p, r) for i, p, r in extra.failures])
        if progress:
            progress(len(paths), len(paths))
        return result


def train_store(catalog_folder: str | os.PathLike, *, model: str | os.PathLike | None = None,
                settings: HeadSettings = HeadSettings(), views: ViewSettings = ViewSettings(),
                switch: bool = True, progress=None) -> StoreReport:
    catalog_folder = Path(catalog_folder)
    catalog = Catalog.load(catalog_folder)
    served = Path(model or catalog.info.model_path or "")
    if not served.is_file():
        raise StoreTrainingError(f"the catalog's model {served} is not there; pass --model")
    if switch and any(served.absolute() == shared.absolute() for shared in SHARED_MODELS):
        raise StoreTrainingError(f"{served} is shared by every catalog that uses it and is never replaced: serve this "
                                 "store from its own copy (./run.sh --images makes one) or pass --model")
    payload = load_checkpoint(served)
    if payload["fingerprint"] != catalog.info.model_fingerprint:
        raise StoreTrainingError(f"{served} is not the model of catalog {catalog_folder}; pass the served model with --model")
    items = catalog.metadata.reset_index(drop=True)
    if items[CATEGORY_COLUMN].isna().any():
        raise StoreTrainingError("every photo needs a category to train on")
    work = work_folder(catalog_folder)
    status = StatusFile(work)
    report_progress = progress or status
    status.write(stage="starting", done=0, total=0)
    try:
        trunk, trunk_spec = trunk_of(payload)
        paths = [str(catalog.root / p) for p in items[PATH_COLUMN].astype(str)]
        started = time.perf_counter()
        cache = cached_or_built(paths, trunk, work / "features", views, progress=report_progress)
        cache_seconds = time.perf_counter() - started
        usable = np.flatnonzero(cache.usable)
        items = items.iloc[usable].reset_index(drop=True)
        features = np.asarray(cache.features[usable])
        train_rows, held, kind = product_split(items, settings.seed)
        names = sorted(items[CATEGORY_COLUMN].astype(str).unique())
        codes = items[CATEGORY_COLUMN].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
        trained = train_head(features[train_rows], codes[train_rows], settings, progress=report_progress)
        plain = torch.from_numpy(features[:, 0].astype(np.float32))
        shopper = torch.from_numpy(features[:, 1 % views.views].astype(np.float32))
        frozen = held_out_recall(plain, shopper, items, held, kind,
                                 lambda t: torch.nn.functional.normalize(t, dim=1).numpy())
        head = held_out_recall(plain, shopper, items, held, kind, trained.vectors)
        wins = head["R@1"] > frozen["R@1"] and head["category_agreement"] >= frozen["category_agreement"] - 0.01
        switched = False
        if wins and switch:
            report_progress("switching", 0, 0)
            switch_to_head(catalog_folder, served, payload, trunk_spec, trained, names, cache)
            switched = True
        report = StoreReport(kind, len(held), frozen, head, wins, switched, round(trained.seconds, 1),
                             round(cache_seconds, 1), str(served) if switched else None)
        status.write(state="done", stage="done", result=asdict(report), summary=report.summary(),
                     history=trained.history[-3:])
        return report
    except Exception as exc:
        status.write(state="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise


def switch_to_head(catalog_folder: Path, served: Path, payload: dict, trunk_spec: dict, trained: TrainedHead,
                   categories: list[str], cache: CachedFeatures) -> None:
    """The served model file becomes trunk + head (atomically), then the catalog is re-embedded from the
    cache through the head and committed. In that order: a running app keeps its loaded model and
    catalog until catalog.json changes, and then finds the new model file already in place."""
    hidden, whitened = trained.head.mlp[0].out_features, trained.head.whitened
    backbone = TrunkWithHead(trunk_spec["name"], trunk_spec["kwargs"], hidden, whitened)
    trunk, _ = trunk_of(payload)
    backbone.trunk.load_state_dict(trunk.backbone.state_dict())
    backbone.head.load_state_dict(trained.head.state_dict())
    spec = {"name": "trunk_head", "kwargs": {"trunk": trunk_spec["name"], "trunk_kwargs": trunk_spec["kwargs"],
                                             "hidden": hidden, **({"whitened": True} if whitened else {})}}
    config = {**(payload.get("config") or {}), "store_head": asdict(trained.settings), "frozen_features": False,
              "epochs": trained.settings.epochs, "trained_on_catalog": str(catalog_folder.absolute())}
    save_checkpoint(served, backbone_spec=spec, backbone=backbone, preprocessing=preprocessing_from_checkpoint(payload),
                    categories=categories, config=config, coarse_head=trained.coarse_head)
    embedder = CachedEmbedder(Embedder.from_checkpoint(served, precision="fp32"), trained, cache)
    rebuild_catalog(catalog_folder, model=embedder, progress=False)


BACKGROUND: dict[str, subprocess.Popen] = {}  # work folder -> the job this process started


def start_in_background(catalog: str | os.PathLike, model: str | os.PathLike, extra: list[str] = ()) -> subprocess.Popen:
    """Run this command for a catalog in a process of its own (the Catalog page's button); it reports to status.json
    and its output goes to log.txt in the work folder."""
    work = work_folder(catalog)
    work.mkdir(parents=True, exist_ok=True)
    StatusFile(work).write(stage="starting", done=0, total=0)
    with open(work / "log.txt", "wb") as log:
        job = subprocess.Popen([sys.executable, "-m", "training.store", "--catalog", str(Path(catalog).absolute()),
                                "--model", str(Path(model).absolute()), *extra], cwd=REPOSITORY, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    BACKGROUND[str(work)] = job
    return job


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def background_state(catalog: str | os.PathLike) -> dict | None:
    """status.json, with a job that ended without writing its result reported as failed."""
    status = read_status(catalog)
    if status is None or status.get("state") != "running":
        return status
    job = BACKGROUND.get(str(work_folder(catalog)))
    alive = job.poll() is None if job is not None else _alive(status.get("pid"))
    if alive:
        return status
    status = read_status(catalog) or status  # it may have finished in between
    if status.get("state") == "running":
        status = {**status, "state": "failed", "error": f"the training process ended without a result (see "
                                                        f"{work_folder(catalog) / 'log.txt'})"}
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", required=True, type=Path)
    parser.add_argument("--model", type=Path, help="the served model file (default: the catalog's)")
    parser.add_argument("--epochs", type=int, default=HeadSettings.epochs)
    parser.add_argument("--views", type=int, default=ViewSettings.views, help="cached views per photo")
    parser.add_argument("--no-switch", action="store_true", help="report only; change nothing served")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
    try:
        report = train_store(args.catalog, model=args.model, settings=HeadSettings(epochs=args.epochs),
                             views=ViewSettings(views=args.views), switch=not args.no_switch)
    except (StoreTrainingError, OSError, ValueError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
