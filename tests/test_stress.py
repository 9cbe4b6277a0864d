"""Stress test (gem.stress, gem.metrics.injection_report, `gem compare --inject-synthetic`):
properties, not snapshots."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from gem import stress
from gem.metrics import injection_report


class HashEmbedder:
    """A deterministic stand-in for the model: bag of hashed words plus one shared 'style' direction,
    so template passages sit together as LLM text does. Counts what it encodes."""

    fingerprint = "test-hash-embedder"

    def __init__(self, dim=24):
        self.dim = dim
        self.n_encoded = 0

    def encode(self, texts, progress=None):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                h = int(hashlib.md5(w.encode()).hexdigest()[:8], 16)
                out[i, h % self.dim] += 1.0
        out[:, 0] += 3.0
        self.n_encoded += len(texts)
        norms = np.linalg.norm(out, axis=1)
        if progress:
            progress(len(texts), len(texts))
        return out / norms[:, None], norms.astype(np.float32)


def _corpus(n=200):
    topics = {"astronomy": "star planet orbit telescope galaxy", "cooking": "recipe oven flour butter sauce",
              "law": "court judge statute contract appeal"}
    names = list(topics)
    rows = [{"id": f"d{i}", "text": f"{topics[names[i % 3]]} note {i}", "category": names[i % 3]} for i in range(n)]
    return pd.DataFrame(rows)


def test_injection_is_deterministic_and_has_the_asked_share():
    corpus = _corpus()
    a = stress.inject_synthetic(corpus, 0.15, seed=3)
    b = stress.inject_synthetic(corpus, 0.15, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = stress.inject_synthetic(corpus, 0.15, seed=4)
    assert not np.array_equal(a["text"].to_numpy(), c["text"].to_numpy())
    for share in (0.05, 0.1, 0.15, 0.3):
        s = stress.inject_synthetic(corpus, share, seed=0)
        inj = (s["provenance"] == stress.PROVENANCE_SYNTHETIC).to_numpy()
        assert abs(inj.mean() - share) <= 1.0 / len(s)
        assert (s["provenance"][~inj] == stress.PROVENANCE_CORPUS).all()
        assert not inj[: len(corpus)].any()  # corpus rows first, in order, unchanged
        pd.testing.assert_frame_equal(s.iloc[: len(corpus)][corpus.columns].reset_index(drop=True), corpus)
        assert s["id"].is_unique
    assert "provenance" not in corpus.columns  # the input frame is not modified


def test_passages_wrap_the_corpus_topic_words_in_one_style():
    corpus = _corpus()
    s = stress.inject_synthetic(corpus, 0.2, seed=0)
    syn = s[s["provenance"] == stress.PROVENANCE_SYNTHETIC]
    for text, group in zip(syn["text"], syn["topic_group"]):
        words = set(corpus.loc[corpus["category"] == group, "text"].str.cat(sep=" ").split())
        assert len({w.strip(".,:?") for w in text.split()} & words) >= 2, text
    # every topic gets passages (spread like the corpus), in the shared textbook voice
    assert set(syn["topic_group"]) == set(corpus["category"])
    assert syn["text"].str.contains(r"^(?:Chapter|Lesson|Unit|Section) \d+:").all()


def test_bad_share_refused():
    for share in (0, -0.1, 0.95, float("nan")):
        with pytest.raises(ValueError):
            stress.inject_synthetic(_corpus(), share)


def test_injection_report_on_a_hand_made_example():
    # 4 clusters; cluster 0: 3 injected of 4, cluster 1: 2 of 2, cluster 2: 1 of 3, cluster 3: none
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    injected = np.array([1, 1, 1, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    r = injection_report(labels, injected, 4)
    assert r["n_injected"] == 6
    assert r["top2_share"] == pytest.approx(5 / 6)
    assert r["top_clusters"] == [0, 1]
    assert r["clusters_dominated"] == 2 and r["dominated_clusters"] == [0, 1]
    assert r["dominated_share"] == pytest.approx(5 / 6)
    # exactly half is not "dominated"
    r2 = injection_report(np.array([0, 0, 1, 1]), np.array([1, 0, 1, 1], dtype=bool), 2)
    assert r2["clusters_dominated"] == 1 and r2["top2_share"] == 1.0
    with pytest.raises(ValueError):
        injection_report(np.array([0, 5]), np.array([True, False]), 2)


def test_stress_data_never_touches_the_corpus_and_reuses_the_cache(synthetic_workspace):
    ws = synthetic_workspace
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in
              [ws.corpus_path, ws.embeddings_path("final"), ws.norms_path("final"), ws.embeddings_meta_path("final")]}
    emb = HashEmbedder()
    d = stress.stress_data(ws, 0.15, seed=0, embedder=emb)
    n = len(ws.load_corpus())
    assert emb.n_encoded == d.injected.sum() > 0
    assert d.unit.shape == (len(d.frame), 24) and np.allclose(np.linalg.norm(d.unit, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(d.unit[:n], ws.load_embeddings("final"))
    np.testing.assert_allclose(d.raw[:n], ws.load_raw_embeddings("final"), rtol=1e-6)
    for p, (data, mtime) in before.items():
        assert p.read_bytes() == data and p.stat().st_mtime_ns == mtime, p
    assert not list(ws.root.glob("*synthetic*"))
    emb2 = HashEmbedder()
    d2 = stress.stress_data(ws, 0.15, seed=0, embedder=emb2)
    assert emb2.n_encoded == 0  # second run: every passage from the workspace's embedding cache
    np.testing.assert_array_equal(d.unit, d2.unit)


def test_workspace_embedder_refuses_embeddings_not_made_by_the_model(synthetic_workspace):
    with pytest.raises(ValueError, match="not made by the app's model"):
        stress.workspace_embedder(synthetic_workspace, "final")


def test_place_by_neighbours():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 8))
    coords = rng.normal(size=(50, 2))
    # a copy of a laid-out row with one neighbour lands exactly on it
    np.testing.assert_allclose(stress.place_by_neighbours(X[[7, 9]], X, coords, n_neighbors=1), coords[[7, 9]], atol=1e-6)
    # with 10 neighbours: the mean of its 10 most cosine-similar rows
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    near = np.argsort(-(Xu @ Xu[3]))[:10]
    np.testing.assert_allclose(stress.place_by_neighbours(X[[3]], X, coords)[0], coords[near].mean(0), atol=1e-5)


def test_injected_mask_marks_a_column_value():
    f = pd.DataFrame({"source": ["web", "llm", "web", None], "n": [1, 2, 3, 4]})
    assert stress.injected_mask(f, "source", "llm").tolist() == [False, True, False, False]
    with pytest.raises(ValueError):
        stress.injected_mask(f, "nope", "x")


def test_stress_compare_finds_a_style_collapse():
    """Passages sharing one strong style direction: every method reports where they went, and the
    figures agree with injection_report on the same labels."""
    rng = np.random.default_rng(0)
    d, n, m, k = 16, 300, 60, 6
    centres = rng.normal(size=(k, d))
    X = centres[rng.integers(0, k, n)] + 0.3 * rng.normal(size=(n, d))
    style = rng.normal(size=d) * 3
    S = style + 0.2 * rng.normal(size=(m, d))
    raw = np.vstack([X, S])
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    injected = np.r_[np.zeros(n, bool), np.ones(m, bool)]
    methods = {"km": ("kmeans", {}), "gem": ("gem", {"balance": 5000.0})}
    rows = stress.stress_compare(unit, raw, injected, k, methods=methods, seed=0)
    assert [r["method"] for r in rows] == ["km", "gem"]
    for r in rows:
        assert r["n_injected"] == m and 0 < r["top2_share"] <= 1
    km_labels, _ = stress.fit_labels("kmeans", unit, raw, k, 0)
    assert injection_report(km_labels, injected, k)["top2_share"] == rows[0]["top2_share"]
    assert rows[0]["top2_share"] > 0.9  # the style blob is one region: k-means keeps it together


def _cli(args):
    from gem.cli import main

    return main(args)


def test_cli_compare_inject_synthetic_json(synthetic_workspace, monkeypatch, capsys):
    monkeypatch.setattr(stress, "workspace_embedder", lambda ws, rep="final": HashEmbedder())
    corpus_bytes = synthetic_workspace.corpus_path.read_bytes()
    assert _cli(["compare", "-w", str(synthetic_workspace.root), "--k", "4", "--inject-synthetic", "0.15", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["method"] for r in rows]
    assert names == list(stress.STRESS_METHODS)
    n = len(synthetic_workspace.load_corpus())
    for r in rows:
        assert r["n_injected"] == stress.injected_count(n, 0.15)
        assert 0 < r["top2_share"] <= 1 and 0 <= r["clusters_dominated"] <= 4
        assert "templates, not LLM output" in r["generator"]
    assert synthetic_workspace.corpus_path.read_bytes() == corpus_bytes


def test_cli_compare_injected_set_and_errors(synthetic_workspace, capsys):
    ws = str(synthetic_workspace.root)
    assert _cli(["compare", "-w", ws, "--k", "4", "--injected-set", "source=code", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    n_code = int((synthetic_workspace.load_corpus()["source"] == "code").sum())
    assert all(r["n_injected"] == n_code and r["injected_set"] == "source=code" for r in rows)
    # the synthetic workspace's vectors were not made by the model: a one-line refusal, exit 2
    assert _cli(["compare", "-w", ws, "--k", "4", "--inject-synthetic", "0.1"]) == 2
    assert "not made by the app's model" in capsys.readouterr().err
    assert _cli(["compare", "-w", ws, "--injected-set", "source=nothing"]) == 2
    with pytest.raises(SystemExit):
        _cli(["compare", "-w", ws, "--inject-synthetic", "0.95"])
