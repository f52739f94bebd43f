"""Where a catalog's index is served: FAISS in this process (the default) or a Milvus collection.

    --backend faiss                               the catalog folder's own FAISS index (default)
    --backend milvus-lite:PATH.db                 Milvus Lite, the engine in this process, stored in PATH.db
    --backend milvus://HOST:PORT/COLLECTION       a Milvus server or cluster (token: MILVUS_TOKEN)

The CLI's `--backend`, the API's `--backend` and the app all name it in COINSP_BACKEND, which
`Catalog.load` reads (it opens the Milvus backend, index.scale.milvus; after a command the CLI syncs
the collection, index/__main__.py). Either way the catalog folder stays the truth: its versions, manifest,
vectors and model fingerprint; a backend only proposes candidates, which index.search.algorithm re-scores
exactly from the folder's vectors, so every result and score is the same function of the folder.
A Milvus collection that holds another version than the folder's current one is brought in step
from the folder's vectors before it is searched (index.scale.milvus.MilvusBackend.sync).

A backend is an object with:
    candidates(catalog, queries, n, pool, effort) -> (len(queries), >= n) int64 ids, -1 padded
    pool(catalog, {column: values}) -> the handle index.search.algorithm passes back as a pool's selector
    sync(catalog, progress) -> SyncReport
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from index.catalog.store import CatalogError

ENV_BACKEND = "COINSP_BACKEND"
FAISS = "faiss"
LITE_PREFIX = "milvus-lite:"
SERVER_PREFIX = "milvus://"
INSTALL_HINT = "pip install -r requirements-distributed.txt"
_SERVER = re.compile(r"milvus://(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})/(?P<collection>[A-Za-z_][A-Za-z0-9_]{0,254})/?")


class BackendError(CatalogError):
    """A --backend that cannot be read."""


@dataclass(frozen=True)
class BackendSpec:
    """A parsed --backend: `lite` (a local .db path) or a server (uri and collection)."""
    text: str  # as the user wrote it, for messages
    lite_path: str | None = None
    uri: str | None = None
    collection: str | None = None

    @property
    def lite(self) -> bool:
        return self.lite_path is not None


def parse_backend(text: str | None) -> BackendSpec | None:
    """`faiss` (or nothing) -> None; a Milvus URI -> BackendSpec; BackendError saying the forms."""
    text = (text or "").strip()
    if not text or text.lower() == FAISS:
        return None
    if text.startswith(LITE_PREFIX):
        path = text[len(LITE_PREFIX):].strip()
        if not path.endswith(".db") or path == ".db":
            raise BackendError(f"--backend {text!r}: Milvus Lite needs a file ending in .db, e.g. milvus-lite:catalog.db")
        return BackendSpec(text, lite_path=str(Path(path).absolute()))
    found = _SERVER.fullmatch(text)
    if found and 0 < int(found["port"]) < 65536:
        return BackendSpec(text, uri=f"http://{found['host']}:{found['port']}", collection=found["collection"])
    raise BackendError(f"cannot read --backend {text!r}: use faiss, milvus-lite:PATH.db or "
                       "milvus://HOST:PORT/COLLECTION (a collection name of letters, digits and _)")


def backend_from_environment() -> BackendSpec | None:
    """The backend COINSP_BACKEND names (None: FAISS)."""
    return parse_backend(os.environ.get(ENV_BACKEND))


# ----------------------------------------------------------------------------- the CLI's --backend

BACKEND_COMMANDS = ("build", "add", "remove", "rebuild", "restore", "ensure", "search", "evaluate", "hygiene")


def add_backend_option(parser) -> None:
    parser.add_argument("--backend", default=None, metavar="URI",
                        help="where the index is served: faiss (default: the catalog folder's own index), "
                             "milvus-lite:PATH.db or milvus://HOST:PORT/COLLECTION (default $" + ENV_BACKEND + ")")


@contextlib.contextmanager
def command_backend(args) -> Iterator[BackendSpec | None]:
    """For one command: its --backend in COINSP_BACKEND (so every catalog it loads is served
    there), restored afterwards; BackendError for an unreadable one."""
    text = getattr(args, "backend", None)
    if text is None:
        yield backend_from_environment()
        return
    spec = parse_backend(text)
    before = os.environ.get(ENV_BACKEND)
    os.environ[ENV_BACKEND] = text
    try:
        yield spec
    finally:
        if before is None:
            os.environ.pop(ENV_BACKEND, None)
        else:
            os.environ[ENV_BACKEND] = before
