"""A learned product mask: which pixels of a photo are the product, where hand rules stop
(a product on a strongly textured backdrop, a light product on a light table).

A small U-Net (three scales, a global-context channel at the bottom) reads the photo as the
normalisation analyses it (shrunk to at most 128 px) and gives each pixel the probability
that it is product. It is trained on composites that cost nothing to label (training items
pasted on generated backdrops, `python -m training mask`) and ships small in `models/` with
its own fingerprint; an embedding checkpoint names the mask model it was measured with.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from embedder.files import atomic_path

DEFAULT_MASK_MODEL = Path(__file__).resolve().parent.parent / "models" / "product-mask.pt"
MASK_MODEL_ENV = "COINSP_MASK_MODEL"  # another mask model file, or "none" for the hand rules only
KIND = "product-mask"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MaskNet(nn.Module):
    """RGB (B, 3, H, W) in 0..1, H and W multiples of 8 -> product logits (B, 1, H, W)."""

    def __init__(self, width: int = 12):
        super().__init__()
        w = width
        self.width = width
        self.enc1, self.enc2, self.enc3 = _block(5, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.bottom = _block(8 * w, 4 * w)  # the deepest map beside its global average: what the backdrop is
        self.dec3, self.dec2, self.dec1 = _block(8 * w, 2 * w), _block(4 * w, w), _block(2 * w, w)
        self.out = nn.Conv2d(w, 1, 1)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = rgb.shape
        ys = torch.linspace(-1, 1, h, device=rgb.device).view(1, 1, h, 1).expand(b, 1, h, w)
        xs = torch.linspace(-1, 1, w, device=rgb.device).view(1, 1, 1, w).expand(b, 1, h, w)
        x = torch.cat([rgb * 2 - 1, xs, ys], dim=1)  # where a pixel lies: products sit inside the frame
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        deep = F.max_pool2d(e3, 2)
        context = deep.mean(dim=(2, 3), keepdim=True).expand_as(deep)
        d = self.bottom(torch.cat([deep, context], dim=1))
        d = self.dec3(torch.cat([F.interpolate(d, size=e3.shape[2:], mode="nearest"), e3], dim=1))
        d = self.dec2(torch.cat([F.interpolate(d, size=e2.shape[2:], mode="nearest"), e2], dim=1))
        d = self.dec1(torch.cat([F.interpolate(d, size=e1.shape[2:], mode="nearest"), e1], dim=1))
        return self.out(d)


def padded(pixels: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) float 0..1 -> (1, 3, H', W') with H', W' the next multiples of 8 (edge-replicated)."""
    h, w, _ = pixels.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class ProductMask:
    """A loaded mask model: `probability(pixels)` on the analysis grid."""

    def __init__(self, net: MaskNet, fingerprint: str, source: str = ""):
        self.net = net.eval()
        self.fingerprint = fingerprint
        self.source = source
        self._lock = threading.Lock()  # BatchNorm in eval is stateless, but one forward at a time keeps threads cheap

    @torch.inference_mode()
    def probability(self, pixels: np.ndarray) -> np.ndarray:
        """(H, W, 3) float32 0..1 (the analysis grid) -> (H, W) float32 probability of product."""
        x, (h, w) = padded(pixels.astype(np.float32, copy=False))
        with self._lock:
            logits = self.net(x)
        return torch.sigmoid(logits[0, 0, :h, :w]).numpy()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ProductMask":
        """Load safely (weights only, no pickled code); ValueError when the file is not a mask model
        of this product or its weights no longer match their recorded fingerprint."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for unsafe or damaged files
            raise ValueError(f"{path} is not a readable mask model ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("kind") != KIND:
            raise ValueError(f"{path} is not a product-mask model")
        actual = mask_fingerprint(payload["state"], payload["net_kwargs"])
        if actual != payload.get("fingerprint"):
            raise ValueError(f"{path} was changed after it was written (fingerprint {actual}, recorded "
                             f"{payload.get('fingerprint')})")
        net = MaskNet(**payload["net_kwargs"])
        net.load_state_dict(payload["state"])
        return cls(net, actual, str(path))


def mask_fingerprint(state: dict, net_kwargs: dict) -> str:
    digest = hashlib.sha256(json.dumps(net_kwargs, sort_keys=True).encode())
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_mask(path: str | os.PathLike, net: MaskNet, **extra) -> str:
    """Write the mask model atomically (weights, settings, what it was trained on); returns its fingerprint."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    net_kwargs = {"width": net.width}
    fingerprint = mask_fingerprint(state, net_kwargs)
    with atomic_path(path) as tmp:
        torch.save({"kind": KIND, "state": state, "net_kwargs": net_kwargs, "fingerprint": fingerprint, **extra}, tmp)
    return fingerprint


_loaded: dict[str, ProductMask | None] = {}
_load_lock = threading.Lock()


def default_mask() -> ProductMask | None:
    """The shipped mask model (models/product-mask.pt, or $COINSP_MASK_MODEL; "none" turns it off),
    loaded once per process; None, with one warning, when the file is missing or unreadable:
    the normalisation then uses its hand rules alone."""
    choice = os.environ.get(MASK_MODEL_ENV, "")
    if choice.lower() == "none":
        return None
    path = Path(choice) if choice else DEFAULT_MASK_MODEL
    key = str(path)
    with _load_lock:
        if key not in _loaded:
            try:
                _loaded[key] = ProductMask.load(path)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                warnings.warn(f"product mask model {path} not loaded ({exc}); finding products by the hand rules only",
                              stacklevel=2)
                _loaded[key] = None
        return _loaded[key]
