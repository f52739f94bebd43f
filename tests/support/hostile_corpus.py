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
    exif-rotated.heic/.avif  the same as an iPhone (HEIC) or AVIF photo, orientation 6 in the file's
                       irot box and its EXIF: decodes upright once, as 20x40, red on top
    truncated.heic/.avif  the first half of those: refused, "corrupt or truncated"
    bomb.png           a ~400 KB PNG whose header says 20,000 x 20,000 (400 Mpx, 400 MB once
                       decompressed; the pixel data is really there): refused, "too large",
                       before any pixel is allocated
    animated.gif       a two-frame GIF (red, then blue): decodes to the first (red) frame
    broken-exif.png/.webp/.jpg  an EXIF block that is not TIFF data: decodes as stored (40x20)
    huge-icc.png       an ICC profile inflating to 4 MB (over PIL's 1 MB cap): decodes

Large images (kind "large image": over small test upload caps, or about 1 s to decode):
    grey16-49mpx.png, float32-49mpx.tif   7000x7000 (just under the 50 Mpx limit) in a few
                       hundred KB: decode to 2048x2048 RGB, black left, white right
    huge-exif.png      an 8 MB EXIF block with orientation 6; huge-icc.jpg: a 2 MB ICC profile

Paths (kind "path": hostile as paths, for the doors that take one):
    link-to-proc-mem.png, link-to-dev-zero.jpg   symbolic links to special files: refused
    link-outside-root.png   a link to outside/sentinel.png: decoded when given directly, skipped by build/add
    ..dots..in-name.jpg, new<newline>line.jpg, unicodé-鞋-👟.jpg   ordinary photos, odd names
    name-longer-than-name-max.jpg   a manifest row whose file name exceeds NAME_MAX: refused

Manifests (beside `images/`, so `folder/catalog/` is the catalog's image root):
    manifest.csv           every image above, one row each (good ones must be indexed, bad ones
                           skipped with their reason)
    escaping-manifest.csv  plain.jpg plus rows `../outside/sentinel.png` and the absolute path of
                           the same sentinel: refused (ManifestError), nothing outside the root read
    outside/sentinel.png   (in `folder/outside/`) a valid image outside the catalog root: if it
                           ever ends up in a catalog, something read outside the root

Checkpoints:
    settings-changed.pt, unknown-backbone.pt, unknown-preprocessing.pt, wrong-shapes.pt
              edited after writing (a small model's settings no longer match its weights): refused
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
                       "palette-alpha.png", "exif-rotated.jpg", "bomb.png", "animated.gif", "broken-exif.png",
                       "broken-exif.webp", "broken-exif.jpg", "huge-icc.png", "exif-rotated.heic", "truncated.heic",
                       "exif-rotated.avif", "truncated.avif")
# Just under the decoder's pixel limit, or with metadata blobs far beyond the usual few KB: each
# is larger than a small test upload cap, or slow enough (about 1 s) to keep out of loops.
LARGE_IMAGE_NAMES = ("grey16-49mpx.png", "float32-49mpx.tif", "huge-exif.png", "huge-icc.jpg")
# Hostile as paths, not as contents: for the doors that take a path (CLI, manifests).
HOSTILE_PATH_NAMES = ("link-to-proc-mem.png", "link-to-dev-zero.jpg", "link-outside-root.png", "..dots..in-name.jpg",
                      "new\nline.jpg", "unicodé-鞋-👟.jpg", "name-longer-than-name-max.jpg")
NEAR_LIMIT_SIDE = 7000  # 49 Mpx, under embedder.images.MAX_PIXELS (50 Mpx)
NAME_MAX = 255


@dataclass(frozen=True)
class HostileFile:
    """One hostile input and the handling the product owes it.

    kind: "image", "manifest" or "checkpoint".
    error: a fragment of the error message when it must be refused (None: it must be accepted).
    size: for accepted images, the (width, height) of the decoded RGB image.
    pixels: for accepted images, ((x, y), rgb) points the decoded image must show (within 40 per
        channel: JPEG is lossy).
    marker: for the checkpoint, the file its payload would create if its code ever ran.
    catalog_error: a fragment of the reason build and add skip it with, though the decoder reads it (a link
        leading outside the image folder).
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
    catalog_error: str | None = None

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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, first_row: bytes, *chunks: bytes) -> bytes:
    """A PNG whose rows all repeat the first (filter "Up" with zero differences): any size in a few KB."""
    compressor = zlib.compressobj(9)
    same_as_above = b"\x02" + bytes(len(first_row))
    data = compressor.compress(b"\x00" + first_row)
    data += b"".join(compressor.compress(same_as_above) for _ in range(height - 1)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (PNG_SIGNATURE + _png_chunk(b"IHDR", header) + b"".join(chunks) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


@functools.lru_cache(maxsize=2)
def grey16_png(side: int) -> bytes:
    """A side x side 16-bit grey PNG, black (left) to white (right), in a few KB."""
    row = np.linspace(0, 65535, side).astype(">u2").tobytes()
    return _png(side, side, 16, 0, row)


def rgb16_png(side: int) -> bytes:
    """A side x side 48-bit RGB PNG (PIL holds it as 8-bit RGB at 4 bytes a pixel), in a few KB."""
    ramp = np.linspace(0, 65535, side)
    row = np.stack([ramp, ramp[::-1], np.full_like(ramp, 32768)], axis=-1).astype(">u2").tobytes()
    return _png(side, side, 16, 2, row)


@functools.lru_cache(maxsize=2)
def float32_tiff(side: int) -> bytes:
    """A side x side 32-bit float grey TIFF, 0.0 (left) to 1.0 (right): every strip points at the
    same deflated row, so 200 MB of pixels take a few KB."""
    row = zlib.compress(np.linspace(0.0, 1.0, side, dtype="<f4").tobytes(), 9)
    entries = [  # (tag, type, count, value): type 3 SHORT, 4 LONG
        (256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 32), (259, 3, 1, 8), (262, 3, 1, 1),
        (273, 4, side, None), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, side, None), (339, 3, 1, 3),
    ]
    ifd_at = 8
    arrays_at = ifd_at + 2 + 12 * len(entries) + 4
    row_at = arrays_at + 8 * side
    arrays = {273: struct.pack(f"<{side}I", *([row_at] * side)), 279: struct.pack(f"<{side}I", *([len(row)] * side))}
    ifd, offset = struct.pack("<H", len(entries)), arrays_at
    for tag, kind, count, value in entries:
        if value is None:
            ifd += struct.pack("<HHII", tag, kind, count, offset)
            offset += len(arrays[tag])
        else:
            ifd += struct.pack("<HHI", tag, kind, count) + struct.pack("<I" if kind == 4 else "<HH", value, *(
                () if kind == 4 else (0,)))
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + ifd + arrays[273] + arrays[279] + row


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
    _add_phone_formats(image, rotated)
    image("bomb.png", _bomb_png(), f"a decompression bomb: {BOMB_SIDE:,}x{BOMB_SIDE:,} pixels in a small PNG",
          error="too large", extra={"claimed_pixels": BOMB_SIDE * BOMB_SIDE})
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, BLUE)]
    image("animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
          "an animated GIF (red frame, then blue)", size=(16, 16), pixels=(((8, 8), RED),))

    _add_broken_metadata(image, rotated)
    _add_near_limit(corpus, images)
    _add_hostile_paths(corpus, images, outside)

    manifest = root / "manifest.csv"
    pd.DataFrame([{"path": f"images/{f.path.name}", "category": "hostile", "product_id": name}
                  for name, f in corpus.items()]).to_csv(manifest, index=False)
    corpus["manifest.csv"] = HostileFile("manifest.csv", manifest, "manifest",
                                         "every hostile image, one row each", size=None,
                                         extra={"good": sorted(n for n, f in corpus.items()
                                                               if not f.refused and not f.catalog_error),
                                                "bad": sorted(n for n, f in corpus.items()
                                                              if f.refused or f.catalog_error)})

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
    _add_inconsistent_checkpoints(corpus, folder)
    return corpus


def _add_inconsistent_checkpoints(corpus: dict[str, HostileFile], folder: Path) -> None:
    """Checkpoints edited after they were written: settings that no longer match the weights."""
    import torch

    from embedder.backbones import build_backbone
    from embedder.checkpoint import model_fingerprint, save_checkpoint
    from embedder.preprocess import Preprocessing

    spec = {"name": "smallcnn", "kwargs": {"in_channels": 3, "width": 4, "grid": 1}}
    good = save_checkpoint(folder / "small-model.pt", backbone_spec=spec, backbone=build_backbone("smallcnn", **spec["kwargs"]),
                           preprocessing=Preprocessing(size=32, channels=3), categories=["hostile"], config={})
    original = torch.load(folder / "small-model.pt", weights_only=True)
    assert original["fingerprint"] == good

    def variant(name: str, description: str, error: str, refingerprint: bool = True, **changes) -> None:
        payload = {**original, **changes}
        if refingerprint:  # consistent with itself: only the deeper checks can refuse it
            payload["fingerprint"] = model_fingerprint(payload["backbone"], payload["backbone_state"],
                                                       payload["preprocessing"])
        torch.save(payload, folder / name)
        corpus[name] = HostileFile(name, folder / name, "checkpoint", description, error=error)

    variant("settings-changed.pt", "the backbone's settings changed (grid 1 -> 2), the fingerprint copied",
            "was changed after it was written", refingerprint=False,
            backbone={"name": "smallcnn", "kwargs": {**spec["kwargs"], "grid": 2}})
    variant("unknown-backbone.pt", "a backbone name this product does not know", "is not one this product knows",
            backbone={"name": "vit_giant", "kwargs": {}})
    variant("unknown-preprocessing.pt", "a preprocessing key this product does not know",
            "settings this product does not know", preprocessing={**original["preprocessing"], "gamma": 2.2})
    variant("wrong-shapes.pt", "weights of a narrower network than its settings say",
            "weights do not fit", backbone={"name": "smallcnn", "kwargs": {**spec["kwargs"], "width": 8}})


def hostile_images(corpus: dict[str, HostileFile]) -> list[HostileFile]:
    """The small hostile image files: any door that takes an upload or a path can be given these."""
    return [f for f in corpus.values() if f.kind == "image"]


def large_hostile_images(corpus: dict[str, HostileFile]) -> list[HostileFile]:
    return [f for f in corpus.values() if f.kind == "large image"]


def hostile_paths(corpus: dict[str, HostileFile]) -> list[HostileFile]:
    return [f for f in corpus.values() if f.kind == "path"]


def _add_phone_formats(image, rotated: Image.Image) -> None:
    """HEIC (iPhones' camera format) and AVIF photos stored sideways with orientation 6; their first halves."""
    from tests.support.heic_files import heic

    exif = Image.Exif()
    exif[0x0112] = 6  # the encoders write it into the file's irot box too, as phones do
    upright = {"size": (20, 40), "pixels": (((10, 5), RED), ((10, 34), BLUE))}
    for kind, data in (("heic", heic(rotated, quality=90, exif=exif.tobytes())),
                       ("avif", _encode(rotated, "AVIF", quality=90, exif=exif.tobytes()))):
        image(f"exif-rotated.{kind}", data, f"a {kind.upper()} photo stored sideways with orientation 6", **upright)
        image(f"truncated.{kind}", data[: len(data) // 2], f"the first half of a {kind.upper()} photo",
              error="corrupt or truncated")


def _add_broken_metadata(image, rotated: Image.Image) -> None:
    """Broken EXIF in PNG, WebP and JPEG; a PNG whose ICC profile inflates to 4 MB."""
    garbage = b"XX not a TIFF header, whatever an editor wrote here"
    expect = {"size": (40, 20), "pixels": (((5, 10), RED), ((34, 10), BLUE))}  # orientation ignored, pixels kept
    image("broken-exif.png", _encode(rotated, "PNG", exif=garbage), "a PNG whose eXIf chunk is not TIFF data", **expect)
    image("broken-exif.webp", _encode(rotated, "WEBP", lossless=True, exif=garbage),
          "a WebP whose EXIF chunk is not TIFF data", **expect)
    image("broken-exif.jpg", _encode(rotated, "JPEG", quality=95, exif=b"Exif\x00\x00" + garbage),
          "a JPEG whose APP1 EXIF block is not TIFF data", **expect)
    profile = _png_chunk(b"iCCP", b"huge\x00\x00" + zlib.compress(bytes(4 * 1024 * 1024), 9))
    first_row = np.repeat(np.array([RED, BLUE], np.uint8), 20, axis=0).tobytes()
    image("huge-icc.png", _png(40, 20, 8, 2, first_row, profile),
          "a PNG whose ICC profile inflates to 4 MB (PIL refuses more than 1 MB of compressed metadata)", **expect)


def _add_near_limit(corpus: dict[str, HostileFile], images: Path) -> None:
    """16-bit and 32-bit images just under the pixel limit; huge EXIF and ICC blobs."""
    side = NEAR_LIMIT_SIDE

    def large(name: str, data: bytes, description: str, **expect) -> None:
        path = images / name
        path.write_bytes(data)
        corpus[name] = HostileFile(name, path, "large image", description, **expect)

    shrunk = {"size": (2048, 2048), "pixels": (((2, 1000), (0, 0, 0)), ((2045, 1000), WHITE))}
    large("grey16-49mpx.png", grey16_png(side), f"a {side}x{side} 16-bit grey PNG (49 Mpx) of about 130 KB",
          **shrunk)
    large("float32-49mpx.tif", float32_tiff(side), f"a {side}x{side} 32-bit float TIFF (49 Mpx) of about 80 KB",
          **shrunk)
    tiff = b"II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x01\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x00"
    blob = tiff + bytes(8 * 1024 * 1024)  # orientation 6, then 8 MB of padding
    sideways = Image.new("RGB", (40, 20), RED)
    sideways.paste(BLUE, (20, 0, 40, 20))
    large("huge-exif.png", _encode(sideways, "PNG", exif=blob), "a PNG with an 8 MB EXIF block (orientation 6)",
          size=(20, 40), pixels=(((10, 5), RED), ((10, 34), BLUE)))
    profile = bytes(range(256)) * (2 * 1024 * 1024 // 256)  # 2 MB, in 32 APP2 segments
    large("huge-icc.jpg", _encode(sideways, "JPEG", quality=95, icc_profile=profile),
          "a JPEG with a 2 MB ICC profile", size=(40, 20), pixels=(((5, 10), RED),))


def _add_hostile_paths(corpus: dict[str, HostileFile], images: Path, outside: Path) -> None:
    """Links to device files and outside the root; names with .., a newline, unicode; a name too long."""
    def path(name: str, file_name: str, description: str, **expect) -> Path:
        where = images / file_name
        corpus[name] = HostileFile(name, where, "path", description, **expect)
        return where

    path("link-to-proc-mem.png", "link-to-proc-mem.png", "a symbolic link to /proc/self/mem",
         error="system file", catalog_error="leading outside the image folder").symlink_to("/proc/self/mem")
    path("link-to-dev-zero.jpg", "link-to-dev-zero.jpg", "a symbolic link to /dev/zero (endless zeros)",
         error="system file", catalog_error="leading outside the image folder").symlink_to("/dev/zero")
    path("link-outside-root.png", "link-outside-root.png",
         "a symbolic link to an image outside the catalog root (skipped by build and add: docs/hostile-input.md)",
         size=(48, 32), catalog_error="leading outside the image folder").symlink_to(outside / "sentinel.png")
    photo = _encode(_photo(), "JPEG", quality=90)
    for name, description in (("..dots..in-name.jpg", "a file name with '..' in it (not a parent folder)"),
                              ("new\nline.jpg", "a file name with a newline in it"),
                              ("unicodé-鞋-👟.jpg", "a file name with accents, CJK and an emoji")):
        path(name, name, description, size=(48, 32)).write_bytes(photo)
    path("name-longer-than-name-max.jpg", "x" * (NAME_MAX + 45) + ".jpg",
         f"a manifest row whose file name is longer than the file system allows ({NAME_MAX} bytes)",
         error="File name too long")
