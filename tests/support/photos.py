"""Generated photos for the tests: a shopper's phone photo of a Fashion-MNIST item, plain product
photos, and zip archives of them."""
from __future__ import annotations

import numpy as np
from PIL import Image


def shopper_photo(item: np.ndarray, *, size: tuple[int, int] = (900, 700), side: int = 420,
                  at: tuple[int, int] = (300, 160), quality: int = 85) -> bytes:
    """A 28-px light-on-black Fashion-MNIST item as a shopper photographs it: a dark product on a
    white table, upscaled, off-centre, JPEG."""
    import io

    product = Image.fromarray(item).resize((side, side), Image.Resampling.BICUBIC)
    darkness = np.asarray(product, np.float32)[..., None] / 255.0
    colour = np.array([40, 45, 60], np.float32)  # a dark navy product
    canvas = np.full((size[1], size[0], 3), 248, np.float32)
    x, y = at
    canvas[y:y + side, x:x + side] = canvas[y:y + side, x:x + side] * (1 - darkness) + colour * darkness
    buffer = io.BytesIO()
    Image.fromarray(canvas.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def product_photo(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    """A 48-px photo of a plain product of `colour` on a light background, encoded as `fmt`."""
    import io

    pixels = np.full((48, 48, 3), 240, np.uint8)
    pixels[8:40, 12:36] = colour
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def zip_of(entries: dict[str, bytes]) -> bytes:
    """A zip archive holding `entries` (name in the archive -> bytes)."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return out.getvalue()
