"""python -m training: train a model on a catalog manifest with one of the paper's presets.

Example (Fashion-MNIST with store categories, the product's default model):
    python -m training --fashion-mnist --preset coinsp --epochs 15 --out runs/coinsp
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from embedder.preprocess import Preprocessing
from training.distributed import Ranks
from training.presets import LABELS, PRESETS
from training.train import TrainConfig, train

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--train-manifest", help="catalog manifest (CSV/Parquet: path, category[, product_id])")
    data.add_argument("--val-manifest", help="manifest with product_id for Recall@k after every epoch")
    data.add_argument("--fashion-mnist", action="store_true", help="use Fashion-MNIST (imported into --data-dir if needed)")
    data.add_argument("--fashion-mnist-source", help="folder with the four .gz IDX files (default: the Debian package's)")
    data.add_argument("--data-dir", default="data/fashion-mnist")
    m = p.add_argument_group("method")
    m.add_argument("--preset", choices=sorted(PRESETS), default="coinsp",
                   help="; ".join(f"{k} = {v}" for k, v in LABELS.items()))
    m.add_argument("--coarse-weight", type=float, help="weight of the coarse (category) loss, Eq. 2's term")
    m.add_argument("--instance-weight", type=float, help="lambda_I")
    m.add_argument("--proxy-weight", type=float, help="lambda_P")
    m.add_argument("--proxies", type=int, help="P, the number of instance proxies")
    m.add_argument("--proxy-start", type=int, help="epoch from which the proxy loss is on (default: half)")
    m.add_argument("--temperature", type=float)
    m.add_argument("--cosine", action="store_true", help="cosine softmax heads (the `*` variants), scale 1/temperature")
    m.add_argument("--instance-weights", choices=["memory", "parametric"], help="how W^I is kept")
    m.add_argument("--memory-momentum", type=float, help="memory W^I: each visit keeps this share of the old row")
    m.add_argument("--instance-softmax", choices=["all", "category"],
                   help="the instance softmax runs over all photos (Eq. 3) or the photo's category (Eq. 4)")
    m.add_argument("--negatives", type=int, help="sample the instance softmax's denominator: N rows (of the "
                   "image's category under Eq. 4) instead of all of them; 0 = exact")
    n = p.add_argument_group("network")
    n.add_argument("--backbone", choices=["smallcnn", "resnet18", "efficientnet_lite0"], default="smallcnn")
    n.add_argument("--stem", choices=["cifar", "imagenet"], default="imagenet", help="resnet18 stem")
    n.add_argument("--grid", type=int, default=4, help="pool the last map to grid x grid cells (1 = global average)")
    n.add_argument("--pretrained", help="start from ImageNet weights: 'imagenet' (efficientnet_lite0, from the "
                   "installed weights package), or for resnet18 a local .pth or 'torchvision' (downloads)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int, default=15)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--augmentation", choices=["none", "weak", "strong"], default="weak")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    t.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="bf16 autocast, or plain fp32")
    t.add_argument("--out", required=True, help="run folder: last.pt (resumable), model.pt, history.json")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    if a.fashion_mnist:
        a.train_manifest, a.val_manifest = map(str, fashion_mnist_manifests(Path(a.data_dir), a.fashion_mnist_source))
    if not a.train_manifest:
        raise SystemExit("error: give --train-manifest or --fashion-mnist")
    overrides = {field: getattr(a, arg) for field, arg in [
        ("coarse_weight", "coarse_weight"), ("instance_weight", "instance_weight"), ("proxy_weight", "proxy_weight"),
        ("num_proxies", "proxies"), ("temperature", "temperature"), ("instance_weights", "instance_weights"),
        ("memory_momentum", "memory_momentum"),
        ("instance_negatives", "negatives")] if getattr(a, arg) is not None}
    if a.cosine:
        overrides["cosine"] = True
    if a.instance_softmax:
        overrides["instance_within_category"] = a.instance_softmax == "category"
    objective = dataclasses.replace(PRESETS[a.preset], **overrides)
    pre = default_input(a.backbone, a.stem)
    kwargs = {"in_channels": pre.channels, "grid": a.grid}
    if a.backbone == "resnet18":
        kwargs["stem"] = a.stem
    return TrainConfig(train_manifest=a.train_manifest, val_manifest=a.val_manifest, out_dir=a.out, preset=a.preset,
                       objective=objective, backbone=a.backbone, backbone_kwargs=kwargs, pretrained=a.pretrained,
                       preprocessing=pre.to_dict(), augmentation=a.augmentation, epochs=a.epochs,
                       batch_size=a.batch_size, lr=a.lr, proxy_start=a.proxy_start, seed=a.seed, device=a.device)


def main(argv=None) -> int:
    """Under torchrun (WORLD_SIZE > 1 in the environment) every process runs this; see docs/training-distributed.md."""
    args = parse_args(argv)
    try:
        ranks = Ranks.from_environment(args.device)
    except (ValueError, RuntimeError) as exc:
        print(f"error: cannot join the torchrun process group: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = ranks.main_first(lambda: config_from_args(args))  # one process imports Fashion-MNIST
        result = train(cfg, resume=args.resume, precision=args.precision)
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
