"""The kept default model is what models/README.md says, and it works."""
import dataclasses
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedder.checkpoint import load_checkpoint
from embedder.preprocess import Preprocessing
from embedder.embed import Embedder
from training.__main__ import config_from_args, parse_args
from training.model import ObjectiveConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
KEPT = MODELS / "coinsp-fmnist.pt"


def documented_command() -> list[str]:
    text = (MODELS / "README.md").read_text()
    line = re.search(r"^(?:[A-Z_]+=\S+ )*python -m training (.+)$", text, re.MULTILINE).group(1)
    return shlex.split(line)


def test_the_documented_command_has_the_configuration_stored_in_the_kept_model():
    args = documented_command()
    assert "--fashion-mnist" in args
    args.remove("--fashion-mnist")  # stands for these two manifests
    config = config_from_args(parse_args([*args, "--train-manifest", "data/fashion-mnist/train/manifest_store.csv",
                                          "--val-manifest", "data/fashion-mnist/test/manifest_store.csv"])).to_dict()
    stored = load_checkpoint(KEPT)["config"]
    # Settings added after the model was trained have defaults that reproduce the old behaviour.
    stored["objective"] = {**dataclasses.asdict(ObjectiveConfig()), **stored["objective"]}
    stored = {"val_fraction": 0.0, **stored}
    # Preprocessing keys added since (the domain normalisation) take the values the checkpoint implies.
    stored["preprocessing"] = Preprocessing.from_dict(stored["preprocessing"]).to_dict()
    ignore = {"out_dir", "cache_dir", "history", "train_manifest", "val_manifest"}
    assert {k: v for k, v in config.items() if k not in ignore} == {k: v for k, v in stored.items() if k not in ignore}
    assert Path(stored["train_manifest"]).parts[-3:] == ("fashion-mnist", "train", "manifest_store.csv")


def test_the_kept_model_embeds_a_photo_into_a_unit_vector():
    embedder = Embedder.from_checkpoint(KEPT)
    assert embedder.categories == ["apparel", "bags", "footwear"]
    vector = embedder.embed_image(Image.new("RGB", (300, 200), "white"))
    assert vector.shape == (embedder.feature_dim,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-3)
