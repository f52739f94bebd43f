"""The measured parameters of the normalisation (embedder.domain). Why each has its value, with
the figures it was chosen by on photos apart from those reported: reports/shopper-photos/settings.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args, get_origin, get_type_hints

ClutterCrop = Literal["region-mask", "region", "frame"]
RegionChoice = Literal["all", "product", "inside", "inside-product"]
FillOf = Literal["region", "extent"]
ContrastSign = Literal["product", "backdrop"]
Signal = Literal["luma", "colour", "colour-on-clutter"]
ProductFinder = Literal["rules", "learned", "both"]


@dataclass(frozen=True)
class DomainSettings:
    """The measured parameters of the normalisation."""
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
    connectivity: int = 8  # regions of the foreground: 4- or 8-connected pixels
    # Where several things stand out, a region of two things touching along a thin join is split there
    # (regions.split_at_necks: cores after neck_depth erosions, rejoined within neck_colour); 0 = never.
    neck_depth: int = 5
    neck_colour: float = 0.3
    # On a cluttered backdrop: "region-mask" = the chosen product region, everything else set to
    # background; "region" = its bounding box only; "frame" = no crop (the whole photo).
    clutter_crop: ClutterCrop = "region-mask"
    context: float = 0.25  # with a query region: background measured this share of it around it
    # With a query region, what inside it is the product: "all" = everything that stands out;
    # "product" = the automatic product-region choice made inside the region; "inside" = what stands
    # out, less the things that lie mostly outside the region (clutter a loose box cuts into);
    # "inside-product" = the automatic choice among what "inside" leaves.
    region_choice: RegionChoice = "inside"
    max_outside_share: float = 0.5  # "inside": a thing with more of its area outside the region is clutter
    # With a query region: when what stands out covers less than min_region_fill of it, the product
    # resembles its backdrop too closely for a mask (a grey coat on a grey blotchy table): the whole
    # region is taken, re-levelled against the background around it, nothing masked. The fill is of
    # "region" = the region, or "extent" = the box of what stands out (a loose region is mostly table).
    fill_of: FillOf = "extent"
    min_region_fill: float = 0.3
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
    contrast_sign: ContrastSign = "product"
    # A grey model's product signal: "luma" = darkness (or lightness) in luma; "colour" = along the
    # product's own colour difference from its background (a green shirt on a grey table);
    # "colour-on-clutter" = along its colour on a cluttered backdrop, luma on a plain one.
    signal: Signal = "colour-on-clutter"
    # A photo shrunk to the model's size is sharpened as the catalog's images were when they were
    # shrunk (Fashion-MNIST: a Gaussian unsharp operator of radius and sigma 1 px after resizing):
    # signal + sharpen x (signal - its blur), only in a product-on-backdrop domain and only when the
    # crop was reduced at least domain.SHARPEN_FROM-fold (a catalog image at the model's size is untouched).
    sharpen: float = 0.75
    # A photo without a confident background (a close-up: the product fills the frame, cut by its
    # edges) is fitted into the square untrimmed; in a product-on-backdrop domain its tones are still
    # brought into the catalog's polarity when its frame is clearly light (the border's median luma
    # above this): the frame's lightness becomes the catalog's background, the darkest part full scale.
    light_frame: float = 0.6
    # Where the product is: "rules" = what stands out from the border's background (the fields above);
    # "learned" = the learned product mask (embedder/mask.py) marks it; "both" = the rules' candidate
    # regions, the learned mask choosing among them and filling them out. Photos only (catalog images
    # keep the rules); without a mask model file, the rules.
    product_finder: ProductFinder = "learned"
    mask_threshold: float = 0.35  # the learned mask's probability above which a pixel is product
    # ... and the mean probability over the product it found below which it is not sure of any (noise, a
    # drawing): the rules decide then.
    mask_confidence: float = 0.75
    mask_in_box: bool = False  # with a shopper's box, the learned mask too (else the rules inside the box)
    # On a plain backdrop, the rules' pixels near the learned product replace the mask's own where they keep at
    # least this share of it (0: never): the mask reads a 64-px photo, the rules the 128-px analysis grid.
    refine_on_plain: float = 0.7

    def __post_init__(self):  # a misspelt choice would otherwise quietly take another branch
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be {', '.join(allowed)}, not {getattr(self, name)!r}")


# The settings that name a choice, and what each may be (read from the fields' Literal types).
CHOICES = {name: get_args(hint) for name, hint in get_type_hints(DomainSettings).items() if get_origin(hint) is Literal}
