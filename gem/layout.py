"""2-D and sphere layouts of a corpus's embeddings (UMAP, cosine metric), cached on disk.

One layout per (corpus, representation, kind) is computed once and stored in the workspace's
``layouts/`` folder as ``<representation>.<kind>.parquet`` (columns id, x, y[, z]) plus a
``.json`` sidecar recording what it was computed from (a digest of the embedding matrix and of
the ids, and the UMAP parameters). A cached layout whose digest no longer matches the embeddings is
recomputed, never silently reused. The shipped sample carries its layouts (sample_data/layouts/),
so the app opens with no wait.

Kinds:
- ``"2d"``: UMAP to the plane, input metric cosine.
- ``"sphere"``: UMAP with ``output_metric="haversine"``, mapped to 3-D points on S^2.

For large corpora a stratified sample of at most ``max_points`` documents is laid out (by a label
column when one exists, so small groups stay visible; never "the first N"). umap's first fit in a
process pays ~25 s of numba JIT; passing an exact kNN graph (``precomputed_knn``) cuts it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .store import Workspace, embeddings_digest, ids_digest, read_json, write_json_atomic, write_parquet_atomic

KINDS = ("2d", "sphere")
DEFAULT_MAX_POINTS = 20_000
DEFAULT_PARAMS = dict(n_neighbors=15, min_dist=0.1, random_state=0)
LAYOUT_VERSION = 1


@dataclass
class Layout:
    """Coordinates for a subset (or all) of the corpus, aligned with ``ids``."""

    ids: np.ndarray  # str ids, one per row of coords
    coords: np.ndarray  # (n, 2) for "2d", (n, 3) unit vectors for "sphere"
    kind: str
    representation: str
    n_total: int  # documents in the corpus (coords may cover a sample)
    params: dict = field(default_factory=dict)

    @property
    def sampled(self) -> bool:
        return len(self.ids) < self.n_total


# ---------------------------------------------------------------------------- pure parts
def stratified_sample(n: int, max_points: int, strata=None, random_state: int = 0) -> np.ndarray:
    """Sorted row indices of at most ``max_points`` of ``n`` rows.

    With ``strata`` (one label per row), each stratum gets a share proportional to its size
    (largest-remainder rounding) and at least one row when there are no more strata than
    ``max_points``, so small groups remain on the map.
    """
    if max_points <= 0:
        raise ValueError(f"max_points must be positive, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    if strata is None:
        return np.sort(rng.choice(n, size=max_points, replace=False))
    strata = np.asarray(strata)
    if len(strata) != n:
        raise ValueError(f"strata has {len(strata)} labels for {n} rows")
    _, inverse, counts = np.unique(strata.astype(str), return_inverse=True, return_counts=True)
    quota = counts * (max_points / n)
    take = np.floor(quota).astype(int)
    if len(counts) <= max_points:  # room for every stratum: keep the small ones visible
        take = np.maximum(take, 1)
    short = max_points - take.sum()
    if short > 0:  # hand the leftover to the largest remainders
        order = np.argsort(-(quota - np.floor(quota)))
        for s in order:
            if short == 0:
                break
            if take[s] < counts[s]:
                take[s] += 1
                short -= 1
    elif short < 0:  # the "at least one" floors overshot: trim the biggest strata
        for s in np.argsort(-take):
            while short < 0 and take[s] > 1:
                take[s] -= 1
                short += 1
    chosen = [rng.choice(np.flatnonzero(inverse == s), size=take[s], replace=False) for s in range(len(counts))]
    return np.sort(np.concatenate(chosen))


def exact_cosine_knn(X: np.ndarray, n_neighbors: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours under cosine distance (1 - cos), self first, as umap expects
    for ``precomputed_knn``. X rows need not be normalised."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    U = X / np.maximum(norms, 1e-12)
    n = len(U)
    k = min(n_neighbors, n)
    indices = np.empty((n, k), dtype=np.int32)
    dists = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        sims = U[start:start + chunk] @ U.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = np.inf  # self is always the first neighbour
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        part_sims = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_sims, axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        s = np.take_along_axis(part_sims, order, axis=1)
        s[:, 0] = 1.0
        indices[start:start + chunk] = idx
        dists[start:start + chunk] = np.clip(1.0 - s, 0.0, 2.0)
    return indices, dists


def haversine_to_xyz(latlon: np.ndarray) -> np.ndarray:
    """umap's haversine output (polar angle, azimuth) -> unit vectors in R^3."""
    theta, phi = latlon[:, 0], latlon[:, 1]
    return np.column_stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)]).astype(np.float32)


def compute_layout(X: np.ndarray, kind: str = "2d", n_neighbors: int = 15, min_dist: float = 0.1,
                   random_state: int = 0) -> np.ndarray:
    """UMAP coordinates of the rows of X (cosine input metric): (n, 2) for "2d", (n, 3) on S^2
    for "sphere"."""
    import warnings

    import umap

    if kind not in KINDS:
        raise ValueError(f"unknown layout kind {kind!r}; use one of {KINDS}")
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n < 4:
        raise ValueError(f"a layout needs at least 4 documents, got {n}")
    k = max(2, min(n_neighbors, n - 1))
    knn = exact_cosine_knn(X, k)
    reducer = umap.UMAP(
        n_neighbors=k, n_components=2, metric="cosine", min_dist=min_dist, random_state=random_state,
        output_metric="haversine" if kind == "sphere" else "euclidean",
        precomputed_knn=(knn[0], knn[1], None), init="spectral" if kind == "2d" else "random",
    )
    with warnings.catch_warnings():
        # "n_jobs overridden by random_state" and "no search index, transform unavailable": expected
        warnings.simplefilter("ignore", UserWarning)
        emb = reducer.fit_transform(X)
    if kind == "sphere":
        return haversine_to_xyz(emb)
    return np.asarray(emb, dtype=np.float32)


# ---------------------------------------------------------------------------- disk cache
def layout_path(ws: Workspace, representation: str, kind: str) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown layout kind {kind!r}; use one of {KINDS}")
    return ws.layouts_dir / f"{representation}.{kind}.parquet"


def _expected_meta(ws: Workspace, representation: str, kind: str, max_points: int, params: dict) -> dict:
    ids = ws.load_corpus(columns=["id"])["id"].astype(str).to_numpy()
    return dict(
        version=LAYOUT_VERSION, representation=representation, kind=kind,
        embeddings_digest=embeddings_digest(ws, representation), ids_digest=ids_digest(ids),
        n_total=int(len(ids)), max_points=int(max_points), params=dict(params),
    )


def save_layout(ws: Workspace, layout: Layout, max_points: int = DEFAULT_MAX_POINTS) -> Path:
    """Store a layout (computed here or elsewhere) as the cached one for its representation/kind;
    its sidecar records the current embeddings' digest so stale layouts are detected."""
    import pandas as pd

    expected = 3 if layout.kind == "sphere" else 2
    if layout.coords.shape != (len(layout.ids), expected):
        raise ValueError(f"{layout.kind} layout needs ({len(layout.ids)}, {expected}) coords, got {layout.coords.shape}")
    meta = _expected_meta(ws, layout.representation, layout.kind, max_points, {**DEFAULT_PARAMS, **layout.params})
    path = layout_path(ws, layout.representation, layout.kind)
    cols = {"id": layout.ids.astype(str)}
    for name, col in zip("xyz", layout.coords.T):
        cols[name] = col.astype(np.float32)
    write_parquet_atomic(path, pd.DataFrame(cols))
    write_json_atomic(path.with_suffix(".json"), meta)
    return path


def load_layout(ws: Workspace, representation: str = "final", kind: str = "2d",
                max_points: int = DEFAULT_MAX_POINTS, params: dict | None = None) -> Layout | None:
    """The cached layout if it was computed from exactly these embeddings, ids and parameters."""
    import pandas as pd

    path = layout_path(ws, representation, kind)
    meta_path = path.with_suffix(".json")
    if not (path.exists() and meta_path.exists() and ws.embeddings_path(representation).exists()):
        return None
    params = {**DEFAULT_PARAMS, **(params or {})}
    if read_json(meta_path) != _expected_meta(ws, representation, kind, max_points, params):
        return None
    frame = pd.read_parquet(path)
    coords = frame[list("xyz"[: 3 if kind == "sphere" else 2])].to_numpy(np.float32)
    return Layout(frame["id"].astype(str).to_numpy(), coords, kind, representation,
                  int(read_json(meta_path)["n_total"]), params)


def get_layout(ws: Workspace, representation: str = "final", kind: str = "2d",
               max_points: int = DEFAULT_MAX_POINTS, strata_column: str | None = "auto",
               params: dict | None = None, compute: bool = True) -> Layout | None:
    """The layout for this workspace's corpus + representation: from the disk cache, or computed
    (and cached) when ``compute``; ``None`` if not cached and ``compute`` is False.

    ``strata_column="auto"`` stratifies a sample by ``category`` or ``source`` when present.
    """
    cached = load_layout(ws, representation, kind, max_points, params)
    if cached is not None or not compute:
        return cached
    params = {**DEFAULT_PARAMS, **(params or {})}
    frame = ws.load_corpus()
    if strata_column == "auto":
        strata_column = next((c for c in ("category", "source") if c in frame.columns), None)
    strata = frame[strata_column].to_numpy() if strata_column else None
    rows = stratified_sample(len(frame), max_points, strata, params["random_state"])
    X = ws.load_embeddings(representation, mmap=True)
    if len(X) != len(frame):
        raise ValueError(
            f"{ws.embeddings_path(representation)}: {len(X)} rows for {len(frame)} documents; re-run `gem embed`"
        )
    coords = compute_layout(np.asarray(X[rows]), kind, **params)
    layout = Layout(frame["id"].astype(str).to_numpy()[rows], coords, kind, representation, len(frame), params)
    save_layout(ws, layout, max_points)
    return layout
