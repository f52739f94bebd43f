"""Training: every preset runs, resume reproduces an uninterrupted run, checkpoints load safely."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from embedder.backbones import build_backbone
from embedder.checkpoint import load_checkpoint
from embedder.embed import Embedder
from embedder.preprocess import Preprocessing
from training.__main__ import main as training_main
from training.data import TrainingSet, hold_out, load_training_set
from training.model import CoInsModel
from training.presets import PRESETS
from training.train import TrainConfig, train

PRE = Preprocessing(28, 1, (0.3,), (0.3,))


def tiny_set(n=96, seed=0) -> TrainingSet:
    g = torch.Generator().manual_seed(seed)
    products = torch.arange(n) % 4
    categories = products // 2  # products 0,1 -> category 0; 2,3 -> category 1
    base = torch.rand(4, 1, 28, 28, generator=g)
    images = ((base[products] + 0.2 * torch.rand(n, 1, 28, 28, generator=g)).clamp(0, 1) * 255).to(torch.uint8)
    return TrainingSet(images, categories, ["bags", "shoes"], products, ["a", "b", "c", "d"])


def config(tmp_path, preset="coinsp", epochs=2, **kw) -> TrainConfig:
    objective = dataclasses.replace(PRESETS[preset], num_proxies=8)
    return TrainConfig(train_manifest="-", out_dir=str(tmp_path / preset), preset=preset, objective=objective,
                       backbone_kwargs={"in_channels": 1, "grid": 2, "width": 8}, preprocessing=PRE.to_dict(),
                       epochs=epochs, batch_size=32, proxy_start=1, **kw)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_and_reports_its_loss_parts(tmp_path, preset):
    data = tiny_set()
    result = train(config(tmp_path, preset), sets=(data, data), log=lambda s: None)
    last = result["history"][-1]
    expected = {"cos": {"coarse"}, "ins": {"instance"}, "coins": {"coarse", "instance"},
                "coins_imp": {"coarse", "instance"}, "coins_cos": {"coarse", "instance"},
                "coins_mlp": {"coarse", "instance"}, "coinsp": {"coarse", "instance", "proxy"},
                "coinsp_sampled": {"coarse", "instance", "proxy"}, "coinsp_maskcon": {"coarse", "instance", "proxy"},
                "maskcon": {"instance"}, "grafit": {"grafit", "instance"}, "opt": {"fine"}}[preset]
    assert {k[len("loss_"):] for k in last if k.startswith("loss_")} == expected
    assert 0.0 <= last["R@1"] <= 1.0 and all(np.isfinite(v) for k, v in last.items() if k.startswith("loss_"))


def test_sampled_instance_negatives_are_reproducible_across_a_resume(tmp_path):
    data = tiny_set()
    def sampled(folder):  # 8 negatives out of 48 images per category: the sampled path really runs
        cfg = config(folder, "coinsp_sampled", epochs=2)
        return dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, instance_negatives=8))
    whole = train(sampled(tmp_path / "whole"), sets=(data, data), log=lambda s: None)
    train(sampled(tmp_path / "killed"), sets=(data, data), stop_after_epoch=1, log=lambda s: None)
    resumed = train(sampled(tmp_path / "killed"), sets=(data, data), resume=True, log=lambda s: None)
    assert whole["fingerprint"] == resumed["fingerprint"]
    assert [h["loss_instance"] for h in whole["history"]] == [h["loss_instance"] for h in resumed["history"]]


def test_a_checkpoint_left_half_written_by_a_killed_run_is_removed_by_the_next_run(tmp_path):
    cfg = config(tmp_path, "cos", epochs=1)
    Path(cfg.out_dir).mkdir(parents=True)
    stale = Path(cfg.out_dir) / ".last.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(cfg, sets=(tiny_set(), tiny_set()), resume=True, log=lambda s: None)
    assert not stale.exists() and (Path(cfg.out_dir) / "model.pt").is_file()


def test_resume_after_a_kill_gives_the_same_model_as_an_uninterrupted_run(tmp_path):
    data = tiny_set()
    whole = train(config(tmp_path / "whole", epochs=3), sets=(data, data), log=lambda s: None)
    cfg = config(tmp_path / "killed", epochs=3)
    stopped = train(cfg, sets=(data, data), stop_after_epoch=2, log=lambda s: None)
    assert stopped["stopped"] and not (tmp_path / "killed" / "coinsp" / "model.pt").exists()
    resumed = train(cfg, sets=(data, data), resume=True, log=lambda s: None)
    a = load_checkpoint(whole["model"])["backbone_state"]
    b = load_checkpoint(resumed["model"])["backbone_state"]
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert whole["fingerprint"] == resumed["fingerprint"]
    assert [h["R@1"] for h in whole["history"]] == [h["R@1"] for h in resumed["history"]]


def test_the_learning_rate_decays_along_a_cosine_to_zero_and_a_resume_continues_it(tmp_path):
    """lr(s) = lr * batch / 256 * (1 + cos(pi * s / total)) / 2 after step s, checked at the end of each epoch."""
    data = tiny_set()  # 96 photos in batches of 32: 3 steps an epoch, 9 in all
    cfg = config(tmp_path, "cos", epochs=3)
    peak, total = cfg.lr * cfg.batch_size / 256, 9
    for epoch in (1, 2, 3):  # each run is killed after one more epoch and resumed by the next
        train(cfg, sets=(data, data), resume=True, stop_after_epoch=epoch, log=lambda s: None)
        state = load_checkpoint(Path(cfg.out_dir) / "last.pt")["training_state"]
        expected = peak * 0.5 * (1 + math.cos(math.pi * 3 * epoch / total))
        assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15)
        assert state["schedule"]["last_epoch"] == 3 * epoch


def test_memory_instance_weights_follow_the_features_of_their_images(tmp_path):
    data = tiny_set()
    cfg = config(tmp_path, "coins_mlp")
    model = CoInsModel(build_backbone("smallcnn", in_channels=1, width=8), cfg.objective, data.categories, 2)
    rows = torch.tensor([0, 5])
    h = torch.nn.functional.normalize(torch.randn(2, model.memory.weights.shape[1]), dim=1)
    before = model.memory.weights[rows].clone()
    model.memory.update(h, rows)
    m = cfg.objective.memory_momentum
    assert 0 < m < 1
    expected = torch.nn.functional.normalize(m * before + (1 - m) * h, dim=1)
    assert torch.allclose(model.memory.weights[rows], expected)


def test_cli_trains_from_a_manifest_and_writes_a_checkpoint_the_embedder_loads(tmp_path):
    data = tiny_set(n=64)
    folder = tmp_path / "catalog"
    folder.mkdir()
    rows = []
    for i, image in enumerate(data.images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
        rows.append({"path": f"{i}.png", "category": data.category_names[data.categories[i]],
                     "product_id": data.product_names[data.products[i]]})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    code = training_main(["--train-manifest", str(folder / "manifest.csv"), "--val-manifest", str(folder / "manifest.csv"),
                          "--preset", "coins_imp", "--epochs", "1", "--batch-size", "16", "--grid", "1",
                          "--out", str(tmp_path / "run")])
    assert code == 0
    payload = load_checkpoint(tmp_path / "run" / "model.pt")
    assert payload["categories"] == ["bags", "shoes"] and "training_state" not in payload
    embedder = Embedder.from_checkpoint(tmp_path / "run" / "model.pt")
    vectors = embedder.embed_files([str(folder / "0.png"), str(folder / "1.png")]).embeddings
    assert vectors.shape == (2, payload["feature_dim"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)


def _manifest(tmp_path, n=64, products=True) -> Path:
    data = tiny_set(n=n)
    folder = tmp_path / "catalog"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, image in enumerate(data.images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
        rows.append({"path": f"{i}.png", "category": data.category_names[data.categories[i]],
                     **({"product_id": data.product_names[data.products[i]]} if products else {})})
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_cli_set_changes_the_preset_eq3_with_sampled_negatives_and_is_stored_with_the_model(tmp_path):
    manifest = _manifest(tmp_path, products=False)
    code = training_main(["--train-manifest", str(manifest), "--preset", "coins_imp", "--set", "instance_within_category=false",
                          "--set", "instance_negatives=8", "--epochs", "1", "--batch-size", "16", "--grid", "1",
                          "--out", str(tmp_path / "run")])
    assert code == 0
    objective = load_checkpoint(tmp_path / "run" / "model.pt")["config"]["objective"]
    assert objective["instance_negatives"] == 8 and objective["instance_within_category"] is False


def test_cli_set_changes_only_what_it_names_in_the_preset(tmp_path):
    from training.__main__ import config_from_args, parse_args
    base = ["--train-manifest", str(_manifest(tmp_path)), "--out", "o"]
    plain = config_from_args(parse_args([*base, "--preset", "cos"])).objective
    assert plain == PRESETS["cos"]
    changed = config_from_args(parse_args([*base, "--preset", "cos", "--set", "cosine=true", "--set", "temperature=0.4"])).objective
    assert (changed.cosine, changed.temperature) == (True, 0.4)
    assert dataclasses.replace(changed, cosine=plain.cosine, temperature=plain.temperature) == plain
    cfg = config_from_args(parse_args([*base, "--preset", "coinsp", "--set", "coarse_weight=0.25",
                                       "--set", "memory_momentum=0.9", "--set", "proxy_start=1"]))
    assert (cfg.objective.coarse_weight, cfg.objective.memory_momentum, cfg.proxy_start) == (0.25, 0.9, 1)
    assert dataclasses.replace(cfg.objective, coarse_weight=PRESETS["coinsp"].coarse_weight,
                               memory_momentum=PRESETS["coinsp"].memory_momentum) == PRESETS["coinsp"]


@pytest.mark.parametrize("setting, message", [("colour=red", "KEY one of: coarse_weight"), ("temperature", "KEY=VALUE"),
                                              ("num_proxies=many", "expected a int"), ("cosine=maybe", "expected a bool")])
def test_cli_set_refuses_an_unknown_setting_or_a_value_of_the_wrong_type(setting, message, capsys):
    from training.__main__ import config_from_args, parse_args
    with pytest.raises(SystemExit) as refused:
        config_from_args(parse_args(["--train-manifest", "m.csv", "--out", "o", "--set", setting]))
    assert message in str(refused.value)


def test_cli_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        training_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("--epochs EPOCHS", "(default: 15)", "(default: 256)", "(default: 0.1)", "(default: smallcnn)",
                    "(default: 4 for smallcnn, 1 for resnet18, 1 for efficientnet_lite0)", "(default: auto)", "--epochs 5"):
        assert default in text, default


def test_cli_resume_without_a_checkpoint_says_so_and_starts_only_when_asked(tmp_path, capsys):
    manifest = _manifest(tmp_path, products=False)
    args = ["--train-manifest", str(manifest), "--preset", "cos", "--epochs", "1", "--batch-size", "16", "--grid", "1",
            "--out", str(tmp_path / "run")]
    assert training_main([*args, "--resume"]) == 2
    assert "last.pt does not exist" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert training_main([*args, "--resume-or-start"]) == 0 and (tmp_path / "run" / "model.pt").is_file()


def test_cli_zero_epochs_writes_the_starting_backbone_as_a_model(tmp_path):
    manifest = _manifest(tmp_path)
    code = training_main(["--train-manifest", str(manifest), "--val-manifest", str(manifest), "--preset", "coinsp",
                          "--epochs", "0", "--grid", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    payload = load_checkpoint(tmp_path / "run" / "model.pt")
    assert "coarse_head" not in payload  # an untrained category head is not shipped
    start = payload["config"]["history"]
    assert [r["epoch"] for r in start] == [0] and "R@1" in start[0] and "coarse_top1" not in start[0]
    Embedder.from_checkpoint(tmp_path / "run" / "model.pt")


def test_cli_trains_on_a_manifest_smaller_than_one_batch(tmp_path, capsys):
    manifest = _manifest(tmp_path, n=20, products=False)
    code = training_main(["--train-manifest", str(manifest), "--preset", "coinsp", "--epochs", "1", "--grid", "1",
                          "--out", str(tmp_path / "run")])
    assert code == 0 and "training with batches of 20" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "model.pt")["config"]["batch_size"] == 20


def test_cli_refuses_a_manifest_too_small_to_train_on_with_a_clear_message(tmp_path, capsys):
    manifest = _manifest(tmp_path, n=1, products=False)
    assert training_main(["--train-manifest", str(manifest), "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    assert "too few to train on" in capsys.readouterr().err


def test_cli_val_fraction_holds_out_part_of_each_category_and_logs_json_lines_to_metrics(tmp_path, capsys):
    manifest = _manifest(tmp_path)
    code = training_main(["--train-manifest", str(manifest), "--val-fraction", "0.25", "--preset", "opt", "--epochs", "2",
                          "--batch-size", "16", "--grid", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all("R@1" in r for r in lines)
    assert all("coarse_top1" not in r for r in lines)  # Opt trains no category head: no accuracy of it is shown
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err  # no progress bars when the output is not a terminal


def test_hold_out_is_seeded_and_stratified_by_category():
    data = tiny_set(n=96)
    fit, held = hold_out(data, 0.25, seed=3)
    assert len(fit) + len(held) == 96 and torch.bincount(held.categories).tolist() == [12, 12]
    again = hold_out(data, 0.25, seed=3)[1]
    assert torch.equal(again.images, held.images) and not torch.equal(hold_out(data, 0.25, seed=4)[1].images, held.images)


def test_training_set_skips_unreadable_images_and_reads_only_category_as_label(tmp_path):
    Image.new("L", (28, 28), 200).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("not an image")
    pd.DataFrame([{"path": "good.png", "category": "bags"}, {"path": "bad.png", "category": "shoes"}]).to_csv(
        tmp_path / "m.csv", index=False)
    data = load_training_set(tmp_path / "m.csv", PRE, cache_dir=tmp_path / "cache")
    assert len(data) == 1 and data.category_names == ["bags"] and data.products is None


def test_the_model_keeps_its_category_head_which_predicts_as_in_training(tmp_path):
    from embedder.category_head import category_logits

    data = tiny_set()
    result = train(config(tmp_path, "coinsp", epochs=1), sets=(data, data), log=lambda s: None)
    payload = load_checkpoint(result["model"])
    head = payload["coarse_head"]
    assert head["input"] == "mlp" and head["cosine"] and head["scale"] == pytest.approx(1 / PRESETS["coinsp"].temperature)
    state = load_checkpoint(Path(result["model"]).parent / "last.pt")["training_state"]
    model = CoInsModel(build_backbone("smallcnn", in_channels=1, grid=2, width=8), PRESETS["coinsp"], data.categories, 2)
    model.load_state_dict(state["model"])
    model.eval()
    x = PRE.normalise(data.images[:8])
    with torch.no_grad():
        features = model.backbone(x)
        expected = model.coarse(model.head_input(features))
    assert torch.allclose(category_logits(head, features), expected, atol=1e-5)


def test_a_model_whose_objective_trains_no_category_head_ships_none(tmp_path):
    data = tiny_set()
    result = train(config(tmp_path, "opt", epochs=1), sets=(data, data), log=lambda s: None)
    assert "coarse_head" not in load_checkpoint(result["model"])
