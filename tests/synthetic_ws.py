"""The small synthetic workspace of the tests (importable by name from any test module:
``from synthetic_ws import build_synthetic_workspace``; ``conftest`` is ambiguous, tests/browser
has its own)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HOSTILE_TEXTS = {
    "hostile-script": "<script>window.__pwned = 'script'</script> a script tag",
    "hostile-img": "<img src=x onerror=\"window.__pwned='img'\"> an image with onerror",
}


# ---------------------------------------------------------------------------- workspaces
def build_synthetic_workspace(root: Path, n: int = 240, d: int = 24, k: int = 4, hostile: bool = True,
                              seed: int = 0):
    """Write a small, complete workspace: corpus, 'final' embeddings (anisotropic, with varying
    raw norms, the regime where Euclidean k-means collapses) and cached layouts."""
    from gem.layout import Layout, save_layout
    from gem.store import Workspace, write_parquet_atomic

    rng = np.random.default_rng(seed)
    sizes = np.array([0.55, 0.25, 0.12, 0.08])[:k]
    sizes = np.maximum(1, np.round(sizes / sizes.sum() * n)).astype(int)
    sizes[0] += n - sizes.sum()
    labels = np.repeat(np.arange(k), sizes)
    cone = rng.normal(size=d)
    cone /= np.linalg.norm(cone)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    raw = 2.0 * cone + 0.8 * centres[labels] + 0.25 * rng.normal(size=(n, d))
    raw *= rng.lognormal(0.0, 0.4, size=(n, 1))  # varying norms, as pooled vectors have
    norms = np.linalg.norm(raw, axis=1)
    unit = (raw / norms[:, None]).astype(np.float32)
    topics = ["astronomy", "cooking", "law", "music", "sports", "weather"]
    ids = [f"doc-{i:04d}" for i in range(n)]
    texts = [f"Document {i} about {topics[labels[i] % len(topics)]}, paragraph {i % 7}." for i in range(n)]
    if hostile:
        for j, (hid, text) in enumerate(HOSTILE_TEXTS.items()):
            ids[j] = hid
            texts[j] = text
    frame = pd.DataFrame({
        "id": ids, "text": texts,
        "source": np.array(["web", "books", "code", "wiki"])[labels % 4],
        "category": np.array(topics)[labels % len(topics)],
        "n_tokens": np.array([len(t.split()) + 2 for t in texts], dtype=np.int64),
    })
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(ws.corpus_path, frame)
    ws.save_embeddings("final", unit, norms.astype(np.float32),
                       {"representation": "final", "source": "synthetic", "n": n, "dim": d})
    # layouts from a PCA projection (exact and instant; UMAP itself is tested in test_layout.py)
    centred = unit - unit.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    flat = (centred @ vt[:2].T).astype(np.float32)
    xyz = centred @ vt[:3].T
    xyz = (xyz / np.linalg.norm(xyz, axis=1, keepdims=True)).astype(np.float32)
    ids_arr = np.array(ids)
    save_layout(ws, Layout(ids_arr, flat, "2d", "final", n))
    save_layout(ws, Layout(ids_arr, xyz, "sphere", "final", n))
    return ws
