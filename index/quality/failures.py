"""Failure analysis of a catalog's nearest neighbours: which queries' best match shows another product,
and which product pairs are confused most (the Quality page's failure gallery and confused pairs).

Every function reads the same four arrays:

  products   each catalog row's product id (strings)
  queries    the query rows, ascending (every row, or a sample)
  scores     (len(queries), depth) the scores of each query's nearest other items, best first
  found      (len(queries), depth) their rows

A failure is a query whose product has another image in the catalog and whose best match (found[:, 0])
shows another product; a query whose product has no other image cannot be found and is no failure.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def top1_correct(products: np.ndarray, queries: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Whether each query's best match shows the query's own product."""
    products = np.asarray(products)
    return products[found[:, 0]] == products[queries]


def failure_rows(products: np.ndarray, queries: np.ndarray, scores: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Rows of the queries whose best match is another product (among queries whose product has another
    image), the most confidently wrong (highest top-1 score) first; equal scores keep the rows' order."""
    products = pd.Series(np.asarray(products))
    has_twin = products.map(products.value_counts()).to_numpy() > 1
    wrong = ~top1_correct(products.to_numpy(), queries, found) & has_twin[queries]
    order = np.argsort(-scores[wrong, 0], kind="stable")
    return queries[wrong][order]


def failure_pairs(products: np.ndarray, queries: np.ndarray, scores: np.ndarray, found: np.ndarray) -> pd.DataFrame:
    """One row per failure, most confident first: row, query product, matched product, top-1 score."""
    products = np.asarray(products)
    rows = failure_rows(products, queries, scores, found)
    at = np.searchsorted(queries, rows)
    return pd.DataFrame({"row": rows, "query_product": products[rows], "matched_product": products[found[at, 0]],
                         "score": scores[at, 0]})


def confused_pairs(products: np.ndarray, queries: np.ndarray, scores: np.ndarray, found: np.ndarray) -> pd.DataFrame:
    """Query product vs its best match's product over the failures, most failures first (then the higher mean
    score): failures, mean_score, and share_of_queries (the failures over the queries of that product)."""
    pairs = failure_pairs(products, queries, scores, found)
    asked = pd.Series(np.asarray(products)[queries]).value_counts()
    table = (pairs.groupby(["query_product", "matched_product"]).agg(failures=("row", "size"),
                                                                   mean_score=("score", "mean"))
             .reset_index().sort_values(["failures", "mean_score"], ascending=False, kind="stable"))
    table["share_of_queries"] = table["failures"] / table["query_product"].map(asked).to_numpy()
    return table.reset_index(drop=True)
