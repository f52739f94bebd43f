"""What can happen to a catalog: build it from a manifest, remove items, rebuild its index (or
re-embed it with a new model), each under the catalog's lock and committed as a new version
(index.catalog.store); adding new images is index.catalog.add. Each returns an UpdateReport.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import faiss
import numpy as np
import pandas as pd

from embedder.files import file_facts
from embedder.progress import ProgressCallback, ProgressOption, Stage, as_callback
from index.catalog.loaded import Catalog
from index.catalog.choose import DEFAULT_MEMORY_BUDGET, IndexChoice, choice_from_factory, choose_index
from index.catalog.description import CatalogInfo
from index.catalog.embedding_settings import preprocessing_record
from index.catalog.projection import Projection, projecting_embedder
from index.importers import link_outside
from index.manifest import CATEGORY_COLUMN, PATH_COLUMN, read_manifest, resolve_image_paths
from index.catalog.store import (HASH_COLUMN, ID_COLUMN, IMAGE_PATH_COLUMN, MTIME_COLUMN, RESERVED_COLUMNS,
                                 SIZE_COLUMN, CatalogError, catalog_lock, check_model, check_new_catalog_folder,
                                 commit_catalog, normalise_rel, now, read_info_or_none, restore_version,
                                 stores_no_vectors)
from index.catalog.tune import build_index
from index.catalog.uploaded_files import image_file

if TYPE_CHECKING:  # torch is imported only where a model runs: loading and evaluating need none
    from embedder.embed import Embedder


def embed_files(embedder: "Embedder", paths: Sequence[Path], progress: ProgressCallback, stage: str,
                root: Path | Sequence[Path] | None = None
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], list[tuple[str, int, int]]]:
    """Embed and fingerprint files: (vectors, indices embedded, [(index, reason)], facts per vector).
    A path that a symbolic link leads outside `root` (outside every one of several) is a failure, never opened."""
    if not paths:
        return np.zeros((0, embedder.feature_dim), np.float32), np.zeros(0, np.int64), [], []
    roots = [] if root is None else [root] if isinstance(root, (str, os.PathLike)) else list(root)
    reasons = {i: [link_outside(base, path) for base in roots] for i, path in enumerate(paths)} if roots else {}
    refused = {i: why[0] for i, why in reasons.items() if all(why)}
    if refused:
        inside = np.asarray([i for i in range(len(paths)) if i not in refused], np.int64)
        vectors, embedded, failures, facts = embed_files(embedder, [paths[i] for i in inside], progress, stage)
        return vectors, inside[embedded], sorted([(int(inside[i]), r) for i, r in failures] + list(refused.items())), facts
    counter = Stage(progress, stage, len(paths))
    result = embedder.embed_files([str(p) for p in paths], progress=lambda done, total: counter.reach(done))
    failures = [(int(i), reason) for i, _, reason in result.failures]
    vectors, embedded, facts, keep = result.embeddings, np.asarray(result.embedded, np.int64), [], []
    for j, i in enumerate(embedded):
        try:
            facts.append(file_facts(paths[i]))
            keep.append(j)
        except OSError as exc:  # vanished between embedding and hashing
            failures.append((int(i), f"file not readable: {exc.strerror or exc}"))
    keep = np.asarray(keep, np.int64)
    return np.ascontiguousarray(vectors[keep], np.float32), embedded[keep], sorted(failures), facts


@dataclass
class UpdateReport:
    """What an operation did."""
    operation: str
    folder: Path
    items: int = 0  # items in the catalog afterwards
    added: int = 0  # new items embedded
    reused: int = 0  # new items whose identical bytes were already embedded (no model run)
    updated: int = 0  # items whose file changed: re-embedded, same id
    unchanged: int = 0  # items already in the catalog
    removed: int = 0
    duplicates: int = 0  # manifest rows dropped because an earlier row names the same image
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) this operation
    index: dict = field(default_factory=dict)
    seconds: float = 0.0
    reembedded: bool = False
    wrote: bool = True
    version: str | None = None  # the version current afterwards (restore)
    undone_version: str | None = None  # the version a restore replaced

    def summary(self) -> str:
        parts = [f"{self.operation}: {self.items:,} items"]
        if self.operation == "restore" and self.wrote:
            parts[0] = f"restore: version {self.version} is current again ({self.items:,} items)"
            parts.append(f"version {self.undone_version} undone (restore it with --version {self.undone_version})")
        for name in ("added", "reused", "updated", "unchanged", "removed"):
            value = getattr(self, name)
            if value:
                parts.append(f"{value:,} {name}" if name != "reused" else f"{value:,} added from identical images")
        if self.skipped:
            parts.append(f"{len(self.skipped):,} skipped")
        if self.duplicates:
            parts.append(f"{self.duplicates:,} duplicate manifest row{'s' if self.duplicates > 1 else ''} dropped")
        if self.index:
            recall = self.index.get("recall_at_10")
            parts.append(f"index {self.index.get('factory')}"
                         + (f" (recall@10 vs exact {recall:.3f})" if recall is not None else ""))
        if not self.wrote:
            parts.append("nothing to change")
        return ", ".join(parts) + f" in {self.seconds:.1f} s"

    def to_dict(self) -> dict:
        return {"operation": self.operation, "folder": str(self.folder), "items": self.items, "added": self.added,
                "reused": self.reused, "updated": self.updated, "unchanged": self.unchanged,
                "removed": self.removed, "duplicates": self.duplicates,
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
                "index": self.index, "seconds": round(self.seconds, 3), "reembedded": self.reembedded,
                "wrote": self.wrote, "version": self.version, "undone_version": self.undone_version}


def load_embedder(model, precision: str | None) -> tuple["Embedder", str | None]:
    """precision None: the one measured fastest here (a catalog's recorded precision is never a request)."""
    from embedder.embed import Embedder

    if isinstance(model, Embedder):
        return model, None
    embedder = Embedder.from_checkpoint(model, precision=precision)
    return embedder, str(Path(model).absolute())


def check_columns(table: pd.DataFrame, source: str) -> None:
    clash = [c for c in RESERVED_COLUMNS if c in table.columns]
    if clash:
        raise CatalogError(f"{source} has column(s) {clash} that the catalog reserves; rename them")


def relative_paths(table: pd.DataFrame, manifest_root: Path, catalog_root: Path,
                    known: Iterable[str] = ()) -> list[str]:
    """Manifest paths rebased on the catalog's image root; refuses images outside it.

    Paths already in the catalog (`known`, same root) were checked when they were added; only
    the others go through the shared check (resolve_image_paths).
    """
    if manifest_root.absolute() == catalog_root:
        normalised = [normalise_rel(p) for p in table[PATH_COLUMN]]
        known = set(known)
        new_rows = [i for i, p in enumerate(normalised) if p not in known]
        if new_rows:
            resolve_image_paths(table.iloc[new_rows], manifest_root)
        return normalised
    out = []
    for path in resolve_image_paths(table, manifest_root):
        try:
            out.append(path.relative_to(catalog_root).as_posix())
        except ValueError:
            raise CatalogError(f"{path} is outside the catalog's image folder {catalog_root}; put new images "
                               "below it (paths are stored relative to it) or build a new catalog") from None
    return out


def drop_duplicate_paths(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The table with one row per image path (the first row naming it), and how many were dropped:
    two rows of one file would be two items with the same vector."""
    unique = table.drop_duplicates(PATH_COLUMN, keep="first").reset_index(drop=True)
    return unique, len(table) - len(unique)


def merge_skipped(old: list[dict], new: list[tuple[str, str]], now_ok: Iterable[str] = ()) -> list[dict]:
    merged = {entry["path"]: entry["reason"] for entry in old}
    for path in now_ok:
        merged.pop(path, None)
    merged.update(dict(new))
    return [{"path": p, "reason": r} for p, r in merged.items()]


def counts(metadata: pd.DataFrame, skipped: list[dict]) -> dict:
    counts = {"items": int(len(metadata)), "skipped": len(skipped)}
    if CATEGORY_COLUMN in metadata:
        counts["categories"] = {str(k): int(v) for k, v in metadata[CATEGORY_COLUMN].value_counts().sort_index().items()}
    return counts


def resolve_choice(index: str | None, n: int, d: int, budget: int, previous: dict | None) -> IndexChoice:
    if index:
        choice = choice_from_factory(index, d)
        return IndexChoice(choice.factory, reason=choice.reason, params=choice.params)
    if previous and previous.get("user_given"):
        return IndexChoice(previous["factory"], reason=previous.get("reason", ""), params=dict(previous.get("params", {})))
    return choose_index(n, d, budget)


def build_catalog(manifest: str | os.PathLike, model, out: str | os.PathLike, *, index: str | None = None,
                  memory_budget: int | None = None, precision: str | None = None, overwrite: bool = False,
                  progress: ProgressOption = True, lock_timeout: float = 0.0,
                  project_dims: int | None = None) -> UpdateReport:
    """Embed every image of a manifest and write a catalog folder.

    Unreadable images (missing, corrupt, not an image) are skipped and listed with the reason.
    `model` is a checkpoint path (or an Embedder). An existing catalog is replaced only with
    overwrite=True (ids then start again from 0: it is a new catalog). project_dims: store the
    vectors projected to this many dims by the PCA of the catalog's own vectors
    (index.catalog.projection), the projection kept in the version and applied to every query.
    """
    started, progress = time.perf_counter(), as_callback(progress)
    manifest, out = Path(manifest), Path(out)
    table = read_manifest(manifest)
    check_columns(table, f"manifest {manifest}")
    root = manifest.parent.absolute()
    resolve_image_paths(table, root)  # refuses paths outside the root, naming the rows as written
    normalised = table.assign(**{PATH_COLUMN: [normalise_rel(p) for p in table[PATH_COLUMN]]})
    table, duplicates = drop_duplicate_paths(normalised)
    paths = resolve_image_paths(table, root)
    check_new_catalog_folder(out, overwrite)
    embedder, model_path = load_embedder(model, precision)
    embedder = getattr(embedder, "unprojected", embedder)  # a build fits its own projection
    check_project_dims(project_dims, embedder.feature_dim)
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    with catalog_lock(out, "build", lock_timeout):
        previous = read_info_or_none(out, "version")
        vectors, embedded, failures, facts = embed_files(embedder, paths, progress, "embedding", root)
        if len(vectors) == 0:
            reasons = "; ".join(f"{table[PATH_COLUMN].iloc[i]}: {r}" for i, r in failures[:3])
            raise CatalogError(f"none of the {len(paths):,} images of {manifest} could be used ({reasons})")
        vectors, projection = projected(vectors, project_dims)
        metadata = table.iloc[embedded].reset_index(drop=True)
        metadata.insert(0, ID_COLUMN, np.arange(len(metadata), dtype=np.int64))
        metadata[HASH_COLUMN] = [f[0] for f in facts]
        metadata[SIZE_COLUMN] = np.asarray([f[1] for f in facts], np.int64)
        metadata[MTIME_COLUMN] = np.asarray([f[2] for f in facts], np.int64)
        skipped = [(normalise_rel(table[PATH_COLUMN].iloc[i]), reason) for i, reason in failures]
        choice = resolve_choice(index, len(vectors), vectors.shape[1], budget, None)
        info = CatalogInfo(model_fingerprint=embedder.fingerprint, model_path=model_path, precision=embedder.precision,
                           feature_dim=int(vectors.shape[1]), created_at=now(), root=str(root),
                           manifest=str(manifest.absolute()), memory_budget_bytes=budget,
                           next_id=int(len(metadata)), index={},
                           preprocessing=preprocessing_record(embedder.preprocessing),
                           projection=None if projection is None else projection.record())
        index_obj, record = build_index(choice, vectors, metadata, info, progress)
        record["user_given"] = bool(index)
        skipped_list = merge_skipped([], skipped)
        info.index, info.counts, info.skipped = record, counts(metadata, skipped_list), skipped_list
        report = UpdateReport("build", out, items=len(metadata), added=len(metadata), skipped=skipped,
                              duplicates=duplicates, index=record)
        info.last_operation = {"operation": "build", "added": len(metadata), "skipped": len(skipped),
                               "duplicates": duplicates, "at": now()}
        commit_catalog(out, [vectors], metadata, index_obj, info, previous, projection)
    report.seconds = time.perf_counter() - started
    return report


def check_project_dims(dims: int | None, feature_dim: int) -> None:
    """CatalogError unless `dims` (None: no projection) is a size the model's vectors can be projected to."""
    if dims is not None and not 1 <= int(dims) < int(feature_dim):
        raise CatalogError(f"--project-dims must be between 1 and {int(feature_dim) - 1} (the model's vectors "
                           f"have {feature_dim} dims), got {dims}")


def projected(vectors: np.ndarray, dims: int | None) -> tuple[np.ndarray, Projection | None]:
    """(vectors, None) without a size; else the PCA of these vectors to `dims` and the vectors through it."""
    if dims is None:
        return vectors, None
    if len(vectors) < 2:
        raise CatalogError("a projection is fitted on the catalog's vectors: it needs at least two items")
    projection = Projection.fit(vectors, int(dims))
    return projection.apply(vectors), projection


def open_embedder_for(catalog: Catalog, model) -> "Embedder":
    """The catalog's own model (by default the checkpoint it was built from), fingerprint-checked; for a
    catalog of projected vectors, its vectors go through the catalog's projection."""
    if model is None:
        model = catalog.info.model_path
        if not model:
            raise CatalogError("the catalog does not record its model's checkpoint path; pass --model")
    embedder, _ = load_embedder(model, None)
    check_model(catalog.info, embedder.fingerprint, str(model) if isinstance(model, (str, os.PathLike)) else "the model")
    return projecting_embedder(embedder, catalog.projection)


def refuse_on_disk(catalog: Catalog, operation: str) -> None:
    if catalog.on_disk:
        raise CatalogError(
            f"catalog {catalog.folder} is an on-disk catalog built from embedding shards, which {operation} "
            "does not change: embed the new manifest (`python -m index embed-ray`) and build it again with "
            "`python -m index build-from-shards ... --overwrite`")


def ids_for_paths(catalog: Catalog, paths: Iterable[str]) -> list[int]:
    by_path = dict(zip(catalog.metadata[PATH_COLUMN].astype(str), catalog.ids))
    root = catalog.root
    found, missing = [], []
    for raw in paths:
        path = Path(raw)
        key = normalise_rel(raw)
        if path.is_absolute():
            with contextlib.suppress(ValueError):
                key = path.relative_to(root).as_posix()
        if key in by_path:
            found.append(int(by_path[key]))
        else:
            missing.append(str(raw))
    if missing:
        raise CatalogError(f"not in the catalog: {', '.join(missing[:5])}"
                           + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                           + " (paths are relative to the catalog's image folder "
                           f"{root}, as in its metadata)")
    return found


def kept_rows(embeddings: np.ndarray, keep: np.ndarray) -> list[np.ndarray]:
    """The kept rows as blocks: runs of kept rows are slices of the mapped file (nothing loaded whole)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
    return [embeddings[start:stop] for start, stop in zip(edges[::2], edges[1::2])]


def remove_from_catalog(folder: str | os.PathLike, *, ids: Iterable[int] = (), paths: Iterable[str] = (),
                        progress: ProgressOption = True, lock_timeout: float = 0.0) -> UpdateReport:
    """Remove items by id and/or path; their ids are never given out again."""
    started, progress = time.perf_counter(), as_callback(progress)
    folder = Path(folder)
    ids, paths = [int(i) for i in ids], list(paths)
    if not ids and not paths:
        raise CatalogError("give the ids or paths of the items to remove")
    with catalog_lock(folder, "remove", lock_timeout):
        catalog = Catalog.load(folder)
        refuse_on_disk(catalog, "remove")
        info = catalog.info.replace()
        catalog.rows_of(ids)  # raises on unknown ids
        targets = np.unique(np.asarray(ids + ids_for_paths(catalog, paths), np.int64))
        if len(targets) >= len(catalog):
            raise CatalogError("that would remove every item; delete the catalog folder instead")
        keep = ~np.isin(catalog.ids, targets)
        metadata = catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN])[keep].reset_index(drop=True)
        record = dict(info.index)
        flat = stores_no_vectors(record["factory"])
        index = None if flat else catalog.index
        try:
            removed = len(targets) if flat else index.remove_ids(faiss.IDSelectorBatch(targets))
            if removed != len(targets):
                raise RuntimeError("index and metadata disagree")
            kept_vectors = kept_rows(catalog.embeddings, keep)
        except RuntimeError:  # e.g. HNSW cannot remove: rebuild from the stored embeddings
            kept_vectors = [np.asarray(catalog.embeddings[keep], np.float32)]
            index, built = build_index(IndexChoice.from_dict(record), kept_vectors[0], metadata, info, progress,
                                        tune=False)
            record["build_seconds"] = built["build_seconds"]
        info.index, info.counts = record, counts(metadata, info.skipped)
        info.last_operation = {"operation": "remove", "removed": int(len(targets)), "at": now()}
        commit_catalog(folder, kept_vectors, metadata, index, info, info.version)
    return UpdateReport("remove", folder, items=len(metadata), removed=int(len(targets)), index=record,
                        seconds=time.perf_counter() - started)


def rebuild_catalog(folder: str | os.PathLike, *, model=None, index: str | None = None,
                    memory_budget: int | None = None, precision: str | None = None, reembed: bool = False,
                    progress: ProgressOption = True, lock_timeout: float = 0.0) -> UpdateReport:
    """Re-index from the stored embeddings; re-embed every image when the model changed (or reembed).

    Ids and metadata are kept; items whose image can no longer be read during a re-embedding
    are dropped and listed as skipped. Without --index the index is chosen again for the
    current size (unless the user had fixed it).
    """
    started, progress = time.perf_counter(), as_callback(progress)
    folder = Path(folder)
    with catalog_lock(folder, "rebuild", lock_timeout):
        catalog = Catalog.load(folder)
        refuse_on_disk(catalog, "rebuild")
        info = catalog.info.replace()
        metadata = catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN])
        embeddings: np.ndarray = catalog.embeddings
        skipped: list[tuple[str, str]] = []
        report = UpdateReport("rebuild", folder)
        embedder = None
        if model is not None:
            embedder, model_path = load_embedder(model, precision)
            if embedder.fingerprint != info.model_fingerprint:
                reembed = True
            info.model_path = model_path or info.model_path
        elif reembed:
            embedder = open_embedder_for(catalog, None)
            if precision and precision != embedder.precision:
                embedder, _ = load_embedder(info.model_path, precision)
        projection = None
        if reembed:
            embedder = getattr(embedder, "unprojected", embedder)  # the model's own vectors, projected below
            paths = [Path(image_file(folder, catalog.root, p)) for p in metadata[PATH_COLUMN].astype(str)]
            vectors, embedded, failures, facts = embed_files(embedder, paths, progress, "re-embedding",
                                                             (catalog.root, folder))
            if len(vectors) == 0:
                raise CatalogError("none of the catalog's images could be read for re-embedding "
                                   f"(first: {failures[0][1] if failures else '?'}); are they still under {catalog.root}?")
            skipped = [(str(metadata[PATH_COLUMN].iat[i]), reason) for i, reason in failures]
            metadata = metadata.iloc[embedded].reset_index(drop=True)
            metadata[HASH_COLUMN] = [f[0] for f in facts]
            metadata[SIZE_COLUMN] = np.asarray([f[1] for f in facts], np.int64)
            metadata[MTIME_COLUMN] = np.asarray([f[2] for f in facts], np.int64)
            if info.projection is not None:  # fitted again, same size, on the vectors made now
                vectors, projection = projected(vectors, int(info.projection["dims"]))
                info.projection = projection.record()
            embeddings = vectors
            info.model_fingerprint, info.feature_dim = embedder.fingerprint, int(vectors.shape[1])
            info.precision = embedder.precision
            info.preprocessing = preprocessing_record(embedder.preprocessing)
            report.reembedded = True
        budget = int(memory_budget) if memory_budget is not None else int(info.memory_budget_bytes)
        previous_index = info.index if index is None else None  # keeps a factory the user had given
        choice = resolve_choice(index, len(metadata), embeddings.shape[1], budget, previous_index)
        info.memory_budget_bytes = budget
        index_obj, record = build_index(choice, embeddings, metadata, info, progress)
        record["user_given"] = bool(index) or bool(previous_index and previous_index.get("user_given"))
        skipped_list = merge_skipped(info.skipped, skipped)
        info.index, info.counts, info.skipped = record, counts(metadata, skipped_list), skipped_list
        info.last_operation = {"operation": "rebuild", "reembedded": report.reembedded,
                                  "skipped": len(skipped), "at": now()}
        commit_catalog(folder, [embeddings], metadata, index_obj, info, info.version, projection)
    report.items, report.skipped, report.index = len(metadata), skipped, record
    report.seconds = time.perf_counter() - started
    return report


def restore_catalog(folder: str | os.PathLike, version: str | None = None, *, progress: ProgressOption = False,
                    lock_timeout: float = 0.0) -> UpdateReport:
    """Undo: make an earlier version current again (default: the previous one), atomically and
    under the catalog's lock. The undone version stays on disk as the previous one, so restoring
    it undoes the restore. `index.catalog.store.list_versions(folder)` says which versions there are.
    `progress` is accepted so every catalog change can be called alike; a restore has no stages.
    """
    started = time.perf_counter()
    folder = Path(folder)
    with catalog_lock(folder, "restore", lock_timeout):
        restored, undone = restore_version(folder, version)
    report = UpdateReport("restore", folder, items=int(restored.counts.get("items", 0)), index=restored.index,
                          wrote=restored.version != undone.version, version=restored.version,
                          undone_version=undone.version if restored.version != undone.version else None)
    report.seconds = time.perf_counter() - started
    return report
