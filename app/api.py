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

FastAPI and uvicorn are an optional extra (`pip install -r requirements-distributed.txt`).
Several processes may serve one catalog folder: they only read it and never take its writer lock.
When `python -m index add/rebuild/remove` commits a new version (catalog.json replaced), each
process loads the new version in the background and then swaps it in; requests keep being
answered by the old version meanwhile (its files stay on disk one version longer by design, and
a loaded version no longer needs them: metadata and index are in memory, embeddings mapped).
"""
# No `from __future__ import annotations`: FastAPI reads the endpoint signatures at definition
# time, and the endpoints are defined inside create_app (fastapi is imported lazily).
import argparse
import contextlib
import ipaddress
import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

from app.limits import MAX_K, ClientShare, search_bounds
from app.settings import DEFAULT_CATALOG, DEFAULT_DEVICE, DEFAULT_MODEL, ENV
from embedder.images import ImageError
from embedder.regions import BoxError, parse_box
from embedder.files import format_size, parse_size
from index.scale.backends import ENV_BACKEND, add_backend_option, parse_backend
from index.catalog.description import CatalogInfo
from index.catalog.loaded import Catalog
from index.search.service import CatalogItem, SearchService, object_regions, to_rgb
from index.catalog.store import INFO_FILE, CatalogError, UnknownItemError, read_info

log = logging.getLogger("app.api")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # bytes of one uploaded photo (the app's cap as well)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the other fields, on top of the photo
# Uploaded photos in memory at once per process, held from reading the upload to the end of its
# search: decoding one at the decoder's pixel limit peaks at about 210 MB, a decoded photo (long
# side at most 2,048 px) keeps 12-16 MB, and the server runs up to 40 requests at a time in its
# thread pool. docs/api.md ("Memory per worker") gives the measured worst case.
DECODE_SLOTS = 2
QUERY_THREADS = 1  # torch threads per worker process (see create_app_from_env)
# What /health embeds before it says ok: a dark square on white (any photo would do).
PROBE_SIDE = 64
MAX_ID = 2**63 - 1  # catalog ids are int64
DEFAULT_RELOAD_INTERVAL = 0.5  # seconds between looks at catalog.json (a stat, no read)
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


def _info_stamp(folder: Path) -> tuple | None:
    """Changes whenever catalog.json is replaced (os.replace gives it a new inode)."""
    try:
        stat = (folder / INFO_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class LiveCatalog:
    """The SearchService of a catalog folder's current version, swapped when a new one is committed.

    The model is loaded once; each new catalog version is loaded completely (index read, result
    columns built) in a background thread before the reference is swapped, so no request waits
    for a load or sees a half-loaded catalog. A version that cannot be served (another model,
    damaged) is reported in `reload_error` and the last good version keeps serving.
    """

    def __init__(self, catalog_folder: str | os.PathLike, model: str | os.PathLike, device: str = DEFAULT_DEVICE,
                 reload_interval: float = DEFAULT_RELOAD_INTERVAL):
        self.folder = Path(catalog_folder)
        self.model_path = Path(model)
        self.reload_interval = reload_interval
        stamp = _info_stamp(self.folder)
        service = SearchService(self.folder, self.model_path, device=device)  # ModelMismatchError, CatalogError
        self._warm(service)
        self._service, self._seen_stamp = service, stamp
        self.loaded_at = time.time()
        self.reload_error: str | None = None
        self._checked = time.monotonic()
        self._loading = threading.Lock()

    @staticmethod
    def _warm(service: SearchService) -> None:
        catalog = service.catalog
        _ = catalog.index  # read on first use otherwise: do it before any request depends on it
        if len(catalog):
            catalog.search_frame(catalog.vectors_of(catalog.ids[:1])[0], 1)  # builds the result columns

    @property
    def service(self) -> SearchService:
        """The current version's service; starts loading a newer version if catalog.json changed."""
        now = time.monotonic()
        if now - self._checked >= self.reload_interval:
            self._checked = now
            stamp = _info_stamp(self.folder)
            if stamp is not None and stamp != self._seen_stamp and self._loading.acquire(blocking=False):
                threading.Thread(target=self._reload, args=(stamp,), daemon=True, name="catalog-reload").start()
        return self._service

    def _reload(self, stamp: tuple) -> None:
        try:
            current = self._service
            if read_info(self.folder).version == current.catalog.info.version:
                return  # rewritten without a new version (e.g. skipped files listed)
            fresh = SearchService.from_parts(Catalog.load(self.folder), current.embedder, current.categories)
            self._warm(fresh)
            self._service = fresh  # the swap: one reference assignment
            self.loaded_at, self.reload_error = time.time(), None
            log.info("serving catalog version %s (%d items)", fresh.catalog.info.version, len(fresh.catalog))
        except Exception as exc:  # keep serving the last good version; say why in /health
            self.reload_error = f"{type(exc).__name__}: {exc}"
            log.warning("catalog %s: new version not loaded, still serving %s: %s", self.folder,
                        self._service.catalog.info.version, self.reload_error)
        finally:
            self._seen_stamp = stamp  # a failed version is not retried until catalog.json changes again
            self._loading.release()


def _record(row: dict) -> dict:
    core = ("rank", "id", "score", "category", "path")
    return {**{name: row.get(name) for name in core},
            "metadata": {name: value for name, value in row.items() if name not in core}}


def _results(frame) -> list[dict]:
    """JSON-ready result rows; the server's absolute image paths are not sent."""
    frame = frame.drop(columns=["image_path"], errors="ignore")
    return [_record(row) for row in json.loads(frame.to_json(orient="records"))]


def query_box(text: str | None, item_id: int | None):
    """The `box` form field -> four numbers, or None; BoxError (an ImageError) when it is not a box."""
    if text is None or not text.strip():
        return None
    if item_id is not None:
        raise BoxError("a query region applies to a photo (`image`), not to a catalog item (`id`)")
    spelled = text.strip().removeprefix("[").removesuffix("]")
    return parse_box(spelled if "," in spelled else ",".join(spelled.split()))


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


def _validation_problem(error: dict) -> dict:
    """A request validation error without the value sent (FastAPI echoes it; it may be a file's bytes)."""
    where = error.get("loc", ())
    message = error.get("msg", "invalid value")
    if tuple(where[-1:]) == ("image",) and "UploadFile" in message:
        # A multipart part without a file name arrives as text, not as a file.
        message = ('`image` must be sent as a file, with a file name: multipart/form-data with '
                   'Content-Disposition: form-data; name="image"; filename="photo.jpg" (this one had no file name)')
    return {"loc": list(where), "msg": message, "type": error.get("type", "value_error")}


def _shown_name(filename: str | None) -> str:
    """An uploaded file's name for a message: one line, not too long."""
    from embedder.images import shown_path

    return shown_path(filename)[:200] if filename else "upload"


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


class _BodyLimit:
    """Refuses request bodies over `max_bytes` with 413 before reading them: at once when
    Content-Length says so, otherwise as soon as the bytes received pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> str:
        return f"upload too large: the limit is {format_size(self.max_bytes - FORM_OVERHEAD)} per photo"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                return await JSONResponse({"detail": "invalid Content-Length header"}, 400)(scope, receive, send)
            if too_large:
                return await JSONResponse({"detail": self._too_large()}, 413)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # FastAPI passes HTTPException through body parsing
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, limited_receive, send)


def create_app(catalog: str | os.PathLike, model: str | os.PathLike, *, device: str = DEFAULT_DEVICE,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, reload_interval: float = DEFAULT_RELOAD_INTERVAL):
    """The FastAPI app serving one catalog folder with its model (raises ModelMismatchError, CatalogError)."""
    fastapi = _require_fastapi()
    live = LiveCatalog(catalog, model, device=device, reload_interval=reload_interval)
    api = fastapi.FastAPI(title="Visual search", version="1",
                          description="Search a product catalog by photo or by catalog item.")
    api.state.live = live
    api.add_middleware(_BodyLimit, max_bytes=max_upload_bytes + FORM_OVERHEAD)
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
        return JSONResponse({"detail": [_validation_problem(error) for error in exc.errors()]}, 422)

    @api.exception_handler(Exception)
    async def unexpected(request, exc):  # a JSON 500, logged with its traceback
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)


def _add_status_routes(api, live: LiveCatalog) -> None:
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


def _add_search_route(api, live: LiveCatalog, decoding: threading.BoundedSemaphore, max_upload_bytes: int) -> None:
    """POST /search: its form fields, checked, then _answer_search."""
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
        return _answer_search(live, decoding, max_upload_bytes, image, id, region, options, objects, started)


def _read_photo(image, max_upload_bytes: int) -> tuple:
    """(the uploaded photo decoded to RGB, its size in bytes); 413 over the limit, 422 when it is no photo."""
    from fastapi import HTTPException

    data = image.file.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise HTTPException(413, f"upload too large: the limit is {format_size(max_upload_bytes)} per photo")
    try:
        return to_rgb(data), len(data)
    except ImageError as exc:
        raise HTTPException(422, f"{_shown_name(image.filename)}: {exc}") from None


def _bounded_search(service, image, id, photo, region, options: dict):
    """The search, bounded as every search of the API is (app/limits.py); its refusals as HTTP errors."""
    from fastapi import HTTPException

    try:
        return service.search(CatalogItem(id) if id is not None else photo, box=region, **options, **search_bounds())
    except ImageError as exc:  # nothing to search for in the photo, or a box outside it
        raise HTTPException(422, f"{_shown_name(image.filename)}: {exc}") from None
    except UnknownItemError as exc:
        raise HTTPException(404, str(exc)) from None
    except CatalogError as exc:  # e.g. an unknown category
        raise HTTPException(422, str(exc)) from None


def _answer_search(live: LiveCatalog, decoding: threading.BoundedSemaphore, max_upload_bytes: int, image, id,
                   region, options: dict, objects: bool, started: float) -> dict:
    """Read and decode the photo (in a photo slot), search, and the answer with its timings."""
    decode_s, queue_s, query = 0.0, 0.0, {"id": id} if id is not None else {"image": image.filename}
    photo = None
    with contextlib.ExitStack() as held:
        if image is not None:
            # A photo slot from reading the upload to the end of its search: a decoded photo
            # holds memory until its search is done.
            held.enter_context(decoding)
            queue_s = time.perf_counter() - started
            photo, query["bytes"] = _read_photo(image, max_upload_bytes)
            decode_s = time.perf_counter() - started - queue_s
        service = live.service
        found = _bounded_search(service, image, id, photo, region, options)
        things = [list(r) for r in object_regions(photo)] if objects and image is not None else None
    timing = found.timing
    echoed = {name: value for name, value in options.items() if name != "metadata_filter"}
    extra = {} if things is None else {"objects": things}
    return {"query": {**query, **echoed, "filter": options["metadata_filter"],
                      "box": list(region) if region else None}, **extra,
            "catalog_version": service.catalog.info.version, "results": _results(found.frame), **found.summary(),
            "timing_ms": {"decode_ms": 1000 * decode_s, "embed_ms": 1000 * timing.decode_embed_s,
                          "search_ms": 1000 * timing.search_s, "queue_ms": 1000 * queue_s,
                          "total_ms": 1000 * (time.perf_counter() - started)}}


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
                      reload_interval=float(os.environ.get(ENV_RELOAD_INTERVAL, DEFAULT_RELOAD_INTERVAL)))


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
                        help="seconds between checks for a new catalog version")
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
                       ENV_RELOAD_INTERVAL: str(args.reload_interval)})
    from app.connections import server_options

    uvicorn.run("app.api:create_app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                access_log=not args.no_access_log, log_level="info", timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
                **server_options())
    return 0


if __name__ == "__main__":
    sys.exit(main())
