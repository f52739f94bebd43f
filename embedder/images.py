"""The one image-decoding path of the product: catalog building, training and uploads all use it.

Every accepted image comes out as an 8-bit RGB PIL image, upright (EXIF orientation
applied), transparent parts laid on white, its long side at most MAX_SIDE pixels. Anything
else raises ImageError with a message a person can act on.

Memory is bounded by what the models need, not by what a file claims: JPEGs are decoded at a
reduced DCT scale (`Image.draft`), other formats are reduced right after decoding, before any
conversion, and high-bit-depth pixels are scaled to 8 bits only once the image is small.

HEIC/HEIF (iPhones' camera format) is read through the pillow-heif package, registered here at
import; AVIF by Pillow itself. Without a working pillow-heif only HEIC is lost, with a message.
"""
from __future__ import annotations

import io
import math
import os
import re
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    from pillow_heif import register_heif_opener

    register_heif_opener()
except Exception as exc:  # noqa: BLE001 - not installed, or its bundled libheif fails to load
    HEIF_UNAVAILABLE: str | None = f"{type(exc).__name__}: {exc}"
else:
    HEIF_UNAVAILABLE = None

# A 20k x 20k bomb is 400 Mpx; ordinary catalog photos are far below this. PIL holds a decoded
# RGB(A), 32-bit or float image at 4 bytes a pixel: 200 MB at this limit, the most one decode
# needs (JPEGs much less, see MAX_SIDE). docs/api.md budgets the API's memory with it.
MAX_PIXELS = 50_000_000
MAX_BYTES = 50 * 1024 * 1024
# The models look at a few hundred pixels at most; 2,048 keeps enough for a shopper to crop a
# detail out of a photo and for sharp thumbnails.
MAX_SIDE = 2048
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma weights, as PIL's "L"
# Pseudo file systems: their files are not images and reading some (/proc/self/mem, devices)
# fails or never ends.
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")
ORIENTATION_TAG = 0x0112
ACCEPTED_FORMATS = "JPEG, PNG, WebP, HEIC or AVIF"  # as told to people; GIF, BMP and TIFF are read too
# HEIF and AVIF files are ISO media files: an "ftyp" box names the brands they follow.
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_TRANSPOSE = {  # EXIF orientation -> the transposition that makes the image upright
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


class ImageError(ValueError):
    """An input that is not a usable image (missing, corrupt, not an image, too large)."""


def shown_path(path: str | os.PathLike) -> str:
    """A path as one printable line: control characters (a newline in a file name) escaped."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", os.fsdecode(path))


def _read_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file, at most max_bytes + 1 of them; never opens devices, FIFOs or /proc."""
    shown = shown_path(path)
    try:
        resolved = os.path.realpath(path)
        if any(resolved == root or resolved.startswith(root + "/") for root in SPECIAL_ROOTS):
            raise ImageError(f"not an image file: {shown} is a system file ({shown_path(resolved)})")
        info = os.stat(resolved)
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device, pipe or socket"
            raise ImageError(f"not an image file: {shown} is {kind}")
        if info.st_size > max_bytes:
            raise ImageError(f"file too large: {info.st_size:,} bytes (limit {max_bytes:,})")
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, opening it does not hang.
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(descriptor, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ImageError(f"not an image file: {shown} is not a regular file")
            return file.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"file not found: {shown}") from None
    except OSError as exc:  # a name too long, a loop of links, no permission, an I/O error
        raise ImageError(f"can't read {shown}: {exc.strerror or type(exc).__name__}") from None


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        data = _read_file(Path(source), max_bytes)
    else:
        data = source.read(max_bytes + 1)
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"file too large: more than {max_bytes:,} bytes")
    return data


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Compressed metadata that PIL inflates with a 1 MB cap (a guard against text bombs); the product
# uses none of it (no colour management), so a PNG over the cap is decoded without it.
PNG_UNUSED_CHUNKS = (b"iCCP", b"zTXt", b"iTXt", b"tEXt")


def _png_without_unused_metadata(data: bytes) -> bytes | None:
    """The PNG with its ICC profile and text chunks left out; None if it is not a well-formed PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, at = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        end = at + 12 + length  # length, type, data, CRC
        if end > len(data):
            return None
        if kind not in PNG_UNUSED_CHUNKS:
            kept.append(data[at:end])
        at = end
    return b"".join(kept)


def _reduction_factor(image: Image.Image, max_side: int | None) -> int:
    """An integer box reduction that keeps the long side at max_side or more (1: none).

    Reducing first keeps the exact resize small: resizing 7000 px straight to 2048 holds a
    full-height intermediate (2048 x 7000 x 4 bytes = 57 MB). PIL can't reduce() palette, 1-bit
    or 16-bit images; the resize reads those directly.
    """
    if not max_side or image.mode in ("P", "1") or image.mode.startswith("I;16"):
        return 1
    return max(image.size) // max_side


def _fitted(image: Image.Image, max_side: int | None) -> Image.Image:
    """The image with its long side at most max_side, in its own mode."""
    if not max_side or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    target = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    # Palette indices can't be averaged: pick pixels.
    method = Image.Resampling.NEAREST if image.mode in ("P", "1") else Image.Resampling.BILINEAR
    return image.resize(target, method)


def _to_8_bit_grey(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey -> 8-bit grey, scaled rather than clipped at 255."""
    values = np.asarray(image)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max(initial=0))
    if values.dtype.kind == "f" and 0 < top <= 1.0:
        scale = 255.0  # float images in [0, 1]
    elif top <= 255:
        scale = 1.0
    elif top <= 65535:
        scale = 1 / 257  # 16-bit: white (65535) stays white (255)
    else:
        scale = 255.0 / top
    scaled = np.clip(values.astype(np.float32) * np.float32(scale), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _backdrop_for(image: Image.Image) -> tuple[int, int, int, int]:
    """What a transparent image is laid on: white, or black behind a light subject (a white sneaker
    cut out of its photo would vanish on white): whichever lies farther from the mean luma of its
    opaque pixels (alpha at least half); a fully transparent image goes on white."""
    pixels = np.asarray(image.reduce(max(1, max(image.size) // 256)) if max(image.size) > 256 else image)
    opaque = pixels[..., 3] >= 128
    if not opaque.any():
        return (255, 255, 255, 255)
    luma = pixels[..., :3][opaque].astype(np.float32) @ LUMA
    return (0, 0, 0, 255) if float(luma.mean()) > 127.5 else (255, 255, 255, 255)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8_bit_grey(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, _backdrop_for(image))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def as_rgb(image: Image.Image) -> Image.Image:
    """An image already in memory, of any mode, as RGB by the decoder's rules (16-bit and float
    scaled to 8 bits rather than clipped, transparent parts white, or black behind a light
    subject); an RGB image as it is."""
    return image if image.mode == "RGB" else _to_rgb(image)


def _orientation(image: Image.Image) -> int | None:
    """The EXIF orientation, or None when there is none or the EXIF block is broken.

    A broken EXIF block does not cost the photo: its pixels decoded fine, and a photo shown
    sideways is better than a product missing from the catalog (the orientation is lost, nothing
    else). PIL's EXIF parser fails in many ways on garbage (SyntaxError, struct.error,
    ValueError, KeyError, ...), hence the broad except.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": handled here
            value = image.getexif().get(ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - any parse failure of optional metadata
        return None
    return value if isinstance(value, int) else None


def _upright(image: Image.Image, orientation: int | None) -> Image.Image:
    for method in _TRANSPOSE.get(orientation, ()):
        image = image.transpose(method)
    return image


def _heif_family(data: bytes) -> str | None:
    """"AVIF" or "HEIF" (PIL's format names) for a file whose ftyp box names such a brand, else None."""
    if data[4:8] != b"ftyp":
        return None
    end = min(len(data), max(16, int.from_bytes(data[:4], "big")), 1024)
    brands = {data[8:12]} | {data[at:at + 4] for at in range(16, end - 3, 4)}  # major, then compatible
    if brands & AVIF_BRANDS:
        return "AVIF"
    return "HEIF" if brands & HEIF_BRANDS else None


def _one_line(exc: BaseException) -> str:
    """A decoder's message as one line (libheif's may end in a newline), or the error's name."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _unidentified(data: bytes) -> ImageError:
    """Why no PIL plugin opened the data. PIL says only "cannot identify" when a plugin that
    accepted the header fails to parse the rest, so a damaged HEIF or AVIF file is opened again
    with its own plugin, for the decoder's reason."""
    family = _heif_family(data)
    if family == "HEIF" and HEIF_UNAVAILABLE:
        return ImageError("HEIC/HEIF photos need the pillow-heif package (pip install pillow-heif), "
                          f"which failed to load ({HEIF_UNAVAILABLE})")
    if family in Image.OPEN:
        try:
            Image.OPEN[family][0](io.BytesIO(data)).close()
        except (OSError, SyntaxError, ValueError, EOFError, RuntimeError, struct.error) as exc:
            return ImageError(f"corrupt or truncated image: {_one_line(exc)}")
    return ImageError(f"not a readable image: unknown or unsupported format (use {ACCEPTED_FORMATS})")


def decode_image(source: ImageSource, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES,
                 max_side: int | None = MAX_SIDE) -> Image.Image:
    """Decode a path, bytes or file object into an upright RGB image, or raise ImageError.

    max_side: the long side of the result is at most this many pixels (None: keep the full size).
    """
    data = _read_bytes(source, max_bytes)
    try:
        return _decode(data, max_pixels, max_side)
    except ImageError as exc:
        if "MAX_TEXT_CHUNK" not in str(exc):
            raise
        smaller = _png_without_unused_metadata(data)
        if smaller is None:
            raise
        return _decode(smaller, max_pixels, max_side)


def _decode(data: bytes, max_pixels: int, max_side: int | None) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {width}x{height} pixels (limit {max_pixels:,} pixels)"
                )
            if image.format != "HEIF":  # a HEIF file opens at its primary image: the photo
                image.seek(0)  # animated formats: the first frame is the product photo
            if max_side and image.format == "JPEG" and max(width, height) > max_side:
                # Decode at 1/2, 1/4 or 1/8 scale, the smallest that keeps max_side.
                scale = max_side / max(width, height)
                image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
            image.load()
            # libheif has applied a HEIF file's own rotation and mirroring (irot, imir), which
            # HEIF makes authoritative over an EXIF copy (pillow-heif resets that copy to 1).
            # PIL's AVIF plugin leaves the pixels as stored and reports irot/imir as EXIF.
            orientation = None if image.format == "HEIF" else _orientation(image)
            factor = _reduction_factor(image, max_side)
            if factor >= 2:
                image = image.reduce(factor)  # here, not in a helper: the full image is freed at once
            image = _to_rgb(_fitted(image, max_side))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refused at the header, before allocating pixels; say it in this module's words.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise ImageError(f"image too large: {size} (limit {max_pixels:,} pixels)") from None
    except MemoryError:
        raise ImageError("image too large: not enough memory to decode it") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise ImageError(f"corrupt or truncated image: {_one_line(exc)}") from None
    except RuntimeError as exc:
        # libheif and libavif report some damage (a missing image item, undecodable planes) as a
        # plain RuntimeError; anywhere else, or as a subclass, it is a fault of ours: raised.
        if type(exc) is not RuntimeError or _heif_family(data) is None:
            raise
        raise ImageError(f"corrupt or truncated image: {_one_line(exc)}") from None
    return _upright(image, orientation)

