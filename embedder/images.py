"""The one image-decoding path of the product: catalog building, training and uploads all use it.

Every accepted image comes out as an 8-bit RGB PIL image, upright (EXIF orientation
applied), transparent parts laid on white. Anything else raises ImageError with a
message a person can act on.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A 20k x 20k bomb is 400 Mpx; ordinary catalog photos are far below this.
MAX_PIXELS = 50_000_000
MAX_BYTES = 50 * 1024 * 1024

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]


class ImageError(ValueError):
    """An input that is not a usable image (missing, corrupt, not an image, too large)."""


def _read_bytes(source: ImageSource, max_bytes: int) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"file not found: {path}")
        if path.stat().st_size > max_bytes:
            raise ImageError(f"file too large: {path.stat().st_size:,} bytes (limit {max_bytes:,})")
        data = path.read_bytes()
    else:
        data = source.read(max_bytes + 1)
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageError(f"file too large: more than {max_bytes:,} bytes")
    return data


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit grey: scale to 8 bits instead of letting PIL clip at 255.
        values = np.asarray(image, dtype=np.float64)
        if values.max(initial=0) > 255:
            values = values / 257.0
        image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def decode_image(source: ImageSource, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode a path, bytes or file object into an upright RGB image, or raise ImageError."""
    data = _read_bytes(source, max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"image too large: {width}x{height} pixels (limit {max_pixels:,} pixels)"
                )
            image.seek(0)  # animated formats: the first frame is the product photo
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not a readable image: unknown or unsupported format (use JPEG, PNG or WebP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refused at the header, before allocating pixels; say it in this module's words.
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise ImageError(f"image too large: {size} (limit {max_pixels:,} pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    image = ImageOps.exif_transpose(image)
    return _to_rgb(image)
