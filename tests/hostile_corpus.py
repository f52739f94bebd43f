"""Hostile inputs, generated on demand (no binary files in the repository), each with what the
product must do with it.

`make_hostile_corpus(folder)` writes the files below and returns {name: HostileFile}:

Images (under `folder/catalog/images/`):
    plain.jpg          an ordinary 48x32 JPEG photo (the control: decodes)
    truncated.jpg      the first half of a JPEG: refused, "corrupt or truncated"
    zero-bytes.jpg     an empty file: refused, "empty"
    text.png           a text file named .png: refused, "not a readable image"
    grey16.png         a 16-bit greyscale PNG: decodes to RGB, white stays white (not clipped)
    cmyk.jpg           a CMYK JPEG (print workflows): decodes to RGB
    palette-alpha.png  a palette PNG whose colour 0 is transparent: decodes, transparent parts white
    exif-rotated.jpg   stored 40x20 (red left, blue right) with EXIF orientation 6: decodes upright
                       as 20x40, red on top
    bomb.png           a ~400 KB PNG whose header says 20,000 x 20,000 (400 Mpx, 400 MB once
                       decompressed; the pixel data is really there): refused, "too large",
                       before any pixel is allocated
    animated.gif       a two-frame GIF (red, then blue): decodes to the first (red) frame

Manifests (beside `images/`, so `folder/catalog/` is the catalog's image root):
    manifest.csv           every image above, one row each (good ones must be indexed, bad ones
                           skipped with their reason)
    escaping-manifest.csv  plain.jpg plus rows `../outside/sentinel.png` and the absolute path of
                           the same sentinel: refused (ManifestError), nothing outside the root read
    outside/sentinel.png   (in `folder/outside/`) a valid image outside the catalog root: if it
                           ever ends up in a catalog, something read outside the root

Checkpoint:
    evil.pt   a torch checkpoint with this product's format tag whose pickle, when unpickled
              without weights_only, calls open(marker, "w") (a harmless stand-in for running
              code): loading must fail with "not a safe, readable model checkpoint" and the
              marker file (`HostileFile.marker`, in `folder/`) must not exist afterwards
"""
from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

BOMB_SIDE = 20_000
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
HOSTILE_IMAGE_NAMES = ("plain.jpg", "truncated.jpg", "zero-bytes.jpg", "text.png", "grey16.png", "cmyk.jpg",
                       "palette-alpha.png", "exif-rotated.jpg", "bomb.png", "animated.gif")


@dataclass(frozen=True)
class HostileFile:
    """One hostile input and the handling the product owes it.

    kind: "image", "manifest" or "checkpoint".
    error: a fragment of the error message when it must be refused (None: it must be accepted).
    size: for accepted images, the (width, height) of the decoded RGB image.
    pixels: for accepted images, ((x, y), rgb) points the decoded image must show (within 40 per
        channel: JPEG is lossy).
    marker: for the checkpoint, the file its payload would create if its code ever ran.
    """
    name: str
    path: Path
    kind: str
    description: str
    error: str | None = None
    size: tuple[int, int] | None = None
    pixels: tuple[tuple[tuple[int, int], tuple[int, int, int]], ...] = ()
    marker: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        return self.error is not None

    def expectation(self) -> str:
        if self.refused:
            return f"refused: {self.error!r}"
        if self.size:
            return f"decodes to RGB of size {self.size[0]}x{self.size[1]}"
        return "accepted"


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _photo(width: int = 48, height: int = 32) -> Image.Image:
    """A small photo-like image: a gradient with a dark block (something for a model to see)."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    pixels[height // 4: height // 2, width // 4: width // 2] = 20
    return Image.fromarray(pixels, "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=1)
def _bomb_png() -> bytes:
    """A real 20k x 20k 8-bit grey PNG of zeros: 400 MB of pixels in about 400 KB (about 1 s to make)."""
    compressor = zlib.compressobj(9)
    row = bytes(BOMB_SIDE + 1)  # filter byte + one byte per pixel
    data = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


class _OpensAFile:
    """Unpickling this calls open(marker, "w"): any code execution would do; this one leaves a trace."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A torch checkpoint with this product's format tag whose pickle would create `marker`."""
    import torch

    from embedder.checkpoint import FORMAT

    torch.save({"format": FORMAT, "fingerprint": "0" * 16, "payload": _OpensAFile(marker)}, path)
    return path


def make_hostile_corpus(folder: str | Path) -> dict[str, HostileFile]:
    """Write every hostile input under `folder` (see the module docstring); {name: HostileFile}."""
    folder = Path(folder)
    root = folder / "catalog"
    images = root / "images"
    outside = folder / "outside"
    images.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, HostileFile] = {}

    def image(name: str, data: bytes, description: str, **expect) -> None:
        path = images / name
        path.write_bytes(data)
        corpus[name] = HostileFile(name, path, "image", description, **expect)

    plain = _encode(_photo(), "JPEG", quality=90)
    image("plain.jpg", plain, "an ordinary JPEG photo", size=(48, 32))
    image("truncated.jpg", plain[: len(plain) // 2], "the first half of a JPEG", error="corrupt or truncated")
    image("zero-bytes.jpg", b"", "an empty file", error="empty")
    image("text.png", b"Order #1234: 2 shirts, 1 hat. Thank you for shopping!\n" * 4,
          "a text file named .png", error="not a readable image")
    grey = np.tile(np.linspace(0, 65535, 24, dtype=np.uint16), (16, 1))
    image("grey16.png", _encode(Image.fromarray(grey), "PNG"), "a 16-bit greyscale PNG",
          size=(24, 16), pixels=(((23, 0), WHITE),))
    image("cmyk.jpg", _encode(_photo().convert("CMYK"), "JPEG", quality=95), "a CMYK JPEG", size=(48, 32))
    palette = Image.new("P", (20, 12), 1)
    palette.putpalette([0, 0, 0, 0, 128, 0] + [0, 0, 0] * 254)
    palette.paste(0, (0, 0, 10, 12))  # left half: colour 0, transparent
    image("palette-alpha.png", _encode(palette, "PNG", transparency=0), "a palette PNG with a transparent colour",
          size=(20, 12), pixels=(((2, 6), WHITE), ((15, 6), (0, 128, 0))))
    rotated = Image.new("RGB", (40, 20), RED)
    rotated.paste(BLUE, (20, 0, 40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left (red) half ends on top
    image("exif-rotated.jpg", _encode(rotated, "JPEG", quality=95, exif=exif),
          "a JPEG stored sideways with EXIF orientation 6", size=(20, 40), pixels=(((10, 5), RED), ((10, 34), BLUE)))
    image("bomb.png", _bomb_png(), f"a decompression bomb: {BOMB_SIDE:,}x{BOMB_SIDE:,} pixels in a small PNG",
          error="too large", extra={"claimed_pixels": BOMB_SIDE * BOMB_SIDE})
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    image("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
          "an animated GIF (red frame, then blue)", size=(16, 16), pixels=(((8, 8), RED),))

    manifest = root / "manifest.csv"
    pd.DataFrame([{"path": f"images/{name}", "category": "hostile", "product_id": name}
                  for name in corpus]).to_csv(manifest, index=False)
    corpus["manifest.csv"] = HostileFile("manifest.csv", manifest, "manifest",
                                         "every hostile image, one row each", size=None,
                                         extra={"good": sorted(n for n, f in corpus.items() if not f.refused),
                                                "bad": sorted(n for n, f in corpus.items() if f.refused)})

    sentinel = outside / "sentinel.png"
    sentinel.write_bytes(_encode(_photo(), "PNG"))
    escaping = root / "escaping-manifest.csv"
    pd.DataFrame([{"path": "images/plain.jpg", "category": "hostile", "product_id": "plain"},
                  {"path": "../outside/sentinel.png", "category": "hostile", "product_id": "up"},
                  {"path": str(sentinel.absolute()), "category": "hostile", "product_id": "absolute"}]
                 ).to_csv(escaping, index=False)
    corpus["escaping-manifest.csv"] = HostileFile(
        "escaping-manifest.csv", escaping, "manifest", "rows with ../ and an absolute path outside the catalog root",
        error="must be relative and stay inside", extra={"sentinel": sentinel})

    marker = folder / "evil-code-ran.txt"
    evil = write_malicious_checkpoint(folder / "evil.pt", marker)
    corpus["evil.pt"] = HostileFile("evil.pt", evil, "checkpoint", "a checkpoint whose pickle runs code",
                                    error="not a safe, readable model checkpoint", marker=marker)
    return corpus


def hostile_images(corpus: dict[str, HostileFile]) -> list[HostileFile]:
    return [f for f in corpus.values() if f.kind == "image"]
