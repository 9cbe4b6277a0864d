"""faiss's spherical k-means as a baseline: planted recovery, the subsampled training faiss does by
default, a save / load round trip through runs, and `gem fit --method faiss-spherical`."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from gem.baselines import FaissSphericalKMeans, estimator_from_state, make_estimator
from gem.sphere import planted_cone, sample_vmf

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(1)
    mus = rng.standard_normal((6, 32))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    X = np.concatenate([sample_vmf(m, 60.0, 300, rng) for m in mus])
    return X, np.repeat(np.arange(6), 300)


def test_recovers_planted_directions(planted):
    """faiss starts from K random rows, so a seed that draws two rows of one planted cluster ends in
    a local optimum that merges two others; most seeds recover all six."""
    X, y = planted
    fits = [FaissSphericalKMeans(n_clusters=6, random_state=s).fit(X) for s in range(10)]
    scores = [adjusted_rand_score(y, f.labels_) for f in fits]
    assert sum(s > 0.99 for s in scores) >= 5, scores
    m = fits[int(np.argmax(scores))]
    assert m.mean_directions_.shape == (6, 32) and m.mean_directions_.dtype == np.float64
    assert np.allclose(np.linalg.norm(m.mean_directions_, axis=1), 1.0)
    assert m.weights_ == pytest.approx(np.full(6, 1 / 6), abs=0.01)
    assert m.n_iter_ == 25 and m.objective_ > 0
    # labels_ are every row's most similar centroid, as predict gives them
    assert np.array_equal(m.predict(X), m.labels_)


def test_same_seed_same_fit_and_seed_matters(planted):
    X, _ = planted
    a = FaissSphericalKMeans(n_clusters=12, random_state=0).fit(X)
    b = FaissSphericalKMeans(n_clusters=12, random_state=0).fit(X)
    c = FaissSphericalKMeans(n_clusters=12, random_state=1).fit(X)
    assert np.array_equal(a.labels_, b.labels_)
    assert not np.allclose(a.mean_directions_, c.mean_directions_)


def test_trains_on_a_subsample_but_labels_every_row(planted):
    """max_points_per_centroid=20 at K = 6 trains on 120 of 1,800 rows (faiss's objective, a sum of
    cosines over its training rows, is at most 120); every row still gets its nearest centroid."""
    X, _ = planted
    full = FaissSphericalKMeans(n_clusters=6, random_state=0).fit(X)
    sub = FaissSphericalKMeans(n_clusters=6, max_points_per_centroid=20, random_state=0).fit(X)
    assert full.objective_ > 300 and 0 < sub.objective_ <= 120
    assert sub.labels_.shape == (X.shape[0],) and np.array_equal(sub.labels_, sub.predict(X))


def test_state_round_trip_without_pickle(planted):
    X, _ = planted
    m = make_estimator("faiss-spherical", 6, random_state=2).fit(X)
    meta, arrays = m.to_state()
    assert all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays.values())
    back = estimator_from_state(json.loads(json.dumps(meta)), arrays)
    assert isinstance(back, FaissSphericalKMeans) and back.get_params() == m.get_params()
    assert np.array_equal(back.predict(X), m.predict(X))
    assert np.array_equal(back.labels_, m.labels_) and back.objective_ == m.objective_


def test_faiss_is_imported_at_fit_only():
    """gem.baselines (imported by the app and the CLI) does not import faiss until a faiss fit."""
    import subprocess

    code = "import sys, gem.baselines; assert 'faiss' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_cli_fit_saves_and_loads(tmp_path, capsys):
    from gem.cli import main
    from gem.runs import load_run
    from gem.store import Workspace

    k = 5
    sizes = np.round(500 * (60 / 500) ** (np.arange(k) / (k - 1))).astype(int)
    raw, unit, y = planted_cone(sizes, d=16, random_state=0)
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    pd.DataFrame({"id": [f"d{i}" for i in range(len(y))], "text": ["t"] * len(y)}).to_parquet(ws.corpus_path)
    ws.save_embeddings("final", unit, np.linalg.norm(raw, axis=1), {"shape": list(unit.shape)})
    assert main(["fit", "-w", str(ws.root), "--method", "faiss-spherical", "--k", str(k), "--seed", "4",
                 "--run", "fs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "fs" and 0 < out["normalized_entropy"] <= 1
    run = load_run(ws, "fs")
    assert run.method == "faiss-spherical" and run.params["seed"] == 4
    assert isinstance(run.model, FaissSphericalKMeans) and run.model.random_state == 4
    assert np.array_equal(run.model.predict(ws.load_embeddings()), run.assignments["cluster"].to_numpy())
    assert (run.assignments["probability"] == 1.0).all()
