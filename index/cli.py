"""What `python -m index` accepts: the argument parser of every subcommand (index/__main__.py runs them)."""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from embedder.files import parse_size
from index.scale.backends import BACKEND_COMMANDS, add_backend_option
from index.quality.hygiene import DEFAULT_CANDIDATE_THRESHOLD, DEFAULT_DUPLICATE_THRESHOLD, DEFAULT_PIXEL_THRESHOLD
from index.quality.neighbours import DEFAULT_NEIGHBOURS

EVALUATE_FULL_UP_TO = 100_000  # items; beyond this `evaluate` samples 10,000 queries by default
EVALUATE_SAMPLE = 10_000


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="arithmetic of the model (default auto: the faster on this machine, measured once and "
                   "cached; $COINSP_PRECISION overrides)")


MAX_ITEM_ID = 2**63 - 1  # catalog ids are int64, as the HTTP API accepts them
_NUMBERS_AFTER = ("--box",)  # options whose value may start with a minus sign: -5,0,10,10
_LEADING_MINUS = re.compile(r"-\.?\d")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit status 2), and option values such as
    `--box -5,0,10,10` taken as values, not as options."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (`{self.prog} -h` for help)\n")

    def parse_known_args(self, args=None, namespace=None):
        joined = []
        for arg in sys.argv[1:] if args is None else args:
            if joined and joined[-1] in _NUMBERS_AFTER and _LEADING_MINUS.match(arg):
                joined[-1] = f"{joined[-1]}={arg}"
            else:
                joined.append(arg)
        return super().parse_known_args(joined, namespace)


def _item_id(text: str) -> int:
    if not re.fullmatch(r"\s*[0-9]+\s*", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an item id (a whole number from 0)")
    if int(text) > MAX_ITEM_ID:
        raise argparse.ArgumentTypeError(f"{text.strip()[:40]} is not an item id: ids go up to {MAX_ITEM_ID}")
    return int(text)


def _positive_int(text: str) -> int:
    if not re.fullmatch(r"\s*[0-9]+\s*", text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number from 1")
    return int(text)


def _cosine(text: str) -> float:
    """A cosine threshold, as the HTTP API takes it: a finite number from -1 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a cosine similarity: give a number from -1 to 1")
    return value


def _wait_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another process changing the catalog (default: refuse at once)")


def _project_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project-dims", type=_positive_int, default=None, metavar="N",
                   help="store the vectors projected to N dims by the PCA of the catalog's own vectors "
                        "(kept with the catalog; queries go through it); default: the model's own vectors")


def _catalog_writes(sub) -> None:
    """Commands that write a catalog: build, add, remove, rebuild, restore, ensure."""
    p = sub.add_parser("build", help="embed a manifest's images into a new catalog")
    p.add_argument("--manifest", required=True, type=Path, help="manifest .csv/.parquet (path, category[, product_id])")
    p.add_argument("--model", required=True, type=Path, help="model checkpoint (.pt)")
    p.add_argument("--out", required=True, type=Path, help="catalog folder to create")
    p.add_argument("--index", help="FAISS factory string (e.g. Flat, HNSW32, IVF1024,Flat); default: chosen by size")
    p.add_argument("--memory-budget", type=_size, default=None, help="memory the index may use (default 4GB)")
    precision_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalog in --out")
    _project_option(p)
    _wait_option(p)

    p = sub.add_parser("add", help="add the images a catalog does not hold yet")
    p.add_argument("--catalog", required=True, type=Path)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--manifest", type=Path)
    group.add_argument("--images", type=Path, help="folder of <category>/[<product>/]<image> (below the catalog's image folder)")
    p.add_argument("--model", type=Path, help="checkpoint (default: the one the catalog was built with)")
    _wait_option(p)

    p = sub.add_parser("remove", help="remove items by id or path")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--ids", type=_item_id, nargs="+", default=[])
    p.add_argument("--paths", nargs="+", default=[], help="image paths as in the metadata (or absolute)")
    _wait_option(p)

    p = sub.add_parser("rebuild", help="re-index from stored embeddings (re-embeds when the model changed)")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--model", type=Path, help="a new model: every image is embedded again")
    p.add_argument("--index", help="FAISS factory string; default: chosen again for the current size")
    p.add_argument("--memory-budget", type=_size, default=None)
    precision_option(p)
    p.add_argument("--reembed", action="store_true", help="embed every image again even with the same model")
    _wait_option(p)

    p = sub.add_parser("restore", help="undo: make the previous catalog version current again")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--version", help="the version to restore (default: the previous one; see --list)")
    p.add_argument("--list", action="store_true", help="list the versions on disk and change nothing")
    _wait_option(p)

    p = sub.add_parser("ensure", help="build the catalog if missing, else bring it up to date with the model "
                                      "and the manifest's new images")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--index")
    p.add_argument("--memory-budget", type=_size, default=None)
    precision_option(p)
    _project_option(p)
    _wait_option(p)


def _search_command(sub) -> None:
    """search: a photo or an item, with the search's options."""
    p = sub.add_parser("search", help="most similar catalog items to a photo or an item")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--image", type=Path)
    group.add_argument("--id", type=_item_id)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--category")
    p.add_argument("--hide-duplicates", type=_cosine, default=None, metavar="COSINE",
                   help="hide results more similar than this to a better-ranked result (e.g. 0.98)")
    p.add_argument("--box", metavar="X0,Y0,X1,Y1",
                   help="query region of the photo in its pixels (default: the product, found automatically)")
    p.add_argument("--min-score", type=_cosine, default=None, metavar="SCORE",
                   help="leave out results scoring below this (cosine similarity, e.g. 0.9)")
    p.add_argument("--group-by", metavar="COLUMN",
                   help="one result per value of this column (e.g. product_id: each product's best photo), still k")
    p.add_argument("--filter", metavar="EXPRESSION",
                   help="only items meeting it: column=value, OR between values of one column, AND between "
                        "columns, e.g. \"color=red OR color=blue AND brand=X\"")
    p.add_argument("--no-mirror", action="store_true",
                   help="search the photo only as it is (default: also as its mirror image, each item scored by the "
                        "better of the two, so a shoe photographed facing the other way is found)")
    p.add_argument("--json", action="store_true", help="print the results as JSON records")


def _evaluate_command(sub) -> None:
    """evaluate: Recall@k."""
    p = sub.add_parser("evaluate", help="Recall@k of the catalog (leave-one-out, labels = product_id)")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--out", type=Path, help="report prefix: writes PREFIX.csv, .json, .md "
                                            "(default reports/<catalog>-recall)")
    p.add_argument("--label", default="product_id", help="column that says which items are the same product")
    p.add_argument("--max-queries", type=int, default=None,
                   help=f"sample this many queries (default: all up to {EVALUATE_FULL_UP_TO:,} items, "
                        f"else {EVALUATE_SAMPLE:,})")
    p.add_argument("--seed", type=int, default=0)


def _large_catalog_commands(sub) -> None:
    """Large catalogs: export, Ray embedding into shards, an on-disk catalog from them."""
    p = sub.add_parser("export", help="ids, vectors and metadata to a Parquet file and/or a Qdrant collection")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--parquet", type=Path, metavar="OUT.parquet", help="write one Parquet file")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--qdrant-path", metavar="DIR", help="embedded Qdrant stored in this local folder")
    group.add_argument("--qdrant-url", metavar="URL", help="a Qdrant server or cluster, e.g. http://host:6333")
    p.add_argument("--api-key", default=None, help="Qdrant API key (default: the QDRANT_API_KEY environment variable)")
    p.add_argument("--collection", help="Qdrant collection (default: the catalog folder's name)")
    p.add_argument("--recreate", action="store_true", help="drop the Qdrant collection first")
    p.add_argument("--batch-size", type=int, default=None, help="points per Qdrant upsert (default 256)")

    p = sub.add_parser("embed-ray", help="embed a manifest with Ray Data into Parquet shards (for build-from-shards)")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="shards folder to create")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local Ray for this command)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--actors", type=int, default=None,
                   help="embedding actors (default: one per GPU, else half the CPUs)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--vector-dtype", choices=("float32", "float16"), default="float32",
                   help="how the shards store vectors (float16 halves the disk)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing shards folder")

    p = sub.add_parser("build-from-shards", help="an on-disk IVF-PQ catalog from embedding shards (catalogs "
                                                 "larger than memory)")
    p.add_argument("--shards", required=True, type=Path)
    p.add_argument("--model", required=True, type=Path, help="the checkpoint the shards were embedded with")
    p.add_argument("--out", required=True, type=Path, help="catalog folder")
    p.add_argument("--index", help="FAISS IVF factory string (e.g. IVF65536_HNSW32,PQ64np); default: chosen by size")
    p.add_argument("--memory-budget", type=_size, default=None, help="memory for the centroids (default 4GB)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing catalog in --out")
    p.add_argument("--no-rerank-copy", dest="rerank_copy", action="store_false",
                   help="keep no float16 copy of the vectors (n x d x 2 bytes): results ranked by the PQ codes alone")
    _wait_option(p)


def _info_and_import_commands(sub) -> None:
    """info, and Fashion-MNIST as a manifest."""
    p = sub.add_parser("info", help="what a catalog holds")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="print catalog.json")

    p = sub.add_parser("import-fashion-mnist", help="Fashion-MNIST as PNGs and a manifest")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--source", type=Path, default=None, help="folder of the four .gz IDX files")
    p.add_argument("--grouping", default="store", help="coarse categories: store (3) or five")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--allow-download", action="store_true")


def _edit_command(sub) -> None:
    """edit: items' metadata and tags."""
    p = sub.add_parser("edit", help="set a metadata column (e.g. category) or add a tag on items: a new version "
                                    "(undo with restore); vectors are kept as they are")
    p.add_argument("--catalog", type=Path, default=Path("catalogs/fashion-mnist-test"),
                   help="catalog folder (default: the default catalog, catalogs/fashion-mnist-test)")
    p.add_argument("--id", dest="ids", type=int, action="append", required=True, metavar="N",
                   help="an item to edit (repeat for several)")
    p.add_argument("--set", dest="values", action="append", default=[], metavar="COLUMN=VALUE",
                   help="e.g. category=footwear (repeat for several columns)")
    p.add_argument("--tag", dest="tags", action="append", default=[], help="add this tag (repeat for several)")
    _wait_option(p)


def _hygiene_command(sub) -> None:
    """hygiene: the catalog's three reports."""
    p = sub.add_parser("hygiene", help="near-duplicate listings, likely mis-categorised items, products whose "
                                       "photos disagree (CSV + Markdown)")
    p.add_argument("--catalog", required=True, type=Path)
    p.add_argument("--out", type=Path, default=None,
                   help="prefix of the reports (default reports/<catalog>-hygiene): PREFIX-duplicates.csv, "
                        "PREFIX-miscategorised.csv, PREFIX-products.csv, PREFIX.md, PREFIX.json")
    p.add_argument("--k", type=int, default=DEFAULT_NEIGHBOURS,
                   help=f"nearest neighbours that vote (default {DEFAULT_NEIGHBOURS})")
    p.add_argument("--duplicate-threshold", type=float, default=DEFAULT_DUPLICATE_THRESHOLD,
                   help="cosine at which two items count as duplicates when their photos are not compared "
                        f"(--no-pixel-check, unreadable photos; default {DEFAULT_DUPLICATE_THRESHOLD})")
    p.add_argument("--candidate-threshold", type=float, default=DEFAULT_CANDIDATE_THRESHOLD,
                   help=f"cosine at which a pair's photos are compared (default {DEFAULT_CANDIDATE_THRESHOLD})")
    p.add_argument("--pixel-threshold", type=float, default=DEFAULT_PIXEL_THRESHOLD,
                   help="correlation of the two photos, aligned (shifts, mirror image, frame trimmed), that confirms a "
                        f"duplicate (default {DEFAULT_PIXEL_THRESHOLD})")
    p.add_argument("--no-pixel-check", action="store_true", help="judge duplicates by the vectors alone")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand of `python -m index` and its arguments (the commands themselves: index/__main__.py),
    in the order `--help` lists them."""
    parser = _Parser(prog="python -m index", description="Build, change, search and evaluate "
                                     "visual-search catalogs.")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in (_catalog_writes, _search_command, _evaluate_command, _large_catalog_commands,
                         _info_and_import_commands, _edit_command, _hygiene_command):
        add_commands(sub)
    for command in BACKEND_COMMANDS:  # where the index is served (index.scale.backends)
        add_backend_option(sub.choices[command])
    return parser
