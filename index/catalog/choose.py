"""Which FAISS index a catalog gets: the ONE place that decides, from catalog size and a memory budget.

The rules follow autofaiss: exact search while it is small and fast enough, a graph (HNSW)
while the vectors fit in memory and the graph can be built in reasonable time on this kind of
machine, an inverted file (IVF) beyond that, with the vectors compressed (SQ8, then PQ) when
even they do not fit the budget. Every choice comes with a reason a person can read.

Vectors are L2-normalised, so cosine similarity is the inner product (METRIC_INNER_PRODUCT).
The raw embeddings stay on disk (embeddings.npy, memory-mapped) for exact re-scoring, so they
do not count against the budget; the index does.

The search-time knob (HNSW efSearch, IVF nprobe) is set here to a starting value and tuned on
build against exact search (index.catalog.tune, measuring recall@10 on a sample of queries: index.search.exact).
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import faiss

from embedder.files import format_size

METRIC = "inner_product"  # = cosine on L2-normalised vectors
DEFAULT_MEMORY_BUDGET = 4 * 1024**3  # bytes the index may take in memory

# Measured on the product's 2-core machine (see docs/catalog.md): FAISS runs one query on one
# core and an exact query scans the vectors at about 4 GB/s, so 100 MB cost about 25 ms.
FLAT_SCAN_BYTES_PER_MS = 4e6
FLAT_MAX_ITEMS = 200_000
FLAT_MAX_MS = 25.0  # exact search while one query costs at most this
ALWAYS_FLAT_ITEMS = 20_000  # below this an approximate index saves nothing worth its recall loss
IVF_HNSW_QUANTIZER_FROM = 1024  # lists: find the nearest lists with a small HNSW, not a scan
# HNSW insertion costs about d * efConstruction * log(n) per vector; on 2 cores 1M x 128 takes
# minutes, 1M x 2048 hours. Beyond this many floats (n * d) the build is too slow: use IVF.
HNSW_MAX_FLOATS = 256_000_000
HNSW_M = 32
HNSW_BYTES_PER_ITEM = HNSW_M * 2 * 4 * 1.2 + 16  # level-0 links (+ upper levels, id map)
# On-disk IVF (catalogs built from shards): the codes live in a memory-mapped file, so disk and
# page cache bound them, not the budget. Scores come from the codes, so they get about 8 dims per
# byte: measured on 10^5 x 2048 noisy near-duplicates, PQ64 reached recall@10 0.78 at any nprobe,
# PQ256 0.91 (0.955 for new query vectors); 10^7 x 2048 then take 2.6 GB with ids.
ONDISK_DIMS_PER_BYTE = 8
ONDISK_PQ_BYTES = (64, 256)  # at least (when d allows), at most
# Candidates per result re-scored exactly for compressed (SQ/PQ) indexes (params["rerank"]). 8-bit
# scores blur near-ties: on 100 near-duplicates per item, 4x gave recall@10 0.97 (0.897 at 10^6)
# at any nprobe, 16x 0.998; 160 rows re-scored cost well under a millisecond.
RERANK_QUANTISED = 16


class IndexChoiceError(ValueError):
    """No index fits the request (budget too small, bad factory string)."""


@dataclass(frozen=True)
class IndexChoice:
    factory: str  # a FAISS index_factory string, e.g. "Flat", "HNSW32", "IVF4096,SQ8"
    metric: str = METRIC
    reason: str = ""
    params: dict = field(default_factory=dict)  # search-time parameters: efSearch / nprobe

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IndexChoice":
        return cls(factory=d["factory"], metric=d.get("metric", METRIC), reason=d.get("reason", ""),
                   params=dict(d.get("params", {})))


def index_kind(factory: str) -> str:
    """'flat', 'hnsw', 'ivf' or 'other' from a factory string."""
    f = factory.replace("IDMap2,", "").replace("IDMap,", "").strip().upper()
    if f == "FLAT":
        return "flat"
    if f.startswith("HNSW"):
        return "hnsw"
    if f.startswith("IVF"):
        return "ivf"
    return "other"


def quantised(factory: str) -> bool:
    """True when the index stores compressed vectors (its scores are approximate)."""
    return bool(re.search(r"PQ|SQ|LSH|RaBitQ", factory, flags=re.IGNORECASE))


def _ivf_lists(n: int) -> int:
    """About 4 * sqrt(n) lists, a power of two, with at least 39 training points per list."""
    nlist = 2 ** round(math.log2(max(4 * math.sqrt(n), 1)))
    return int(max(16, min(nlist, 65536, 2 ** int(math.log2(max(n // 39, 16))))))


def _pq_subquantisers(d: int, bytes_per_vector: float) -> int | None:
    """The largest m dividing d with m <= budgeted bytes per vector (8-bit codes)."""
    for m in sorted((m for m in range(1, min(d, 256) + 1) if d % m == 0), reverse=True):
        if m <= bytes_per_vector:
            return m
    return None


def choose_index(n: int, d: int, memory_budget_bytes: int | None = None, on_disk: bool = False,
                 rerank_copy: bool = True) -> IndexChoice:
    """The index for n vectors of dimension d whose index may use memory_budget_bytes.

    on_disk: the index's inverted lists will be a memory-mapped file (index.scale.ondisk): always IVF
    with PQ codes; the budget covers what stays in memory (centroids and their HNSW).
    rerank_copy (on_disk only): a float16 copy of the vectors on disk re-scores the candidates.
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget_bytes is None else int(memory_budget_bytes)
    if n < 0 or d < 1 or budget <= 0:
        raise ValueError(f"need n >= 0, d >= 1 and a positive budget (got n={n}, d={d}, budget={budget})")
    if on_disk:
        return _choose_on_disk(n, d, budget, rerank_copy)
    flat_bytes = n * d * 4
    flat_ms = flat_bytes / FLAT_SCAN_BYTES_PER_MS
    size = f"{n:,} vectors x {d} dims"
    if flat_bytes <= budget and (n <= ALWAYS_FLAT_ITEMS or (n < FLAT_MAX_ITEMS and flat_ms <= FLAT_MAX_MS)):
        return IndexChoice("Flat", reason=(
            f"exact search (IndexFlatIP): {size} take {format_size(flat_bytes)}, within the "
            f"{format_size(budget)} budget, and one query scans them in about {flat_ms:.1f} ms on one "
            "core, so no approximation is needed"))

    hnsw_bytes = n * (d * 4 + HNSW_BYTES_PER_ITEM)
    if hnsw_bytes <= budget and n * d <= HNSW_MAX_FLOATS:
        return IndexChoice(f"HNSW{HNSW_M}", params={"efSearch": 64}, reason=(
            f"graph index HNSW{HNSW_M}: exact search over {size} ({format_size(flat_bytes)}) would cost "
            f"about {flat_ms:.0f} ms per query; the graph ({format_size(hnsw_bytes)}) fits the "
            f"{format_size(budget)} budget and visits a few thousand vectors per query. efSearch is "
            "tuned on build for recall@10 >= 0.95 against exact search"))

    nlist = _ivf_lists(n)
    # With thousands of lists, scanning the centroids alone costs milliseconds per query: an HNSW
    # over the centroids finds the nearest lists (autofaiss's IVF_HNSW), and assigns vectors fast.
    ivf = f"IVF{nlist}_HNSW32" if nlist >= IVF_HNSW_QUANTIZER_FROM else f"IVF{nlist}"
    why_not_hnsw = (f"HNSW{HNSW_M} would need {format_size(hnsw_bytes)}" if hnsw_bytes > budget else
                    f"building HNSW{HNSW_M} over {size} would take hours on a small CPU")
    common = (f"inverted file with {nlist} lists (about 4*sqrt(n))"
              + (", nearest lists found by an HNSW over the centroids" if "HNSW" in ivf else "")
              + f"; {why_not_hnsw}. nprobe (lists "
              "scanned per query) is tuned on build for recall@10 >= 0.95 against exact search; results "
              "are re-scored exactly from embeddings.npy (16 candidates per result for compressed codes)")
    ivf_overhead = nlist * d * 4 + n * 8  # centroids + ids
    if flat_bytes + ivf_overhead <= budget:
        return IndexChoice(f"{ivf},Flat", params={"nprobe": 16},
                           reason=f"{ivf},Flat: full vectors ({format_size(flat_bytes)}) fit the budget; {common}")
    if n * d + ivf_overhead <= budget:
        return IndexChoice(f"{ivf},SQ8", params={"nprobe": 16, "rerank": RERANK_QUANTISED},
                           reason=(f"{ivf},SQ8: full vectors ({format_size(flat_bytes)}) exceed the "
                                   f"{format_size(budget)} budget, 8-bit scalar codes ({format_size(n * d)}) fit; {common}"))
    m = _pq_subquantisers(d, (budget - ivf_overhead) / max(n, 1))
    if m is None:
        raise IndexChoiceError(
            f"no index fits {format_size(budget)} for {size}: even the smallest compressed index needs "
            f"{format_size(n * 1 + ivf_overhead)}; raise --memory-budget")
    return IndexChoice(f"{ivf},PQ{m}", params={"nprobe": 32, "rerank": RERANK_QUANTISED},
                       reason=(f"{ivf},PQ{m}: only {m}-byte product-quantised codes per vector fit the "
                               f"{format_size(budget)} budget ({format_size(n * m + ivf_overhead)}); {common}"))


def _choose_on_disk(n: int, d: int, budget: int, rerank_copy: bool) -> IndexChoice:
    nlist = _ivf_lists(n)
    ivf = f"IVF{nlist}_HNSW32" if nlist >= IVF_HNSW_QUANTIZER_FROM else f"IVF{nlist}"
    in_memory = nlist * (d * 4 + HNSW_BYTES_PER_ITEM)
    if in_memory > budget:
        raise IndexChoiceError(f"the {nlist} IVF centroids of {n:,} x {d} vectors need {format_size(in_memory)} in "
                               f"memory, more than the {format_size(budget)} budget; raise --memory-budget")
    m = _pq_subquantisers(d, min(max(d / ONDISK_DIMS_PER_BYTE, ONDISK_PQ_BYTES[0]), ONDISK_PQ_BYTES[1]))
    # "np": no polysemous training, which search never uses here and which took 200 s for 4,000 vectors.
    if rerank_copy:  # codes blur near-identical photos; the shards are too slow to read per result
        scoring = (f"the codes propose {RERANK_QUANTISED} candidates per result, re-scored exactly from a float16 "
                   f"copy of the vectors ({format_size(n * d * 2)} on disk, memory-mapped)")
    else:
        scoring = "scores come from the codes alone (the full vectors stay in the shards)"
    return IndexChoice(f"{ivf},PQ{m}np", params={"nprobe": 32, "rerank": RERANK_QUANTISED if rerank_copy else 1}, reason=(
        f"on-disk {ivf},PQ{m}: inverted file with {nlist} lists (about 4*sqrt(n)) whose {m}-byte product-"
        f"quantised codes ({format_size(n * (m + 8))} with ids for {n:,} vectors) stay in a memory-mapped "
        f"file; only the centroids ({format_size(in_memory)}) are held in memory; {scoring}; nprobe is "
        "tuned on build against exact search"))


def choice_from_factory(factory: str, d: int) -> IndexChoice:
    """A user-given factory string (e.g. --index HNSW32), checked by building an empty index."""
    factory = factory.strip()
    try:
        faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise IndexChoiceError(f"FAISS cannot build index {factory!r} for {d}-d vectors: {first[:200]}") from None
    kind = index_kind(factory)
    params = {"hnsw": {"efSearch": 64}, "ivf": {"nprobe": 16}}.get(kind, {})
    if quantised(factory):
        params["rerank"] = 16  # candidates per result re-scored exactly (see index.search.algorithm)
    return IndexChoice(factory, params=params, reason=f"given by the user ({factory!r}), not chosen automatically")
