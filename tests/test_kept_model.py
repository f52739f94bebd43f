"""The kept default model is what models/README.md says, and it works."""
import dataclasses
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from embedder.category_head import category_logits
from embedder.checkpoint import backbone_from_checkpoint, load_checkpoint
from embedder.mask import DEFAULT_MASK_MODEL, ProductMask
from embedder.preprocess import Preprocessing
from embedder.embed import Embedder
from index.importers import FASHION_MNIST_DIR, FASHION_MNIST_GROUPINGS, load_fashion_mnist_arrays
from training.__main__ import config_from_args, parse_args
from training.model import ObjectiveConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
KEPT = MODELS / "coinsp-fmnist.pt"


def documented_command() -> list[str]:
    text = (MODELS / "README.md").read_text()
    line = re.search(r"^(?:[A-Z_]+=\S+ )*python -m training (--.+)$", text, re.MULTILINE).group(1)
    return shlex.split(line)


def test_the_documented_command_has_the_configuration_stored_in_the_kept_model():
    args = documented_command()
    assert "--fashion-mnist" in args
    args.remove("--fashion-mnist")  # stands for these two manifests
    stored = load_checkpoint(KEPT)["config"]
    # The input is measured on the 60,000 training images, which takes minutes: here the kept model's is given
    # by hand (tests/test_input_settings.py measures real Fashion-MNIST images).
    kept_input = [f"--input={k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in stored["preprocessing"].items()]
    config = config_from_args(parse_args([*args, *kept_input, "--train-manifest", "data/fashion-mnist/train/manifest_store.csv",
                                          "--val-manifest", "data/fashion-mnist/test/manifest_store.csv"])).to_dict()
    # Settings added after the model was trained have defaults that reproduce the old behaviour.
    stored["objective"] = {**dataclasses.asdict(ObjectiveConfig()), **stored["objective"]}
    # W^I now always starts from the pixels, as the kept model's did, so that choice is no longer a setting.
    assert stored["objective"].pop("instance_init", "pixels") == "pixels"
    stored = {"val_fraction": 0.0, **stored}
    # Preprocessing keys added since (the domain normalisation) take the values the checkpoint implies.
    stored["preprocessing"] = Preprocessing.from_dict(stored["preprocessing"]).to_dict()
    # input_reason says in words how the input was chosen (here: given by hand); the settings are compared.
    ignore = {"out_dir", "cache_dir", "history", "train_manifest", "val_manifest", "input_reason", "mask_model"}
    assert {k: v for k, v in config.items() if k not in ignore} == {k: v for k, v in stored.items() if k not in ignore}
    assert Path(stored["train_manifest"]).parts[-3:] == ("fashion-mnist", "train", "manifest_store.csv")


def test_the_kept_model_names_the_mask_model_its_query_views_were_made_with_and_it_ships():
    """Its query views went through the shipped product mask: the query path it was trained on is the one searched."""
    stored = load_checkpoint(KEPT)["config"]
    assert stored["mask_model"] == ProductMask.load(DEFAULT_MASK_MODEL).fingerprint


def test_the_kept_model_embeds_a_photo_into_a_unit_vector():
    embedder = Embedder.from_checkpoint(KEPT)
    assert embedder.categories == ["apparel", "bags", "footwear"]
    vector = embedder.embed_image(Image.new("RGB", (300, 200), "white"))
    assert vector.shape == (embedder.feature_dim,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_the_kept_model_names_the_category_of_catalog_photos_with_its_category_head():
    payload = load_checkpoint(KEPT)
    if "coarse_head" not in payload:
        pytest.skip("this kept model was trained before checkpoints carried the category head")
    backbone, pre = backbone_from_checkpoint(payload)
    images, labels = load_fashion_mnist_arrays("test")
    images, labels = images[:200], labels[:200]
    batch = torch.from_numpy(np.stack([pre.to_uint8(Image.fromarray(image).convert("RGB")) for image in images]))
    with torch.inference_mode():
        logits = category_logits(payload["coarse_head"], backbone(pre.normalise(batch)))
    category_of = {fine: name for name, fines in FASHION_MNIST_GROUPINGS["store"].items() for fine in fines}
    predicted = [payload["categories"][i] for i in logits.argmax(1).tolist()]
    accuracy = np.mean([p == category_of[int(label)] for p, label in zip(predicted, labels)])
    assert accuracy >= 0.95
