"""The measured parameters of the normalisation (embedder.domain): each field with the held-out
figures it was chosen by (rendered shopper photos, `python -m benchmarks.shopper_photos --tune`;
reports/shopper-photos/segmentation.md has the full tables).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainSettings:
    """The measured parameters of the normalisation (chosen on held-out rendered photos)."""
    min_contrast: float = 0.05  # colour distance from the background that counts as product (0..1)
    noise_factor: float = 2.0  # ... or this many times the border's own noise, whichever is larger
    # A cluttered background is a plane per channel plus a palette of the border's colours around it
    # (the tones of a striped or blotchy table): a pixel is product when it is farther from every
    # palette colour than palette_factor x the palette_quantile of the border's own distances.
    palette_size: int = 8
    palette_quantile: float = 0.98
    palette_factor: float = 1.5
    clutter_noise: float = 0.04  # border noise above this: the background is cluttered
    min_region_share: float = 0.02  # regions smaller than this share of the foreground are specks
    connectivity: int = 8  # regions of the foreground: 4- or 8-connected pixels (8: held-out cluttered 0.623 vs 0.603)
    # Where several things stand out, a region of two things touching along a thin join is split there
    # (regions.split_at_necks: cores after neck_depth erosions, rejoined within neck_colour); 0 = never.
    # Held-out 600, automatic crop, see-through / opaque: 0 -> 0.673 / 0.582, 4 -> 0.690 / 0.595, 5 -> 0.695 /
    # 0.600 (segmentation.md); other rows and the 10,000 catalog images' views unchanged.
    neck_depth: int = 5
    neck_colour: float = 0.3
    # On a cluttered backdrop: "region-mask" = the chosen product region, everything else set to
    # background; "region" = its bounding box only; "frame" = no crop (the whole photo).
    clutter_crop: str = "region-mask"
    context: float = 0.25  # with a query region: background measured this share of it around it
    # With a query region: when what stands out covers less than this share of it, the product
    # resembles its backdrop too closely for a mask (a grey coat on a grey blotchy table): the
    # whole region is taken, re-levelled against the background around it, nothing masked.
    # With a query region, what inside it is the product: "all" = everything that stands out;
    # "product" = the automatic product-region choice made inside the region; "inside" = what stands
    # out, less the things that lie mostly outside the region (clutter a loose box cuts into);
    # "inside-product" = the automatic choice among what "inside" leaves.
    # Held-out 600, tight / loose-by-15% box: "all" 0.830 / 0.732, "product" 0.825 / 0.748, "inside" 0.830 / 0.750
    # (with fill_of "extent": 0.828 / 0.790; opaque renderer 0.803 / 0.705 -> 0.803 / 0.733).
    region_choice: str = "inside"
    max_outside_share: float = 0.5  # "inside": a thing with more of its area outside the region is clutter (0.3 / 0.7: loose 0.787 / 0.773)
    # min_region_fill measured on: "region" = the region; "extent" = the box of what stands out (a loose
    # region is mostly table even when the product stands out well)
    fill_of: str = "extent"
    min_region_fill: float = 0.3  # held-out true box (600 items): 0.817 at 0, 0.823 at 0.3, 0.820 at 0.5, 0.812 always
    # Confidence that the photo has a background at all (otherwise it is left as it is): the
    # product region covers at least min_product_share of the photo and min_product_pixels of the
    # analysis grid (on a 28-px image a share is a few pixels that noise can join), holds at least
    # min_coherence of everything that stands out (scattered specks mean noise or texture), and
    # no more than max_border_product of the border stands out.
    min_product_share: float = 0.005
    min_product_pixels: int = 16
    min_coherence: float = 0.15
    max_border_product: float = 0.5
    # Which way the product stands out: "product" = darker or lighter than its own background,
    # whichever carries more of its signal; "backdrop" = darker when the backdrop is light.
    contrast_sign: str = "product"
    # A grey model's product signal: "luma" = darkness (or lightness) in luma; "colour" = along the
    # product's own colour difference from its background (a green shirt on a grey table);
    # "colour-on-clutter" = along its colour on a cluttered backdrop, luma on a plain one.
    signal: str = "colour-on-clutter"
    # A photo shrunk to the model's size is sharpened as the catalog's images were when they were
    # shrunk (Fashion-MNIST: a Gaussian unsharp operator of radius and sigma 1 px after resizing):
    # signal + sharpen x (signal - its blur), only in a product-on-backdrop domain and only when the
    # crop was reduced at least domain.SHARPEN_FROM-fold (a catalog image at the model's size is untouched).
    # Held-out 600, plain / automatic / true box / loose box: 0 -> 0.865 / 0.673 / 0.828 / 0.790,
    # 0.75 -> 0.888 / 0.670 / 0.843 / 0.807, 1.0 -> 0.895 / 0.675 / 0.838 / 0.805, 1.5 -> 0.893 / 0.662 /
    # 0.838 / 0.805; opaque renderer 0 -> 0.847 / 0.580 / 0.803 / 0.733, 0.75 -> 0.850 / 0.582 / 0.798 / 0.737.
    sharpen: float = 0.75
    # A photo without a confident background (a close-up: the product fills the frame, cut by its
    # edges) is fitted into the square untrimmed; in a product-on-backdrop domain its tones are still
    # brought into the catalog's polarity when its frame is clearly light (the border's median luma
    # above this): the frame's lightness becomes the catalog's background, the darkest part full scale.
    # Close-ups of held-out items on a light table, the frame touching the product / cutting 5% / 10%
    # into it (`python -m benchmarks.photo_nuisances`): 0.797 / 0.193 / 0.150 -> 0.847 / 0.443 / 0.228
    # (0.5 gained a little more in a scratch run, but a mid-grey texture's frame lies at 0.5); held-out
    # `--tune` sets unchanged (automatic 0.670 -> 0.673, opaque true box 0.798 -> 0.800).
    light_frame: float = 0.6
    # Where the product is: "rules" = what stands out from the border's background (the fields above);
    # "learned" = the learned product mask (embedder/mask.py) marks it; "both" = the rules' candidate
    # regions, the learned mask choosing among them and filling them out. Photos only (catalog images
    # keep the rules); without a mask model file, the rules.
    # Tuning families, 60 items each, automatic crop and true box (`python -m benchmarks.shopper_families --tune`,
    # runs/ log in reports/shopper-families/tuning.json): rules 0.623, learned 0.716, both 0.635; threshold 0.35: 0.724.
    product_finder: str = "learned"
    mask_threshold: float = 0.35  # the learned mask's probability above which a pixel is product
    # ... and the mean probability over the product it found below which it is not sure of any (noise, a
    # drawing): the rules decide then. On 96-px noise the mask's best region averages 0.60; on products 0.84-0.95.
    mask_confidence: float = 0.75
    # With a shopper's box, the learned mask too (else the rules inside the box): tuning families, true box,
    # rules 0.754, learned 0.746 (0.742 at 0.5): the box already says where the product is; the rules kept.
    mask_in_box: bool = False
    # On a plain backdrop, the rules' pixels near the learned product replace the mask's own where they keep at
    # least this share of it (0: never): the mask reads a 64-px photo, the rules the 128-px analysis grid.
    # Tuning families, 60 items, automatic crop: 0 -> 0.717, 0.7 -> 0.733, 0.85 -> 0.733 (true box unchanged).
    refine_on_plain: float = 0.7

    def __post_init__(self):  # a misspelt choice would otherwise quietly take another branch
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be {', '.join(allowed)}, not {getattr(self, name)!r}")


CHOICES = {"clutter_crop": ("region-mask", "region", "frame"),  # DomainSettings' settings that name a choice
           "region_choice": ("all", "product", "inside", "inside-product"), "fill_of": ("region", "extent"),
           "contrast_sign": ("product", "backdrop"), "product_finder": ("rules", "learned", "both"), "signal": ("luma", "colour", "colour-on-clutter")}
