"""The prepared GPU benchmark script runs end to end (on the CPU, one epoch, a few hundred photos)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from index.importers import FASHION_MNIST_DIR

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_gpu_script_writes_the_table_of_its_four_methods(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "EPOCHS": "1", "OUT": str(tmp_path / "report"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--limit", "512", "--no-throughput",
                           "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "report" / "benchmark.json").read_text())
    methods = [row["method"] for row in report["rows"]]
    assert methods[2:] == ["Cos", "CoInsP** (sampled)", "MaskCon", "Opt"]
    assert all(0.0 <= row["R@1"] <= 1.0 for row in report["rows"])
    assert "| MaskCon |" in (tmp_path / "report" / "benchmark.md").read_text()


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_gpu_script_runs_the_methods_given_in_METHODS_the_imagenet_rows_included(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "EPOCHS": "1", "OUT": str(tmp_path / "report"), "OMP_NUM_THREADS": "1",
           "METHODS": "imagenet_frozen coinsp_imagenet"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--limit", "64", "--no-throughput",
                           "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "report" / "benchmark.json").read_text())["rows"]
    assert [row["method"] for row in rows[2:]] == ["EfficientNet-Lite0 ImageNet, frozen", "CoInsP** (sampled) from ImageNet"]
    for row in rows[2:]:  # measured, or (without the weights package) skipped with the reason
        assert row["input"] == "112 px, 3 ch, efficientnet_lite0 ImageNet grid 1"
        if "skipped" in row:
            assert "requirements-pretrained.txt" in row["skipped"]
        else:
            assert 0.0 <= row["R@1"] <= 1.0


def test_gpu_script_refuses_cuda_without_a_device_clearly(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh")], env={**os.environ, "OUT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
