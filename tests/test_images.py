"""The one decoding path: every accepted image becomes upright 8-bit RGB; bad input gets ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from embedder.images import ImageError, decode_image
from tests.support.heic_files import heic


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    if fmt == "HEIC":
        return heic(image, **kw)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK", "I;16", "P", "1", "LA", "RGBA"])
def test_every_colour_mode_comes_out_as_rgb(mode):
    image = Image.new(mode, (10, 8))
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(encode(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (10, 8)


def test_transparent_parts_are_laid_on_white():
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_a_light_subject_on_transparency_is_laid_on_black_and_a_dark_one_on_white():
    for subject, backdrop in (((250, 250, 245), (0, 0, 0)), ((30, 20, 90), (255, 255, 255))):
        image = Image.new("RGBA", (40, 30), (128, 128, 128, 0))
        image.paste(Image.new("RGBA", (20, 20), (*subject, 255)), (10, 5))
        decoded = decode_image(encode(image, "PNG"))
        assert decoded.getpixel((0, 0)) == backdrop and decoded.getpixel((20, 15)) == subject


def test_a_white_product_cut_out_on_transparency_is_found_not_refused_as_blank():
    from embedder.domain import check_photo

    image = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (100, 200), (252, 252, 252, 255)), (100, 50))
    analysis = check_photo(decode_image(encode(image, "PNG")))
    assert analysis.clear_background and np.allclose(analysis.box, (1 / 3, 1 / 6, 2 / 3, 5 / 6), atol=0.02)


def test_palette_transparency_is_laid_on_white():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0] * 256)
    assert decode_image(encode(image, "PNG", transparency=0)).getpixel((1, 1)) == (255, 255, 255)


def test_sixteen_bit_grey_keeps_its_brightness():
    image = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert decode_image(encode(image, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (20, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert decode_image(encode(image, "JPEG", exif=exif)).size == (10, 20)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (6, 6), c) for c in ("red", "blue")]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((0, 0))[0] > 200


def test_paths_and_file_objects_are_accepted(tmp_path):
    path = tmp_path / "x.webp"
    Image.new("RGB", (5, 5), "green").save(path)
    assert decode_image(path).size == (5, 5)
    with open(path, "rb") as f:
        assert decode_image(f).size == (5, 5)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"just some text, not a picture", "not a readable image"),
])
def test_non_images_are_refused_with_a_reason(data, message):
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_jpeg_is_refused():
    data = encode(Image.new("RGB", (64, 64), "white"), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def test_oversized_image_is_refused_before_decoding():
    data = encode(Image.new("L", (3000, 3000)), "PNG")
    with pytest.raises(ImageError, match="too large"):
        decode_image(data, max_pixels=1_000_000)


def test_oversized_file_is_refused():
    with pytest.raises(ImageError, match="too large"):
        decode_image(b"x" * 101, max_bytes=100)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        decode_image(tmp_path / "nope.png")


# ---------------------------------------------------------------- HEIC (iPhone photos) and AVIF

PHONE_FORMATS = ["HEIC", "AVIF"]


def phone_photo(width: int = 96, height: int = 64) -> Image.Image:
    """A photo-like picture that shows which way is up: a gradient, a red block top left, a blue one bottom right."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 120)], axis=-1).astype(np.uint8)
    pixels[: height // 3, : width // 3] = (230, 20, 20)
    pixels[-height // 3:, -width // 4:] = (20, 20, 230)
    return Image.fromarray(pixels)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size, (a.size, b.size)
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
def test_heic_and_avif_photos_decode_to_the_same_picture_as_their_png(fmt):
    photo = phone_photo()
    decoded = decode_image(encode(photo, fmt, quality=90))
    assert decoded.mode == "RGB" and decoded.size == photo.size
    assert mean_difference(decoded, photo) < 4  # codec error only


def orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
@pytest.mark.parametrize("orientation", [6, 8])
def test_heic_and_avif_photos_with_exif_orientation_come_out_upright_once(fmt, orientation):
    """As a phone writes them: the rotation in the file's irot box and in its EXIF. HEIC: libheif turns
    the pixels; AVIF: PIL reports irot as EXIF orientation. Either way turned once, as the same PNG is."""
    stored = phone_photo()
    upright = decode_image(encode(stored, "PNG", exif=orientation_exif(orientation)))
    assert upright.size == (64, 96)
    data = encode(stored, fmt, quality=90, exif=orientation_exif(orientation))
    assert b"irot" in data
    decoded = decode_image(data)
    assert decoded.size == upright.size
    assert mean_difference(decoded, upright) < 4  # turned twice (or not at all) differs by about 100


def test_a_heic_whose_exif_alone_says_rotate_is_shown_as_stored():
    """HEIF (MIAF) readers ignore EXIF orientation; only the file's irot/imir turn it (libheif, browsers)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(phone_photo(), "HEIC", quality=90, exif=exif)  # pillow-heif writes no irot from an Exif object
    assert b"irot" not in data and orientation_exif(6)[6:] in data  # its EXIF block, orientation 6, is there
    decoded = decode_image(data)
    assert decoded.size == (96, 64) and mean_difference(decoded, phone_photo()) < 4


def with_declared_size(heic: bytes, width: int, height: int) -> bytes:
    """The HEIC with its image-size property (ispe) claiming width x height; the pixels stay as encoded."""
    at = heic.index(b"ispe") + 8  # box type, then version and flags
    return heic[:at] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + heic[at + 8:]


def test_a_heic_over_the_pixel_limit_is_refused_before_its_pixels_are_decoded():
    claims_63_mpx = with_declared_size(encode(phone_photo(), "HEIC"), 9000, 7000)
    # Decoding would fail: the coded picture is 96x64. The refusal comes from the header alone.
    with pytest.raises(ImageError, match="image too large: 9000x7000 pixels"):
        decode_image(claims_63_mpx)


def test_a_large_heic_is_reduced_like_other_formats():
    decoded = decode_image(encode(phone_photo(384, 256), "HEIC"), max_side=96)
    assert decoded.size == (96, 64) and mean_difference(decoded, phone_photo()) < 8


def test_a_heic_with_several_images_gives_its_primary_one():
    red, blue = Image.new("RGB", (32, 32), (230, 20, 20)), Image.new("RGB", (32, 32), (20, 20, 230))
    data = heic(red, blue, primary_index=1)
    assert decode_image(data).getpixel((16, 16))[2] > 200


def damaged(data: bytes, how: str) -> bytes:
    if how.startswith("cut at "):
        return data[: int(len(data) * float(how.removeprefix("cut at ")))]
    if how == "zeroed pixel data":
        at = data.index(b"mdat") + 4
        return data[:at] + bytes(len(data) - at)
    at = data.index(b"pitm") + 8  # "primary item 99": an item the file does not have
    return data[:at] + b"\x00\x63" + data[at + 2:]


@pytest.mark.parametrize("fmt", PHONE_FORMATS)
@pytest.mark.parametrize("how", ["cut at 0.1", "cut at 0.5", "cut at 0.95", "zeroed pixel data", "primary item missing"])
def test_truncated_or_corrupt_heic_and_avif_get_the_usual_image_error(fmt, how):
    data = damaged(encode(phone_photo(), fmt, quality=90), how)
    with pytest.raises(ImageError, match="^corrupt or truncated image: ") as refused:
        decode_image(data)
    assert "\n" not in str(refused.value)


def test_unknown_formats_are_told_which_formats_to_use():
    with pytest.raises(ImageError, match=r"use JPEG, PNG, WebP, HEIC or AVIF\)$"):
        decode_image(b"\x00\x01 neither a picture nor text")


WITHOUT_PILLOW_HEIF = """
import io, sys
sys.modules["pillow_heif"] = None  # what a missing or broken install looks like to `import`
from PIL import Image
from embedder.images import ImageError, decode_image
heic, others = sys.stdin.buffer.read().split(b"--next--", 1)
try:
    decode_image(heic)
except ImageError as exc:
    print(exc)
for data in others.split(b"--next--"):
    print(decode_image(data).size)
"""


def test_without_pillow_heif_a_heic_is_refused_with_the_fix_and_other_formats_still_decode():
    import subprocess
    import sys
    from pathlib import Path

    photo = phone_photo()
    files = [encode(photo, "HEIC")] + [encode(photo, fmt) for fmt in ("JPEG", "PNG", "WEBP", "AVIF")]
    run = subprocess.run([sys.executable, "-c", WITHOUT_PILLOW_HEIF], input=b"--next--".join(files),
                         capture_output=True, cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    refusal, *sizes = run.stdout.decode().splitlines()
    assert "HEIC/HEIF photos need the pillow-heif package (pip install pillow-heif)" in refusal
    assert sizes == ["(96, 64)"] * 4
