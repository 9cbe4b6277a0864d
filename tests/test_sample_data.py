"""The shipped sample corpus (sample_data/) and its embeddings agree and look like a crawl.

Nothing here skips: a missing file fails, with the command that rebuilds it.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from gem.store import SAMPLE_DATA_DIR, Workspace, ids_digest

REBUILD = "rebuild with `.venv/bin/python sample_data/build_sample.py --embed`"
SOURCES = {"debian": "debian:", "wordnet": "wordnet:", "kjv": "kjv:", "python-docs": "pydoc:"}


@pytest.fixture(scope="module")
def ws() -> Workspace:
    return Workspace(SAMPLE_DATA_DIR)


@pytest.fixture(scope="module")
def corpus(ws) -> pd.DataFrame:
    assert ws.corpus_path.exists(), f"{ws.corpus_path} missing: {REBUILD}"
    return ws.load_corpus()


@pytest.fixture(scope="module")
def layer_rep(ws) -> str:
    layers = [r for r in ws.representations() if re.fullmatch(r"layer\d+", r)]
    assert len(layers) == 1, f"expected exactly one layer<N> representation in {ws.root / 'embeddings'}, got {layers}: {REBUILD}"
    return layers[0]


def mean_pairwise_cosine(unit: np.ndarray) -> float:
    """Exact mean cosine over pairs i != j of unit rows, from the mean vector."""
    n = len(unit)
    m = unit.astype(np.float64).mean(axis=0)
    return float((n * (m @ m) - 1.0) / (n - 1))


def test_columns_and_dtypes(corpus):
    assert list(corpus.columns) == ["id", "text", "source", "category", "n_tokens"]
    for col in ["id", "text", "source", "category"]:
        assert pd.api.types.is_string_dtype(corpus[col]), col
        assert corpus[col].notna().all(), col
    assert pd.api.types.is_integer_dtype(corpus["n_tokens"])
    assert 10_000 <= len(corpus) <= 15_000


def test_ids_unique_and_stable_prefixes(corpus):
    assert corpus["id"].is_unique
    for source, prefix in SOURCES.items():
        ids = corpus.loc[corpus["source"] == source, "id"]
        assert ids.str.startswith(prefix).all(), f"{source}: ids must start with {prefix!r}"


def test_texts_clean_nonempty_unique(corpus):
    text = corpus["text"]
    assert (text.str.strip().str.len() > 0).all(), "empty text"
    assert text.is_unique, "exact duplicate texts"
    assert (text == text.str.strip()).all(), "leading/trailing whitespace"
    # clean UTF-8: encodable (no lone surrogates), no control characters but newlines
    for t in text:
        t.encode("utf-8")
    assert not text.str.contains(r"[\x00-\x09\x0b-\x1f\x7f]", regex=True).any(), "control characters"


def test_sources_imbalanced_with_labels(corpus):
    counts = corpus["source"].value_counts()
    assert set(counts.index) == set(SOURCES)
    ratio = counts.max() / counts.min()
    assert 3 <= ratio <= 7, f"largest/smallest source = {ratio:.2f}, want 3..7 (a deliberately uneven crawl)"
    cats = corpus.groupby("source")["category"].nunique()
    assert (cats >= 5).all(), f"every source needs >= 5 categories: {cats.to_dict()}"
    assert corpus["source"].iloc[:200].nunique() == 4, "rows should be shuffled, not sorted by source"


def test_n_tokens_match_tokenizer(corpus):
    from gem.embed import count_tokens

    assert (corpus["n_tokens"] > 0).all()
    sample = corpus.sample(50, random_state=1)
    np.testing.assert_array_equal(count_tokens(sample["text"].tolist()), sample["n_tokens"].to_numpy())


@pytest.mark.parametrize("rep", ["final", "layer"])
def test_embeddings_aligned_and_unit(ws, corpus, layer_rep, rep):
    rep = layer_rep if rep == "layer" else rep
    for path in [ws.embeddings_path(rep), ws.norms_path(rep), ws.embeddings_meta_path(rep)]:
        assert path.exists(), f"{path} missing: {REBUILD}"
    unit = ws.load_embeddings(rep)
    norms = ws.load_norms(rep)
    meta = json.loads(ws.embeddings_meta_path(rep).read_text(encoding="utf-8"))
    assert unit.dtype == np.float32 and unit.ndim == 2
    assert unit.shape[0] == len(corpus) == norms.shape[0] == meta["n"]
    assert unit.shape[1] == meta["dim"] == 384
    assert meta["ids_digest"] == ids_digest(corpus["id"]), f"embeddings/{rep} are stale: {REBUILD}"
    assert meta["fingerprint"]
    assert np.isfinite(unit).all() and np.isfinite(norms).all()
    assert np.abs(np.linalg.norm(unit, axis=1) - 1.0).max() < 1e-3
    assert (norms > 0).all()


def test_cone_in_layer_not_in_final(ws, layer_rep):
    final = mean_pairwise_cosine(ws.load_embeddings("final"))
    layer = mean_pairwise_cosine(ws.load_embeddings(layer_rep))
    assert final < 0.3, f"final output should be nearly isotropic, mean cosine {final:.3f}"
    assert layer >= 0.3, f"{layer_rep} should form a cone, mean cosine {layer:.3f}"


@pytest.mark.slow
def test_spot_reembedding_matches(ws, corpus, layer_rep):
    """8 random documents re-embedded with the real model, same settings, match the stored rows."""
    from gem.embed import SentenceTransformerEmbedder, parse_representation

    rows = np.random.default_rng(7).choice(len(corpus), size=8, replace=False)
    texts = corpus["text"].iloc[rows].tolist()
    for rep in ["final", layer_rep]:
        meta = json.loads(ws.embeddings_meta_path(rep).read_text(encoding="utf-8"))
        embedder = SentenceTransformerEmbedder(layer=parse_representation(rep))
        assert meta["fingerprint"] == embedder.fingerprint, f"{rep}: model or settings changed: {REBUILD}"
        unit, norms = embedder.encode(texts)
        cos = np.sum(unit * ws.load_embeddings(rep)[rows], axis=1)
        assert cos.min() >= 0.999, f"{rep}: cosine to stored rows {np.round(cos, 5)}"
        np.testing.assert_allclose(norms, ws.load_norms(rep)[rows], rtol=1e-2)
