"""python -m training: train a model on a catalog manifest with one of the named presets.

Example (Fashion-MNIST with store categories, at the budget the README's figures are measured at):
    python -m training --fashion-mnist --preset coinsp_sampled --epochs 5 --set proxy_start=1 --out runs/coinsp
Change any setting of a preset with --set, e.g. --set temperature=0.3 --set proxy_start=1.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from embedder.preprocess import Preprocessing
from training.augment import AUGMENTATIONS
from training.distributed import Ranks
from training.model import ObjectiveConfig
from training.presets import LABELS, PRESETS
from training.train import TrainConfig, train

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Settings of the schedule that --set takes beside the preset's fields.
SCHEDULE_SETTINGS = {"proxy_start": int}


def default_input(backbone: str, stem: str) -> Preprocessing:
    if backbone == "smallcnn":
        return Preprocessing(28, 1, (0.286,), (0.353,))
    if stem == "cifar":
        return Preprocessing(32, 3, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    return Preprocessing(224, 3, *IMAGENET)


def fashion_mnist_manifests(data_dir: Path, source: str | None) -> tuple[Path, Path]:
    from index.importers import import_fashion_mnist

    kwargs = {"source_dir": source} if source else {}
    return (import_fashion_mnist(data_dir, split="train", **kwargs), import_fashion_mnist(data_dir, split="test", **kwargs))


class _HelpFormat(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every option's default."""


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
    n.add_argument("--grid", type=int, default=4, help="pool the last map to grid x grid cells (1 = global average)")
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
    t.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast, or plain fp32")
    t.add_argument("--out", required=True, help="run folder: last.pt (resumable), model.pt, history.json, metrics.jsonl")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (an error if there is none)")
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


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    objective_settings, schedule = parse_settings(a.set)
    if a.fashion_mnist:
        a.train_manifest, a.val_manifest = map(str, fashion_mnist_manifests(Path(a.data_dir), a.fashion_mnist_source))
    if not a.train_manifest:
        raise SystemExit("error: give --train-manifest or --fashion-mnist")
    if a.val_fraction and a.val_manifest:
        raise SystemExit("error: give --val-manifest or --val-fraction, not both")
    if a.epochs < 0:
        raise SystemExit("error: --epochs must be 0 or more")
    objective = dataclasses.replace(PRESETS[a.preset], **objective_settings)
    pre = default_input(a.backbone, a.stem)
    kwargs = {"in_channels": pre.channels, "grid": a.grid}
    if a.backbone == "resnet18":
        kwargs["stem"] = a.stem
    return TrainConfig(train_manifest=a.train_manifest, val_manifest=a.val_manifest, out_dir=a.out, preset=a.preset,
                       objective=objective, backbone=a.backbone, backbone_kwargs=kwargs, pretrained=a.pretrained,
                       preprocessing=pre.to_dict(), augmentation=a.augmentation, epochs=a.epochs,
                       batch_size=a.batch_size, lr=a.lr, proxy_start=schedule.get("proxy_start"), seed=a.seed,
                       device=a.device, val_fraction=a.val_fraction)


def main(argv=None) -> int:
    """Under torchrun (WORLD_SIZE > 1 in the environment) every process runs this; see docs/training-distributed.md."""
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
        cfg = ranks.main_first(lambda: config_from_args(args))  # one process imports Fashion-MNIST
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


if __name__ == "__main__":
    sys.exit(main())
