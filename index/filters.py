"""Metadata filters of a search, in Cloud Vision Product Search's syntax.

    color=red OR color=blue AND brand=X

`AND` joins conditions on different columns (an item must meet all of them); `OR` joins values of
one column (an item meets the condition with any of them). Values are compared as text, exactly;
a value with spaces may be quoted ("dark blue"). `metadata_filter(text, columns)` parses and checks
a filter; `filter_pool(catalog, filter)` gives the rows it admits and the FAISS selector that keeps
a search inside them (index.search), so a filtered search still returns k results where k match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import faiss
import numpy as np
import pandas as pd

from index.store import CatalogError, INTERNAL_COLUMNS

NOT_FILTERABLE = {"image_path", *INTERNAL_COLUMNS}
_TERM = re.compile(r"""\s*([A-Za-z_][\w.-]*)\s*=\s*("([^"]*)"|'([^']*)'|[^\s"']+)\s*$""")
_SPLIT_AND = re.compile(r"\s+AND\s+")
_SPLIT_OR = re.compile(r"\s+OR\s+")


class FilterError(CatalogError):
    """A filter that cannot be read, or names a column the catalog does not have."""


@dataclass(frozen=True)
class Condition:
    column: str
    values: frozenset[str]  # an item meets the condition with any of them

    def __str__(self) -> str:
        return " OR ".join(f"{self.column}={_quoted(v)}" for v in sorted(self.values))


@dataclass(frozen=True)
class MetadataFilter:
    conditions: tuple[Condition, ...]  # an item must meet all of them

    def __str__(self) -> str:
        return " AND ".join(str(c) for c in self.conditions)

    @property
    def columns(self) -> list[str]:
        return [c.column for c in self.conditions]

    def and_also(self, column: str, value: str) -> "MetadataFilter":
        return MetadataFilter((*self.conditions, Condition(column, frozenset([str(value)]))))

    def matches(self, metadata: pd.DataFrame) -> np.ndarray:
        """A boolean per row of `metadata`: does the row meet every condition?"""
        keep = np.ones(len(metadata), bool)
        for condition in self.conditions:
            keep &= as_text(metadata[condition.column]).isin(condition.values).to_numpy()
        return keep


def _quoted(value: str) -> str:
    return value if re.fullmatch(r"[^\s\"']+", value) else f'"{value}"'


def as_text(column: pd.Series) -> pd.Series:
    """A metadata column as the text a filter compares with: whole numbers without '.0', missing as ''."""
    if pd.api.types.is_float_dtype(column):
        whole = column.notna() & (column == column.round())
        text = column.astype(str)
        text[whole] = column[whole].astype("int64").astype(str)
        return text.where(column.notna(), "")
    return column.astype(str).where(column.notna(), "")


def parse_filter(text: str) -> MetadataFilter:
    """`col=a OR col=b AND other=c` -> MetadataFilter; FilterError saying what is wrong."""
    if not text or not text.strip():
        raise FilterError("the filter is empty: write conditions like color=red OR color=blue AND brand=X")
    by_column: dict[str, set[str]] = {}
    order: list[str] = []
    for part in _SPLIT_AND.split(text.strip()):
        group_column, values = None, set()
        for term in _SPLIT_OR.split(part):
            found = _TERM.match(term)
            if found is None:
                raise FilterError(f"cannot read {term.strip()!r} in the filter: each condition is column=value, "
                                  "joined by AND (different columns) or OR (values of one column), "
                                  "e.g. color=red OR color=blue AND brand=X")
            column = found.group(1)
            value = next(v for v in (found.group(3), found.group(4), found.group(2)) if v is not None)
            if group_column is not None and column != group_column:
                raise FilterError(f"OR joins values of one column, but {part.strip()!r} mixes {group_column!r} "
                                  f"and {column!r}: use AND between different columns")
            group_column = column
            values.add(value)
        if group_column in by_column:  # the same column twice across AND: both must hold
            by_column[group_column] &= values
        else:
            by_column[group_column] = values
            order.append(group_column)
    return MetadataFilter(tuple(Condition(c, frozenset(by_column[c])) for c in order))


def metadata_filter(text: str | MetadataFilter, columns: Iterable[str]) -> MetadataFilter:
    """A parsed filter whose columns all exist in `columns` (else FilterError listing the columns)."""
    parsed = text if isinstance(text, MetadataFilter) else parse_filter(text)
    known = [c for c in columns if c not in NOT_FILTERABLE and c != "id"]
    unknown = [c for c in parsed.columns if c not in known]
    if unknown:
        raise FilterError(f"the catalog has no column {', '.join(map(repr, unknown))} to filter on "
                          f"(columns: {', '.join(known)})")
    return parsed


@dataclass(frozen=True)
class FilterPool:
    """The rows a filter admits, and a FAISS selector over their ids (kept with its bitmap)."""
    rows: np.ndarray
    selector: faiss.IDSelector | None
    bitmap: np.ndarray | None

    def __len__(self) -> int:
        return len(self.rows)


def filter_pool(catalog, flt: MetadataFilter) -> FilterPool:
    """The catalog rows meeting `flt`, with an IDSelector for the index (None when no row does)."""
    rows = np.flatnonzero(flt.matches(catalog.metadata))
    if len(rows) == 0:
        return FilterPool(rows, None, None)
    size = int(catalog.ids.max()) + 1
    bits = np.zeros(size, bool)
    bits[catalog.ids[rows]] = True
    bitmap = np.packbits(bits, bitorder="little")  # the selector points into it: keep it alive beside it
    return FilterPool(rows, faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap)), bitmap)
