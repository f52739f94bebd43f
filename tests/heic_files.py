"""HEIC files for tests (iPhones' camera format), written by pillow-heif's own encoder (x265), not
through PIL's registry: a test of the product's decoding never relies on the test itself having
taught PIL to read HEIC."""
from __future__ import annotations

import io

import pillow_heif
from PIL import Image


def heic(image: Image.Image, *more_images: Image.Image, **options) -> bytes:
    """The image as a HEIC file; more_images go in as further images (options: quality, exif,
    primary_index: which one is the photo, ...)."""
    file = pillow_heif.from_pillow(image)
    for other in more_images:
        file.add_from_pillow(other)
    buffer = io.BytesIO()
    file.save(buffer, **options)
    return buffer.getvalue()
