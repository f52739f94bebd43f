"""python -m benchmarks.training_benchmark: the paper's comparison on Fashion-MNIST at one equal budget.

Trains Cos, Ins, CoIns, CoIns_imp, CoIns**, CoInsP** and Opt with the same smallcnn backbone,
augmentation and epochs on the 60k training photos (store categories apparel /
footwear / bags: the only labels the CoIns methods see), and measures fine-class
Recall@k on the 10k test photos (each querying the other 9,999), next to raw pixels.
Two rows start from EfficientNet-Lite0's ImageNet weights (the installed
requirements-pretrained.txt package; nothing is downloaded): its features frozen
(imagenet_frozen), and CoInsP** (sampled) trained from them at the same budget
(coinsp_imagenet), at the input choose_input measures for a pretrained backbone.
Without the weights package those rows are skipped, with the reason in the table.
Writes the table as Markdown and JSON after every method, so a cut-off run keeps what
it measured.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from embedder.backbones import build_backbone, load_imagenet_weights
from embedder.preprocess import Preprocessing
from index.quality.evaluation import recall_at_k
from index.importers import import_fashion_mnist
from training import objectives
from training.input_settings import choose_input
from training.augment import AUGMENTATIONS
from training.presets import LABELS, PRESETS
from training.train import TrainConfig, build_model, load_sets, train, train_step

# Rows from ImageNet weights: (the preset that builds the model, the row's name). The frozen row never
# trains (epochs 0), so its preset only has to build a model without an instance memory.
IMAGENET_METHODS = {"imagenet_frozen": ("cos", "EfficientNet-Lite0 ImageNet, frozen"),
                    "coinsp_imagenet": ("coinsp_sampled", "CoInsP** (sampled) from ImageNet")}
IMAGENET_BACKBONE = "efficientnet_lite0"
IMAGENET_GRID = 1  # pooled globally, as the weights were trained (training's default for this backbone)
# The ImageNet rows come last, so that a run cut off during them (hours on a CPU) keeps the rest of the table.
METHODS = ["cos", "ins", "coins", "coins_imp", "coins_mlp", "coinsp", "maskcon", "grafit", "opt", *IMAGENET_METHODS]
KS = (1, 2, 4, 8)


def method_label(method: str) -> str:
    return LABELS[method] if method in LABELS else IMAGENET_METHODS[method][1]


def describe_input(pre: Preprocessing, network: str) -> str:
    return f"{pre.size} px, {'grey' if pre.channels == 1 else f'{pre.channels} ch'}, {network}"


def imagenet_weights_problem() -> str | None:
    """Why EfficientNet-Lite0's ImageNet weights cannot be loaded here (None: they can), found
    before any image is decoded for them. They come only from the installed package, never a download."""
    try:
        load_imagenet_weights(build_backbone(IMAGENET_BACKBONE, in_channels=3, grid=IMAGENET_GRID), "imagenet")
    except RuntimeError as exc:
        return str(exc)
    return None


def raw_pixel_recall(images: torch.Tensor, labels: torch.Tensor, centred: bool) -> dict:
    x = images.flatten(1).float()
    if centred:
        x = x - x.mean(0)
    report = recall_at_k(F.normalize(x, dim=1).numpy(), labels.numpy(), ks=KS)
    return {f"R@{k}": v for k, v in report.overall.items()}


def instance_head_time(n: int, categories: torch.Tensor, dim: int, batch: int, within: bool, repeats: int = 20) -> float:
    """Median seconds of one forward+backward of the instance loss over a realistic batch."""
    generator = torch.Generator().manual_seed(0)
    model_categories, _ = torch.sort(categories)
    start = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(model_categories).cumsum(0)])
    weights = F.normalize(torch.randn(n, dim, generator=generator), dim=1)
    times = []
    for _ in range(repeats + 3):
        rows = torch.randint(0, n, (batch,), generator=generator)
        h = F.normalize(torch.randn(batch, dim, generator=generator), dim=1).requires_grad_()
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if within:
                loss = objectives.instance_loss_within_category(h, weights, rows, model_categories[rows], start, 10.0)
            else:
                loss = objectives.instance_loss(h, weights, rows, 10.0)
        loss.backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[3:])


def write_report(rows: list[dict], extra: dict, out: Path) -> None:
    cos = next((r for r in rows if r["method"] == "Cos"), None)
    opt = next((r for r in rows if r["method"] == "Opt"), None)
    for r in rows:
        if cos and opt and "R@1" in r and opt["R@1"] != cos["R@1"]:
            r["gap_closed"] = (r["R@1"] - cos["R@1"]) / (opt["R@1"] - cos["R@1"])
    header = ["method", "input", *[f"R@{k}" for k in KS], "coarse top-1", "images/s", "train s", "wall s", "gap closed"]
    lines = ["| " + " | ".join(header) + " |", "|---|---" + "|---:" * (len(header) - 2) + "|"]
    fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
    for r in rows:
        where = (r.get("input", "–") + (f"; **skipped**: {r['skipped']}" if r.get("skipped") else "")).replace("|", "\\|")
        lines.append("| " + " | ".join([r["method"], where, *[fmt(r.get(f"R@{k}"), ".4f") for k in KS],
                                        fmt(r.get("coarse_top1"), ".4f"), fmt(r.get("images_per_s"), ".0f"),
                                        fmt(r.get("train_s"), ".0f"), fmt(r.get("wall_s"), ".0f"),
                                        fmt(r.get("gap_closed"), ".0%")]) + " |")
    notes = [f"- {k}: {v}" for k, v in extra.items()]
    text = "# Fashion-MNIST benchmark: fine-class retrieval from category labels\n\n" + "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(text)
    (out / "benchmark.json").write_text(json.dumps({"rows": rows, **extra}, indent=1))
    print(text, flush=True)


def merge_reports(folders: list[Path], out: Path) -> int:
    """One table from several runs at the same budget (e.g. methods re-run after a fix)."""
    rows: dict[str, dict] = {}
    extra: dict = {}
    for folder in folders:
        report = json.loads((folder / "benchmark.json").read_text())
        for row in report.pop("rows"):
            row.pop("gap_closed", None)
            rows[row["method"]] = {**row, "run": str(folder)}
        extra.update({f"{k} ({folder})": v for k, v in report.items()})
    write_report(list(rows.values()), extra, out)
    return 0


def interleaved_throughput(base: TrainConfig, methods: list[str], train_set, *, steps: int = 8, rounds: int = 4,
                           log=print) -> dict[str, float]:
    """Training images/s of each method, measured in turns (a few steps of each, round after round)
    so that load from other work on the machine hits every method alike. CoInsP's k-means is
    timed once and spread over an epoch's steps, for the share of epochs that run it."""
    device = torch.device(base.device)
    pre = Preprocessing.from_dict(base.preprocessing)
    categories = train_set.categories.to(device)
    fine = train_set.products.to(device) if train_set.products is not None else None
    steps_per_epoch = len(train_set) // base.batch_size
    runs, generator = {}, torch.Generator().manual_seed(0)
    for method in methods:
        cfg = dataclasses.replace(base, objective=PRESETS[method])
        model = build_model(cfg, train_set).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        kmeans_per_step = 0.0
        if cfg.objective.proxy_weight > 0:
            started = time.perf_counter()
            model.recluster(seed=0)
            share = 1 - (cfg.proxy_start if cfg.proxy_start is not None else cfg.epochs // 2) / cfg.epochs
            kmeans_per_step = (time.perf_counter() - started) * share / steps_per_epoch
        runs[method] = (model, optimizer, schedule, kmeans_per_step, [])
    for _ in range(rounds + 1):  # the first round warms up and is not counted
        for method, (model, optimizer, schedule, _, times) in runs.items():
            for _ in range(steps):
                idx = torch.randint(0, len(train_set), (base.batch_size,), generator=generator)
                started = time.perf_counter()
                train_step(model, optimizer, schedule, train_set.images, idx, categories, fine, pre=pre,
                           augmentation=base.augmentation, generator=generator, device=device, precision="bf16")
                times.append(time.perf_counter() - started)
    result = {}
    for method, (_, _, _, kmeans_per_step, times) in runs.items():
        step = statistics.median(times[steps:]) + kmeans_per_step
        result[method] = base.batch_size / step
        log(f"{LABELS[method]}: {result[method]:.0f} images/s in turns (k-means {kmeans_per_step * 1e3:.1f} ms/step)")
    return result


def run_method(cfg: TrainConfig, label: str, where: str, sets) -> dict:
    """Train (epochs 0: only embed) and measure one row: the last epoch's Recall@k, images/s, times."""
    started = time.perf_counter()
    history = train(cfg, sets=sets, log=lambda s: print(s, flush=True))["history"]
    last, trained = history[-1], [h for h in history if "images_per_s" in h]
    return {"method": label, "input": where, **{f"R@{k}": last[f"R@{k}"] for k in KS},
            "coarse_top1": last.get("coarse_top1"),  # only where the objective trained the category head
            "images_per_s": statistics.median(h["images_per_s"] for h in trained) if trained else None,
            "train_s": sum(h["train_s"] for h in trained), "wall_s": time.perf_counter() - started}


def prepare_imagenet(base: TrainConfig, train_manifest: Path, extra: dict):
    """(configuration, input for the table, decoded (train, test) sets or why the weights cannot be loaded)
    of the ImageNet rows: EfficientNet-Lite0 at the input choose_input picks for pretrained weights
    (on 28-px images: 112 px, 3 channels, ImageNet's mean and std), schedule and budget as the others."""
    choice = choose_input(train_manifest, IMAGENET_BACKBONE, pretrained=True, cache_dir=base.cache_dir, seed=base.seed)
    pre = choice.preprocessing
    cfg = dataclasses.replace(base, backbone=IMAGENET_BACKBONE, pretrained="imagenet", preprocessing=pre.to_dict(),
                              backbone_kwargs={"in_channels": pre.channels, "grid": IMAGENET_GRID})
    where = describe_input(pre, f"{IMAGENET_BACKBONE} ImageNet grid {IMAGENET_GRID}")
    problem = imagenet_weights_problem()
    if problem:
        extra["ImageNet rows"] = f"skipped: {problem}"
        return cfg, where, problem
    started = time.perf_counter()
    sets = load_sets(cfg)  # decoded once more at this input (cached on disk for the next run), not in the rows' times
    extra["ImageNet rows"] = (f"{IMAGENET_BACKBONE} from the installed ImageNet weights, grid {IMAGENET_GRID}; {choice.why}; "
                              f"train and test photos decoded at this input in {time.perf_counter() - started:.0f} s; "
                              "frozen = no training (wall s: building the model and embedding the test photos)")
    return cfg, where, sets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training_benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=sorted([*PRESETS, *IMAGENET_METHODS]),
                   help="presets on the smallcnn, and " + "; ".join(f"{m} = {label}" for m, (_, label) in IMAGENET_METHODS.items()))
    p.add_argument("--epochs", type=int, default=5, help="the one budget every method gets")
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--augmentation", default="weak", choices=sorted(AUGMENTATIONS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="data/fashion-mnist")
    p.add_argument("--out", default="reports/benchmark")
    p.add_argument("--cache-dir", default=TrainConfig.cache_dir, help="where decoded training images are cached")
    p.add_argument("--throughput-only", action="store_true",
                   help="only measure training images/s of --methods in turns (minutes), no training")
    p.add_argument("--limit", type=int, help="only the first N photos of each split (quick trials and the smoke test)")
    p.add_argument("--no-throughput", action="store_true",
                   help="skip the timings of the instance head and of training in turns (minutes on a CPU)")
    p.add_argument("--merge", nargs="+", metavar="REPORT_DIR",
                   help="only combine the rows of earlier runs' benchmark.json (later runs win) into --out")
    a = p.parse_args(argv)
    if a.merge:
        return merge_reports([Path(d) for d in a.merge], Path(a.out))

    started_all = time.perf_counter()
    train_manifest = import_fashion_mnist(a.data_dir, split="train", limit=a.limit)
    test_manifest = import_fashion_mnist(a.data_dir, split="test", limit=a.limit)
    # measured on the images, as the CLI does
    pre = choose_input(train_manifest, "smallcnn", cache_dir=a.cache_dir).preprocessing
    base = TrainConfig(train_manifest=str(train_manifest), val_manifest=str(test_manifest), out_dir="",
                       backbone_kwargs={"in_channels": 1, "grid": a.grid}, preprocessing=pre.to_dict(),
                       augmentation=a.augmentation, epochs=a.epochs, seed=a.seed, device=a.device, ks=KS,
                       cache_dir=a.cache_dir)
    sets = load_sets(base)
    train_set, test_set = sets
    out = Path(a.out)
    smallcnn_methods = [m for m in a.methods if m in PRESETS]
    if a.throughput_only:
        speeds = interleaved_throughput(base, smallcnn_methods, train_set)
        cos = speeds.get("cos")
        rows = [{"method": LABELS[m], "images_per_s": v, **({"vs Cos": v / cos} if cos else {})} for m, v in speeds.items()]
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_text(json.dumps({"rows": rows, "how": "in turns, bf16, batch 256, "
                                                         f"smallcnn grid {a.grid}, {torch.get_num_threads()} threads"}, indent=1))
        for r in rows:
            print(f"| {r['method']} | {r['images_per_s']:.0f} | {r.get('vs Cos', float('nan')):.2f} |")
        return 0
    extra = {"budget": f"{a.epochs} epochs each, batch 256, SGD 0.1 cosine, smallcnn grid {a.grid}, "
                       f"{a.augmentation} augmentation, seed {a.seed}, device {a.device}, "
                       f"instance temperature {PRESETS['ins'].temperature}, memory momentum "
                       f"{PRESETS['ins'].memory_momentum}, coarse weight beside the instance loss {PRESETS['coins'].coarse_weight}",
             "data": f"{len(train_set)} training photos with {len(train_set.category_names)} categories "
                     f"{train_set.category_names}; {len(test_set)} test photos, fine R@k leave-one-out"}
    pixels = describe_input(pre, "pixels")
    rows = [{"method": "raw pixels (cosine)", "input": pixels,
             **raw_pixel_recall(test_set.images, test_set.products, centred=False)},
            {"method": "raw pixels, mean-centred", "input": pixels,
             **raw_pixel_recall(test_set.images, test_set.products, centred=True)}]
    write_report(rows, extra, out)

    if not a.no_throughput:
        # CoIns_imp's claim is about the instance head alone: time it in isolation on this machine.
        dim = PRESETS["coins_imp"].head_dim
        full = instance_head_time(len(train_set), train_set.categories, dim, 256, within=False)
        within = instance_head_time(len(train_set), train_set.categories, dim, 256, within=True)
        shares = torch.bincount(train_set.categories).double() / len(train_set)
        expected = float((shares ** 2).sum())  # batch share of category k times its share of W^I
        extra["instance head time per step"] = (f"CoIns {full * 1e3:.1f} ms, CoIns_imp {within * 1e3:.1f} ms "
                                                f"(ratio {within / full:.2f}; sum_k (n_k/n)^2 = {expected:.2f}; "
                                                f"goal <= 1.2 x that = {1.2 * expected:.2f}); d={dim}, n={len(train_set)}")

    smallcnn_input = describe_input(pre, f"smallcnn grid {a.grid}")
    imagenet = None  # (its configuration, its input for the table, its decoded sets or why it cannot run), on first use
    for method in a.methods:
        if method in PRESETS:
            cfg = dataclasses.replace(base, preset=method, objective=PRESETS[method], out_dir=str(out / method))
            rows.append(run_method(cfg, method_label(method), smallcnn_input, sets))
        else:
            if imagenet is None:
                imagenet = prepare_imagenet(base, train_manifest, extra)
            cfg, where, imagenet_sets = imagenet
            if isinstance(imagenet_sets, str):
                print(f"{method_label(method)}: skipped: {imagenet_sets}", flush=True)
                rows.append({"method": method_label(method), "input": where, "skipped": imagenet_sets})
            else:
                preset = IMAGENET_METHODS[method][0]
                cfg = dataclasses.replace(cfg, preset=method, objective=PRESETS[preset], out_dir=str(out / method),
                                          epochs=0 if method == "imagenet_frozen" else cfg.epochs)
                rows.append(run_method(cfg, method_label(method), where, imagenet_sets))
        write_report(rows, extra, out)
    if not a.no_throughput and smallcnn_methods:
        # Each run's images/s above met whatever else the machine was doing then; these are taken in turns.
        speeds = interleaved_throughput(base, smallcnn_methods, train_set)
        extra["training images/s measured in turns"] = ", ".join(
            f"{LABELS[m]} {v:.0f}" + (f" ({v / speeds['cos']:.2f}x Cos)" if "cos" in speeds else "") for m, v in speeds.items())
    extra["total wall time"] = f"{time.perf_counter() - started_all:.0f} s"
    write_report(rows, extra, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
