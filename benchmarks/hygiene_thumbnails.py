"""Which pixel thumbnail tells a resized, re-encoded copy from a distinct look-alike? (training photos)

    python -m benchmarks.hygiene_thumbnails   # after python -m benchmarks.hygiene --calibrate

On the planted training catalog (catalogs/hygiene-planted-train, built by the calibration), each
thumbnail variant is scored on the 50 planted near-duplicate pairs and on 5,000 candidate pairs
(cosine >= 0.93 among the 10 nearest) between items that are neither planted nor a planted
item's source: `t48` is the correlation that still keeps 48 of the 50 planted pairs, and
`others_passing` the share of the other candidate pairs at or above it (lower is better). The
variant of index.quality.hygiene.pixel_thumbnail was chosen here. Report: reports/hygiene/thumbnails.md.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from embedder.images import decode_image
from index.catalog.loaded import Catalog
from index.quality.hygiene_report import frame_markdown
from index.quality.neighbours import neighbours_of

SIDES = (16, 28, 32)
CONTRAST = 25  # grey levels from the border's median that count as the product when trimming
OTHER_PAIRS = 5_000


def thumbnail(grey: np.ndarray, side: int, trim: bool, blur: bool) -> np.ndarray:
    if trim:
        background = float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))
        ys, xs = np.nonzero(np.abs(grey - background) > CONTRAST)
        if len(ys):
            grey = grey[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        h, w = grey.shape
        square = np.full((max(h, w),) * 2, background, np.float32)
        square[(max(h, w) - h) // 2:(max(h, w) - h) // 2 + h, (max(h, w) - w) // 2:(max(h, w) - w) // 2 + w] = grey
        grey = square
    image = Image.fromarray(grey.astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(1.0))
    pixels = np.array(image, np.float32).reshape(-1)
    pixels -= pixels.mean()
    norm = np.linalg.norm(pixels)
    return pixels / norm if norm > 1e-6 else pixels


def main() -> int:
    catalog = Catalog.load("catalogs/hygiene-planted-train")
    meta = catalog.metadata
    truth = pd.read_csv("data/hygiene-planted-train/planted.csv")
    row_of = {p: i for i, p in enumerate(meta["path"])}
    duplicates = truth[truth["fault"] == "duplicate"]
    planted = [(row_of[p], row_of[s]) for p, s in zip(duplicates["path"], duplicates["source_path"])]
    neighbours = neighbours_of(np.asarray(catalog.embeddings, np.float32), 10)
    excluded = {row_of[p] for p in truth["path"]} | {row_of[s] for s in duplicates["source_path"]}
    others = [(int(i), int(neighbours.rows[i, j])) for i, j in np.argwhere(neighbours.scores >= 0.93)
              if int(i) not in excluded and int(neighbours.rows[i, j]) not in excluded]
    rng = np.random.default_rng(0)
    others = [others[i] for i in rng.choice(len(others), min(OTHER_PAIRS, len(others)), replace=False)]
    paths = meta["image_path"].to_numpy()
    greys: dict[int, np.ndarray] = {}

    def grey(row: int) -> np.ndarray:
        if row not in greys:
            greys[row] = np.asarray(decode_image(paths[row]).convert("L"), np.float32)
        return greys[row]

    rows = []
    for side in SIDES:
        for trim in (True, False):
            for blur in (False, True):
                def corr(a, b):
                    return float(thumbnail(grey(a), side, trim, blur) @ thumbnail(grey(b), side, trim, blur))
                p = np.sort([corr(a, b) for a, b in planted])
                o = np.array([corr(a, b) for a, b in others])
                rows.append({"side": side, "trimmed": trim, "blurred": blur, "planted_min": p[0], "t48": p[2],
                             "others_passing": float((o >= p[2]).mean()), "others_median": float(np.median(o))})
                print(rows[-1])
    lines = ["# Pixel thumbnails for confirming near-duplicates (training photos)", "",
             f"`python -m benchmarks.hygiene_thumbnails` — {len(planted)} planted near-duplicate pairs and "
             f"{len(others):,} other candidate pairs (cosine >= 0.93, k = 10) of `catalogs/hygiene-planted-train`, "
             f"model `{catalog.fingerprint}`. `t48`: the correlation that keeps 48 of 50 planted pairs; "
             "`others_passing`: share of the other pairs at or above it.", "",
             frame_markdown(pd.DataFrame(rows)), ""]
    out = Path("reports/hygiene/thumbnails.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
