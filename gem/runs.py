"""Fitted runs on disk: ``runs/<name>/``

    params.json          method, caller's parameters (representation, k, seed, ...), n_docs, ids digest
    model.json           the estimator's ``to_state()`` meta (parameters + fitted scalars)
    <array>.npy          the estimator's fitted arrays (never pickled)
    assignments.parquet  id, cluster, probability (of the assigned cluster; 1.0 for hard methods)

A run folder is written as a whole (``gem.store.atomic_dir``): a crash never leaves half a run.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

import numpy as np

from .store import Workspace, atomic_dir, ids_digest, load_npy, read_json, save_npy_atomic, write_json_atomic, write_parquet_atomic

__all__ = ["Run", "save_run", "load_run", "load_run_documents", "assignment_probabilities"]

_ARRAY_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass
class Run:
    name: str
    method: str
    params: dict
    model: Any
    assignments: Any  # pandas DataFrame: id, cluster, probability
    info: dict | None = None  # the whole params.json

    @property
    def representation(self) -> str:
        """The embeddings the run was fitted on ("final" unless its params say otherwise)."""
        return (self.params or {}).get("representation", "final")


def assignment_probabilities(estimator, X, labels, chunk: int = 100_000) -> np.ndarray:
    """Probability of each row's assigned cluster (chunked, so N x K never exists in float64)."""
    if X is None or not hasattr(estimator, "predict_proba") or not hasattr(estimator, "potentials_"):
        return np.ones(len(labels), dtype=np.float32)
    out = np.empty(len(labels), dtype=np.float32)
    for s in range(0, len(labels), chunk):
        p = estimator.predict_proba(X[s:s + chunk])
        out[s:s + chunk] = p[np.arange(p.shape[0]), labels[s:s + chunk]]
    return out


def save_run(ws: Workspace, name: str, estimator, method: str, params: dict, ids, X=None):
    """Store a fitted estimator as run ``name`` (replacing an existing run of that name)."""
    import pandas as pd

    target = ws.run_dir(name)
    labels = np.asarray(estimator.labels_, dtype=np.int64)
    ids = [str(i) for i in ids]
    if len(ids) != labels.shape[0]:
        raise ValueError(f"run {name!r}: {len(ids)} ids but the model has {labels.shape[0]} labels")
    meta, arrays = estimator.to_state()
    for key in arrays:
        if not set(key) <= _ARRAY_NAME_OK:
            raise ValueError(f"array name {key!r} is not a safe file name")
    probs = assignment_probabilities(estimator, X, labels)
    info = {
        "name": name,
        "method": method,
        "params": params,
        "n_docs": len(ids),
        "n_clusters": int(np.asarray(estimator.weights_).shape[0]),
        "ids_digest": ids_digest(ids),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "arrays": sorted(arrays),
    }
    frame = pd.DataFrame({"id": ids, "cluster": labels.astype(np.int32), "probability": probs})
    with atomic_dir(target) as tmp:
        write_json_atomic(tmp / "params.json", info)
        write_json_atomic(tmp / "model.json", meta)
        for key, arr in arrays.items():
            save_npy_atomic(tmp / f"{key}.npy", np.asarray(arr))
        write_parquet_atomic(tmp / "assignments.parquet", frame)
    return target


def load_run(ws: Workspace, name: str) -> Run:
    """Load run ``name``: parameters, the fitted estimator (rebuilt without unpickling) and assignments."""
    import pandas as pd

    from .baselines import estimator_from_state

    folder = ws.run_dir(name)
    if not (folder / "params.json").exists():
        known = ", ".join(ws.runs()) or "none"
        raise FileNotFoundError(f"{folder}: no such run (runs in this workspace: {known}); create it with `gem fit`")
    info = read_json(folder / "params.json")
    meta = read_json(folder / "model.json")
    arrays = {}
    for key in info.get("arrays", []):
        if not set(key) <= _ARRAY_NAME_OK:
            raise ValueError(f"{folder / 'params.json'}: unsafe array name {key!r}")
        arrays[key] = load_npy(folder / f"{key}.npy")
    model = estimator_from_state(meta, arrays)
    assignments = pd.read_parquet(folder / "assignments.parquet")
    return Run(name=name, method=info["method"], params=info.get("params", {}), model=model,
               assignments=assignments, info=info)


def load_run_documents(ws: Workspace, name: str, columns: list[str] | None = None):
    """A saved run with its documents, in the run's assignment order: (run, corpus rows of those
    documents (``columns`` of the workspace corpus), their positions in the corpus, their unit
    embeddings as float32). Raises ValueError when the embeddings or the corpus no longer match."""
    run = load_run(ws, name)
    corpus = ws.load_corpus(columns=columns)
    X_all = ws.load_embeddings(run.representation, mmap=True)
    if X_all.shape[0] != len(corpus):
        raise ValueError(f"{ws.embeddings_path(run.representation)} has {X_all.shape[0]} rows but the corpus has "
                         f"{len(corpus)}; run `gem embed` again")
    import pandas as pd

    ids = run.assignments["id"].astype(str).to_numpy()
    rows = pd.Index(corpus["id"].astype(str)).get_indexer(ids)
    if (rows < 0).any():
        raise ValueError(f"run {name!r}: document id {ids[rows < 0][0]!r} is not in the workspace corpus "
                         "(the corpus changed after the fit: re-run `gem fit`)")
    return run, corpus.iloc[rows].reset_index(drop=True), rows, np.asarray(X_all[rows], dtype=np.float32)
