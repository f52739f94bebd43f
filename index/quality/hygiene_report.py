"""The catalog hygiene report (index.quality.hygiene) as a merchandiser reads it: its three tables,
a one-line summary, the Markdown text and the files it writes (PREFIX-*.csv, PREFIX.md, PREFIX.json),
and the error for a catalog the reports cannot be computed for."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from embedder.files import markdown_table

MARKDOWN_ROWS = 50  # rows of each table in the Markdown report (the CSVs hold every row)


class HygieneError(ValueError):
    """A catalog the reports cannot be computed for (too few items, no categories)."""



@dataclass
class HygieneReport:
    duplicates: pd.DataFrame  # one row per item in a group: group, group_size, id, ..., closest_id, similarity
    miscategorised: pd.DataFrame  # flagged items, ranked: rank, id, ..., category, suggested_category, share
    products: pd.DataFrame  # products with several photos, ranked: product_id, photos, odd_photos, ...
    facts: dict = field(default_factory=dict)  # items, settings, seconds per step

    def summary(self) -> str:
        f = self.facts
        groups = self.duplicates["group"].nunique() if len(self.duplicates) else 0
        odd = int((self.products["odd_photos"] > 0).sum()) if len(self.products) else 0
        return (f"{f['items']:,} items: {groups:,} near-duplicate groups ({len(self.duplicates):,} items, "
                f"{duplicate_rule(f)}), {len(self.miscategorised):,} likely mis-categorised items, "
                f"{odd:,} of {len(self.products):,} products with photos that look like another product "
                f"({f['seconds']['total']:.1f} s)")

    def to_markdown(self, rows: int = MARKDOWN_ROWS) -> str:
        f = self.facts
        parts = [f"# Catalog hygiene: {f.get('catalog', '')}", "",
                 f"{self.summary()}.", "",
                 f"Model fingerprint `{f.get('model_fingerprint', '')}`; k = {f['k']} nearest neighbours (inner "
                 f"product on the stored vectors, {f.get('neighbour_search', 'exact')}). Similarities are cosines.", ""]
        for title, table, note in (
                ("Near-duplicate listings", self.duplicates,
                 f"Items linked ({duplicate_rule(f)}), grouped; `similarity` is the cosine to the item's closest "
                 "linked item (`closest_id`), `pixel_similarity` the correlation of their photos' gradients, "
                 "aligned (scale, shift, mirror image)."),
                ("Likely mis-categorised items", self.miscategorised,
                 "Items whose nearest neighbours mostly carry another category; `share` is the similarity-weighted "
                 "share of the neighbours carrying `suggested_category`."),
                ("Products whose photos disagree", self.products,
                 "Products with several photos; an odd photo looks more like another product (`looks_like`) than "
                 "like the rest of its own product.")):
            parts += [f"## {title}", "", note, ""]
            if len(table) == 0:
                parts += ["None found.", ""]
                continue
            shown = table.head(rows)
            parts += [frame_markdown(shown), ""]
            if len(table) > rows:
                parts += [f"… {len(table) - rows:,} more rows in the CSV.", ""]
        return "\n".join(parts)

    def write(self, prefix: str | Path) -> list[Path]:
        """PREFIX-duplicates.csv, PREFIX-miscategorised.csv, PREFIX-products.csv, PREFIX.md, PREFIX.json."""
        from embedder.files import atomic_path

        prefix = Path(prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in (("duplicates", self.duplicates), ("miscategorised", self.miscategorised),
                            ("products", self.products)):
            target = prefix.with_name(f"{prefix.name}-{name}.csv")
            with atomic_path(target) as tmp:
                table.to_csv(tmp, index=False, float_format="%.3f")
            written.append(target)
        for suffix, text in ((".md", self.to_markdown()), (".json", json.dumps(self.facts, indent=2) + "\n")):
            target = prefix.with_name(prefix.name + suffix)
            with atomic_path(target) as tmp:
                Path(tmp).write_text(text)
            written.append(target)
        return written


def duplicate_rule(facts: dict) -> str:
    """How two items were linked as duplicates, in words."""
    if facts.get("pixel_threshold") is None:
        return f"cosine >= {facts['duplicate_threshold']:.3f}"
    return (f"proposed by cosine >= {facts['candidate_threshold']:.3f} or by the photos' descriptors, confirmed by "
            f"the aligned photos' gradient correlation >= {facts['pixel_threshold']:.3f}; "
            f"{facts.get('pixel_unreadable', 0)} unreadable photos judged by cosine >= "
            f"{facts['duplicate_threshold']:.3f}")


def frame_markdown(table: pd.DataFrame) -> str:
    """A data frame as a Markdown table (embedder.files.markdown_table), floats with three decimals."""
    def cell(value) -> str:
        if isinstance(value, (float, np.floating)):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|")
    return markdown_table(list(table.columns), [[cell(v) for v in row] for row in table.itertuples(index=False)])

