"""Geometric Influence Score (GIS), topic figures, representatives, keywords and hierarchy.

For document i hard-assigned to cluster k:

    GIS_k(x_i) = log gamma_ik + kappa_k mu_k^T x_i + beta * log rho_k(x_i)

confidence (posterior), centrality (vMF log-density up to a per-cluster constant) and local
density rho_k(x_i) = mean cosine to the M nearest *other* members of cluster k. Boundary documents
lose on confidence, isolated outliers on centrality and density, so both rank low.

Everything here is a pure function of arrays; nothing reads or writes the workspace
(``gem.workspace_ops.analyze_run`` glues a saved run to these functions).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .arrays import as_matrix, unit_rows
from .corpus import text_fingerprints

# Cosines to neighbours can be <= 0 in high dimension (a lone member of a sprawling cluster), where
# log is undefined. Clipping to a small positive floor keeps GIS finite and caps the density penalty
# at beta * log(1e-3) ~ -3.5 (beta = 0.5), so one degenerate neighbourhood cannot dominate the score.
RHO_FLOOR = 1e-3
# Posteriors can underflow to 0 for documents hard-assigned against their soft assignment
# (e.g. labels from another model); the floor keeps log gamma finite (-690) and still ranks them last.
GAMMA_FLOOR = 1e-300


# ---------------------------------------------------------------------------- validation
def _check_labels(labels, n: int, n_clusters: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match X, got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers (cluster indices), got dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; row {int(np.argmin(labels))} has {int(labels.min())}")
    if n_clusters is not None and n and labels.max() >= n_clusters:
        raise ValueError(
            f"label {int(labels.max())} (row {int(np.argmax(labels))}) is out of range for {n_clusters} clusters"
        )
    return labels.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------- GIS
def local_density(
    X: np.ndarray,
    labels: np.ndarray,
    n_neighbors: int = 10,
    max_reference: int = 2000,
    random_state: int | None = 0,
    block_size: int = 2048,
) -> np.ndarray:
    """rho_k(x_i): mean cosine of document i to its ``n_neighbors`` nearest other members of its cluster.

    Clusters larger than ``max_reference`` are compared against a random sample of that many members
    (the estimate of a mean over the M nearest is then slightly pessimistic, uniformly within the
    cluster, so ranks inside the cluster are preserved in expectation). Similarities are computed in
    blocks of ``block_size`` query rows, so memory stays O(block_size x max_reference).
    A cluster with a single member has no neighbours: its rho is the floor (no evidence of density).
    """
    X = as_matrix(X)
    n = X.shape[0]
    labels = _check_labels(labels, n)
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    if max_reference < 2:
        raise ValueError(f"max_reference must be >= 2, got {max_reference}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    rng = np.random.default_rng(random_state)
    rho = np.full(n, RHO_FLOOR, dtype=np.float64)
    Xf = np.ascontiguousarray(X, dtype=np.float32)
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        if members.size < 2:
            continue
        if members.size > max_reference:
            ref = np.sort(rng.choice(members, size=max_reference, replace=False))
        else:
            ref = members
        R = Xf[ref]
        # position of each member inside the reference set (-1 if not sampled), to exclude itself
        pos_in_ref = np.full(n, -1, dtype=np.int64)
        pos_in_ref[ref] = np.arange(ref.size)
        # every query has at least |ref| - 1 candidates (itself excluded when it was sampled)
        m = min(n_neighbors, ref.size - 1)
        for start in range(0, members.size, block_size):
            q = members[start : start + block_size]
            S = Xf[q] @ R.T  # (b, |ref|) cosines
            own = pos_in_ref[q]
            has_self = own >= 0
            S[np.flatnonzero(has_self), own[has_self]] = -np.inf
            # the m largest per row; -inf (self) never enters because m <= |ref| - 1
            top = np.partition(S, S.shape[1] - m, axis=1)[:, S.shape[1] - m :]
            rho[q] = top.mean(axis=1, dtype=np.float64)
    return np.maximum(rho, RHO_FLOOR)


def document_gis(
    X: np.ndarray,
    labels: np.ndarray,
    proba: np.ndarray | None,
    mean_directions: np.ndarray,
    concentrations: np.ndarray,
    beta: float = 0.5,
    n_neighbors: int = 10,
    max_reference: int = 2000,
    random_state: int | None = 0,
    block_size: int = 2048,
) -> np.ndarray:
    """GIS of every document in its hard-assigned cluster (float64, shape (n,)).

    ``proba`` is the (n, K) soft assignment gamma; ``None`` means hard assignments (log gamma = 0).
    ``X`` rows are expected on the unit sphere (the embeddings the model was fitted on).
    """
    X = as_matrix(X)
    n = X.shape[0]
    M = unit_rows(mean_directions, name="mean_directions")
    K = M.shape[0]
    if M.shape[1] != X.shape[1]:
        raise ValueError(f"mean_directions have dimension {M.shape[1]} but X has {X.shape[1]}")
    kappa = np.asarray(concentrations, dtype=np.float64).reshape(-1)
    if kappa.shape != (K,):
        raise ValueError(f"concentrations must have shape ({K},), got {kappa.shape}")
    if np.any(~np.isfinite(kappa)) or np.any(kappa < 0):
        raise ValueError("concentrations must be finite and >= 0")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    labels = _check_labels(labels, n, K)
    rows = np.arange(n)
    if proba is None:
        log_gamma = np.zeros(n)
    else:
        proba = np.asarray(proba)
        if proba.shape != (n, K):
            raise ValueError(f"proba must have shape ({n}, {K}), got {proba.shape}")
        log_gamma = np.log(np.maximum(proba[rows, labels].astype(np.float64), GAMMA_FLOOR))
    # centrality: only the assigned cluster's cosine is needed, blocked to avoid an (n, d) float64 copy
    cos = np.empty(n, dtype=np.float64)
    Mf = M.astype(np.float32)
    for start in range(0, n, max(block_size, 1)):
        sl = slice(start, start + block_size)
        cos[sl] = np.einsum("ij,ij->i", X[sl].astype(np.float32), Mf[labels[sl]], dtype=np.float64)
    gis = log_gamma + kappa[labels] * cos
    if beta > 0:
        rho = local_density(X, labels, n_neighbors, max_reference, random_state, block_size)
        gis = gis + beta * np.log(rho)
    return gis


def banerjee_kappa(X: np.ndarray, labels: np.ndarray, n_clusters: int, kappa_max: float = 1e4,
                   prior_docs: float = 10.0) -> np.ndarray:
    """Per-cluster concentration from the mean resultant length (Banerjee et al. 2005 approximation),
    for baselines (k-means) that do not estimate one. Empty clusters get 0.

    As in GEM's M-step (``GEM(kappa_prior=10)``), Rbar is shrunk towards the corpus mean resultant
    length R0 by ``prior_docs`` pseudo-documents, (||sum x|| + n0 R0) / (n_k + n0): a one-document
    cluster has Rbar = 1 (kappa_max) otherwise and would top every GIS ranking."""
    X = as_matrix(X)
    labels = _check_labels(labels, X.shape[0], n_clusters)
    d = X.shape[1]
    sums = np.zeros((n_clusters, d))
    np.add.at(sums, labels, X.astype(np.float64))
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    r0 = float(np.linalg.norm(sums.sum(axis=0))) / max(X.shape[0], 1)
    rbar = np.divide(np.linalg.norm(sums, axis=1) + prior_docs * r0, counts + prior_docs,
                     out=np.zeros(n_clusters), where=counts > 0)
    rbar = np.clip(rbar, 0.0, 1.0 - 1e-12)
    kappa = rbar * (d - rbar**2) / (1.0 - rbar**2)
    return np.minimum(kappa, kappa_max)


def _model_directions(model) -> np.ndarray:
    for attr in ("mean_directions_", "cluster_centers_"):
        if hasattr(model, attr):
            return unit_rows(getattr(model, attr), name=attr)
    raise ValueError(f"{type(model).__name__} has neither mean_directions_ nor cluster_centers_; is it fitted?")


def gis_for_model(X: np.ndarray, model, labels: np.ndarray | None = None, **kw) -> np.ndarray:
    """GIS for a fitted clustering model (GEM, vMF mixture, spherical / Euclidean k-means).

    Uses ``model.predict_proba`` for vMF models (GEM, vMF mixture; k-means is hard: log gamma = 0),
    ``labels`` if given, else ``model.labels_`` when it matches X, else ``model.predict`` (pass
    ``labels`` for Euclidean k-means fitted on raw vectors: its predict needs those); ``concentrations_`` when the
    model has them, else a Banerjee estimate per cluster from the hard assignment. X is normalised
    to the unit sphere (GIS is defined on directions; Euclidean baselines are fitted on raw vectors).
    """
    return document_gis(*_gis_inputs(X, model, labels), **kw)


def _gis_inputs(X: np.ndarray, model, labels: np.ndarray | None):
    """What document_gis needs from a fitted model: (unit rows float32, labels, posterior or
    None, mean directions, concentrations); see gis_for_model."""
    X = unit_rows(as_matrix(X), np.float32)
    M = _model_directions(model)
    K = M.shape[0]
    # Only vMF models (GEM, plain vMF mixture) have a soft posterior; k-means' predict_proba is one-hot
    # (log gamma = 0 for every member anyway) and Euclidean k-means' would need the raw vectors.
    soft = hasattr(model, "predict_proba") and getattr(model, "concentrations_", None) is not None
    proba = model.predict_proba(X) if soft else None
    if labels is None:
        fitted = getattr(model, "labels_", None)
        if fitted is not None and len(fitted) == X.shape[0]:
            labels = np.asarray(fitted)
        elif proba is not None:
            labels = np.argmax(proba, axis=1)
        else:
            labels = np.asarray(model.predict(X))
    labels = _check_labels(np.asarray(labels), X.shape[0], K)
    kappa = getattr(model, "concentrations_", None)
    if kappa is None:
        kappa = banerjee_kappa(X, labels, K)
    kappa = np.broadcast_to(np.asarray(kappa, dtype=np.float64).reshape(-1), (K,))
    return X, labels, proba, M, kappa


# ---------------------------------------------------------------------------- topic figures
def topic_table(
    X: np.ndarray,
    labels: np.ndarray,
    gis: np.ndarray,
    mean_directions: np.ndarray,
    concentrations: np.ndarray | None,
    weights: np.ndarray | None = None,
    n_tokens: np.ndarray | None = None,
):
    """One row per cluster: cluster, n_docs, n_tokens, share (of documents), token_share, mass (the
    model's soft mass pi, if given), kappa, mean_gis, rbar, tightness = (Rbar_k - Rbar_all) /
    (1 - Rbar_all): 0 = as spread as the corpus, 1 = a single point."""
    import pandas as pd

    X = as_matrix(X)
    n = X.shape[0]
    K = np.asarray(mean_directions).shape[0]
    labels = _check_labels(labels, n, K)
    gis = np.asarray(gis, dtype=np.float64)
    if gis.shape != (n,):
        raise ValueError(f"gis must have shape ({n},), got {gis.shape}")
    counts = np.bincount(labels, minlength=K)
    if n_tokens is None:
        tok = np.zeros(K, dtype=np.int64)
    else:
        n_tokens = np.asarray(n_tokens)
        if n_tokens.shape != (n,):
            raise ValueError(f"n_tokens must have shape ({n},), got {n_tokens.shape}")
        tok = np.bincount(labels, weights=n_tokens.astype(np.float64), minlength=K).round().astype(np.int64)
    sums = np.zeros((K, X.shape[1]))
    np.add.at(sums, labels, X.astype(np.float64))
    rbar = np.divide(np.linalg.norm(sums, axis=1), counts, out=np.full(K, np.nan), where=counts > 0)
    rbar_all = float(np.linalg.norm(sums.sum(axis=0))) / n  # every row is in one cluster's sum
    tightness = (rbar - rbar_all) / max(1.0 - rbar_all, 1e-12)
    gis_sum = np.bincount(labels, weights=gis, minlength=K)
    mean_gis = np.divide(gis_sum, counts, out=np.full(K, np.nan), where=counts > 0)
    kappa = np.full(K, np.nan) if concentrations is None else np.broadcast_to(
        np.asarray(concentrations, dtype=np.float64).reshape(-1), (K,)
    )
    frame = pd.DataFrame(
        {
            "cluster": np.arange(K),
            "n_docs": counts.astype(np.int64),
            "n_tokens": tok,
            "share": counts / n,
            "token_share": tok / tok.sum() if tok.sum() > 0 else np.full(K, np.nan),
            "mass": np.asarray(weights, dtype=np.float64) if weights is not None else np.full(K, np.nan),
            "kappa": kappa,
            "mean_gis": mean_gis,
            "rbar": rbar,
            "tightness": tightness,
        }
    )
    return frame


def representatives(labels: np.ndarray, gis: np.ndarray, top: int = 10, keys: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Row indices of the ``top`` highest-GIS members of each non-empty cluster, GIS descending
    (ties broken by row index, so the result is deterministic).

    keys: optional per-row key (e.g. ``gem.corpus.text_fingerprints(texts)``, a hash of the
    normalised text); a row whose key was already taken in its cluster is skipped, so copies of
    one text never fill a topic's representatives (the highest-GIS copy stands for them all).
    """
    labels = np.asarray(labels)
    gis = np.asarray(gis, dtype=np.float64)
    if labels.shape != gis.shape:
        raise ValueError(f"labels {labels.shape} and gis {gis.shape} must have the same shape")
    order = np.lexsort((np.arange(labels.size), -gis, labels))  # by cluster, then GIS desc
    if keys is not None:
        keys = np.asarray(keys)
        if keys.shape[:1] != labels.shape:
            raise ValueError(f"keys {keys.shape} must have one entry per row ({labels.shape})")
        _, codes = np.unique(keys, return_inverse=True)
        _, cluster_codes = np.unique(labels, return_inverse=True)
        pair = cluster_codes.reshape(-1).astype(np.int64)[order] * (int(codes.max()) + 1) + codes.reshape(-1)[order]
        _, first = np.unique(pair, return_index=True)  # first (highest-GIS) row of each (cluster, key)
        order = order[np.sort(first)]
    sorted_labels = labels[order]
    out: dict[int, np.ndarray] = {}
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]) if order.size else []
    for s in starts:
        k = int(sorted_labels[s])
        e = s + int(np.searchsorted(sorted_labels[s:], k, side="right"))
        out[k] = order[s : min(e, s + top)]
    return out


def gis_ranks(labels: np.ndarray, gis: np.ndarray) -> np.ndarray:
    """Rank of each document inside its cluster by GIS (0 = most influential)."""
    labels = np.asarray(labels)
    order = np.lexsort((np.arange(labels.size), -np.asarray(gis, dtype=np.float64), labels))
    ranks = np.empty(labels.size, dtype=np.int64)
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1] if labels.size else np.array([], int)
    group_start = np.repeat(starts, np.diff(np.r_[starts, labels.size]))
    ranks[order] = np.arange(labels.size) - group_start
    return ranks


# ---------------------------------------------------------------------------- keywords
# Letters only, 3+ characters: drops numbers, ids, hex and most markup fragments.
KEYWORD_TOKEN_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"
# Web boilerplate that survives the English stop list and says nothing about a topic.
BOILERPLATE_WORDS = frozenset(
    """http https www com org net html htm php asp index click here login logout sign signup subscribe
    newsletter cookie cookies privacy policy terms copyright rights reserved menu navigation skip
    content home page pages share tweet facebook twitter instagram linkedin email mail read
    posted comments comment reply javascript enabled browser amp nbsp quot""".split()
)


def topic_keywords(
    texts: Sequence[str],
    labels: np.ndarray,
    gis: np.ndarray | None = None,
    n_keywords: int = 10,
    max_docs_per_topic: int | None = 5000,
    min_df: int = 2,
    max_features: int | None = 50000,
    ngram_range: tuple[int, int] = (1, 1),
) -> dict[int, list[str]]:
    """Keywords per cluster by class-based TF-IDF (BERTopic's c-TF-IDF), with GIS-weighted counts.

    Each document's term counts are weighted by its within-cluster GIS rank, w = (n_k - rank) / n_k
    in (0, 1]: positive, scale-free (GIS scales differ with kappa across clusters) and favouring the
    documents that best represent the topic. Per cluster c: tf_tc = weighted count / cluster total,
    idf_t = log(1 + A / f_t), A = mean weighted words per cluster, f_t = weighted count over all
    clusters. Only the ``max_docs_per_topic`` top-GIS documents of each cluster are read (bounded
    cost on big corpora).
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    labels = np.asarray(labels)
    n = labels.size
    if len(texts) != n:
        raise ValueError(f"texts ({len(texts)}) and labels ({n}) must have the same length")
    if n == 0:
        return {}
    if gis is None:
        gis = np.zeros(n)
    ranks = gis_ranks(labels, gis)
    counts_per = np.bincount(labels)
    keep = np.ones(n, dtype=bool) if max_docs_per_topic is None else ranks < max_docs_per_topic
    idx = np.flatnonzero(keep)
    n_k = np.minimum(counts_per[labels[idx]], max_docs_per_topic or n)
    w = (n_k - ranks[idx]) / n_k
    clusters = np.unique(labels)
    out: dict[int, list[str]] = {int(k): [] for k in clusters}
    stop = list(ENGLISH_STOP_WORDS | BOILERPLATE_WORDS)
    vec = CountVectorizer(
        lowercase=True,
        stop_words=stop,
        token_pattern=KEYWORD_TOKEN_PATTERN,
        ngram_range=ngram_range,
        min_df=min(min_df, len(idx)),
        max_features=max_features,
        dtype=np.float64,
    )
    try:
        counts = vec.fit_transform([str(texts[i]) if texts[i] is not None else "" for i in idx])
    except ValueError:  # empty vocabulary: no usable words at all
        return out
    import scipy.sparse as sp

    # class x document incidence carrying the GIS weights: (C, n') @ (n', V) -> (C, V)
    col = np.searchsorted(clusters, labels[idx])
    W = sp.csr_matrix((w, (col, np.arange(idx.size))), shape=(clusters.size, idx.size))
    C = (W @ counts).toarray()
    totals = C.sum(axis=1, keepdims=True)
    tf = np.divide(C, totals, out=np.zeros_like(C), where=totals > 0)
    f_t = C.sum(axis=0)
    A = totals.mean()
    idf = np.log1p(A / np.maximum(f_t, 1e-12))
    # Distinctiveness across topics: a word over-represented in many topics ("shall", "unto" in
    # every Bible topic) names none of them, so weight by log(1 + C / topics over-representing it).
    over = (tf > (f_t / max(float(totals.sum()), 1e-12))[None, :]).sum(axis=0)
    class_idf = np.log1p(clusters.size / np.maximum(over, 1))
    score = tf * idf * class_idf
    vocab = vec.get_feature_names_out()
    for row, k in enumerate(clusters):
        s = score[row]
        top = np.argsort(-s, kind="stable")[:n_keywords]
        out[int(k)] = [str(vocab[j]) for j in top if s[j] > 0]
    return out


def provisional_name(keywords: Sequence[str], n_words: int = 3, fallback: str = "unnamed topic") -> str:
    """A readable placeholder name from the top keywords, e.g. 'python, code, function'."""
    words = [w for w in keywords if isinstance(w, str) and w.strip()][:n_words]
    return ", ".join(words) if words else fallback


# ---------------------------------------------------------------------------- hierarchy
def topic_linkage(mean_directions: np.ndarray) -> np.ndarray:
    """scipy linkage matrix of the topics: average linkage on cosine distance of mean directions."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    M = unit_rows(mean_directions, name="mean_directions")
    if M.shape[0] < 2:
        raise ValueError("a hierarchy needs at least 2 topics")
    D = np.clip(pdist(M, metric="cosine"), 0.0, 2.0)  # round-off can give tiny negatives
    return linkage(D, method="average")


def topic_hierarchy(
    mean_directions: np.ndarray, n_parents: int | None = None, distance_threshold: float | None = None
) -> np.ndarray:
    """Parent group (0..P-1) of each topic, by cutting the average-linkage tree on cosine distance.

    Give ``n_parents`` (at most that many groups) or ``distance_threshold`` (merge while the average
    cosine distance is below it); with neither, n_parents = round(sqrt(K)). Groups are numbered by
    their smallest member topic, so the numbering is deterministic.
    """
    from scipy.cluster.hierarchy import fcluster

    M = np.asarray(mean_directions)
    K = M.shape[0]
    if n_parents is not None and distance_threshold is not None:
        raise ValueError("give n_parents or distance_threshold, not both")
    if K == 1:
        return np.zeros(1, dtype=np.int64)
    Z = topic_linkage(M)
    if distance_threshold is not None:
        if distance_threshold < 0:
            raise ValueError(f"distance_threshold must be >= 0, got {distance_threshold}")
        raw = fcluster(Z, t=distance_threshold, criterion="distance")
    else:
        p = n_parents if n_parents is not None else max(1, int(round(math.sqrt(K))))
        if p < 1:
            raise ValueError(f"n_parents must be >= 1, got {p}")
        raw = fcluster(Z, t=min(p, K), criterion="maxclust")
    _, first = np.unique(raw, return_index=True)
    order = np.argsort(first)
    remap = {int(raw[first[j]]): i for i, j in enumerate(order)}
    return np.array([remap[int(r)] for r in raw], dtype=np.int64)


def nearest_topics(mean_directions: np.ndarray, k: int, n: int = 5) -> list[tuple[int, float]]:
    """The ``n`` topics whose mean directions are closest (cosine) to topic ``k``: [(index, cosine)]."""
    M = unit_rows(mean_directions, name="mean_directions")
    if not 0 <= k < M.shape[0]:
        raise ValueError(f"topic index {k} out of range for {M.shape[0]} topics")
    cos = M @ M[k]
    cos[k] = -np.inf
    order = np.argsort(-cos, kind="stable")[: max(0, min(n, M.shape[0] - 1))]
    return [(int(j), float(cos[j])) for j in order]


# ---------------------------------------------------------------------------- a saved run
@dataclass
class RunAnalysis:
    """GIS and topic figures of one saved run, rows aligned with ``ids``."""

    run: str
    ids: np.ndarray
    labels: np.ndarray
    gis: np.ndarray
    table: Any  # pandas DataFrame from topic_table, plus keywords / name columns
    keywords: dict[int, list[str]]
    representatives: dict[int, np.ndarray]
    mean_directions: np.ndarray
    extra: dict = field(default_factory=dict)


def analyze(
    X: np.ndarray,
    model,
    texts: Sequence[str],
    labels: np.ndarray | None = None,
    ids: Sequence[str] | None = None,
    n_tokens: np.ndarray | None = None,
    run: str = "",
    top: int = 10,
    n_keywords: int = 10,
    beta: float = 0.5,
    n_neighbors: int = 10,
    max_reference: int = 2000,
) -> RunAnalysis:
    """GIS, topic table (with keywords and provisional names), keywords and representatives of a
    fitted model on unit rows ``X`` (rows aligned with ``texts``, ``ids`` and ``n_tokens``)."""
    X = as_matrix(X)
    n = X.shape[0]
    if len(texts) != n:
        raise ValueError(f"{len(texts)} texts for {n} embedding rows")
    if labels is None:
        labels = getattr(model, "labels_", None)
        if labels is None or len(labels) != n:
            raise ValueError("pass labels: the model's labels_ do not match X")
    labels = np.asarray(labels).astype(np.int64)
    Xn, labels, proba, M, kappa = _gis_inputs(X, model, labels)
    gis = document_gis(Xn, labels, proba, M, kappa, beta=beta, n_neighbors=n_neighbors, max_reference=max_reference)
    table = topic_table(X, labels, gis, M, kappa, getattr(model, "weights_", None), n_tokens)
    keywords = topic_keywords(list(texts), labels, gis, n_keywords=n_keywords)
    # copies of one text (after normalisation) count once among a topic's representatives
    reps = representatives(labels, gis, top=top, keys=text_fingerprints(texts))
    table["keywords"] = [keywords.get(int(k), []) for k in table["cluster"]]
    table["provisional_name"] = [provisional_name(kw) for kw in table["keywords"]]
    ids_arr = np.asarray([str(i) for i in ids], dtype=object) if ids is not None else np.arange(n).astype(str)
    return RunAnalysis(run, ids_arr, labels, gis, table, keywords, reps, M)

