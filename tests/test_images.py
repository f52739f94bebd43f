"""The one decoding path: every accepted image becomes upright 8-bit RGB; bad input gets ImageError."""
import io

import numpy as np
import pytest
from PIL import Image

from embedder.images import ImageError, decode_image


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
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
