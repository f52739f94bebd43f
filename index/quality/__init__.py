"""How good a catalog is: the one Recall@k, catalog hygiene (near-duplicates, mis-categorised items,
products whose photos disagree) and label-free re-ranking measured the same way."""
