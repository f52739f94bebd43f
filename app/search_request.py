"""One POST /search request: the body's byte limit, the form's fields, the photo read in a photo slot,
the search bounded as every API search is (app/limits.py), and its JSON answer.

app/api.py declares the route and its form fields; what a request's fields become is here.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time

from app.limits import search_bounds
from app.served_catalog import ServedCatalog
from embedder.files import format_size
from embedder.images import ImageError
from embedder.regions import BoxError, parse_box
from index.catalog.store import CatalogError, UnknownItemError
from index.search.service import CatalogItem, object_regions, to_rgb

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # bytes of one uploaded photo (the app's cap as well)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the other fields, on top of the photo
# Uploaded photos in memory at once per process, held from reading the upload to the end of its
# search: decoding one at the decoder's pixel limit peaks at about 210 MB, a decoded photo (long
# side at most 2,048 px) keeps 12-16 MB, and the server runs up to 40 requests at a time in its
# thread pool. docs/api.md ("Memory per worker") gives the measured worst case.
DECODE_SLOTS = 2
MAX_ID = 2**63 - 1  # catalog ids are int64


def result_record(row: dict) -> dict:
    core = ("rank", "id", "score", "category", "path")
    return {**{name: row.get(name) for name in core},
            "metadata": {name: value for name, value in row.items() if name not in core}}


def results_json(frame) -> list[dict]:
    """JSON-ready result rows; the server's absolute image paths are not sent."""
    frame = frame.drop(columns=["image_path"], errors="ignore")
    return [result_record(row) for row in json.loads(frame.to_json(orient="records"))]


def query_box(text: str | None, item_id: int | None):
    """The `box` form field -> four numbers, or None; BoxError (an ImageError) when it is not a box."""
    if text is None or not text.strip():
        return None
    if item_id is not None:
        raise BoxError("a query region applies to a photo (`image`), not to a catalog item (`id`)")
    spelled = text.strip().removeprefix("[").removesuffix("]")
    return parse_box(spelled if "," in spelled else ",".join(spelled.split()))


def validation_problem(error: dict) -> dict:
    """A request validation error without the value sent (FastAPI echoes it; it may be a file's bytes)."""
    where = error.get("loc", ())
    message = error.get("msg", "invalid value")
    if tuple(where[-1:]) == ("image",) and "UploadFile" in message:
        # A multipart part without a file name arrives as text, not as a file.
        message = ('`image` must be sent as a file, with a file name: multipart/form-data with '
                   'Content-Disposition: form-data; name="image"; filename="photo.jpg" (this one had no file name)')
    return {"loc": list(where), "msg": message, "type": error.get("type", "value_error")}


def shown_name(filename: str | None) -> str:
    """An uploaded file's name for a message: one line, not too long."""
    from embedder.images import shown_path

    return shown_path(filename)[:200] if filename else "upload"


class BodyLimit:
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


def read_photo(image, max_upload_bytes: int) -> tuple:
    """(the uploaded photo decoded to RGB, its size in bytes); 413 over the limit, 422 when it is no photo."""
    from fastapi import HTTPException

    data = image.file.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise HTTPException(413, f"upload too large: the limit is {format_size(max_upload_bytes)} per photo")
    try:
        return to_rgb(data), len(data)
    except ImageError as exc:
        raise HTTPException(422, f"{shown_name(image.filename)}: {exc}") from None


def bounded_search(service, image, id, photo, region, options: dict):
    """The search, bounded as every search of the API is (app/limits.py); its refusals as HTTP errors."""
    from fastapi import HTTPException

    try:
        return service.search(CatalogItem(id) if id is not None else photo, box=region, **options, **search_bounds())
    except ImageError as exc:  # nothing to search for in the photo, or a box outside it
        raise HTTPException(422, f"{shown_name(image.filename)}: {exc}") from None
    except UnknownItemError as exc:
        raise HTTPException(404, str(exc)) from None
    except CatalogError as exc:  # e.g. an unknown category
        raise HTTPException(422, str(exc)) from None


def answer_search(live: ServedCatalog, decoding: threading.BoundedSemaphore, max_upload_bytes: int, image, id,
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
            photo, query["bytes"] = read_photo(image, max_upload_bytes)
            decode_s = time.perf_counter() - started - queue_s
        service = live.service
        found = bounded_search(service, image, id, photo, region, options)
        things = [list(r) for r in object_regions(photo)] if objects and image is not None else None
    timing = found.timing
    echoed = {name: value for name, value in options.items() if name != "metadata_filter"}
    extra = {} if things is None else {"objects": things}
    return {"query": {**query, **echoed, "filter": options["metadata_filter"],
                      "box": list(region) if region else None}, **extra,
            "catalog_version": service.catalog.info.version, "results": results_json(found.frame), **found.summary(),
            "timing_ms": {"decode_ms": 1000 * decode_s, "embed_ms": 1000 * timing.decode_embed_s,
                          "search_ms": 1000 * timing.search_s, "queue_ms": 1000 * queue_s,
                          "total_ms": 1000 * (time.perf_counter() - started)}}
