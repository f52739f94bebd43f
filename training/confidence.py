"""Fit a model's query confidence on shopper photos: `python -m training confidence`.

Photos of calibration items (Fashion-MNIST training items never composited for training:
training/composites.calibration_items) on the training backdrops, and photos of things the
catalog does not sell, are searched in the catalog as a shopper's photo is; what each search
knew (index.search.query_confidence.FEATURES) and whether its first result was the right product
fit the two logistic models. Thresholds: the notice leaves at least `keep_right` of the right
answers alone, and calls at most `unlike_share` of the catalog's own kind of photos unlike it
(chosen on the calibration photos against what the notice is for: GOALS).
Writes MODEL.confidence.json beside the model (index.search.query_confidence.sidecar_path).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from embedder.images import ImageError
from index.importers import FASHION_MNIST_CLASSES, load_fashion_mnist_arrays
from index.search.query_confidence import FEATURES, QueryConfidenceModel, fit_logistic, logistic, sidecar_path
from index.search.service import SearchService
from training.composites import BACKDROPS, calibration_items, composite, unlike_photo


def evidence_of(service: SearchService, image) -> tuple[np.ndarray, str] | None:
    """(features, the first result's product label) of one photo searched as a shopper's; None if refused."""
    try:
        results = service.search(image, k=1)
    except ImageError:
        return None
    label = service.query_confidence.label
    top = results.frame[label].iloc[0] if label in results.frame else results.frame["category"].iloc[0]
    return results.evidence, str(top)


def collect(service: SearchService, *, photos: int, unlike: int, seed: int, log=print) -> dict:
    images, labels = load_fashion_mnist_arrays("train")
    rng = np.random.default_rng(seed)
    rows = rng.choice(calibration_items(len(images)), photos, replace=False)
    x, right, inside = [], [], []
    started = time.perf_counter()
    for n, row in enumerate(rows, 1):
        found = evidence_of(service, composite(images[row], rng, long_side=(240, 900), kinds=BACKDROPS).image)
        if found is not None:
            x.append(found[0])
            right.append(found[1] == FASHION_MNIST_CLASSES[int(labels[row])])
            inside.append(True)
        if n % 100 == 0:
            log(f"calibration photos: {n}/{photos} ({time.perf_counter() - started:.0f}s)")
    for _ in range(unlike):
        found = evidence_of(service, unlike_photo(rng))
        if found is not None:
            x.append(found[0])
            right.append(False)
            inside.append(False)
    return {"x": np.array(x), "right": np.array(right, bool), "inside": np.array(inside, bool)}


GOALS = {"right_without_notice": 0.9, "wrong_with_notice": 0.7, "unlike_with_notice": 0.95}  # what the notice is for
UNLIKE_SHARES = (0.01, 0.02, 0.03, 0.05, 0.08, 0.12)


def fit(data: dict, fingerprint: str, label: str, *, keep_right: float = 0.92, unlike_share: float | None = None
        ) -> QueryConfidenceModel:
    """Both logistic models and their thresholds. unlike_share: the share of the catalog's own kind of
    photos the open-set rule may call unlike it; None chooses it on these calibration photos, the one
    whose shortfalls from GOALS add up to least (ties: the smaller share)."""
    if unlike_share is None:
        fitted = [_fit(data, fingerprint, label, keep_right, share) for share in UNLIKE_SHARES]
        return min(fitted, key=lambda m: (shortfall(m.calibration["shares"]), m.calibration["unlike_share"]))
    return _fit(data, fingerprint, label, keep_right, unlike_share)


def shortfall(shares: dict) -> float:
    """How far the shares fall short of GOALS, added up (0 where every goal is met)."""
    return sum(max(0.0, goal - shares[name]) for name, goal in GOALS.items() if shares.get(name) is not None)


def _fit(data: dict, fingerprint: str, label: str, keep_right: float, unlike_share: float) -> QueryConfidenceModel:
    x, right, inside = data["x"], data["right"], data["inside"]
    right_w = fit_logistic(x[inside], right[inside].astype(float))
    inside_w = fit_logistic(x, inside.astype(float))
    p_in = logistic(inside_w, x)
    unlike_below = float(np.quantile(p_in[inside], unlike_share))
    p_right = logistic(right_w, x)
    kept = right & inside & (p_in >= unlike_below)  # right answers the open-set rule leaves alone
    # The notice's threshold: as high as keeps `keep_right` of all right answers without it.
    allowed = int(np.floor((1 - keep_right) * (right & inside).sum())) - int(((right & inside) & ~kept).sum())
    candidates = np.sort(p_right[kept])
    weak_below = float(candidates[max(0, allowed)]) if len(candidates) else 0.0
    notice = (p_right < weak_below) | (p_in < unlike_below)
    shares = {"right_without_notice": float(np.mean(~notice[right & inside])),
              "wrong_with_notice": float(np.mean(notice[~right & inside])) if (~right & inside).any() else None,
              "unlike_with_notice": float(np.mean(notice[~inside])) if (~inside).any() else None,
              "photos": int(inside.sum()), "unlike_photos": int((~inside).sum()), "right_at_1": float(right[inside].mean())}
    return QueryConfidenceModel(fingerprint, label, tuple(right_w.tolist()), tuple(inside_w.tolist()), weak_below,
                                unlike_below, calibration={"shares": shares, "backdrops": list(BACKDROPS),
                                                           "features": list(FEATURES), "unlike_share": unlike_share,
                                                           "keep_right": keep_right})


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m training confidence", description=__doc__)
    p.add_argument("--catalog", default="catalogs/fashion-mnist-test")
    p.add_argument("--model", default="models/coinsp-fmnist.pt")
    p.add_argument("--photos", type=int, default=1200)
    p.add_argument("--unlike", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    service = SearchService(args.catalog, args.model)
    label = "product_id" if "product_id" in service.catalog.metadata else "category"
    service.query_confidence = QueryConfidenceModel(service.embedder.fingerprint, label, (0.0,) * (len(FEATURES) + 1),
                                                    (0.0,) * (len(FEATURES) + 1), 0.0, 0.0)  # collects evidence only
    data = collect(service, photos=args.photos, unlike=args.unlike, seed=args.seed)
    model = fit(data, service.embedder.fingerprint, label)
    model.save(sidecar_path(args.model))
    print(f"wrote {sidecar_path(args.model)}: on the calibration photos {model.calibration['shares']}")


if __name__ == "__main__":
    main()
