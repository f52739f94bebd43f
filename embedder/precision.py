"""Which arithmetic a model runs in on this machine: fp32, or bf16 autocast.

bf16 is fast only where the processor has bf16 units (AMX, or a GPU); elsewhere PyTorch emulates it
and it is several times slower than fp32 (an EPYC without AMX: EfficientNet-Lite0 at 224 px 399 ms
a photo in bf16, 26.7 ms in fp32). So the choice is measured, never read from a checkpoint or a
catalog: a short timing in both of the model that will run (or, for training, of a small stand-in
network), made at first use and remembered per processor model, PyTorch version, task and model in a
small JSON file under the user's cache folder ($COINSP_CACHE_DIR, else $XDG_CACHE_HOME/coinsp, else ~/.cache/coinsp).

Precedence: an explicit "fp32" / "bf16" from the caller, then $COINSP_PRECISION, then the cache,
then a measurement. "auto" (or None) asks for the measured choice.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from embedder.files import atomic_path

CHOICES = ("fp32", "bf16")
ENV_VARIABLE = "COINSP_PRECISION"
CACHE_FILE = "precision.json"
TASKS = ("inference", "training")
# bf16 must win by this much: at a tie fp32 is preferred, since its results do not depend on the machine.
MARGIN = 0.85


class PrecisionError(ValueError):
    """A precision that is not one of fp32, bf16, auto."""


def cache_dir() -> Path:
    explicit = os.environ.get("COINSP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "coinsp"


def processor_name() -> str:
    """The CPU's model name (what decides whether bf16 has hardware behind it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_key(device: str | torch.device, task: str) -> str:
    device = torch.device(device)
    where = processor_name()
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} on {where}"
    return f"{device.type}|{where}|torch {torch.__version__}|{task}"


def _probe_network() -> nn.Module:
    """A few blocks shaped like a mobile network's (strided conv, depthwise 3x3, pointwise, batch norm)."""
    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                             nn.ReLU6(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(inplace=True),
                         block(32, 64, 1), block(64, 96, 2), block(96, 160, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(160, 128))


def measure(device: str | torch.device = "cpu", task: str = "inference", repeats: int = 3, *,
            network: nn.Module | None = None, example: torch.Tensor | None = None) -> dict:
    """Milliseconds of one batch in fp32 and in bf16 autocast, best of `repeats` (taken in turns, so
    that a busy machine slows both alike). `network` and `example`: the model that will run and an
    input of the shape it will get (inference only); otherwise a small mobile-style network on 8
    images of 96 px."""
    device = torch.device(device)
    if network is None or task == "training":
        torch.manual_seed(0)
        network = _probe_network().to(device, memory_format=torch.channels_last).train(task == "training")
        example = torch.randn(8, 3, 96, 96)
    x = example.to(device).contiguous(memory_format=torch.channels_last)
    best = {p: float("inf") for p in CHOICES}
    for attempt in range(repeats + 1):  # the first round warms up kernels and is not counted
        for precision in CHOICES:
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                if task == "training":
                    network(x).float().square().mean().backward()
                else:
                    with torch.inference_mode():
                        network(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if attempt:
                best[precision] = min(best[precision], time.perf_counter() - started)
    timings = {f"{p}_ms": round(best[p] * 1000, 3) for p in CHOICES}
    faster = best["bf16"] < MARGIN * best["fp32"]
    return {**timings, "choice": "bf16" if faster else "fp32",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def check_precision(precision: str | None) -> str | None:
    """fp32 / bf16 as given; None for "auto" or None; PrecisionError for anything else."""
    if precision in (None, "auto"):
        return None
    if precision not in CHOICES:
        raise PrecisionError(f"precision must be one of fp32, bf16, auto, not {precision!r}")
    return precision


def choose_precision(requested: str | None = None, device: str | torch.device = "cpu", task: str = "inference",
                     *, network: nn.Module | None = None, example: torch.Tensor | None = None, label: str = "",
                     measure_with: Callable[..., dict] = measure) -> str:
    """The precision to run in: `requested` if it is fp32 / bf16, else $COINSP_PRECISION, else the
    measured choice for this machine (cached). A checkpoint's or catalog's recorded precision is
    not a request: it says how the stored vectors were made, not how this machine should run.
    network, example, label: measure this model on this input (cached under `label`, e.g. the
    architecture and input size) instead of the small stand-in network."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    explicit = check_precision(requested)
    if explicit:
        return explicit
    from_env = os.environ.get(ENV_VARIABLE, "").strip().lower()
    if from_env:
        try:
            chosen = check_precision(from_env)
        except PrecisionError:
            raise PrecisionError(f"${ENV_VARIABLE} must be fp32, bf16 or auto, not {from_env!r}") from None
        if chosen:
            return chosen
    path, key = cache_dir() / CACHE_FILE, machine_key(device, task) + (f"|{label}" if label and network else "")
    cached = _read_cache(path).get(key)
    if isinstance(cached, dict) and cached.get("choice") in CHOICES:
        return cached["choice"]
    result = measure_with(device, task, network=network, example=example) if network is not None \
        else measure_with(device, task)
    try:  # a read-only home still runs, it measures again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = _read_cache(path)
        entries[key] = result
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass
    return result["choice"]


def autocast(device: str | torch.device, precision: str):
    """The autocast context of a resolved precision (fp32: disabled)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
