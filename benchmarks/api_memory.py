"""Memory of one HTTP API worker under the worst photos the decoder accepts.

    python -m benchmarks.api_memory [--catalog catalogs/fashion-mnist-test] [--model models/coinsp-fmnist.pt] \\
        [--requests 200] [--clients 16] [--budget-growth-mb 600] [--code DIR] [--out reports/api_memory]

Starts `python -m app.api` with one worker on a free 127.0.0.1 port (from the checkout --code,
default this one, so an older version can be measured the same way), then sends --requests
uploads from --clients concurrent clients, cycling through images just under the decoder's pixel
limit (7000 x 7000 = 49 Mpx): a 16-bit grey PNG, a 48-bit RGB PNG, a 32-bit float TIFF (each a
few hundred KB; PIL needs 2 to 4 bytes a pixel to decode them) and a 7000 x 7000 JPEG. It samples
the worker's resident memory (/proc/PID/status) every 50 ms and reports: RSS once started, the
peak (VmHWM), RSS after the last answer and after 5 s idle, the answers by status, and whether
the peak and the RSS after the last answer stayed within --budget-growth-mb of the RSS once
started (the stated budget: 2 photo slots of about 230 MB each, docs/api.md "Memory per
worker"). Writes OUT.json and OUT.md; exit status 1 over budget.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIDE = 7000
START_TIMEOUT_S = 180


def worst_images() -> dict[str, bytes]:
    """Images just under the pixel limit, the generators of the hostile-input tests."""
    from tests.support.hostile_corpus import float32_tiff, grey16_png, rgb16_png  # run from the repository root
    from PIL import Image

    y, x = np.mgrid[0:SIDE, 0:SIDE]
    pixels = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels).save(jpeg, "JPEG", quality=85)
    return {"grey16-49mpx.png": grey16_png(SIDE), "rgb48-49mpx.png": rgb16_png(SIDE),
            "float32-49mpx.tif": float32_tiff(SIDE), "rgb-49mpx.jpg": jpeg.getvalue()}


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return fields


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with status {process.returncode} before answering")
        try:
            if httpx.get(url + "/health", timeout=10).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API did not answer within {START_TIMEOUT_S} s")


def measure(args) -> dict:
    import httpx

    images = worst_images()
    port = free_port()
    code = Path(args.code).resolve()
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "app.api", "--catalog", str(Path(args.catalog).resolve()), "--model",
               str(Path(args.model).resolve()), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--no-access-log"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(url, process)
            started = memory_mb(process.pid)["VmRSS"]
            samples, stop = [], threading.Event()

            def sample():
                while not stop.is_set():
                    samples.append(memory_mb(process.pid)["VmRSS"])
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            names = list(images)
            began = time.perf_counter()
            with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=args.clients)) as http:
                def ask(i: int) -> int:
                    name = names[i % len(names)]
                    return http.post("/search", files={"image": (name, images[name])}, data={"k": "5"}).status_code

                with ThreadPoolExecutor(args.clients) as pool:
                    statuses = Counter(pool.map(ask, range(args.requests)))
                seconds = time.perf_counter() - began
                after = memory_mb(process.pid)
                time.sleep(5)
                idle = memory_mb(process.pid)["VmRSS"]
                good = http.get("/health").json().get("status")
            stop.set()
            sampler.join()
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    peak = max(after["VmHWM"], max(samples, default=0))
    return {"code": str(code), "requests": args.requests, "clients": args.clients,
            "images": {name: len(data) for name, data in images.items()}, "seconds": round(seconds, 1),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "rss_mb": {"started": round(started, 1), "peak": round(peak, 1), "after_requests": round(after["VmRSS"], 1),
                       "after_5s_idle": round(idle, 1)},
            "health_after": good, "budget_growth_mb": args.budget_growth_mb,
            "within_budget": max(peak, after["VmRSS"]) - started <= args.budget_growth_mb,
            "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def markdown(result: dict) -> str:
    rss = result["rss_mb"]
    return "\n".join([
        "# One API worker under the worst photos the decoder accepts",
        "",
        f"`python -m benchmarks.api_memory --requests {result['requests']} --clients {result['clients']}` "
        f"(code: `{result['code']}`), {result['cpus']} CPUs, load average {result['load_average']}.",
        "",
        "Images, cycled: " + ", ".join(f"{name} ({size / 1024:.0f} KB)" for name, size in result["images"].items()),
        "",
        "| RSS once started | peak | after the last answer | after 5 s idle | answers | time |",
        "|---|---|---|---|---|---|",
        f"| {rss['started']:.0f} MB | {rss['peak']:.0f} MB | {rss['after_requests']:.0f} MB | "
        f"{rss['after_5s_idle']:.0f} MB | {result['statuses']} | {result['seconds']:.0f} s |",
        "",
        f"Budget: at most {result['budget_growth_mb']:.0f} MB over the RSS once started, at the peak and after "
        f"the last answer: {'within' if result['within_budget'] else 'OVER'}; "
        f"/health afterwards: {result['health_after']}.",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalog", default="catalogs/fashion-mnist-test")
    parser.add_argument("--model", default="models/coinsp-fmnist.pt")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--budget-growth-mb", type=float, default=600.0,
                        help="how far above its RSS once started the worker may go (default 600)")
    parser.add_argument("--code", default=str(ROOT), help="checkout whose app.api to run (default: this one)")
    parser.add_argument("--out", default="reports/api_memory", help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    result = measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if result["within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
