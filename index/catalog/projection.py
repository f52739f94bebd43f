"""Smaller search vectors: a catalog's vectors projected by plain PCA (centred, no whitening).

    mean, directions = fit_pca(vectors)                 # largest variance first
    projection = Projection(mean, directions[:, :128])
    smaller = projection.apply(vectors)                 # (v - mean) @ P, L2-normalised again

A vector is projected as (v - mean) @ P and L2-normalised again, so search stays cosine. No
whitening: it costs shoppers' photos (reports/rerank/whitening-tradeoff.md). The directions are
the catalog's own (fitted on its stored vectors, no labels); queries must go through the same
matrix, so a catalog that stores projected vectors stores the projection beside them
(`projection.npz`, its fingerprint in catalog.json: index.catalog.operations).
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedder.files import atomic_path

PROJECTION_FILE = "projection.npz"


class ProjectionError(ValueError):
    """A projection file that is missing, unreadable or not the one the catalog recorded."""


def fit_pca(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), P (d, d)): the principal directions of `vectors`, largest variance first, unscaled
    (the first k columns project to k dims). Ties in variance are ordered by a stable sort."""
    x = np.asarray(vectors, np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vecs = np.linalg.eigh(centred.T @ centred / max(1, len(x)))
    order = np.argsort(-values, kind="stable")
    vecs = vecs[:, order]
    # eigh's sign of each direction is arbitrary: fix it (largest absolute entry positive), so the
    # same vectors give the same projection on every machine.
    signs = np.sign(vecs[np.abs(vecs).argmax(axis=0), np.arange(vecs.shape[1])])
    vecs = vecs * np.where(signs == 0, 1, signs)
    return mean.astype(np.float32), np.ascontiguousarray(vecs, np.float32)


def project(vectors: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """(v - mean) @ P, L2-normalised: cosine search over the projected vectors."""
    out = (np.asarray(vectors, np.float32) - mean) @ basis
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out / np.where(norms > 0, norms, 1), np.float32)


@dataclass(frozen=True)
class Projection:
    """A fitted projection: mean (d,) and basis (d, k) float32."""
    mean: np.ndarray
    basis: np.ndarray

    @property
    def input_dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @classmethod
    def fit(cls, vectors: np.ndarray, dims: int) -> "Projection":
        """PCA of `vectors` to its top `dims` directions; ValueError for a size the vectors cannot give."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim != 2 or len(vectors) < 2:
            raise ValueError("a projection is fitted on at least two vectors")
        if not 1 <= int(dims) < vectors.shape[1]:
            raise ValueError(f"the projection's size must be between 1 and {vectors.shape[1] - 1} "
                             f"(the vectors have {vectors.shape[1]} dims), got {dims}")
        mean, directions = fit_pca(vectors)
        return cls(mean, np.ascontiguousarray(directions[:, :int(dims)]))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, k) L2-normalised; a single (d,) vector gives (k,)."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape[-1] != self.input_dim:
            raise ProjectionError(f"the projection takes {self.input_dim}-d vectors, got {vectors.shape[-1]}-d")
        if vectors.ndim == 1:
            return project(vectors[None], self.mean, self.basis)[0]
        return project(vectors, self.mean, self.basis)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=np.asarray(self.mean, np.float32), basis=np.asarray(self.basis, np.float32))
        return buffer.getvalue()

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the matrix and mean, as stored."""
        digest = hashlib.sha256()
        for array in (self.mean, self.basis):
            array = np.ascontiguousarray(array, np.float32)
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]

    def record(self) -> dict:
        """What catalog.json says of it."""
        return {"method": "pca", "whitening": False, "input_dim": self.input_dim, "dims": self.dims,
                "file": PROJECTION_FILE, "fingerprint": self.fingerprint()}

    def save(self, folder: str | os.PathLike) -> Path:
        """Write PROJECTION_FILE in `folder` atomically (a temporary file, fsynced, renamed)."""
        path = Path(folder) / PROJECTION_FILE
        with atomic_path(path) as tmp:
            tmp.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, record: dict) -> "Projection":
        """The projection stored in `folder`, checked against its catalog.json record (fingerprint and
        sizes); ProjectionError when it is missing, unreadable or another one."""
        path = Path(folder) / str(record.get("file", PROJECTION_FILE))
        try:
            with np.load(path, allow_pickle=False) as stored:
                projection = cls(np.asarray(stored["mean"], np.float32), np.asarray(stored["basis"], np.float32))
        except FileNotFoundError:
            raise ProjectionError(f"the catalog's projection {path} is missing") from None
        except (OSError, KeyError, ValueError) as exc:
            raise ProjectionError(f"the catalog's projection {path} cannot be read: {exc}") from None
        if projection.mean.shape != (projection.input_dim,):
            raise ProjectionError(f"the catalog's projection {path} is malformed (mean {projection.mean.shape}, "
                                  f"basis {projection.basis.shape})")
        if projection.fingerprint() != record.get("fingerprint"):
            raise ProjectionError(f"the catalog's projection {path} is not the one catalog.json records "
                                  f"(fingerprint {projection.fingerprint()}, recorded {record.get('fingerprint')})")
        return projection


def projecting_embedder(embedder, projection: Projection | None):
    """The embedder whose search vectors go through `projection` (a shallow copy: the same network;
    its raw features, which a category head reads, are unchanged); the embedder itself when there is
    none. `unprojected` on the copy is the embedder it was made from."""
    if projection is None:
        return embedder
    current = getattr(embedder, "projection", None)
    if current is not None:
        if current.fingerprint() == projection.fingerprint():
            return embedder
        embedder = embedder.unprojected
    if int(embedder.feature_dim) != projection.input_dim:
        raise ProjectionError(f"the projection takes {projection.input_dim}-d vectors; the model gives "
                              f"{embedder.feature_dim}-d")
    projected = copy.copy(embedder)
    vectors = embedder.vectors

    def projected_vectors(features) -> np.ndarray:
        return projection.apply(vectors(features))

    projected.vectors = projected_vectors  # embed_uint8, embed_images and embed_files all go through it
    projected.feature_dim = projection.dims
    projected.projection, projected.unprojected = projection, embedder
    return projected
