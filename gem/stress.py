"""Stress test: inject style-dominated synthetic documents and see which method they collapse.

The paper's stress test adds LLM-written "textbook" text (Cosmopedia) to a corpus: its shared
style pulls it together in embedding space, and Euclidean k-means puts most of it into a couple
of giant clusters. This module reproduces that deterministically, with no LLM: **templates** (not
LLM output) that wrap the corpus's own topic words in one shared textbook style.

- ``topic_words(texts, groups)``: each group's top words by class-based TF-IDF (c-TF-IDF), so the
  passages talk about what the corpus talks about. Groups: a label column (``category``, else
  ``source``, else the first label column), else k-means on TF-IDF vectors of the texts.
- ``synthetic_passages(words_by_group, n, seed, weights)``: n deterministic template passages,
  each on one group's words; groups are drawn in proportion to their size, so the injected set
  spreads over the corpus's topics like the corpus itself (a method that puts it into two clusters
  clusters by style, not by topic).
- ``inject_synthetic(corpus, share, seed)``: the corpus plus ``round(share N / (1 - share))``
  passages, so the injected documents are ``share`` of the result; a ``provenance`` column says
  ``"corpus"`` or ``"synthetic-template"``. Pure: nothing is written anywhere.
- ``stress_embeddings(ws, stressed, representation)``: embeddings of the result: the corpus rows
  are the workspace's own, the passages are encoded with the workspace's model through the
  workspace's embedding cache (``ws/cache``; a second run encodes nothing). The user's corpus and
  embedding files are never written.
- ``injected_mask(frame, column, value)``: the same view for real synthetic data a user brings
  (e.g. ``source == "cosmopedia"``).
- ``place_by_neighbours(...)``: 2-D positions for documents that have no layout coordinates: each
  at the mean position of its 10 nearest laid-out documents (cosine, embedding space). The cached
  layouts are UMAP coordinates without the UMAP model, so ``transform`` is not available; the
  neighbour mean is what UMAP's own transform initialises from.
- ``stress_compare(...)``: fit each method on the stressed data, report
  ``gem.metrics.injection_report`` (share of the injected documents the two clusters holding most
  of them absorb, clusters they dominate) with the balance report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .embed import EmbeddingCache, SentenceTransformerEmbedder, encode_cached, parse_representation
from .metrics import agreement, balance_report, injection_report
from .store import read_json

__all__ = ["PROVENANCE_CORPUS", "PROVENANCE_SYNTHETIC", "topic_words", "synthetic_passages", "inject_synthetic",
           "injected_count", "topic_groups", "stress_embeddings", "workspace_embedder", "injected_mask",
           "place_by_neighbours", "stress_compare", "StressData", "stress_data", "STRESS_METHODS"]

PROVENANCE_CORPUS = "corpus"
PROVENANCE_SYNTHETIC = "synthetic-template"
MAX_SHARE = 0.9

# One shared "textbook" voice. Slots: {t} the group's title words, {a} {b} {c} {d} topic words.
_OPENINGS = [
    "Chapter {n}: An Introduction to {a} and {b}.",
    "Lesson {n}: Understanding {a} in the Context of {b}.",
    "Unit {n}: Exploring {a}, {b} and {c}.",
    "Section {n}: The Fundamentals of {a}.",
]
_BODY = [
    "In this chapter, we will explore the key concepts of {a} and {b}, and see how they relate to {c}.",
    "Imagine you are a student learning about {a} for the first time.",
    "To understand {a}, it helps to start with a simple question: what is {b}, and why does it matter?",
    "Let us break this down step by step, beginning with {c}.",
    "By the end of this section, you will be able to explain how {b} connects to {d}.",
    "Many people find {a} confusing at first, but with a few examples it becomes much clearer.",
    "For example, consider how {d} is used in everyday situations.",
    "This idea is important because {c} shapes the way we think about {a}.",
    "Think about it this way: {b} is like a building block, and {d} is what we build with it.",
]
_CLOSINGS = [
    "In summary, {a}, {b} and {c} work together, and understanding them is an essential step.",
    "Key takeaways: {a} matters, {b} builds on it, and {d} shows it in practice.",
    "Exercise: write a short paragraph explaining {a} to a friend, using {b} as an example.",
    "In the next chapter, we will look more closely at {c} and {d}.",
]


def injected_count(n_corpus: int, share: float) -> int:
    """Documents to add to ``n_corpus`` so that they are ``share`` of the result."""
    share = float(share)
    if not 0 < share <= MAX_SHARE:
        raise ValueError(f"share must be in (0, {MAX_SHARE}], got {share!r}")
    if n_corpus < 1:
        raise ValueError("the corpus is empty")
    return max(1, int(round(share * n_corpus / (1.0 - share))))


def topic_groups(corpus, n_groups: int = 24, seed: int = 0) -> np.ndarray:
    """A topic group per corpus row: the ``category`` column, else ``source``, else the first other
    label column, else k-means (``n_groups``) on TF-IDF vectors of the texts."""
    skip = {"id", "text", "n_tokens", "provenance"}
    for col in ["category", "source"] + [c for c in corpus.columns if c not in skip]:
        if col in corpus.columns and col not in skip:
            values = corpus[col].astype(str).to_numpy()
            if len(np.unique(values)) > 1:
                return values
    from sklearn.cluster import KMeans
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = corpus["text"].astype(str).tolist()
    V = TfidfVectorizer(stop_words="english", max_features=20000, min_df=1).fit_transform(texts)
    k = max(1, min(n_groups, V.shape[0]))
    return KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(V).astype(str)


def topic_words(texts, groups, n_words: int = 8) -> dict[str, list[str]]:
    """Each group's top ``n_words`` words by class-based TF-IDF (words of 3+ letters, English stop
    words removed). Groups whose texts have no such word get none (and no passages)."""
    from sklearn.feature_extraction.text import CountVectorizer

    texts = [str(t) for t in texts]
    groups = np.asarray(groups).astype(str)
    if len(texts) != len(groups):
        raise ValueError(f"{len(texts)} texts but {len(groups)} group labels")
    names, inverse = np.unique(groups, return_inverse=True)
    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[A-Za-z][A-Za-z]{2,}\b", lowercase=True)
    try:
        C = vec.fit_transform(texts)
    except ValueError:  # no word at all
        return {}
    import scipy.sparse as sp

    G = sp.csr_matrix((np.ones(len(texts)), (inverse, np.arange(len(texts)))), shape=(len(names), len(texts)))
    tf = np.asarray((G @ C).todense(), dtype=np.float64)
    tf /= np.maximum(tf.sum(axis=1, keepdims=True), 1.0)
    avg = tf.mean(axis=0)
    idf = np.log1p(1.0 / np.maximum(avg, 1e-12))
    score = tf * idf
    vocab = np.asarray(vec.get_feature_names_out())
    out = {}
    for g, name in enumerate(names):
        row = score[g]
        top = np.argsort(-row, kind="stable")[:n_words]
        words = [str(vocab[j]) for j in top if row[j] > 0]
        if words:
            out[str(name)] = words
    return out


def synthetic_passages(words_by_group: dict[str, list[str]], n: int, seed: int = 0,
                       weights: dict[str, float] | None = None) -> tuple[list[str], list[str]]:
    """``n`` deterministic template passages ((texts, their groups)): a group is drawn (in
    proportion to ``weights``, default equal), four of its words fill one opening, three body
    sentences and one closing of the shared textbook voice. Same inputs, same passages."""
    groups = sorted(words_by_group)
    if not groups:
        raise ValueError("no topic words to write passages about (the corpus has no words of 3+ letters)")
    rng = np.random.default_rng(seed)
    p = np.array([float((weights or {}).get(g, 1.0)) for g in groups])
    p = p / p.sum()
    picks = rng.choice(len(groups), size=n, p=p)
    texts, out_groups = [], []
    for i, gi in enumerate(picks):
        words = list(words_by_group[groups[gi]])
        while len(words) < 4:
            words = words + words
        w = rng.permutation(len(words))[:4]
        slots = {"a": words[w[0]], "b": words[w[1]], "c": words[w[2]], "d": words[w[3]], "n": int(rng.integers(1, 13))}
        body = rng.choice(len(_BODY), size=3, replace=False)
        parts = [_OPENINGS[rng.integers(len(_OPENINGS))]] + [_BODY[j] for j in body] + [_CLOSINGS[rng.integers(len(_CLOSINGS))]]
        texts.append(" ".join(s.format(**slots) for s in parts))
        out_groups.append(groups[gi])
    return texts, out_groups


def inject_synthetic(corpus, share: float, seed: int = 0, groups=None, n_words: int = 8):
    """The corpus plus template passages that make up ``share`` of the result (a new DataFrame;
    the input is not modified). Columns: the corpus's, plus ``provenance`` ("corpus" or
    "synthetic-template") and ``topic_group`` (the group whose words a passage uses; the corpus
    rows' own group). Injected ids are ``synthetic-<seed>-<i>``, made unique against the corpus."""
    import pandas as pd

    if "text" not in corpus.columns:
        raise ValueError("the corpus has no text column")
    n = len(corpus)
    m = injected_count(n, share)
    groups = topic_groups(corpus, seed=seed) if groups is None else np.asarray(groups).astype(str)
    words = topic_words(corpus["text"].tolist(), groups, n_words)
    sizes = pd.Series(groups).value_counts()
    texts, tgroups = synthetic_passages(words, m, seed, {g: float(sizes.get(g, 1)) for g in words})
    existing = set(corpus["id"].astype(str)) if "id" in corpus.columns else set()
    prefix = f"synthetic-{seed}-"
    while any(i.startswith(prefix) for i in existing):
        prefix = "x" + prefix
    ids = [f"{prefix}{i:06d}" for i in range(m)]
    base = corpus.copy()
    base["provenance"] = PROVENANCE_CORPUS
    base["topic_group"] = groups
    extra = pd.DataFrame({"id": ids, "text": texts, "provenance": PROVENANCE_SYNTHETIC, "topic_group": tgroups})
    if "id" not in corpus.columns:
        extra = extra.drop(columns=["id"])
    if "n_tokens" in corpus.columns:
        extra["n_tokens"] = [len(t.split()) for t in texts]
    return pd.concat([base, extra], ignore_index=True)


def injected_mask(frame, column: str, value) -> np.ndarray:
    """Rows whose ``column`` equals ``value`` (compared as text): real synthetic data marked by a
    column the corpus already has."""
    if column not in frame.columns:
        raise ValueError(f"the corpus has no column {column!r}")
    return (frame[column].astype(str) == str(value)).to_numpy()


# ---------------------------------------------------------------------------- embedding
def workspace_embedder(ws, representation: str = "final"):
    """The model that made the workspace's ``representation`` embeddings (to embed new passages
    the same way). Raises ValueError when they were not made by the app's model (precomputed)."""
    path = ws.embeddings_meta_path(representation)
    meta = read_json(path) if path.exists() else {}
    if meta.get("source") != "model":
        raise ValueError(f"the '{representation}' embeddings of this workspace were not made by the app's model "
                         f"(source: {meta.get('source', 'unknown')}), so new passages cannot be embedded the same "
                         "way; mark an existing column value as the injected set instead")
    return SentenceTransformerEmbedder(layer=parse_representation(representation))


def stress_embeddings(ws, stressed, representation: str = "final", embedder=None, progress=None):
    """(unit, norms) for every row of ``stressed`` (``inject_synthetic``'s output, corpus rows first,
    in corpus order): the workspace's stored embeddings for the corpus rows, the injected passages
    encoded with ``embedder`` (default ``workspace_embedder``) through the workspace's embedding
    cache. Writes nothing but cache shards."""
    is_syn = (stressed["provenance"] == PROVENANCE_SYNTHETIC).to_numpy()
    n_corpus = int((~is_syn).sum())
    if is_syn[:n_corpus].any():
        raise ValueError("expected the corpus rows first, then the injected passages")
    unit = ws.load_embeddings(representation)
    norms = ws.load_norms(representation)
    if len(unit) != n_corpus:
        raise ValueError(f"{ws.embeddings_path(representation)} has {len(unit)} rows, the corpus {n_corpus}; re-embed")
    embedder = embedder or workspace_embedder(ws, representation)
    if int(getattr(embedder, "dim", unit.shape[1])) != unit.shape[1]:
        raise ValueError(f"the embedder gives {embedder.dim}-d vectors, the workspace's are {unit.shape[1]}-d")
    texts = stressed["text"].to_numpy()[is_syn].tolist()
    su, sn, _ = encode_cached(embedder, texts, EmbeddingCache(ws.cache_dir), progress=progress)
    return (np.concatenate([np.asarray(unit, np.float32), su.astype(np.float32)]),
            np.concatenate([np.asarray(norms, np.float32), sn.astype(np.float32)]))


@dataclass
class StressData:
    """A stressed corpus: rows (corpus first), unit and raw embeddings, and the injected mask."""

    frame: object  # pandas DataFrame with provenance and topic_group
    unit: np.ndarray
    norms: np.ndarray
    share: float
    seed: int

    @property
    def injected(self) -> np.ndarray:
        return (self.frame["provenance"] == PROVENANCE_SYNTHETIC).to_numpy()

    @property
    def raw(self) -> np.ndarray:
        return self.unit * self.norms[:, None]


def stress_data(ws, share: float, seed: int = 0, representation: str = "final", embedder=None,
                progress=None) -> StressData:
    """The workspace's corpus with injected template passages (``inject_synthetic``) and their
    embeddings (``stress_embeddings``): all in memory, nothing written into the corpus."""
    stressed = inject_synthetic(ws.load_corpus(), share, seed)
    unit, norms = stress_embeddings(ws, stressed, representation, embedder, progress)
    return StressData(stressed, unit, norms, float(share), int(seed))


# ---------------------------------------------------------------------------- layout
def place_by_neighbours(X_new, X_laid, coords, n_neighbors: int = 10, chunk: int = 2048) -> np.ndarray:
    """2-D positions for rows of ``X_new``: each at the mean of ``coords`` of its ``n_neighbors``
    most cosine-similar rows of ``X_laid`` (the documents the layout covers)."""
    A = np.asarray(X_new, dtype=np.float32)
    B = np.asarray(X_laid, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.float32)
    if len(B) != len(coords):
        raise ValueError(f"{len(B)} laid-out rows but {len(coords)} coordinates")
    if len(B) == 0:
        raise ValueError("no laid-out documents to place new ones by")
    A = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-12)
    B = B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)
    k = max(1, min(int(n_neighbors), len(B)))
    out = np.empty((len(A), coords.shape[1]), dtype=np.float32)
    for s in range(0, len(A), chunk):
        sims = A[s:s + chunk] @ B.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(B) else np.tile(np.arange(len(B)), (len(sims), 1))
        out[s:s + chunk] = coords[idx].mean(axis=1)
    return out


# ---------------------------------------------------------------------------- comparison
STRESS_METHODS = {
    "k-means (raw vectors)": ("kmeans", {}),
    "k-means (unit vectors)": ("kmeans-unit", {}),
    "spherical k-means": ("spherical-kmeans", {}),
    "spherical k-means (faiss)": ("faiss-spherical", {}),
    "vMF mixture (learned prior)": ("vmf", {}),
    "GEM (auto)": ("gem", {"balance": "auto"}),
    "GEM (5000)": ("gem", {"balance": 5000.0}),
}


def fit_labels(method: str, X_unit, X_raw, k: int, seed: int = 0, **kw) -> tuple[np.ndarray, object]:
    """(labels, fitted estimator) of ``method`` (k-means on ``X_raw``, the rest on ``X_unit``)."""
    from .baselines import make_estimator, uses_raw_vectors  # lazy: gem.baselines imports scikit-learn (~0.8 s)

    est = make_estimator(method, k, random_state=seed, **kw)
    est.fit(X_raw if uses_raw_vectors(method) and X_raw is not None else X_unit)
    return np.asarray(est.labels_, dtype=np.int64), est


def stress_compare(X_unit, X_raw, injected, k: int = 24, methods: dict | None = None, seed: int = 0,
                   references: dict | None = None) -> list[dict]:
    """Fit each method (``{row label: (method, estimator kwargs)}``, default ``STRESS_METHODS``) on
    the stressed embeddings; per method: ``injection_report`` figures, the balance report and NMI /
    ARI to ``references`` ({name: labels}), the lambda GEM used and the fit time."""
    injected = np.asarray(injected, dtype=bool)
    rows = []
    for label, (method, kw) in (methods or STRESS_METHODS).items():
        t0 = time.perf_counter()
        labels, est = fit_labels(method, X_unit, X_raw, k, seed, **kw)
        row = {"method": label, "seed": int(seed), **injection_report(labels, injected, k),
               **{f"{key}": v for key, v in balance_report(labels, k).items() if key in ("normalized_entropy", "largest_share")},
               "fit_seconds": round(time.perf_counter() - t0, 3)}
        if hasattr(est, "balance_"):
            row["balance"] = float(est.balance_)
        for name, ref in (references or {}).items():
            agr = agreement(labels, ref)
            row[f"nmi_{name}"], row[f"ari_{name}"] = agr["nmi"], agr["ari"]
        rows.append(row)
    return rows
