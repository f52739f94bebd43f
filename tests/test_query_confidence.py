"""Honest confidence: the notice is fitted on queries that are not catalog photos, says so when a
photo is unlike anything the catalog sells, and settings are never chosen on held-out families."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shopper_families import check_tuning_families
from benchmarks.photo_families import FAMILIES, HELD_OUT_FAMILIES, TUNING_FAMILIES
from index.search.calibration import MatchConfidence
from index.search.category_guess import CategoryGuess
from index.search.query_confidence import (FEATURES, QueryConfidenceModel, fit_logistic, judged, logistic, query_features,
                                           sidecar_path)
from training.confidence import UNLIKE_SHARES, fit, shortfall


def _generated_queries(seed: int = 0, n: int = 400):
    """Features of right answers (high score, neighbours agree, head sure), wrong ones (lower, mixed)
    and photos of things the catalog does not sell (lowest, scattered): a small generated set."""
    rng = np.random.default_rng(seed)

    def rows(count, score, agree, sure):
        return np.column_stack([rng.normal(score, 0.05, count), rng.uniform(0, 0.1, count), rng.uniform(*agree, count),
                                rng.uniform(*sure, count), rng.random(count) < sure[1]])
    right = rows(n, 0.85, (0.6, 1.0), (0.8, 1.0))
    wrong = rows(n // 4, 0.72, (0.1, 0.6), (0.4, 0.9))
    unlike = rows(n // 4, 0.55, (0.1, 0.5), (0.3, 0.7))
    x = np.vstack([right, wrong, unlike])
    return {"x": x, "right": np.r_[np.ones(len(right)), np.zeros(len(wrong) + len(unlike))].astype(bool),
            "inside": np.r_[np.ones(len(right) + len(wrong)), np.zeros(len(unlike))].astype(bool)}


def test_features_read_the_neighbours_and_the_category_head():
    scores = np.array([0.9, 0.88, 0.8, 0.7])
    labels = np.array(["Sneaker", "Sneaker", "Sandal", "Sneaker"])
    categories = np.array(["footwear"] * 4)
    features = query_features(scores, labels, categories, "footwear", 0.97)
    assert dict(zip(FEATURES, features)) == pytest.approx({"best_score": 0.9, "gap_to_other_product": 0.1,
                                                           "top10_agreement": 0.75, "category_probability": 0.97,
                                                           "category_agrees": 1.0})


def test_logistic_fit_separates_what_it_was_shown():
    data = _generated_queries()
    w = fit_logistic(data["x"], data["right"].astype(float))
    p = logistic(w, data["x"])
    assert p[data["right"]].mean() > 0.8 > 0.3 > p[~data["right"]].mean()


def test_the_calibration_meets_its_three_shares_on_a_small_generated_set():
    model = fit(_generated_queries(seed=1), "fingerprint", "product_id")
    shares = model.calibration["shares"]
    assert shares["right_without_notice"] >= 0.9
    test = _generated_queries(seed=2)  # fresh queries of the same kinds
    notice = []
    for x in test["x"]:
        notice.append(judged(None, model, x).weak)
    notice = np.array(notice)
    assert np.mean(~notice[test["right"]]) >= 0.85
    assert np.mean(notice[~test["right"] & test["inside"]]) >= 0.7
    assert np.mean(notice[~test["inside"]]) >= 0.9


def test_a_photo_unlike_the_catalog_gets_no_category_and_says_so():
    model = fit(_generated_queries(seed=3), "fingerprint", "product_id")
    rocket = np.array([0.45, 0.01, 0.2, 0.46, 0.0])
    confidence = judged(MatchConfidence(0.45, 0.8, 0.9, "product_id"), model, rocket)
    assert confidence.weak and confidence.unlike_catalog
    assert "does not look like anything this catalog sells" in confidence.notice()
    guess = CategoryGuess("bags", 0.46, {"bags": 0.46}, unlike_catalog=True)
    assert guess.as_dict() == {"name": None, "probability": None, "unlike_catalog": True,
                               "text": "not like anything this catalog sells"}


def test_a_confidence_model_is_used_only_with_the_model_it_was_fitted_for(tmp_path):
    model = fit(_generated_queries(seed=4), "abc123", "product_id")
    model.save(sidecar_path(tmp_path / "m.pt"))
    assert sidecar_path(tmp_path / "m.pt") == tmp_path / "m.confidence.json"
    assert QueryConfidenceModel.load_for(tmp_path / "m.pt", "abc123") == model
    assert QueryConfidenceModel.load_for(tmp_path / "m.pt", "another") is None
    assert QueryConfidenceModel.load_for(tmp_path / "none.pt", "abc123") is None


def test_settings_are_chosen_on_tuning_families_only():
    check_tuning_families(TUNING_FAMILIES)
    with pytest.raises(ValueError, match="held out"):
        check_tuning_families([TUNING_FAMILIES[0], HELD_OUT_FAMILIES[0]])
    assert not set(TUNING_FAMILIES) & set(HELD_OUT_FAMILIES)
    for group in (TUNING_FAMILIES, HELD_OUT_FAMILIES):  # each side has plain and textured photos
        assert {FAMILIES[name].textured for name in group} == {False, True}


def test_the_open_set_share_is_chosen_on_the_calibration_photos_against_the_notices_goals():
    data = _generated_queries(seed=5)
    chosen = fit(data, "fingerprint", "product_id")
    each = {share: shortfall(fit(data, "fingerprint", "product_id", unlike_share=share).calibration["shares"])
            for share in UNLIKE_SHARES}
    assert chosen.calibration["unlike_share"] in UNLIKE_SHARES
    assert shortfall(chosen.calibration["shares"]) == min(each.values())
