"""JSON HTTP search API over the same SearchService the Streamlit app uses.

    python -m app.api --catalog catalogs/fashion-mnist-test --model models/coinsp-fmnist.pt [--port 8000] [--workers 2]

    POST /search    multipart or url-encoded form: image=<file> or id=<catalog id>; k, category,
                    hide_duplicates_above, box (x0,y0,x1,y1: the photo's query region), min_score,
                    group_by (e.g. product_id), filter (`color=red OR color=blue AND brand=X`)
                    ->  {"results": [{rank, id, score, category, path, metadata}], "predicted_category",
                         "confidence", "dropped_below_min_score", "timing_ms": ...}
    GET  /health    catalog version, item count, model fingerprint
    GET  /catalog   what the catalog is: index type and why, counts, categories

Bounded: one search's work (app/limits.py: k, candidates, time budget; `cut_short` in the answer
when a bound cut the results short), each client address's share (ClientShare: 429 beyond it), and
the connections (app/connections.py: idle and half-sent ones are closed).

Here: the app, its routes and the command line. What one search request becomes (the body's limit,
the photo slots, the form's box, the bounded search, the JSON answer) is app/search_request.py; the
catalog served, followed as new versions are committed, app/live_catalog.py; the catalog and model
pair, followed as the Quality page's "Serve this one" switches it (serving.json), app/served_catalog.py.

FastAPI and uvicorn are an optional extra (`pip install -r requirements-distributed.txt`).
Several processes may serve one catalog folder: they only read it and never take its writer lock
(app/live_catalog.py says how each swaps in a new version).
"""
# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at definition
# time, and the endpoints are defined inside create_app (fastapi is imported lazily).
import argparse
import ipaddress
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

from app.limits import MAX_K, ClientShare
from app.live_catalog import DEFAULT_RELOAD_INTERVAL
from app.served_catalog import ServedCatalog
from app.search_request import (DECODE_SLOTS, DEFAULT_MAX_UPLOAD, FORM_OVERHEAD, MAX_ID, BodyLimit, answer_search,
                                query_box, validation_problem)
from app.settings import DEFAULT_CATALOG, DEFAULT_DEVICE, DEFAULT_MODEL, ENV
from embedder.images import ImageError
from embedder.files import format_size, parse_size
from index.scale.backends import ENV_BACKEND, add_backend_option, parse_backend
from index.catalog.description import CatalogInfo
from index.search.service import SearchService
from index.catalog.store import read_info

log = logging.getLogger("app.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
QUERY_THREADS = 1  # torch threads per worker process (see create_app_from_env)
# What /health embeds before it says ok: a dark square on white (any photo would do).
PROBE_SIDE = 64
# uvicorn kills a worker that does not answer its supervisor's ping within this many seconds; a
# worker answers only once torch, FAISS and pandas are imported, which took over 5 s (uvicorn's
# default) on a busy 2-core machine, so workers were killed and restarted for ever.
WORKER_HEALTHCHECK_S = 60
ENV_MAX_UPLOAD = "COINSP_API_MAX_UPLOAD"
ENV_RELOAD_INTERVAL = "COINSP_API_RELOAD_INTERVAL"
INSTALL_HINT = "pip install -r requirements-distributed.txt"


def _require_fastapi():
    try:
        import fastapi
    except ImportError:
        raise RuntimeError(f"the HTTP API needs FastAPI and uvicorn: {INSTALL_HINT}") from None
    return fastapi


def _catalog_summary(info: CatalogInfo, categories: list[str]) -> dict:
    index = info.index
    return {
        "version": info.version,
        "built_at": info.built_at,
        "created_at": info.created_at,
        "model_fingerprint": info.model_fingerprint,
        "feature_dim": info.feature_dim,
        "precision": info.precision,
        "counts": info.counts,
        "categories": categories,
        "index": {key: index.get(key) for key in ("factory", "reason", "params", "recall_at_10",
                                                  "recall_at_10_lower95", "recall_queries", "user_given")
                  if key in index},
        "last_operation": info.last_operation,
    }


def _probe_photo():
    from PIL import Image

    photo = Image.new("RGB", (PROBE_SIDE, PROBE_SIDE), "white")
    photo.paste((40, 40, 40), (PROBE_SIDE // 4, PROBE_SIDE // 4, 3 * PROBE_SIDE // 4, 3 * PROBE_SIDE // 4))
    return photo


def _embedding_problem(service: SearchService) -> str | None:
    """Embed one photo as a search would: None if the model answers as the catalog needs, else why not."""
    try:
        vector = service.embed(_probe_photo())
    except Exception as exc:  # whatever breaks here breaks every photo search
        log.exception("the model failed to embed the /health probe photo")
        return f"the model can't embed a photo ({type(exc).__name__}: {str(exc).strip()[:300]})"
    expected = service.catalog.info.feature_dim
    if vector.shape != (expected,) or not all(map(math.isfinite, vector.tolist())):
        return f"the model's vector for a photo has shape {vector.shape} (the catalog needs ({expected},)) or is not finite"
    return None


def create_app(catalog: str | os.PathLike, model: str | os.PathLike, *, device: str = DEFAULT_DEVICE,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, reload_interval: float = DEFAULT_RELOAD_INTERVAL,
               catalogs_dir: str | os.PathLike | None = None):
    """The FastAPI app serving one catalog folder with its model, or the pair the serving.json of
    `catalogs_dir` (default: the folder holding `catalog`) names (raises ModelMismatchError, CatalogError)."""
    fastapi = _require_fastapi()
    live = ServedCatalog(catalog, model, catalogs_dir, device=device, reload_interval=reload_interval)
    api = fastapi.FastAPI(title="Visual search", version="1",
                          description="Search a product catalog by photo or by catalog item.")
    api.state.live = live
    api.add_middleware(BodyLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD)
    api.add_middleware(ClientShare)  # added last: runs first, before any of the body is read
    _add_error_handlers(api, fastapi)
    _add_status_routes(api, live)
    _add_search_route(api, live, threading.BoundedSemaphore(DECODE_SLOTS), max_upload_bytes)
    return api


def _add_error_handlers(api, fastapi) -> None:
    """422 for a request that does not validate, a JSON 500 for anything unexpected."""
    from fastapi.responses import JSONResponse

    @api.exception_handler(fastapi.exceptions.RequestValidationError)
    async def invalid_request(request, exc):  # 422, without echoing what was sent (it may be a photo's bytes)
        return JSONResponse({"detail": [validation_problem(error) for error in exc.errors()]}, 422)

    @api.exception_handler(Exception)
    async def unexpected(request, exc):  # a JSON 500, logged with its traceback
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)


def _add_status_routes(api, live: ServedCatalog) -> None:
    """GET /health (503 when the model cannot embed a photo) and GET /catalog."""
    from fastapi.responses import JSONResponse

    @api.get("/health")
    def health() -> dict:
        service = live.service
        problem = _embedding_problem(service)
        status = "error" if problem else "ok" if live.reload_error is None else "stale"
        body = {"status": status, "catalog_version": service.catalog.info.version, "items": len(service.catalog),
                "model_fingerprint": service.embedder.fingerprint, "loaded_at": live.loaded_at,
                "reload_error": live.reload_error, "embedding_error": problem, "pid": os.getpid()}
        return JSONResponse(body, 503) if problem else body

    @api.get("/catalog")
    def catalog_info() -> dict:
        service = live.service
        return _catalog_summary(service.catalog.info, service.catalog.categories())


def _add_search_route(api, live: ServedCatalog, decoding: threading.BoundedSemaphore, max_upload_bytes: int) -> None:
    """POST /search: its form fields, checked, then answer_search."""
    from fastapi import File, Form, HTTPException, UploadFile

    @api.post("/search")
    def search(
        image: Annotated[UploadFile | None, File(description="the query photo (JPEG, PNG, WebP, HEIC, AVIF, ...)")] = None,
        id: Annotated[int | None, Form(ge=0, le=MAX_ID, description="a catalog item's id instead (itself left out)")] = None,
        k: Annotated[int, Form(ge=1, le=MAX_K, description=f"results, at most {MAX_K}")] = 10,
        category: Annotated[str | None, Form(description="only items of this category")] = None,
        hide_duplicates_above: Annotated[float | None, Form(
            ge=-1.0, le=1.0, allow_inf_nan=False,
            description="drop a result more similar than this cosine to a better one")] = None,
        box: Annotated[str | None, Form(max_length=200, description=(
            "the photo's query region in its pixels: x0,y0,x1,y1 (or four numbers separated by spaces, or a JSON "
            "list); default: the product, found automatically"))] = None,
        min_score: Annotated[float | None, Form(
            ge=-1.0, le=1.0, allow_inf_nan=False, description="leave out results scoring below this cosine")] = None,
        group_by: Annotated[str | None, Form(max_length=200, description=(
            "one result per value of this metadata column (product_id: each product's best photo), still k"))] = None,
        filter: Annotated[str | None, Form(max_length=2000, description=(
            "only items meeting it: column=value, OR between values of one column, AND between columns, e.g. "
            "`color=red OR color=blue AND brand=X`"))] = None,
        mirror: Annotated[bool, Form(description=(
            "also search the photo as its mirror image, each item scored by the better of the two (a shoe "
            "photographed facing the other way); false: the photo only as it is"))] = True,
        objects: Annotated[bool, Form(description=(
            "also return `objects`: the things found in the photo as boxes x0,y0,x1,y1, the automatic product "
            "crop first, then other things of a product's size, to offer a shopper as query regions"))] = False,
    ) -> dict:
        started = time.perf_counter()
        if (image is None) == (id is None):
            raise HTTPException(422, "give exactly one of `image` (a file) or `id` (a catalog item), as form fields "
                                     "(multipart/form-data or application/x-www-form-urlencoded)")
        category = category or None
        try:
            region = query_box(box, id)
        except ImageError as exc:
            raise HTTPException(422, f"box: {exc}") from None
        options = {"k": k, "category": category, "hide_duplicates_above": hide_duplicates_above, "min_score": min_score,
                   "group_by": group_by or None, "metadata_filter": filter or None, "mirror": mirror}
        return answer_search(live, decoding, max_upload_bytes, image, id, region, options, objects, started)


def return_freed_memory_to_the_system() -> bool:
    """Make glibc give big freed buffers back at once (True if it could be told).

    By default glibc raises its mmap threshold after each big free (up to 32 MB), so the next
    decoding buffers (reduced photos of 10-25 MB) come from per-thread heaps that keep the memory
    once freed: with the server's thread pool, one worker kept 2.6 GB after 200 photo searches.
    Buffers of 1 MB and more are mapped and unmapped instead, and threads share 2 heaps.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_mmap_threshold, m_arena_max = -3, -8
    return bool(mallopt(m_mmap_threshold, 1 << 20)) and bool(mallopt(m_arena_max, 2))


def create_app_from_env():
    """App factory for uvicorn workers: settings from the environment (see app/settings.py)."""
    import torch

    return_freed_memory_to_the_system()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    # Set once per worker, never per query: each request embeds one small photo, which gains
    # nothing from more threads; requests run side by side on the cores instead (measured: 86 ms
    # with 2 threads vs 2.5 ms with 1 for a 28 px query beside a training run).
    torch.set_num_threads(QUERY_THREADS)
    return create_app(os.environ.get(ENV["catalog"], DEFAULT_CATALOG), os.environ.get(ENV["model"], DEFAULT_MODEL),
                      device=os.environ.get(ENV["device"], DEFAULT_DEVICE),
                      max_upload_bytes=int(os.environ.get(ENV_MAX_UPLOAD, DEFAULT_MAX_UPLOAD)),
                      reload_interval=float(os.environ.get(ENV_RELOAD_INTERVAL, DEFAULT_RELOAD_INTERVAL)),
                      catalogs_dir=os.environ.get(ENV["catalogs_dir"]) or None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_can_serve(catalog: Path, model: Path) -> None:
    """Fail before starting any worker if the catalog or the model cannot be served (cheap checks)."""
    from embedder.checkpoint import load_checkpoint
    from index.catalog.store import check_model

    info = read_info(catalog)
    check_model(info, load_checkpoint(model)["fingerprint"], str(model))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.api", description="Serve a catalog's search as JSON over HTTP.")
    parser.add_argument("--catalog", type=Path, default=Path(DEFAULT_CATALOG))
    parser.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL))
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default 127.0.0.1; another one exposes the API to the network)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=1, help="server processes sharing the port (each loads the catalog)")
    parser.add_argument("--device", default=DEFAULT_DEVICE)
    parser.add_argument("--max-upload", default=format_size(DEFAULT_MAX_UPLOAD), help="largest photo accepted (default 20MB)")
    parser.add_argument("--reload-interval", type=float, default=DEFAULT_RELOAD_INTERVAL,
                        help="seconds between checks for a new catalog version or a switch in serving.json")
    parser.add_argument("--catalogs-dir", type=Path, help="the folder whose serving.json (the Quality page's switch) "
                                                         "is followed (default: the folder holding --catalog)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log every request")
    add_backend_option(parser)  # the index in the catalog folder (FAISS) or a Milvus collection
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _require_fastapi()
        import uvicorn
    except (RuntimeError, ImportError):
        print(f"error: the HTTP API needs FastAPI and uvicorn: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        max_upload = parse_size(args.max_upload)
        if args.workers < 1:
            raise ValueError("--workers must be at least 1")
        check_can_serve(args.catalog, args.model)
        backend = parse_backend(args.backend if args.backend is not None else os.environ.get(ENV_BACKEND))
        if backend is not None and backend.lite and args.workers > 1:
            raise ValueError(f"Milvus Lite ({backend.text}) is opened by one process: serve it with --workers 1, "
                             "or serve a Milvus server (milvus://HOST:PORT/COLLECTION) with several")
    except Exception as exc:  # a missing catalog or model, a model of another catalog, a bad size
        print(f"error: {str(exc).strip() or type(exc).__name__}", file=sys.stderr)
        return 2
    if args.backend is not None:
        os.environ[ENV_BACKEND] = args.backend  # each worker's Catalog.load serves from it
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: the API is reachable from other machines", file=sys.stderr)
    # The workers build the app from the environment (uvicorn starts them as fresh processes).
    os.environ.update({ENV["catalog"]: str(args.catalog.absolute()), ENV["model"]: str(args.model.absolute()),
                       ENV["device"]: args.device, ENV_MAX_UPLOAD: str(max_upload),
                       ENV_RELOAD_INTERVAL: str(args.reload_interval),
                       **({ENV["catalogs_dir"]: str(args.catalogs_dir.absolute())} if args.catalogs_dir else {})})
    from app.connections import server_options

    uvicorn.run("app.api:create_app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                access_log=not args.no_access_log, log_level="info", timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
                **server_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
