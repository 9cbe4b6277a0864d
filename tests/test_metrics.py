"""Balance, anisotropy and agreement metrics: exact values on known cases."""
import math

import numpy as np
import pytest

from gem.metrics import agreement, anisotropy, balance_report, sample_pairwise_cosines


def test_balance_report_extremes():
    k = 8
    even = balance_report(np.repeat(np.arange(k), 10), k)
    assert even["normalized_entropy"] == pytest.approx(1.0)
    assert even["largest_share"] == pytest.approx(1 / k)
    assert even["effective_clusters"] == pytest.approx(k)
    assert even["gini"] == pytest.approx(0.0, abs=1e-12)
    assert even["top10_share"] == pytest.approx(1 / k)
    one = balance_report(np.zeros(50, dtype=int), k)
    assert one["normalized_entropy"] == pytest.approx(0.0, abs=1e-12)
    assert one["largest_share"] == 1.0 and one["effective_clusters"] == pytest.approx(1.0)
    assert one["gini"] == pytest.approx((k - 1) / k)


def test_balance_report_masses_and_weights():
    masses = np.array([0.5, 0.25, 0.25])
    rep = balance_report(masses, 3)
    h = -(masses * np.log(masses)).sum()
    assert rep["normalized_entropy"] == pytest.approx(h / math.log(3))
    assert rep["effective_clusters"] == pytest.approx(math.exp(h))
    weighted = balance_report(np.array([0, 1, 2]), 3, sample_weight=[2.0, 1.0, 1.0])
    assert weighted["largest_share"] == pytest.approx(0.5)
    top = balance_report(np.repeat(np.arange(20), np.arange(1, 21)), 20)
    assert top["top10_share"] == pytest.approx((20 + 19) / 210)


@pytest.mark.parametrize("bad,k", [(np.array([0, 5]), 3), (np.array([-1, 0]), 3), (np.array([0.5, 0.5]), 3),
                                   (np.array([]), 3), (np.array(["a"]), 2)])
def test_balance_report_rejects_bad_input(bad, k):
    with pytest.raises(ValueError):
        balance_report(bad, k)


def test_anisotropy_isotropic_vs_cone():
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((4000, 32))
    a = anisotropy(iso)
    assert abs(a["mean_cosine"]) < 0.01 and a["mean_direction_norm"] < 0.05
    assert a["first_pc_share"] < 2.0 / 32 and a["effective_rank"] > 0.9 * 32
    cone = iso / np.linalg.norm(iso, axis=1, keepdims=True) * 0.5
    cone[:, 0] += 2.0
    c = anisotropy(cone)
    assert c["mean_cosine"] > 0.8 and c["first_pc_share"] > 0.8 and c["effective_rank"] < a["effective_rank"]


def test_mean_cosine_is_exact():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 5)) + 1.0
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = U @ U.T
    brute = (S.sum() - np.trace(S)) / (60 * 59)
    assert anisotropy(X)["mean_cosine"] == pytest.approx(brute, abs=1e-12)
    cos = sample_pairwise_cosines(X, 20000, random_state=0)
    assert cos.shape == (20000,) and np.all(np.abs(cos) <= 1 + 1e-12)
    assert abs(cos.mean() - brute) < 0.02


def test_anisotropy_rejects_zero_rows():
    with pytest.raises(ValueError, match="zero"):
        anisotropy(np.zeros((3, 4)))


def test_agreement():
    ref = np.array(["a", "a", "b", "b", "c", "c"])
    assert agreement([2, 2, 0, 0, 1, 1], ref) == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "n": 6}
    rand = agreement([0, 1, 0, 1, 0, 1], ref)
    assert rand["nmi"] < 0.2 and rand["ari"] < 0.1
    missing = agreement([0, 0, 1, 1], np.array(["x", None, "y", float("nan")], dtype=object))
    assert missing["n"] == 2 and missing["nmi"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        agreement([0, 1], ["a"])


def test_tail_visibility_on_a_hand_made_example():
    from gem.metrics import tail_visibility

    # cluster 0: 6 "big"; cluster 1: 3 "big" + 1 "rare"; cluster 2: 2 "rare" + 2 "big"
    clusters = np.array([0] * 6 + [1] * 4 + [2] * 4)
    ref = np.array(["big"] * 6 + ["big"] * 3 + ["rare"] + ["rare"] * 2 + ["big"] * 2, dtype=object)
    t = tail_visibility(clusters, ref, threshold=0.3).set_index("label")
    assert list(t.index) == ["rare", "big"]  # the tail first
    assert t.loc["rare", "n_docs"] == 3 and t.loc["big", "n_docs"] == 11
    # rare: 1/4 of cluster 1 (below 0.3), 2/4 of cluster 2 (visible): 2 of its 3 documents
    assert t.loc["rare", "visible_share"] == pytest.approx(2 / 3)
    assert t.loc["rare", "best_purity"] == pytest.approx(0.5) and t.loc["rare", "best_cluster"] == 2
    assert t.loc["big", "visible_share"] == pytest.approx(1.0) and t.loc["big", "best_purity"] == 1.0
    # a stricter threshold hides the rare label; missing labels are ignored
    strict = tail_visibility(clusters, np.where(np.arange(14) == 0, None, ref), threshold=0.6).set_index("label")
    assert strict.loc["rare", "visible_share"] == 0 and strict.loc["big", "n_docs"] == 10
    with pytest.raises(ValueError):
        tail_visibility(clusters, ref, threshold=0)
