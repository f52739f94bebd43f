"""The training input follows the catalog's images, not the backbone: grey or colour, size, mean and
std, polarity and margin are measured on the training manifest; the feature grid suits the backbone."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from embedder.checkpoint import load_checkpoint
from embedder.images import decode_image
from index.importers import FASHION_MNIST_DIR, load_fashion_mnist_arrays
from training.__main__ import config_from_args, main as training_main, parse_args
from training.input_settings import IMAGENET, choose_input
from tests.support.threads import one_torch_thread


@pytest.fixture(autouse=True)
def _one_thread():
    """The product mask that looks at the photos is small: one torch thread (tests/support/threads.py)."""
    with one_torch_thread():
        yield


def write_manifest(folder: Path, images: list[Image.Image]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")
        rows.append({"path": f"{i}.png", "category": ["bags", "shoes"][i % 2]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def product_shots(n: int, side: int, *, background: int, product: int, share: float, seed: int = 0) -> list[Image.Image]:
    """Grey catalog shots: one product (an ellipse of varying width, `share` of the frame high) on a plain
    background."""
    rng = np.random.default_rng(seed)
    shots = []
    for _ in range(n):
        image = Image.new("L", (side, side), background)
        height = share * side
        width = height * rng.uniform(0.5, 0.9)
        top, left = (side - height) / 2, (side - width) / 2
        ImageDraw.Draw(image).ellipse((left, top, left + width - 1, top + height - 1),
                                      fill=int(product + rng.integers(-20, 20)))
        shots.append(image)
    return shots


def colour_photos(n: int, width: int, height: int, seed: int = 0) -> list[Image.Image]:
    """Photos with coloured, varied backdrops (a colour gradient and noise) and a coloured product."""
    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(n):
        start, end = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        ramp = np.linspace(0, 1, width)[None, :, None]
        pixels = (start + (end - start) * ramp) * np.ones((height, 1, 1)) + rng.normal(0, 0.08, (height, width, 3))
        image = Image.fromarray((pixels.clip(0, 1) * 255).astype(np.uint8))
        ImageDraw.Draw(image).rectangle((width // 3, height // 4, 2 * width // 3, 3 * height // 4),
                                        fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        photos.append(image)
    return photos


def test_grey_light_products_on_black_measure_as_light_on_dark_at_their_own_size(tmp_path):
    manifest = write_manifest(tmp_path, product_shots(40, 40, background=0, product=220, share=1.0))
    pre = choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing
    assert (pre.size, pre.channels, pre.polarity, pre.domain, pre.margin) == (40, 1, "light-on-dark", True, 0.0)
    # The mean and std of the images as training sees them (trimmed, levelled into the catalog's domain).
    pixels = np.stack([pre.to_uint8(decode_image(tmp_path / f"{i}.png")) for i in range(40)]) / 255
    assert pre.mean[0] == pytest.approx(pixels.mean(), abs=0.01) and pre.std[0] == pytest.approx(pixels.std(), abs=0.01)


def test_grey_dark_products_on_white_measure_as_dark_on_light_with_the_margin_around_them(tmp_path):
    manifest = write_manifest(tmp_path, product_shots(40, 48, background=255, product=40, share=0.6))
    pre = choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing
    assert (pre.size, pre.channels, pre.polarity) == (48, 1, "dark-on-light")
    assert pre.margin == pytest.approx(0.2, abs=0.03)  # the product is 60% of the frame: 20% on each side
    assert pre.mean[0] > 0.65  # mostly white


def test_colour_photos_keep_three_channels_and_their_colours_at_a_size_the_backbone_suits(tmp_path):
    manifest = write_manifest(tmp_path, colour_photos(30, 120, 90))
    small = choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing
    assert (small.size, small.channels, small.polarity) == (64, 3, "keep")  # 120 px, capped at smallcnn's 64
    assert len(small.mean) == 3 and all(0.1 < m < 0.9 for m in small.mean) and all(s > 0.05 for s in small.std)
    imagenet = choose_input(manifest, "efficientnet_lite0", pretrained=True, cache_dir=tmp_path / "cache").preprocessing
    # Within the pretrained 112-224 px the photos' own size; the mean and std the ImageNet weights expect.
    assert (imagenet.size, imagenet.channels, imagenet.polarity) == (120, 3, "keep")
    assert (imagenet.mean, imagenet.std) == IMAGENET


def test_a_grey_catalog_on_a_pretrained_backbone_gets_the_three_channels_its_weights_take(tmp_path):
    manifest = write_manifest(tmp_path, product_shots(20, 28, background=0, product=220, share=1.0))
    pre = choose_input(manifest, "resnet18", pretrained=True, cache_dir=tmp_path / "cache").preprocessing
    # 28 px images enlarged to the 112 px at which ImageNet features start to see them well.
    assert (pre.size, pre.channels, pre.polarity, (pre.mean, pre.std)) == (112, 3, "light-on-dark", IMAGENET)


def test_fashion_mnist_like_28_px_shots_give_28_px_grey_light_on_dark_without_margin(tmp_path):
    manifest = write_manifest(tmp_path, product_shots(60, 28, background=0, product=180, share=1.0, seed=3))
    pre = choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing
    assert (pre.size, pre.channels, pre.polarity, pre.domain, pre.invert, pre.margin) == (28, 1, "light-on-dark", True,
                                                                                          False, 0.0)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_real_fashion_mnist_images_measure_as_the_kept_model_was_trained(tmp_path):
    images = load_fashion_mnist_arrays("train")[0]
    sample = np.random.default_rng(0).choice(len(images), 300, replace=False)
    manifest = write_manifest(tmp_path, [Image.fromarray(images[i]) for i in sample])
    pre = choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing
    kept = load_checkpoint(Path(__file__).resolve().parent.parent / "models" / "coinsp-fmnist.pt")["config"]["preprocessing"]
    assert {k: v for k, v in pre.to_dict().items() if k not in ("mean", "std")} == \
        {k: v for k, v in kept.items() if k not in ("mean", "std")}
    # 300 images estimate the 60,000's mean and std (0.286, 0.353) to within about 0.015.
    assert pre.mean[0] == pytest.approx(kept["mean"][0], abs=0.02) and pre.std[0] == pytest.approx(kept["std"][0], abs=0.02)


def test_unreadable_images_are_passed_over_and_a_manifest_of_none_is_refused(tmp_path):
    manifest = write_manifest(tmp_path, product_shots(6, 32, background=0, product=200, share=1.0))
    (tmp_path / "0.png").write_text("not an image")
    assert choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache").preprocessing.size == 32
    for i in range(6):
        (tmp_path / f"{i}.png").write_text("not an image")
    with pytest.raises(ValueError, match="could be read"):
        choose_input(manifest, "smallcnn", cache_dir=tmp_path / "cache2")


def cli_config(manifest: Path, *extra: str, log=print):
    return config_from_args(parse_args(["--train-manifest", str(manifest), "--out", "unused", *extra]), log=log)


@pytest.mark.parametrize("backbone, grid", [("smallcnn", 4), ("resnet18", 1), ("efficientnet_lite0", 1)])
def test_the_feature_grid_suits_the_backbone_unless_given(tmp_path, backbone, grid):
    manifest = write_manifest(tmp_path, product_shots(8, 32, background=0, product=200, share=1.0))
    assert cli_config(manifest, "--backbone", backbone).backbone_kwargs["grid"] == grid
    assert cli_config(manifest, "--backbone", backbone, "--grid", "2").backbone_kwargs["grid"] == 2


def test_input_given_by_hand_wins_over_what_is_measured_and_the_choice_is_printed(tmp_path, capsys):
    manifest = write_manifest(tmp_path, product_shots(8, 32, background=0, product=200, share=1.0))
    cfg = cli_config(manifest, "--input", "size=48", "--input", "channels=3", "--input", "polarity=keep")
    assert (cfg.preprocessing["size"], cfg.preprocessing["channels"], cfg.preprocessing["polarity"]) == (48, 3, "keep")
    assert len(cfg.preprocessing["mean"]) == 3 and cfg.backbone_kwargs["in_channels"] == 3
    printed = capsys.readouterr().out
    assert "input: 48 px (given), 3 channels (given), keep (given)" in printed and "grid 4 (smallcnn default)" in printed
    cfg = cli_config(manifest, "--input", "mean=0.5", "--input", "std=0.25")
    assert (cfg.preprocessing["mean"], cfg.preprocessing["std"], cfg.preprocessing["polarity"]) == ([0.5], [0.25],
                                                                                                   "light-on-dark")


@pytest.mark.parametrize("setting, message", [("colour=yes", "KEY one of: size"), ("size", "KEY=VALUE"),
                                              ("size=big", "expected a int"), ("mean=a,b", "comma-separated numbers")])
def test_a_wrong_input_setting_is_refused_with_what_is_expected(tmp_path, setting, message):
    with pytest.raises(SystemExit) as refused:
        cli_config(tmp_path / "m.csv", "--input", setting)
    assert message in str(refused.value)


def test_the_model_stores_the_measured_input(tmp_path):
    manifest = write_manifest(tmp_path / "catalog", product_shots(16, 36, background=255, product=30, share=0.8))
    code = training_main(["--train-manifest", str(manifest), "--preset", "cos", "--epochs", "0",
                          "--out", str(tmp_path / "run")])
    assert code == 0
    stored = load_checkpoint(tmp_path / "run" / "model.pt")["config"]
    assert (stored["preprocessing"]["size"], stored["preprocessing"]["channels"]) == (36, 1)
    assert stored["preprocessing"]["polarity"] == "dark-on-light" and stored["backbone_kwargs"]["in_channels"] == 1
    assert "dark-on-light" in stored["input_reason"] and "36 px" in stored["input_reason"]  # and why
