"""Balance, collapse, anisotropy and agreement metrics.

All functions are pure (arrays in, plain dicts of floats out) so the app, the CLI and the
benchmarks report the same numbers.
"""
from __future__ import annotations

import math

import numpy as np

from .arrays import as_matrix, unit_rows

__all__ = ["anisotropy", "sample_pairwise_cosines", "balance_report", "agreement", "cluster_shares",
           "injection_report", "mean_pairwise_ari", "contingency"]


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
    U = unit_rows(as_matrix(X, "embeddings", dtype=np.float64), name="embeddings")
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
    U = unit_rows(as_matrix(X, "embeddings", dtype=np.float64), name="embeddings")
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


# ---------------------------------------------------------------------------- stress test and stability
def injection_report(labels, injected, n_clusters: int, top: int = 2) -> dict:
    """Where an injected (e.g. synthetic) set of documents went.

    - ``n_injected``: documents in the set;
    - ``top2_share``: share of them in the ``top`` (2) clusters holding most of them (1.0: the
      set collapsed into two clusters; about top/K when it spreads like the corpus);
    - ``top_clusters``: those clusters, most first;
    - ``clusters_dominated``: clusters whose members are more than 50% injected, and
      ``dominated_clusters`` their ids;
    - ``dominated_share``: share of the injected documents that sit in a dominated cluster.
    """
    labels = np.asarray(labels)
    injected = np.asarray(injected, dtype=bool)
    if labels.shape != injected.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and injected mask {injected.shape} must be 1-D of one length")
    if n_clusters < 1 or (labels.size and (labels.min() < 0 or labels.max() >= n_clusters)):
        raise ValueError(f"labels must lie in [0, {n_clusters})")
    members = np.bincount(labels, minlength=n_clusters)
    inj = np.bincount(labels[injected], minlength=n_clusters)
    n_inj = int(injected.sum())
    order = np.argsort(-inj, kind="stable")[:top]
    dominated = np.flatnonzero((members > 0) & (inj > 0.5 * members))
    return {
        "n_injected": n_inj,
        "top2_share": float(inj[order].sum() / n_inj) if n_inj else float("nan"),
        "top_clusters": [int(c) for c in order if inj[c] > 0],
        "clusters_dominated": int(dominated.size),
        "dominated_clusters": [int(c) for c in dominated],
        "dominated_share": float(inj[dominated].sum() / n_inj) if n_inj else float("nan"),
    }


def mean_pairwise_ari(labelings) -> float:
    """Mean adjusted Rand index over all pairs of labelings of the same documents (fits with
    different seeds): 1 = every seed gives the same partition. NaN with fewer than two."""
    from sklearn.metrics import adjusted_rand_score

    labelings = [np.asarray(x) for x in labelings]
    if len(labelings) < 2:
        return float("nan")
    vals = [adjusted_rand_score(labelings[i], labelings[j])
            for i in range(len(labelings)) for j in range(i + 1, len(labelings))]
    return float(np.mean(vals))


def contingency(labels_a, labels_b, n_a: int | None = None, n_b: int | None = None) -> np.ndarray:
    """Counts (n_a x n_b) of documents in cluster i of ``labels_a`` and cluster j of ``labels_b``."""
    a = np.asarray(labels_a, dtype=np.int64)
    b = np.asarray(labels_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("the two labelings must be 1-D of one length")
    n_a = int(a.max()) + 1 if n_a is None else int(n_a)
    n_b = int(b.max()) + 1 if n_b is None else int(n_b)
    return np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)


def tail_visibility(cluster_labels, reference, threshold: float = 0.2):
    """Does a clustering free the tail of a label column? Per reference label (rows sorted by size,
    smallest first, so the tail leads):

    - ``n_docs``: its documents;
    - ``visible_share``: share of them that sit in a cluster where this label makes up at least
      ``threshold`` of the members, i.e. where a mixture weight on that cluster moves this label;
    - ``best_purity``: the largest share this label has of any cluster's members, and
      ``best_cluster`` that cluster.

    Returns a pandas DataFrame (label, n_docs, visible_share, best_purity, best_cluster)."""
    import pandas as pd

    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    clusters = np.asarray(cluster_labels)
    ref = np.asarray(reference, dtype=object)
    if clusters.shape != ref.shape or clusters.ndim != 1:
        raise ValueError("cluster labels and reference labels must be 1-D of one length")
    keep = pd.notna(ref)
    c_codes, _ = pd.factorize(clusters[keep])
    r_codes, names = pd.factorize(ref[keep].astype(str))
    table = contingency(r_codes, c_codes, len(names), int(c_codes.max()) + 1 if c_codes.size else 0)  # labels x clusters
    members = table.sum(axis=0)
    share = np.divide(table, members[None, :], out=np.zeros(table.shape), where=members[None, :] > 0)
    n_docs = table.sum(axis=1)
    visible = np.where(share >= threshold, table, 0).sum(axis=1)
    cluster_ids = pd.unique(clusters[keep])
    best = share.argmax(axis=1) if share.size else np.zeros(len(names), dtype=int)
    out = pd.DataFrame({
        "label": list(names), "n_docs": n_docs.astype(int),
        "visible_share": np.divide(visible, n_docs, out=np.zeros(len(names)), where=n_docs > 0),
        "best_purity": share.max(axis=1) if share.size else np.zeros(len(names)),
        "best_cluster": [cluster_ids[j] for j in best] if len(cluster_ids) else [None] * len(names),
    })
    return out.sort_values(["n_docs", "label"], kind="stable").reset_index(drop=True)
