"""Metadata filters of a search, in Cloud Vision Product Search's syntax.

    color=red OR color=blue AND brand=X

`AND` joins conditions on different columns (an item must meet all of them); `OR` joins values of
one column (an item meets the condition with any of them). Values are compared as text, exactly;
a quoted value is taken whole ("dark blue", "x OR y": spaces, AND and OR inside quotes are text), and
a column name with spaces is quoted the same way ("release year"=2024); inside quotes a backslash
escapes the quote or a backslash. Nothing in a filter is ever evaluated. `metadata_filter(text, columns)` parses and checks
a filter; `filter_pool(catalog, filter)` gives the rows it admits and the FAISS selector that keeps
a search inside them (index.search.algorithm), so a filtered search still returns k results where k match.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import faiss
import numpy as np
import pandas as pd

from index.catalog.store import CatalogError, INTERNAL_COLUMNS

NOT_FILTERABLE = {"image_path", *INTERNAL_COLUMNS}
_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_BARE_VALUE = re.compile(r"[^\s\"']+")
_JOIN = re.compile(r"(AND|OR)(?=\s|[\"']|$)")
_QUOTES = "\"'"
EXAMPLE = "e.g. color=red OR color=blue AND brand=X"


class FilterError(CatalogError):
    """A filter that cannot be read, or names a column the catalog does not have."""


@dataclass(frozen=True)
class Condition:
    column: str
    values: frozenset[str]  # an item meets the condition with any of them

    def __str__(self) -> str:
        name = self.column if _NAME.fullmatch(self.column) else _quoted(self.column, always=True)
        return " OR ".join(f"{name}={_quoted(v)}" for v in sorted(self.values))


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


def _quoted(value: str, always: bool = False) -> str:
    """The value as the filter syntax writes it: bare when it is one plain word, else in double quotes
    with backslash and double quote escaped (parse_filter reads it back whole)."""
    if not always and _BARE_VALUE.fullmatch(value) and value not in ("AND", "OR"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def as_text(column: pd.Series) -> pd.Series:
    """A metadata column as the text a filter compares with: whole numbers without '.0', missing as ''."""
    if pd.api.types.is_float_dtype(column):
        whole = column.notna() & (column == column.round())
        text = column.astype(str)
        text[whole] = column[whole].astype("int64").astype(str)
        return text.where(column.notna(), "")
    return column.astype(str).where(column.notna(), "")


class _Reader:
    """Reads a filter left to right: quoted text is taken whole (AND, OR, spaces and = inside it are text),
    backslash escapes the quote or a backslash inside quotes; nothing is ever evaluated."""

    def __init__(self, text: str):
        self.text, self.at, self.start = text, 0, 0  # start: where the condition being read begins

    def skip_spaces(self) -> bool:
        start = self.at
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1
        return self.at > start

    def done(self) -> bool:
        return self.at >= len(self.text)

    def fail(self, what: str) -> FilterError:
        rest = self.text[self.at:].strip() or self.text[self.start:].strip() or self.text.strip()[-60:]
        return FilterError(f"cannot read {rest[:60]!r} in the filter ({what}): each condition is column=value, joined by AND (different columns) "
                           f"or OR (values of one column); quote a value or column name holding spaces, AND or OR "
                           f"(brand=\"x OR y\"), {EXAMPLE}")

    def quoted(self) -> str:
        quote, self.at, out = self.text[self.at], self.at + 1, []
        while self.at < len(self.text):
            char = self.text[self.at]
            if char == "\\" and self.at + 1 < len(self.text) and self.text[self.at + 1] in (quote, "\\"):
                out.append(self.text[self.at + 1])
                self.at += 2
            elif char == quote:
                self.at += 1
                return "".join(out)
            else:
                out.append(char)
                self.at += 1
        raise FilterError(f"a quote ({quote}) in the filter is never closed: {self.text.strip()[:80]!r}")

    def word(self, pattern: re.Pattern, what: str) -> str:
        if not self.done() and self.text[self.at] in _QUOTES:
            return self.quoted()
        found = pattern.match(self.text, self.at)
        if found is None:
            raise self.fail(f"expected {what}")
        self.at = found.end()
        return found.group(0)

    def condition(self) -> tuple[str, str]:
        self.skip_spaces()
        self.start = self.at
        column = self.word(_NAME, "a column name")
        self.skip_spaces()
        if self.done() or self.text[self.at] != "=":
            raise self.fail(f"expected = after the column {column!r}")
        self.at += 1
        self.skip_spaces()
        return column, self.word(_BARE_VALUE, "a value")

    def join(self) -> str | None:
        """AND, OR, or None at the end of the filter."""
        spaced, self.start = self.skip_spaces(), self.at
        if self.done():
            return None
        found = _JOIN.match(self.text, self.at)
        if found is None or not (spaced or self.text[self.at - 1] in _QUOTES):
            raise self.fail("expected AND or OR between conditions")
        self.at = found.end()
        return found.group(1)


def parse_filter(text: str) -> MetadataFilter:
    """`col=a OR col=b AND other=c` -> MetadataFilter; FilterError saying what is wrong.

    A quoted value or column name is taken whole: `brand="x OR y"`, `"release year"=2024`.
    """
    if not text or not text.strip():
        raise FilterError(f"the filter is empty: write conditions like column=value, {EXAMPLE}")
    reader = _Reader(text)
    groups: list[list[tuple[str, str]]] = [[]]
    while True:
        groups[-1].append(reader.condition())
        joined = reader.join()
        if joined is None:
            break
        if joined == "AND":
            groups.append([])
    by_column: dict[str, set[str]] = {}
    order: list[str] = []
    for group in groups:
        columns = list(dict.fromkeys(column for column, _ in group))
        if len(columns) > 1:
            shown = " OR ".join(str(Condition(c, frozenset([v]))) for c, v in group)
            raise FilterError(f"OR joins values of one column, but {shown!r} mixes {columns[0]!r} "
                              f"and {columns[1]!r}: use AND between different columns")
        column, values = columns[0], {value for _, value in group}
        if column in by_column:  # the same column twice across AND: both must hold
            by_column[column] &= values
        else:
            by_column[column] = values
            order.append(column)
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
