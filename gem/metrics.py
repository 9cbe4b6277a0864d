"""Balance, collapse, anisotropy and agreement metrics.

All functions are pure (arrays in, plain dicts of floats out) so the app, the CLI and the
benchmarks report the same numbers.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["anisotropy", "sample_pairwise_cosines", "balance_report", "agreement", "cluster_shares"]


def _unit_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"expected a non-empty 2-D array of embeddings, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("embeddings contain NaN or infinite values")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"embeddings contain {int(np.sum(norms == 0))} all-zero rows; drop them first")
    return X / norms


def anisotropy(X) -> dict:
    """How much the (L2-normalised) rows crowd into a cone.

    - ``mean_cosine``: exact mean cosine over all pairs i != j, from the resultant
      (||sum u_i||^2 - N) / (N (N - 1)); about 0 for isotropic data, near 1 for a narrow cone.
    - ``mean_direction_norm``: ||mean of unit rows|| (the mean resultant length).
    - ``first_pc_share``: share of the (uncentred) second moment along its top eigenvector; 1/d
      when isotropic. Uncentred on purpose: the cone's common direction is the anisotropy.
    - ``effective_rank``: exp(entropy of the normalised singular values) of the unit matrix
      (Roy & Vetterli 2007); d when isotropic, 1 when all rows are equal.
    """
    U = _unit_rows(X)
    n, d = U.shape
    s = U.sum(axis=0)
    mean_cos = float((s @ s - n) / (n * (n - 1))) if n > 1 else 1.0
    gram = (U.T @ U) / n  # d x d: exact and cheap, no N x N matrix
    eig = np.clip(np.linalg.eigvalsh(gram), 0.0, None)
    total = float(eig.sum())
    sing = np.sqrt(eig)
    p = sing / sing.sum()
    p = p[p > 0]
    return {
        "mean_cosine": mean_cos,
        "mean_direction_norm": float(np.linalg.norm(s) / n),
        "first_pc_share": float(eig.max() / total),
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
    }


def sample_pairwise_cosines(X, n_pairs: int = 10000, random_state=0) -> np.ndarray:
    """Cosines of ``n_pairs`` random pairs of distinct rows (for the cone histogram)."""
    U = _unit_rows(X)
    n = U.shape[0]
    if n < 2:
        raise ValueError("need at least 2 rows to sample pairs")
    rng = np.random.default_rng(random_state)
    i = rng.integers(0, n, size=n_pairs)
    j = rng.integers(0, n - 1, size=n_pairs)
    j = j + (j >= i)  # uniform over j != i
    return np.einsum("ij,ij->i", U[i], U[j])


def cluster_shares(labels_or_masses, n_clusters: int, sample_weight=None) -> np.ndarray:
    """Shares per cluster (sum 1). Integer input = hard labels (counted, optionally weighted);
    floating input of length ``n_clusters`` = masses (normalised)."""
    a = np.asarray(labels_or_masses)
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of labels or masses, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() >= n_clusters:
            raise ValueError(f"labels must lie in [0, {n_clusters}), got range [{a.min()}, {a.max()}]")
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        counts = np.bincount(a, weights=w, minlength=n_clusters).astype(np.float64)
    elif np.issubdtype(a.dtype, np.floating):
        if a.size != n_clusters:
            raise ValueError(f"masses must have length n_clusters={n_clusters}, got {a.size}")
        counts = a.astype(np.float64)
        if np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise ValueError("masses must be finite and non-negative")
    else:
        raise ValueError(f"expected integer labels or float masses, got dtype {a.dtype}")
    total = counts.sum()
    if total <= 0:
        raise ValueError("total mass is zero")
    return counts / total


def balance_report(labels_or_masses, n_clusters: int, sample_weight=None) -> dict:
    """Collapse metrics of a partition.

    ``normalized_entropy`` H(pi)/log K (1 = perfectly balanced), ``largest_share``,
    ``effective_clusters`` exp(H), ``gini`` of the shares (0 = equal), ``top10_share`` (mass of
    the largest ceil(10% of K) clusters).
    """
    pi = cluster_shares(labels_or_masses, n_clusters, sample_weight)
    nz = pi[pi > 0]
    h = float(-(nz * np.log(nz)).sum())
    k = n_clusters
    srt = np.sort(pi)
    # Gini from the sorted shares: sum_i (2i - k - 1) x_i / (k sum x)
    idx = np.arange(1, k + 1)
    gini = float(((2 * idx - k - 1) * srt).sum() / k) if k > 1 else 0.0
    top = max(1, math.ceil(0.1 * k))
    return {
        "normalized_entropy": h / math.log(k) if k > 1 else 1.0,
        "largest_share": float(srt[-1]),
        "effective_clusters": float(math.exp(h)),
        "gini": gini,
        "top10_share": float(srt[-top:].sum()),
    }


def agreement(labels, reference) -> dict:
    """NMI and ARI of cluster labels against human labels; rows whose reference is missing
    (None / NaN / empty string) are left out. ``n`` is the number of rows compared."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    ref = np.asarray(reference, dtype=object)
    if labels.shape[0] != ref.shape[0]:
        raise ValueError(f"labels ({labels.shape[0]}) and reference ({ref.shape[0]}) differ in length")
    import pandas as pd

    keep = np.array([not (pd.isna(r) or (isinstance(r, str) and r == "")) for r in ref], dtype=bool)
    if keep.sum() == 0:
        return {"nmi": float("nan"), "ari": float("nan"), "n": 0}
    ref_s = ref[keep].astype(str)
    lab = labels[keep]
    return {
        "nmi": float(normalized_mutual_info_score(ref_s, lab)),
        "ari": float(adjusted_rand_score(ref_s, lab)),
        "n": int(keep.sum()),
    }
