"""Load test of the HTTP search API: concurrent clients, a mix of photo uploads and id searches.

    python -m benchmarks.loadtest --catalog catalogs/fashion-mnist-test --model models/coinsp-fmnist.pt \\
        [--clients 8] [--seconds 120] [--max-requests 200000] [--workers 1] [--url http://127.0.0.1:PORT]

Without --url it starts `python -m app.api` on a free 127.0.0.1 port (and stops it afterwards);
with --url it uses a running API, on this machine only (a non-loopback URL is refused). The
query photos are catalog images (read from the catalog folder), the ids catalog ids. The loop is
bounded by time and by request count. Writes reports/api_load.json and reports/api_load.md
(--out PREFIX changes that): throughput, p50/p95/p99 latency, errors, and the machine's load.
Goal: 0 errors and p99 < 10x p50.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import json
import os
import platform
import random
import resource
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from app.api import is_loopback
from app.settings import DEFAULT_CATALOG, DEFAULT_MODEL
from embedder.files import atomic_path, markdown_table

DEFAULT_OUT = Path("reports") / "api_load"
QUERY_PHOTOS = 256  # distinct catalog photos the clients upload, read into memory once
REQUEST_TIMEOUT_S = 60.0
START_TIMEOUT_S = 300.0
P99_OVER_P50_GOAL = 10.0


@dataclass
class LoadResult:
    """Every timed request: kind ("image" / "id"), latency, outcome."""
    kinds: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # "HTTP 500", "ReadTimeout", ... -> count
    server_ms: dict[str, list[float]] = field(default_factory=dict)  # "<kind> <timing_ms field>" -> values
    self_first: int = 0  # photo searches whose first result is the uploaded item
    photo_answers: int = 0
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict:
        def stats(values) -> dict:
            if len(values) == 0:
                return {}
            ms = 1000 * np.asarray(values)
            return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                    "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "max": float(ms.max())}

        kinds = np.asarray(self.kinds)
        latencies = np.asarray(self.latencies_s)
        overall = stats(latencies)
        ratio = overall["p99"] / overall["p50"] if overall else float("nan")
        return {
            "requests": self.requests, "errors": self.error_count, "errors_by_kind": dict(self.errors),
            "seconds": round(self.seconds, 2),
            "throughput_rps": self.requests / self.seconds if self.seconds else 0.0,
            "latency_ms": overall,
            "latency_ms_by_kind": {kind: {**stats(latencies[kinds == kind]), "requests": int((kinds == kind).sum())}
                                   for kind in ("image", "id") if (kinds == kind).any()},
            "server_timing_ms_p50": {name: float(np.percentile(v, 50)) for name, v in self.server_ms.items() if v},
            "photo_searches_finding_the_item_first": (self.self_first / self.photo_answers
                                                      if self.photo_answers else None),
            "p99_over_p50": ratio,
            "goals": {"zero_errors": self.error_count == 0, f"p99_under_{P99_OVER_P50_GOAL:g}x_p50":
                      bool(ratio < P99_OVER_P50_GOAL)},
        }


@dataclass(frozen=True)
class Queries:
    photos: list[tuple[int, str, bytes]]  # (id, file name, bytes)
    ids: list[int]


def load_queries(catalog_folder: str | os.PathLike, photos: int = QUERY_PHOTOS, seed: int = 0) -> Queries:
    """A seeded sample of the catalog's items: their image bytes (uploads) and ids (id searches)."""
    from index.catalog.loaded import Catalog

    catalog = Catalog.load(catalog_folder)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(catalog), size=min(photos, len(catalog)), replace=False)
    picked = []
    for row in rows:
        path = Path(catalog.metadata["image_path"].iat[row])
        with contextlib.suppress(OSError):  # an image removed since: use the others
            picked.append((int(catalog.ids[row]), path.name, path.read_bytes()))
    if not picked:
        raise ValueError(f"none of the sampled images of {catalog_folder} could be read")
    return Queries(picked, [int(i) for i in catalog.ids[rng.choice(len(catalog), size=min(4096, len(catalog)),
                                                                    replace=False)]])


async def _client(http, queries: Queries, result: LoadResult, rng: random.Random, deadline: float,
                  budget: list[int], k: int, image_share: float) -> None:
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1  # one event loop: no lock needed
        if rng.random() < image_share:
            item, name, data = rng.choice(queries.photos)
            kind, request = "image", {"files": {"image": (name, data)}, "data": {"k": str(k)}}
        else:
            item = rng.choice(queries.ids)
            kind, request = "id", {"data": {"id": str(item), "k": str(k)}}
        started = time.perf_counter()
        try:
            response = await http.post("/search", **request)
            body = response.json() if response.status_code == 200 else None
            error = None if body is not None else f"HTTP {response.status_code}"
        except Exception as exc:  # timeouts, refused or reset connections, invalid JSON
            body, error = None, type(exc).__name__
        result.latencies_s.append(time.perf_counter() - started)
        result.kinds.append(kind)
        if error is not None:
            result.errors[error] = result.errors.get(error, 0) + 1
            continue
        for name, value in body.get("timing_ms", {}).items():
            if kind == "image" or name not in ("decode_ms", "embed_ms"):  # an id search decodes nothing
                result.server_ms.setdefault(f"{kind} {name}", []).append(value)
        if kind == "image":
            result.photo_answers += 1
            result.self_first += bool(body["results"]) and body["results"][0]["id"] == item


async def _run(url: str, queries: Queries, clients: int, seconds: float, max_requests: int, k: int,
               image_share: float, seed: int) -> LoadResult:
    import httpx

    result = LoadResult()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        started = time.monotonic()
        budget = [max_requests]
        await asyncio.gather(*(_client(http, queries, result, random.Random(seed * 1000 + i), started + seconds,
                                       budget, k, image_share) for i in range(clients)))
        result.seconds = time.monotonic() - started
    return result


def run_load(url: str, queries: Queries, *, clients: int = 8, seconds: float = 120.0, max_requests: int = 200_000,
             k: int = 10, image_share: float = 0.5, seed: int = 0) -> LoadResult:
    """`clients` concurrent clients against a running API until `seconds` pass or `max_requests` are sent."""
    check_loopback(url)
    if clients < 1 or seconds <= 0 or max_requests < 1:
        raise ValueError("clients and max requests must be at least 1, seconds above 0")
    return asyncio.run(_run(url.rstrip("/"), queries, clients, seconds, max_requests, k, image_share, seed))


def check_loopback(url: str) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not is_loopback(parsed.hostname):
        raise ValueError(f"{url}: the load test only targets an API on this machine "
                         "(http://127.0.0.1:PORT, http://localhost:PORT or http://[::1]:PORT)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S,
                  workers: int = 1) -> dict:
    """Poll /health until it answers (and, with several workers, until each has answered once)."""
    import httpx

    deadline, seen, health = time.monotonic() + timeout, set(), None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the API exited with status {process.returncode} before answering")
        try:
            # A new connection each time: uvicorn's workers share the listening socket.
            health = httpx.get(url + "/health", timeout=5.0).json()
            seen.add(health["pid"])
            if len(seen) >= workers:
                return {**health, "worker_pids": sorted(seen)}
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    if health is not None:  # up, but not every worker was reached: go on
        return {**health, "worker_pids": sorted(seen)}
    raise RuntimeError(f"the API at {url} did not answer /health within {timeout:.0f} s")


@contextlib.contextmanager
def serve(catalog: Path, model: Path, workers: int = 1, log_path: Path | None = None):
    """Start `python -m app.api` on a free loopback port; yields (url, process); stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "app.api", "--catalog", str(catalog), "--model", str(model),
               "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log"]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "wb")) if log_path else stack.enter_context(tempfile.TemporaryFile())
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        try:
            yield f"http://127.0.0.1:{port}", process
        finally:
            process.terminate()  # uvicorn shuts down gracefully (and stops its workers) on SIGTERM
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(), "python": platform.python_version()}


def markdown(report: dict) -> str:
    s, r = report["settings"], report["results"]
    lat, by = r["latency_ms"], r["latency_ms_by_kind"]
    lines = [
        "# HTTP search API under load",
        "",
        f"`{report['command']}`",
        "",
        f"{report['started_at']}; {s['clients']} concurrent clients for {r['seconds']:.0f} s "
        f"(bounded: {s['seconds']:g} s, {s['max_requests']:,} requests); {s['image_share']:.0%} photo uploads, "
        f"the rest id searches; k = {s['k']}.",
        f"Server: {report['server']['url']} ({report['server']['workers']} worker process(es), "
        f"{'started by the load test' if report['server']['started_here'] else 'already running'}), catalog "
        f"version {report['server'].get('catalog_version')} with {report['server'].get('items', 0):,} items.",
        f"Machine: {report['machine_before']['cpus']} CPUs, load average before "
        f"{report['machine_before']['load_average']}, after {report['machine_after']['load_average']}; the clients "
        f"ran on the same machine and used {report['client_cpu_seconds']:.0f} CPU-seconds.",
        "",
        markdown_table(["requests", "errors", "throughput", "p50", "p95", "p99", "max", "p99 / p50"],
                       [[f"{r['requests']:,}", f"{r['errors']:,}", f"{r['throughput_rps']:.1f} req/s",
                         f"{lat['p50']:.1f} ms", f"{lat['p95']:.1f} ms", f"{lat['p99']:.1f} ms", f"{lat['max']:.1f} ms",
                         f"{r['p99_over_p50']:.2f}"]], align="rrrrrrrr"),
        "",
        markdown_table(["kind", "requests", "p50", "p95", "p99"],
                       [[kind, f"{st['requests']:,}", f"{st['p50']:.1f} ms", f"{st['p95']:.1f} ms", f"{st['p99']:.1f} ms"]
                        for kind, st in by.items()]),
    ]
    server = ", ".join(f"{name} {value:.1f}" for name, value in r["server_timing_ms_p50"].items())
    first = r["photo_searches_finding_the_item_first"]
    goals = ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in r["goals"].items())
    lines += ["", f"Server-side timing, p50 (ms): {server}.",
              f"Photo searches whose first result is the uploaded item: "
              f"{'n/a' if first is None else f'{first:.1%}'} (less only where the catalog holds identical images).",
              f"Errors: {r['errors_by_kind'] or 'none'}.", f"Goals: {goals}.", ""]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", type=Path, default=Path(DEFAULT_CATALOG), help="catalog (query photos and ids)")
    parser.add_argument("--model", type=Path, default=Path(DEFAULT_MODEL))
    parser.add_argument("--url", help="a running API on this machine (default: start one on a free port)")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes when the test starts the API")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--image-share", type=float, default=0.5, help="share of requests that upload a photo")
    parser.add_argument("--warmup", type=int, default=16, help="untimed requests first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report prefix: PREFIX.json and PREFIX.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.url:
            check_loopback(args.url)
        queries = load_queries(args.catalog, seed=args.seed)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = "python -m benchmarks.loadtest " + shlex.join(argv if argv is not None else sys.argv[1:])
    with contextlib.ExitStack() as stack:
        if args.url:
            url, started_here = args.url.rstrip("/"), False
        else:
            print(f"starting the API ({args.workers} worker(s))…", file=sys.stderr)
            url, process = stack.enter_context(serve(args.catalog, args.model, args.workers))
            started_here = True
        try:
            health = wait_until_up(url, None if not started_here else process, workers=args.workers)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.warmup:
            run_load(url, queries, clients=args.clients, seconds=60, max_requests=args.warmup, k=args.k,
                     image_share=args.image_share, seed=args.seed + 1)
        print(f"{args.clients} clients for up to {args.seconds:g} s against {url}…", file=sys.stderr)
        before, cpu_before = _machine(), resource.getrusage(resource.RUSAGE_SELF)
        started_at = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        result = run_load(url, queries, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests,
                          k=args.k, image_share=args.image_share, seed=args.seed)
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        after = _machine()
    report = {
        "command": command, "started_at": started_at,
        "settings": {"clients": args.clients, "seconds": args.seconds, "max_requests": args.max_requests, "k": args.k,
                     "image_share": args.image_share, "query_photos": len(queries.photos), "seed": args.seed},
        "server": {"url": url, "workers": args.workers if started_here else len(health.get("worker_pids", [])),
                   "started_here": started_here, "catalog_version": health.get("catalog_version"),
                   "items": health.get("items"), "model_fingerprint": health.get("model_fingerprint")},
        "machine_before": before, "machine_after": after,
        "client_cpu_seconds": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "results": result.summary(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out.with_name(args.out.name + ".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    with atomic_path(args.out.with_name(args.out.name + ".md")) as tmp:
        tmp.write_text(text)
    print(text)
    print(f"wrote {args.out}.json and {args.out}.md", file=sys.stderr)
    return 0 if result.error_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
