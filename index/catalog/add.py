"""Adding images to a catalog: only what is new or changed is embedded.

A file whose path is in the catalog with the same size and modification time is not even read;
same path, new bytes: re-embedded under its id; a new path whose bytes are already in the
catalog reuses that embedding. The index is updated in place where FAISS allows it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import faiss
import numpy as np
import pandas as pd

from embedder.files import file_facts
from embedder.progress import ProgressOption, Stage, as_callback
from index.catalog.loaded import Catalog
from index.catalog.choose import IndexChoice
from index.catalog.embedding_settings import why_reembed
from index.importers import link_outside
from index.manifest import PATH_COLUMN, read_manifest, resolve_image_paths, validate_manifest
from index.catalog.operations import (UpdateReport, check_columns, counts, drop_duplicate_paths, embed_files, merge_skipped,
                                      open_embedder_for, refuse_on_disk, relative_paths)
from index.catalog.store import (HASH_COLUMN, ID_COLUMN, IMAGE_PATH_COLUMN, MTIME_COLUMN, SIZE_COLUMN, CatalogError,
                                 catalog_lock, collect_photos, commit_catalog, now, stores_no_vectors, write_info)
from index.catalog.tune import build_index
from index.catalog.uploaded_files import CATALOG_PREFIX, catalog_path, image_file, inside_photos


def add_to_catalog(folder: str | os.PathLike, manifest: str | os.PathLike | None = None, *,
                   images: str | os.PathLike | None = None, model=None, progress: ProgressOption = True,
                   lock_timeout: float = 0.0, prepare: Callable[[], None] | None = None) -> UpdateReport:
    """Add the images of a manifest (or an image folder) that the catalog does not hold yet.

    A file whose path is in the catalog with the same bytes is left alone (size and mtime
    equal: not even read); same path, new bytes: re-embedded under its id; a new path whose
    bytes are already in the catalog reuses that embedding; only the rest are embedded.

    A manifest below the catalog's own photos folder (DIR/photos/<batch>/, an upload's) names photos
    kept in the catalog folder (index.catalog.uploaded_files). `prepare` runs under the catalog's lock before the
    manifest is read: an upload saves its photos there, so no other writer's clean-up can take them. When
    the add ends, however it ends, the photos no version names are deleted (index.catalog.store.collect_photos).
    """
    started, progress = time.perf_counter(), as_callback(progress)
    folder = Path(folder)
    if (manifest is None) == (images is None):
        raise CatalogError("give a manifest or an image folder to add")
    if prepare is None:  # a bad manifest is refused before the lock is even asked for
        source = _read_source(folder, manifest, images)
    with catalog_lock(folder, "add", lock_timeout):
        try:
            if prepare is not None:
                prepare()
                source = _read_source(folder, manifest, images)
            report = _add_locked(folder, *source, model, progress)
        finally:
            collect_photos(folder)
    report.seconds = time.perf_counter() - started
    return report


def _read_source(folder: Path, manifest, images) -> tuple[pd.DataFrame, str, Path, list[tuple[Path, str]]]:
    """The rows to add, where they come from, the folder their paths are relative to, and what was refused."""
    if images is not None:
        # Rows made from the folder's layout, held in memory: nothing is written into the
        # user's folder (a manifest.csv there is theirs, and stays as it is).
        from index.importers import REFUSED_ATTR, image_folder_table
        try:
            found = image_folder_table(images)
        except FileNotFoundError as exc:
            raise CatalogError(str(exc)) from None
        table = validate_manifest(found, f"images in {images}")
        source, source_root = f"images in {images}", Path(images).absolute()
        refused = [(source_root / path, why) for path, why in found.attrs.get(REFUSED_ATTR, [])]
    else:
        table = read_manifest(manifest)
        source, source_root, refused = f"manifest {manifest}", Path(manifest).parent.absolute(), []
    check_columns(table, source)
    reserved = table[PATH_COLUMN].astype(str).str.startswith(CATALOG_PREFIX)
    if reserved.any():
        raise CatalogError(f"{source}: paths starting with {CATALOG_PREFIX} name photos kept in a catalog folder; "
                           f"rename {table[PATH_COLUMN][reserved].iloc[0]!r}")
    return table, source, source_root, refused


@dataclass
class _Sorted:
    """What the add makes of each row j of the table to add, against the loaded catalog."""
    unchanged: list[int] = field(default_factory=list)  # catalog rows whose file is the same (maybe twice)
    changed: list[tuple[int, int]] = field(default_factory=list)  # (catalog row, j): same path, new bytes
    reuse: list[int] = field(default_factory=list)  # j: a new path whose bytes the catalog already holds
    to_embed: list[int] = field(default_factory=list)  # j: a new path with new bytes
    facts: dict[int, tuple] = field(default_factory=dict)  # j -> (hash, size, mtime) of the file read
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) left out

    @property
    def todo(self) -> list[int]:
        """The rows to embed: the changed ones, then the new ones."""
        return [j for _, j in self.changed] + self.to_embed


def _first_row_of_hash(old_meta: pd.DataFrame) -> dict:
    """File hash -> the first catalog row holding those bytes."""
    row_of_hash = {}
    for r, h in enumerate(old_meta[HASH_COLUMN].to_numpy(object)):
        row_of_hash.setdefault(h, r)
    return row_of_hash


def _sort_files(folder: Path, catalog: Catalog, table: pd.DataFrame, old_meta: pd.DataFrame, row_of_hash: dict,
                refused: list, progress) -> _Sorted:
    """Each row's file against the catalog: unchanged (same size and modification time: not read, as git and
    rsync assume; or the same bytes), changed, new bytes already held, or new; the rest left out with why."""
    row_of_path = dict(zip(old_meta[PATH_COLUMN].astype(str), range(len(old_meta))))
    old_hash = old_meta[HASH_COLUMN].to_numpy(object)
    old_size = old_meta[SIZE_COLUMN].to_numpy(np.int64)
    old_mtime = old_meta[MTIME_COLUMN].to_numpy(np.int64)
    root = str(catalog.root)
    found = _Sorted(failures=[(_below(path, catalog.root), why) for path, why in refused])
    checked = Stage(progress, "checking files", len(table))
    for j, path in enumerate(table[PATH_COLUMN].tolist()):
        file = image_file(folder, root, path)
        try:
            stat = os.stat(file)
        except FileNotFoundError:
            found.failures.append((path, f"file not found: {file}"))
            continue
        except OSError as exc:  # a name longer than the file system allows, no permission, a loop
            found.failures.append((path, f"file not readable: {exc.strerror or exc}"))
            continue
        r = row_of_path.get(path)
        if r is not None and old_size[r] == stat.st_size and old_mtime[r] == stat.st_mtime_ns:
            found.unchanged.append(r)
            continue
        outside = link_outside(folder if path.startswith(CATALOG_PREFIX) else root, file)
        if outside is not None:  # its bytes are never read, not even to fingerprint them
            found.failures.append((path, outside))
            continue
        try:
            facts = file_facts(Path(file))
        except OSError as exc:
            found.failures.append((path, f"file not readable: {exc.strerror or exc}"))
            continue
        found.facts[j] = facts
        if r is not None and old_hash[r] == facts[0]:
            found.unchanged.append(r)  # touched, same bytes
        elif r is not None:
            found.changed.append((r, j))
        elif facts[0] in row_of_hash:
            found.reuse.append(j)
        else:
            found.to_embed.append(j)
        if j % 1024 == 0:
            checked.reach(j)
    checked.reach(len(table))
    return found


def _embed_rows(folder: Path, catalog: Catalog, table: pd.DataFrame, found: _Sorted, model, progress) -> dict:
    """j -> vector for the rows to embed that could be; those that could not join found.failures."""
    todo = found.todo
    if not todo:
        return {}
    embedder = open_embedder_for(catalog, model)
    stale = why_reembed(catalog.info.model_fingerprint, catalog.info.preprocessing, embedder.fingerprint,
                        embedder.preprocessing)
    if stale:  # new vectors made today's way would not be comparable with the stored ones
        raise CatalogError(f"{stale}: embed the catalog again before adding to it "
                           f"(`python -m index rebuild --catalog {folder} --reembed`)")
    root = str(catalog.root)
    vectors, embedded, embed_failures, new_facts = embed_files(
        embedder, [Path(image_file(folder, root, table[PATH_COLUMN].iat[j])) for j in todo], progress,
        "embedding new images", (catalog.root, folder))
    for i, f in zip(embedded, new_facts):
        found.facts[todo[i]] = f
    found.failures += [(table[PATH_COLUMN].iat[todo[i]], reason) for i, reason in embed_failures]
    return dict(zip([todo[i] for i in embedded], vectors))


def _new_metadata(old_meta: pd.DataFrame, table: pd.DataFrame, updated: list[tuple[int, int]], new_js: list[int],
                  facts: dict[int, tuple], first_id: int) -> pd.DataFrame:
    """Old rows (changed ones refreshed), then the new rows with new ids from first_id."""
    new_meta = old_meta.copy()
    extra = [c for c in table.columns if c not in new_meta.columns]
    for column in extra:
        new_meta[column] = pd.Series([pd.NA] * len(new_meta), dtype=object)
    for r, j in updated:
        for column in table.columns:
            new_meta.at[r, column] = table.at[j, column]
        h, s, m = facts[j]
        new_meta.at[r, HASH_COLUMN], new_meta.at[r, SIZE_COLUMN], new_meta.at[r, MTIME_COLUMN] = h, s, m
    added_rows = table.iloc[new_js].reset_index(drop=True)
    added_rows.insert(0, ID_COLUMN, np.arange(first_id, first_id + len(new_js), dtype=np.int64))
    added_rows[HASH_COLUMN] = [facts[j][0] for j in new_js]
    added_rows[SIZE_COLUMN] = np.asarray([facts[j][1] for j in new_js], np.int64)
    added_rows[MTIME_COLUMN] = np.asarray([facts[j][2] for j in new_js], np.int64)
    return pd.concat([new_meta, added_rows[[c for c in new_meta.columns if c in added_rows]]], ignore_index=True)


def _embedding_blocks(catalog: Catalog, updated: list[tuple[int, int]], vector_of: dict, new_js: list[int],
                      facts: dict[int, tuple], row_of_hash: dict) -> tuple[list[np.ndarray], np.ndarray]:
    """The new version's embeddings as blocks: the old file's rows (changed rows patched in, as slices:
    nothing loaded whole), then the new rows (embedded, or the stored vector of the same bytes); and
    the new rows' vectors."""
    new_vectors = np.stack([vector_of[j] if j in vector_of else
                            np.asarray(catalog.embeddings[row_of_hash[facts[j][0]]], np.float32)
                            for j in new_js]).astype(np.float32) if new_js else np.zeros((0, catalog.dim), np.float32)
    blocks: list[np.ndarray] = [catalog.embeddings]
    if updated:
        blocks, at = [], 0
        for r, j in sorted(updated):
            blocks += [catalog.embeddings[at:r], vector_of[j][None]]
            at = r + 1
        blocks.append(catalog.embeddings[at:])
    blocks.append(new_vectors)
    return blocks, new_vectors


def _updated_index(catalog: Catalog, info, updated: list[tuple[int, int]], vector_of: dict, blocks: list[np.ndarray],
                   new_meta: pd.DataFrame, new_vectors: np.ndarray, progress):
    """(index, its record): the catalog's index with the changed rows replaced and the new ones added in
    place where FAISS allows it, else built again from the embeddings; None for an index that stores no
    vectors of its own (its vectors are embeddings.npy)."""
    record = dict(info.index)
    if stores_no_vectors(record["factory"]):
        return None, record
    index = catalog.index
    if updated:
        changed_ids = catalog.ids[[r for r, _ in updated]]
        try:
            index.remove_ids(faiss.IDSelectorBatch(changed_ids))
            index.add_with_ids(np.stack([vector_of[j] for _, j in updated]), changed_ids)
        except RuntimeError:  # HNSW cannot remove: rebuild from the embeddings
            index, built = build_index(IndexChoice.from_dict(record), np.concatenate(blocks), new_meta, info, progress,
                                       tune=False)
            return index, {**info.index, **{k: v for k, v in built.items() if k in ("build_seconds",)}}
    index.add_with_ids(new_vectors, new_meta[ID_COLUMN].to_numpy(np.int64)[len(catalog.metadata):])
    return index, record


def _add_locked(folder: Path, table: pd.DataFrame, source: str, source_root: Path, refused: list,
                model, progress) -> UpdateReport:
    """The add itself, under the catalog's lock."""
    catalog = Catalog.load(folder)
    refuse_on_disk(catalog, "add")
    info, old_meta = catalog.info.replace(), catalog.metadata.drop(columns=[IMAGE_PATH_COLUMN], errors="ignore")
    if inside_photos(folder, source_root):  # an upload's photos, kept in the catalog folder itself
        rel = [catalog_path(folder, file) for file in resolve_image_paths(table, source_root)]
    else:
        rel = relative_paths(table, source_root, catalog.root, known=old_meta[PATH_COLUMN].astype(str))
    table, duplicates = drop_duplicate_paths(table.assign(**{PATH_COLUMN: rel}))
    row_of_hash = _first_row_of_hash(old_meta)
    found = _sort_files(folder, catalog, table, old_meta, row_of_hash, refused, progress)
    vector_of = _embed_rows(folder, catalog, table, found, model, progress)
    failures = found.failures
    updated = [(r, j) for r, j in found.changed if j in vector_of]
    new_js = [j for j in sorted(set(found.reuse) | set(found.to_embed)) if j in vector_of or j in found.reuse]
    report = UpdateReport("add", folder, unchanged=len(set(found.unchanged)), duplicates=duplicates,
                          skipped=[(p, r) for p, r in failures])
    if not updated and not new_js:
        info_skipped = merge_skipped(info.skipped, failures)
        report.items, report.wrote = len(old_meta), False
        if info_skipped != info.skipped:
            info.skipped, info.counts = info_skipped, counts(old_meta, info_skipped)
            write_info(folder, info)
        return report

    first_id = int(info.next_id)
    new_meta = _new_metadata(old_meta, table, updated, new_js, found.facts, first_id)
    blocks, new_vectors = _embedding_blocks(catalog, updated, vector_of, new_js, found.facts, row_of_hash)
    index, record = _updated_index(catalog, info, updated, vector_of, blocks, new_meta, new_vectors, progress)
    ok_paths = set(table[PATH_COLUMN].iloc[[j for _, j in updated] + new_js])
    info_skipped = merge_skipped(info.skipped, failures, now_ok=ok_paths)
    info.next_id, info.index = first_id + len(new_js), record
    info.counts, info.skipped = counts(new_meta, info_skipped), info_skipped
    report.items, report.updated = len(new_meta), len(updated)
    report.reused = sum(1 for j in new_js if j not in vector_of)
    report.added = len(new_js) - report.reused
    report.index = record
    info.last_operation = {"operation": "add", "added": report.added + report.reused,
                           "updated": report.updated, "skipped": len(failures), "duplicates": duplicates,
                           "at": now()}
    commit_catalog(folder, blocks, new_meta, index, info, info.version)
    return report


def _below(path: Path, root: Path) -> str:
    """A path as the catalog lists it: relative to its image folder where it lies below it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
