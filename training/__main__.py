"""python -m training: train a model on a catalog manifest with one of the named presets.

`python -m training mask` trains the product mask instead (training/mask_training.py); `python -m training
views` renders query views to train on (training/query_views.py; then --query-views FILE).

Example (Fashion-MNIST with store categories, at the budget the README's figures are measured at):
    python -m training --fashion-mnist --preset coinsp_sampled --epochs 5 --set proxy_start=1 --out runs/coinsp
Change any setting of a preset with --set, e.g. --set temperature=0.3 --set proxy_start=1.
The input (size, grey or colour, mean/std, polarity, margin) is measured on the training manifest's
images (training/input_settings.py) and printed at the start; --input KEY=VALUE sets any of it by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from training.augment import AUGMENTATIONS
from training.distributed import Ranks
from training.input_settings import choose_input
from training.model import ObjectiveConfig
from training.presets import LABELS, PRESETS
from training.train import TrainConfig, train

# Settings of the schedule that --set takes beside the preset's fields.
SCHEDULE_SETTINGS = {"proxy_start": int}
# The feature grid when --grid is not given. smallcnn keeps where things are in a centred product
# shot (4 x 4 cells: 2,048-d); the ImageNet backbones pool globally, as their weights were trained,
# so their vectors stay 512-d (resnet18) and 1,280-d (efficientnet_lite0) instead of 16 times that.
DEFAULT_GRID = {"smallcnn": 4, "resnet18": 1, "efficientnet_lite0": 1}
# What --input KEY=VALUE converts each value to (mean and std: one number per channel, comma-separated).
INPUT_SETTINGS = {"size": int, "channels": int, "mean": tuple, "std": tuple, "polarity": str, "margin": float,
                  "domain": bool, "invert": bool}


def fashion_mnist_manifests(data_dir: Path, source: str | None) -> tuple[Path, Path]:
    from index.importers import import_fashion_mnist

    kwargs = {"source_dir": source} if source else {}
    return (import_fashion_mnist(data_dir, split="train", **kwargs), import_fashion_mnist(data_dir, split="test", **kwargs))


class _HelpFormat(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default (none shown where there is none)."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, []) else super()._get_help_string(action)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__, formatter_class=_HelpFormat)
    data = p.add_argument_group("data")
    data.add_argument("--train-manifest", help="catalog manifest (CSV/Parquet: path, category[, product_id])")
    data.add_argument("--val-manifest", help="manifest with product_id for Recall@k after every epoch")
    data.add_argument("--val-fraction", type=float, default=0.0,
                      help="without --val-manifest: hold out this share of each category of the training manifest "
                      "(seeded by --seed) for Recall@k after every epoch")
    data.add_argument("--fashion-mnist", action="store_true", help="use Fashion-MNIST (imported into --data-dir if needed)")
    data.add_argument("--fashion-mnist-source", help="folder with the four .gz IDX files (default: the Debian package's)")
    data.add_argument("--data-dir", default="data/fashion-mnist", help="where --fashion-mnist is imported")
    m = p.add_argument_group("method")
    m.add_argument("--preset", choices=sorted(PRESETS), default="coinsp_sampled",
                   help="; ".join(f"{k} = {v}" for k, v in LABELS.items()))
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one setting of the preset (repeatable). KEY: "
                   + ", ".join([*(f.name for f in dataclasses.fields(ObjectiveConfig)), *SCHEDULE_SETTINGS])
                   + " (proxy_start: the epoch, from 0, the proxy loss starts; default half the epochs)")
    n = p.add_argument_group("network")
    n.add_argument("--backbone", choices=["smallcnn", "resnet18", "efficientnet_lite0"], default="smallcnn",
                   help="the network f whose features are the search vectors")
    n.add_argument("--stem", choices=["cifar", "imagenet"], default="imagenet", help="resnet18 stem")
    n.add_argument("--grid", type=int, help="pool the last map to grid x grid cells (1 = global average) "
                   "(default: " + ", ".join(f"{g} for {b}" for b, g in DEFAULT_GRID.items()) + ")")
    n.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                   help="set one input setting by hand instead of measuring it on the training images (repeatable). "
                   "KEY: size (px), channels (1 or 3), mean and std (one number per channel, e.g. 0.5,0.5,0.5), "
                   "polarity (light-on-dark, dark-on-light, keep), margin, domain, invert")
    n.add_argument("--pretrained", help="start from ImageNet weights: 'imagenet' (efficientnet_lite0, from the "
                   "installed weights package), or for resnet18 a local .pth or 'torchvision' (downloads)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=15,
                   help="0 writes the starting backbone as a model without training (with --pretrained: frozen ImageNet features)")
    t.add_argument("--batch-size", type=int, default=256, help="images per step (of all processes together)")
    t.add_argument("--lr", type=float, default=0.1, help="learning rate at a batch of 256 (scaled with the batch)")
    t.add_argument("--augmentation", choices=sorted(AUGMENTATIONS), default="weak",
                   help="weak: shift + flip; strong: random resized crop; shopper: scale, shift, rotation up to "
                   "10 degrees, brightness, contrast and tint, as shoppers' photos vary")
    t.add_argument("--seed", type=int, default=0, help="seeds the model, the order, the augmentation and the k-means")
    t.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    t.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16 autocast or plain fp32; auto: the faster on this machine (measured once, cached)")
    t.add_argument("--out", required=True, help="run folder: last.pt (resumable), model.pt, history.json, metrics.jsonl")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (an error if there is none)")
    t.add_argument("--query-views", help="query views to train on beside the catalog images (python -m training views)")
    t.add_argument("--query-view-share", type=float, default=0.3,
                   help="with --query-views: the share of rows with a view shown their view instead")
    t.add_argument("--resume-or-start", action="store_true", help="continue from OUT/last.pt, or start if there is none")
    return p.parse_args(argv)


def parse_settings(settings: list[str]) -> tuple[dict, dict]:
    """--set KEY=VALUE pairs, each value converted to its setting's type: (preset fields, schedule settings)."""
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    valid = sorted([*fields, *SCHEDULE_SETTINGS])
    defaults = ObjectiveConfig()
    objective, schedule = {}, {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in valid:
            raise SystemExit(f"error: --set {setting!r}: expected KEY=VALUE with KEY one of: {', '.join(valid)}")
        kind = SCHEDULE_SETTINGS.get(key) or type(getattr(defaults, key))
        value = value.strip()
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                converted = value.lower() in ("true", "1", "yes")
            else:
                converted = kind(value)
        except ValueError:
            raise SystemExit(f"error: --set {key}={value}: expected a {kind.__name__}") from None
        (schedule if key in SCHEDULE_SETTINGS else objective)[key] = converted
    return objective, schedule


def parse_input(settings: list[str]) -> dict:
    """--input KEY=VALUE pairs -> Preprocessing fields, each value converted to its field's type."""
    given = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in INPUT_SETTINGS:
            raise SystemExit(f"error: --input {setting!r}: expected KEY=VALUE with KEY one of: {', '.join(INPUT_SETTINGS)}")
        kind = INPUT_SETTINGS[key]
        try:
            if kind is tuple:
                given[key] = tuple(float(v) for v in value.split(","))
            elif kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                given[key] = value.lower() in ("true", "1", "yes")
            else:
                given[key] = kind(value)
        except ValueError:
            expected = "comma-separated numbers" if kind is tuple else f"a {kind.__name__}"
            raise SystemExit(f"error: --input {key}={value}: expected {expected}") from None
    return given


def config_from_args(a: argparse.Namespace, log=print) -> TrainConfig:
    """The run's configuration; the input is measured on the training manifest (what was chosen goes to `log`)."""
    objective_settings, schedule = parse_settings(a.set)
    given_input = parse_input(a.input)
    if a.fashion_mnist:
        a.train_manifest, a.val_manifest = map(str, fashion_mnist_manifests(Path(a.data_dir), a.fashion_mnist_source))
    if not a.train_manifest:
        raise SystemExit("error: give --train-manifest or --fashion-mnist")
    if a.val_fraction and a.val_manifest:
        raise SystemExit("error: give --val-manifest or --val-fraction, not both")
    if a.epochs < 0:
        raise SystemExit("error: --epochs must be 0 or more")
    objective = dataclasses.replace(PRESETS[a.preset], **objective_settings)
    cache_dir = TrainConfig.cache_dir
    choice = choose_input(a.train_manifest, a.backbone, pretrained=bool(a.pretrained), stem=a.stem,
                          given=given_input, cache_dir=cache_dir, seed=a.seed)
    pre = choice.preprocessing
    grid = a.grid if a.grid is not None else DEFAULT_GRID[a.backbone]
    log(f"{choice.why}; grid {grid}{' (given)' if a.grid is not None else f' ({a.backbone} default)'}")
    kwargs = {"in_channels": pre.channels, "grid": grid}
    if a.backbone == "resnet18":
        kwargs["stem"] = a.stem
    return TrainConfig(train_manifest=a.train_manifest, val_manifest=a.val_manifest, out_dir=a.out, preset=a.preset,
                       objective=objective, backbone=a.backbone, backbone_kwargs=kwargs, pretrained=a.pretrained,
                       preprocessing=pre.to_dict(), input_reason=choice.why, augmentation=a.augmentation, epochs=a.epochs,
                       batch_size=a.batch_size, lr=a.lr, proxy_start=schedule.get("proxy_start"), seed=a.seed,
                       device=a.device, val_fraction=a.val_fraction, cache_dir=cache_dir, query_views=a.query_views,
                       query_view_share=a.query_view_share if a.query_views else 0.0)


def main(argv=None) -> int:
    """Under torchrun (WORLD_SIZE > 1 in the environment) every process runs this; see docs/training-distributed.md."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["mask"]:  # python -m training mask: the product mask (training/mask_training.py)
        from training.mask_training import main as train_product_mask
        train_product_mask(argv[1:])
        return 0
    if argv[:1] == ["confidence"]:  # python -m training confidence: the notice fitted on shopper photos
        from training.confidence import main as fit_query_confidence
        fit_query_confidence(argv[1:])
        return 0
    if argv[:1] == ["views"]:  # python -m training views: query views for training (training/query_views.py)
        from training.query_views import main as make_query_views
        make_query_views(argv[1:])
        return 0
    args = parse_args(argv)
    if args.resume and not args.resume_or_start and not (Path(args.out) / "last.pt").is_file():
        print(f"error: --resume: {Path(args.out) / 'last.pt'} does not exist, so there is nothing to continue; "
              "give --resume-or-start to start a new run there instead", file=sys.stderr)
        return 2
    try:
        ranks = Ranks.from_environment(args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"error: cannot join the torchrun process group: {exc}", file=sys.stderr)
        return 2
    try:
        # One process imports Fashion-MNIST and decodes the training images to measure them; the others read its cache.
        cfg = ranks.main_first(lambda: config_from_args(args, log=print if ranks.main else _quiet))
        result = train(cfg, resume=args.resume or args.resume_or_start, precision=args.precision)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ranks.close()
    if ranks.main:
        last = result["history"][-1] if result["history"] else {}
        print(f"model written to {result['model']} (fingerprint {result['fingerprint']}); last epoch: {last}")
    return 0


def _quiet(*_args, **_kwargs) -> None:
    pass


if __name__ == "__main__":
    sys.exit(main())
