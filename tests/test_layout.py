"""gem.layout: stratified sampling, exact kNN, UMAP layouts and their disk cache."""
import numpy as np
import pandas as pd
import pytest

from gem import layout as L
from gem.store import Workspace


def _vmf_blobs(n=300, k=3, d=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % k
    X = centres[labels] + spread * rng.normal(size=(n, d))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), labels


def _knn_accuracy(Y, labels, k=5):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score

    return cross_val_score(KNeighborsClassifier(k), Y, labels, cv=5).mean()


def test_stratified_sample_keeps_proportions_and_small_strata():
    strata = np.array(["big"] * 9000 + ["mid"] * 990 + ["tiny"] * 10)
    rows = L.stratified_sample(len(strata), 1000, strata, random_state=0)
    assert len(rows) == 1000 and len(np.unique(rows)) == 1000 and np.all(np.diff(rows) > 0)
    counts = pd.Series(strata[rows]).value_counts()
    assert abs(counts["big"] - 900) <= 1 and abs(counts["mid"] - 99) <= 1 and counts["tiny"] >= 1
    # many singleton strata: the "at least one each" floor must not overshoot the budget
    rows = L.stratified_sample(5000, 100, np.arange(5000) % 400, random_state=0)
    assert len(rows) == 100
    assert np.array_equal(L.stratified_sample(50, 100), np.arange(50))
    with pytest.raises(ValueError, match="strata"):
        L.stratified_sample(10, 5, strata[:3])


def test_exact_cosine_knn_matches_brute_force():
    from sklearn.neighbors import NearestNeighbors

    X, _ = _vmf_blobs(n=400, spread=0.6)
    X = X * np.random.default_rng(1).uniform(0.5, 3, size=(len(X), 1))  # norms must not matter
    idx, dist = L.exact_cosine_knn(X, 10, chunk=97)
    nn = NearestNeighbors(n_neighbors=10, metric="cosine", algorithm="brute").fit(X)
    ref_dist, _ = nn.kneighbors(X)
    assert np.all(idx[:, 0] == np.arange(len(X))) and np.all(dist[:, 0] == 0)
    np.testing.assert_allclose(dist[:, 1:], ref_dist[:, 1:], atol=1e-5)
    assert np.all(np.diff(dist, axis=1) >= -1e-6)


def test_haversine_to_xyz_gives_unit_vectors():
    rng = np.random.default_rng(0)
    xyz = L.haversine_to_xyz(np.column_stack([rng.uniform(0, np.pi, 100), rng.uniform(-np.pi, np.pi, 100)]))
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 1, atol=1e-6)


@pytest.mark.slow
def test_umap_layouts_keep_clusters_apart():
    """Both layouts preserve the cluster structure: 5-NN accuracy in the layout >= 0.95."""
    X, labels = _vmf_blobs(n=300, k=3, spread=0.25)
    flat = L.compute_layout(X, "2d", n_neighbors=15, random_state=0)
    assert flat.shape == (300, 2) and np.isfinite(flat).all()
    assert _knn_accuracy(flat, labels) >= 0.95
    sphere = L.compute_layout(X, "sphere", n_neighbors=15, random_state=0)
    assert sphere.shape == (300, 3)
    np.testing.assert_allclose(np.linalg.norm(sphere, axis=1), 1, atol=1e-5)
    assert _knn_accuracy(sphere, labels) >= 0.95
    with pytest.raises(ValueError, match="kind"):
        L.compute_layout(X, "torus")


def _workspace(tmp_path, n=60, d=8, seed=0):
    from gem.store import write_parquet_atomic

    ws = Workspace(tmp_path / "ws")
    X, labels = _vmf_blobs(n=n, d=d, seed=seed)
    write_parquet_atomic(ws.corpus_path, pd.DataFrame({"id": [f"d{i}" for i in range(n)], "text": ["t"] * n,
                                                       "category": labels.astype(str)}))
    ws.save_embeddings("final", X, np.ones(n, np.float32), {"n": n})
    return ws, X


def test_layout_cache_round_trip_and_staleness(tmp_path, monkeypatch):
    ws, X = _workspace(tmp_path)
    ids = ws.load_corpus()["id"].to_numpy()
    assert L.get_layout(ws, "final", "2d", compute=False) is None
    coords = X[:, :2].copy()
    L.save_layout(ws, L.Layout(ids, coords, "2d", "final", len(ids)))
    got = L.get_layout(ws, "final", "2d", compute=False)
    assert got is not None and not got.sampled
    np.testing.assert_allclose(got.coords, coords)
    assert list(got.ids) == list(ids)
    # other parameters or a different sample budget are a different layout
    assert L.load_layout(ws, "final", "2d", params={"n_neighbors": 30}) is None
    assert L.load_layout(ws, "final", "2d", max_points=10) is None
    # new embeddings make the cached layout stale: never silently reused
    ws.save_embeddings("final", X[::-1].copy(), np.ones(len(X), np.float32), {"n": len(X)})
    assert L.load_layout(ws, "final", "2d") is None
    with pytest.raises(ValueError, match="coords"):
        L.save_layout(ws, L.Layout(ids, coords, "sphere", "final", len(ids)))


def test_get_layout_computes_on_a_stratified_sample_and_caches(tmp_path, monkeypatch):
    ws, X = _workspace(tmp_path, n=90)
    calls = []

    def fake_compute(Xs, kind, **params):  # the UMAP itself is covered by the slow test above
        calls.append(len(Xs))
        return np.asarray(Xs)[:, :2] if kind == "2d" else np.asarray(Xs)[:, :3] / np.linalg.norm(np.asarray(Xs)[:, :3], axis=1, keepdims=True)

    monkeypatch.setattr(L, "compute_layout", fake_compute)
    lay = L.get_layout(ws, "final", "2d", max_points=30)
    assert lay.sampled and len(lay.ids) == 30 and lay.n_total == 90
    cats = ws.load_corpus().set_index("id").loc[lay.ids, "category"].value_counts()
    assert cats.min() == 10  # three equal strata, equal shares
    lay2 = L.get_layout(ws, "final", "2d", max_points=30)
    assert calls == [30] and list(lay2.ids) == list(lay.ids)
    sph = L.get_layout(ws, "final", "sphere", max_points=30)
    assert sph.coords.shape == (30, 3) and calls == [30, 30]
