"""Searching a catalog: the algorithm (candidates, exact re-scoring, pools), exact search as the
reference, metadata filters, what a search shows (grouping), how sure it is (calibration, query
confidence, the predicted category) and the search API (`SearchService`)."""
