"""GIS, topic figures, keywords and hierarchy: properties with thresholds on planted data."""
from __future__ import annotations

import numpy as np
import pytest

from gem.gis import (
    RHO_FLOOR,
    banerjee_kappa,
    document_gis,
    gis_for_model,
    gis_ranks,
    local_density,
    nearest_topics,
    provisional_name,
    representatives,
    topic_hierarchy,
    topic_keywords,
    topic_table,
)


def _unit(A):
    return A / np.linalg.norm(A, axis=-1, keepdims=True)


def _around(rng, mu, n, spread):
    """Points near direction mu (normal perturbation + normalise: a vMF-like cloud)."""
    return _unit(mu[None, :] + spread * rng.standard_normal((n, mu.size)) / np.sqrt(mu.size))


def _posterior(X, M, kappa):
    L = (X @ M.T) * kappa
    L -= L.max(axis=1, keepdims=True)
    P = np.exp(L)
    return P / P.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def planted():
    """Cluster A: a tight core, boundary points halfway to cluster B, isolated outliers; cluster B."""
    rng = np.random.default_rng(0)
    d = 32
    mu_a, mu_b = _unit(rng.standard_normal((2, d)))
    mu_b = _unit(mu_b - (mu_b @ mu_a) * mu_a + 0.3 * mu_a)  # cos(mu_a, mu_b) ~ 0.29
    core = _around(rng, mu_a, 200, 0.5)
    boundary = _around(rng, _unit(mu_a + 0.95 * mu_b), 20, 0.3)
    # outliers: cosine ~0.55 to mu_a, each in its own random direction (no neighbours)
    rand = _unit(rng.standard_normal((10, d)))
    rand = _unit(rand - (rand @ mu_a)[:, None] * mu_a)
    outliers = _unit(0.55 * mu_a + 0.83 * rand)
    other = _around(rng, mu_b, 200, 0.5)
    X = np.vstack([core, boundary, outliers, other]).astype(np.float32)
    kind = np.array(["core"] * 200 + ["boundary"] * 20 + ["outlier"] * 10 + ["other"] * 200)
    M = np.vstack([mu_a, mu_b])
    kappa = np.array([30.0, 30.0])
    P = _posterior(X, M, kappa)
    labels = np.where(kind == "other", 1, 0)  # the boundary and outliers are assigned to A
    return X, labels, P, M, kappa, kind


def _auc(pos, neg):
    return float((pos[:, None] > neg[None, :]).mean())


def test_gis_ranks_core_above_boundary_and_outliers(planted):
    X, labels, P, M, kappa, kind = planted
    gis = document_gis(X, labels, P, M, kappa, beta=0.5, n_neighbors=10)
    core, boundary, outliers = gis[kind == "core"], gis[kind == "boundary"], gis[kind == "outlier"]
    assert _auc(core, boundary) >= 0.99
    assert _auc(core, outliers) >= 0.99
    reps = representatives(labels, gis, top=20)
    assert set(kind[reps[0]]) == {"core"}
    # ranks: boundary and outliers sit in the bottom 15% of cluster A
    ranks = gis_ranks(labels, gis)
    n_a = int((labels == 0).sum())
    assert ranks[(kind == "boundary") | (kind == "outlier")].min() >= 0.85 * n_a - 30


def test_each_gis_term_matters(planted):
    X, labels, P, M, kappa, kind = planted
    # density alone separates the isolated outliers from the core
    rho = local_density(X, labels, n_neighbors=10)
    assert _auc(rho[kind == "core"], rho[kind == "outlier"]) >= 0.99
    # confidence alone ranks the boundary below the core
    conf = np.log(P[np.arange(len(labels)), labels])
    assert _auc(conf[kind == "core"], conf[kind == "boundary"]) >= 0.95
    # beta = 0 drops exactly the density term
    g0 = document_gis(X, labels, P, M, kappa, beta=0.0)
    g1 = document_gis(X, labels, P, M, kappa, beta=1.0)
    np.testing.assert_allclose(g1 - g0, np.log(rho), rtol=1e-6, atol=1e-6)


def test_blocking_is_exact_and_sampling_is_close(planted):
    X, labels, P, M, kappa, kind = planted
    full = local_density(X, labels, n_neighbors=10, block_size=10_000)
    blocked = local_density(X, labels, n_neighbors=10, block_size=7)
    np.testing.assert_allclose(full, blocked, rtol=1e-6)
    # brute force for one document
    i = 5
    mates = np.flatnonzero((labels == labels[i]) & (np.arange(len(labels)) != i))
    cos = np.sort(X[mates] @ X[i])[::-1][:10]
    assert full[i] == pytest.approx(cos.mean(), rel=1e-5)
    # sampled reference sets (100 of 230) keep the ordering broadly and still isolate the outliers
    sampled = local_density(X, labels, n_neighbors=10, max_reference=100, random_state=1)
    a = labels == 0
    rank_corr = np.corrcoef(np.argsort(np.argsort(full[a])), np.argsort(np.argsort(sampled[a])))[0, 1]
    assert rank_corr >= 0.6
    assert _auc(sampled[kind == "core"], sampled[kind == "outlier"]) >= 0.99
    assert np.all(sampled[a] <= full[a] + 1e-6)  # a subset can only have farther neighbours


def test_density_floor_keeps_gis_finite():
    rng = np.random.default_rng(1)
    # members nearly orthogonal or opposite: mean neighbour cosine <= 0
    X = np.vstack([np.eye(8)[:4], -np.eye(8)[:4]]).astype(np.float32)
    labels = np.zeros(8, dtype=int)
    rho = local_density(X, labels, n_neighbors=3)
    assert np.all(rho == RHO_FLOOR)
    gis = document_gis(X, labels, None, _unit(rng.standard_normal((1, 8))), [5.0])
    assert np.all(np.isfinite(gis))
    # a singleton cluster has no neighbours: floor
    assert local_density(X[:2], np.array([0, 1]))[0] == RHO_FLOOR


def test_bad_input_messages(planted):
    X, labels, P, M, kappa, kind = planted
    with pytest.raises(ValueError, match="proba must have shape"):
        document_gis(X, labels, P[:, :1], M, kappa)
    with pytest.raises(ValueError, match="out of range"):
        document_gis(X, labels + 5, P, M, kappa)
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        document_gis(bad, labels, P, M, kappa)


def test_gis_for_sklearn_kmeans_uses_banerjee_kappa(planted):
    from sklearn.cluster import KMeans

    X, labels, P, M, kappa, kind = planted
    km = KMeans(n_clusters=2, n_init=3, random_state=0).fit(X)
    gis = gis_for_model(X, km)
    a = km.labels_[np.flatnonzero(kind == "core")[0]]
    core = gis[(kind == "core") & (km.labels_ == a)]
    out = gis[(kind == "outlier") & (km.labels_ == a)]
    assert out.size > 0 and _auc(core, out) >= 0.99
    k = banerjee_kappa(X, labels, 2)
    assert np.all(k > 0) and k[0] < k[1]  # A holds the spread boundary and outliers: less concentrated


def test_topic_table(planted):
    X, labels, P, M, kappa, kind = planted
    gis = document_gis(X, labels, P, M, kappa)
    tokens = np.full(len(labels), 10)
    t = topic_table(X, labels, gis, M, kappa, weights=np.array([0.5, 0.5]), n_tokens=tokens)
    assert list(t["n_docs"]) == [230, 200]
    assert t["share"].sum() == pytest.approx(1.0)
    assert t["token_share"].sum() == pytest.approx(1.0)
    assert t["n_tokens"].tolist() == [2300, 2000]
    # both topics are far tighter than the two-topic corpus; the pure one is the tighter
    assert (t["tightness"] > 0.3).all() and t["tightness"][1] > t["tightness"][0]
    assert t["mean_gis"][0] == pytest.approx(gis[labels == 0].mean())


def _planted_texts(rng, vocabularies, n_per, common):
    texts, labels = [], []
    for k, words in enumerate(vocabularies):
        for _ in range(n_per):
            body = list(rng.choice(words, size=8)) + list(rng.choice(common, size=8))
            body += [str(rng.integers(0, 10_000)), "https://www.example.com/page"]
            rng.shuffle(body)
            texts.append(" ".join(body))
            labels.append(k)
    return texts, np.array(labels)


def test_keywords_are_the_planted_words():
    rng = np.random.default_rng(2)
    vocab = [
        ["guitar", "melody", "chord", "rhythm", "drummer", "concert"],
        ["protein", "enzyme", "molecule", "genome", "cell", "membrane"],
        ["football", "goalkeeper", "striker", "league", "referee", "stadium"],
    ]
    common = ["people", "often", "really", "thing", "today", "world", "about", "many"]
    texts, labels = _planted_texts(rng, vocab, 60, common)
    gis = rng.standard_normal(len(labels))
    kw = topic_keywords(texts, labels, gis, n_keywords=6)
    for k, words in enumerate(vocab):
        assert set(kw[k][:5]) <= set(words), (k, kw[k])
    flat = [w for ws in kw.values() for w in ws]
    assert not any(ch.isdigit() for w in flat for ch in w)
    assert not {"https", "www", "com", "example"} & set(flat) - {"example"}
    assert provisional_name(kw[0]).count(",") == 2


def test_keywords_follow_gis_weighting():
    # one cluster, two sub-vocabularies: the high-GIS half should supply the top keywords
    rng = np.random.default_rng(3)
    top_words, low_words = ["alpha", "beta", "gamma"], ["delta", "epsilon", "zeta"]
    texts = [" ".join(rng.choice(top_words, 5)) for _ in range(50)] + [" ".join(rng.choice(low_words, 5)) for _ in range(50)]
    texts += [" ".join(rng.choice(["other", "words", "here", "noise"], 5)) for _ in range(50)]
    labels = np.array([0] * 100 + [1] * 50)
    gis = np.r_[np.linspace(10, 9, 50), np.linspace(1, 0, 50), np.zeros(50)]
    kw = topic_keywords(texts, labels, gis, n_keywords=3)
    assert set(kw[0]) == set(top_words)


def test_hierarchy_and_nearest_topics():
    rng = np.random.default_rng(4)
    d = 16
    parents = _unit(rng.standard_normal((3, d)))
    children = np.vstack([_around(rng, p, 4, 0.3) for p in parents])  # 12 topics, 3 families
    truth = np.repeat(np.arange(3), 4)
    got = topic_hierarchy(children, n_parents=3)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, got) == pytest.approx(1.0)
    assert got[0] == 0  # numbered by smallest member
    by_thr = topic_hierarchy(children, distance_threshold=0.5)
    assert adjusted_rand_score(truth, by_thr) == pytest.approx(1.0)
    near = nearest_topics(children, 0, n=3)
    assert {j for j, _ in near} == {1, 2, 3}
    assert [c for _, c in near] == sorted([c for _, c in near], reverse=True)
    with pytest.raises(ValueError, match="not both"):
        topic_hierarchy(children, n_parents=2, distance_threshold=0.3)


def test_gis_for_fitted_gem_on_vmf_samples():
    """End to end with the real estimator: planted vMF topics plus isolated outliers."""
    from gem.model import GEM
    from gem.sphere import sample_vmf

    rng = np.random.default_rng(5)
    d = 16
    mus = _unit(rng.standard_normal((3, d)))
    X = np.vstack([sample_vmf(mu, 60.0, 120, random_state=i) for i, mu in enumerate(mus)])
    outliers = _unit(rng.standard_normal((6, d)))
    X = np.vstack([X, outliers]).astype(np.float32)
    is_outlier = np.r_[np.zeros(360, bool), np.ones(6, bool)]
    model = GEM(n_clusters=3, balance=0.0, random_state=0).fit(X)
    gis = gis_for_model(X, model)
    assert gis.shape == (366,) and np.all(np.isfinite(gis))
    assert _auc(gis[~is_outlier], gis[is_outlier]) >= 0.98
    reps = representatives(model.labels_, gis, top=10)
    for k, rows in reps.items():
        cos_reps = X[rows] @ model.mean_directions_[k]
        cos_all = X[model.labels_ == k] @ model.mean_directions_[k]
        assert cos_reps.mean() > np.quantile(cos_all, 0.75)


def test_one_document_topic_does_not_top_the_mean_gis_ranking():
    # three 300-document topics plus one isolated document that forms its own cluster: its
    # maximum-likelihood kappa is kappa_max (Rbar = 1), which used to put it first by mean GIS
    from gem import GEM
    from gem.sphere import sample_vmf

    rng = np.random.default_rng(5)
    mus = rng.standard_normal((3, 24))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    lone = rng.standard_normal(24)
    X = np.vstack([sample_vmf(mus[j], 80.0, 300, rng) for j in range(3)] + [lone / np.linalg.norm(lone)])
    init = np.vstack([mus, X[-1:]])
    for model, kappa in [
        (GEM(n_clusters=4, balance=0.0, init=init, max_iter=1).fit(X), None),  # one MAP M-step
        (None, banerjee_kappa),
    ]:
        labels = model.labels_ if model is not None else np.argmax(X @ init.T, axis=1)
        assert np.sum(labels == labels[-1]) == 1
        k = model.concentrations_ if model is not None else kappa(X, labels, 4)
        M = init if model is None else model.mean_directions_
        P = np.eye(4)[labels]
        gis = document_gis(X, labels, P, M, k)
        t = topic_table(X, labels, gis, M, k)
        assert t.sort_values("mean_gis", ascending=False)["cluster"].iloc[0] != labels[-1]
        assert k[labels[-1]] < 1e3


def test_representatives_skip_copies_of_one_text():
    # cluster 0: rows 0-5 are copies of one text with the highest GIS; cluster 1 shares the text
    labels = np.array([0] * 10 + [1] * 4)
    gis = np.array([9, 8.5, 8, 7.5, 7, 6.5, 5, 4, 3, 2, 9, 8, 7, 6], dtype=float)
    keys = np.array([b"boiler"] * 6 + [b"a", b"b", b"a", b"c"] + [b"boiler", b"boiler", b"d", b"e"], dtype="S16")
    reps = representatives(labels, gis, top=3, keys=keys)
    assert reps[0].tolist() == [0, 6, 7]  # the best copy stands for all six, then distinct texts
    assert reps[1].tolist() == [10, 12, 13]  # keys are taken per cluster
    assert representatives(labels, gis, top=3)[0].tolist() == [0, 1, 2]  # without keys: copies fill it
    full = representatives(labels, gis, top=100, keys=keys)
    assert full[0].tolist() == [0, 6, 7, 9] and len(set(keys[full[0]])) == len(full[0])
    with pytest.raises(ValueError, match="one entry per row"):
        representatives(labels, gis, keys=keys[:5])


def test_analyze_representatives_are_distinct_texts():
    """46 copies of one boilerplate text used to be a topic's every representative."""
    from gem.corpus import dedup_form
    from gem.gis import analyze
    from gem.model import GEM
    from gem.sphere import sample_vmf

    rng = np.random.default_rng(3)
    d = 16
    mus = _unit(rng.standard_normal((2, d)))
    X = np.vstack([sample_vmf(mu, 80.0, 100, random_state=i) for i, mu in enumerate(mus)])
    boiler = _unit(mus[0] + 0.01 * rng.standard_normal(d))  # copies sit on the topic's centre
    X = np.vstack([X, np.repeat(boiler[None, :], 46, axis=0)]).astype(np.float32)
    texts = [f"document {i} with its own words" for i in range(200)]
    texts += ["Cookie notice: this site uses cookies." if i % 2 else "cookie NOTICE:  this site uses cookies." for i in range(46)]
    model = GEM(n_clusters=2, balance=0.0, random_state=0).fit(X)
    result = analyze(X, model, texts, top=10)
    k = int(model.labels_[-1])
    rows = result.representatives[k]
    assert len(rows) == 10
    normalised = [dedup_form(texts[i]) for i in rows]
    assert len(set(normalised)) == 10  # distinct by (normalised) text
    assert sum(i >= 200 for i in rows) == 1  # one copy of the boilerplate, the best-ranked


def test_analyze_run_leaves_excluded_documents_out(synthetic_workspace):
    """GIS, the topic table and the keywords of a run fitted with documents a curator excluded
    later leave those documents out (gem.flags)."""
    from gem.cli import main
    from gem.flags import DocFlags
    from gem.workspace_ops import analyze_run

    ws = synthetic_workspace
    assert main(["fit", "-w", str(ws.root), "--k", "4", "--run", "r", "--no-sync"]) == 0
    full = analyze_run(ws, "r")
    ids = ws.load_corpus()["id"].astype(str).tolist()
    DocFlags(ws).exclude(ids[:40], "boilerplate", "alice")
    part = analyze_run(ws, "r")
    assert part.extra["n_excluded"] == 40 and full.extra["n_excluded"] == 0
    assert set(part.ids) == set(ids[40:]) and len(part.gis) == len(ids) - 40
    assert int(part.table["n_docs"].sum()) == len(ids) - 40
    assert np.isfinite(part.gis).all()
    texts = ws.load_corpus()["text"].to_numpy()
    assert all(texts[r] for r in part.extra["rows"]) and not set(part.extra["rows"]) & set(range(40))
