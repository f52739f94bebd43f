"""HEIC files for tests (iPhones' camera format), written by pillow-heif's own encoder (x265), not
through PIL's registry: a test of the product's decoding never relies on the test itself having
taught PIL to read HEIC."""
from __future__ import annotations

import io

import pillow_heif
from PIL import Image


def heic(image: Image.Image, *more_images: Image.Image, **options) -> bytes:
    """The image as a HEIC file; more_images go in as further images (options: quality, exif,
    primary_index: which one is the photo, ...). Only the pixels are taken from the images: given an
    image with an EXIF orientation, pillow-heif would turn its pixels before writing."""
    file = pillow_heif.from_pillow(pixels_only(image))
    for other in more_images:
        file.add_from_pillow(pixels_only(other))
    buffer = io.BytesIO()
    file.save(buffer, **options)
    return buffer.getvalue()


def pixels_only(image: Image.Image) -> Image.Image:
    return Image.frombytes(image.mode, image.size, image.tobytes())
