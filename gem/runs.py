"""Fitted runs on disk: ``runs/<name>/``

    params.json          method, caller's parameters (representation, k, seed, ...), n_docs, ids digest
    model.json           the estimator's ``to_state()`` meta (parameters + fitted scalars)
    <array>.npy          the estimator's fitted arrays (never pickled)
    assignments.parquet  id, cluster, probability (of the assigned cluster; 1.0 for hard methods)

A run folder is written as a whole (``gem.store.atomic_dir``): a crash never leaves half a run.

With ``FitSettings(exclude_flagged=True)`` the fit leaves out the documents curators excluded
(``gem.flags``): its assignments lack them, and params.json records which exclusions it used
(``exclusions``: digest and count), so ``run_is_current`` notices new flags. Every reader of a run
aligns its assignments with the corpus by document id, never by position.

``FitSettings`` + ``fit_run`` are the one way a run is made: ``gem fit`` and the app's current fit
both go through them, so a run fitted in the app is exported, labelled and distilled by the CLI
exactly as one fitted there. ``load_fit_data`` is the one reader of a corpus with its embeddings:
it refuses embeddings made for another corpus (row count, or the ids digest stored beside them).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .devices import resolve_device
from .flags import excluded_ids, exclusions_digest, keep_mask
from .store import Workspace, atomic_dir, embeddings_digest, ids_digest, load_npy, recover_dir, read_json, save_npy_atomic, utc_now, write_json_atomic, write_parquet_atomic

__all__ = ["Run", "FitSettings", "fit_run", "load_fit_data", "run_is_current", "save_run", "load_run",
           "load_run_documents", "flag_exclusions", "assignment_probabilities"]

_ARRAY_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass
class Run:
    name: str
    method: str
    params: dict
    model: Any
    assignments: Any  # pandas DataFrame: id, cluster, probability
    info: dict | None = None  # the whole params.json
    # documents of this run that load_run_documents(exclude_flagged=True) left out (0 for a run fitted
    # without them: its params.json's "exclusions" counts those)
    n_excluded: int = 0

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


def save_run(ws: Workspace, name: str, estimator, method: str, params: dict, ids, X=None,
             fitted_on: str | None = None, extra_info: dict | None = None):
    """Store a fitted estimator as run ``name`` (replacing an existing run of that name).
    ``fitted_on``: the content digest of the embeddings it was fitted on; with the ids
    digest params.json always holds, ``run_is_current`` knows whether the run fits today's data."""
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
        "created": utc_now(),
        "arrays": sorted(arrays),
    }
    if fitted_on is not None:
        info["embeddings_digest"] = fitted_on
    info.update(extra_info or {})
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

    from .baselines import estimator_from_state  # lazy: gem.baselines imports scikit-learn (~0.8 s)

    folder = ws.run_dir(name)
    if not (folder / "params.json").exists() and not recover_dir(folder):  # a replace killed midway
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


def load_run_documents(ws: Workspace, name: str, columns: list[str] | None = None, exclude_flagged: bool = False):
    """A saved run with its documents, in the run's assignment order: (run, corpus rows of those
    documents (``columns`` of the workspace corpus), their positions in the corpus, their unit
    embeddings as float32). Raises ValueError when the embeddings or the corpus no longer match.
    ``exclude_flagged``: leave out the documents curators excluded (``gem.flags``), also of a run
    fitted with them, from all four (the run's assignments too; ``run.n_excluded`` counts them)."""
    import pandas as pd

    run = load_run(ws, name)
    corpus = ws.load_corpus(columns=columns)
    X_all = ws.load_embeddings(run.representation, mmap=True)
    check_embeddings_match(ws, run.representation, corpus["id"].astype(str), X_all.shape[0], len(corpus))
    ids = run.assignments["id"].astype(str).to_numpy()
    rows = pd.Index(corpus["id"].astype(str)).get_indexer(ids)
    if (rows < 0).any():
        raise ValueError(f"run {name!r}: document id {ids[rows < 0][0]!r} is not in the workspace corpus "
                         "(the corpus changed after the fit: re-run `gem fit`)")
    if exclude_flagged:
        keep, _ = flag_exclusions(ws, ids)
        if not keep.all():
            run = replace(run, assignments=run.assignments[keep].reset_index(drop=True), n_excluded=int((~keep).sum()))
            rows = rows[keep]
    return run, corpus.iloc[rows].reset_index(drop=True), rows, np.asarray(X_all[rows], dtype=np.float32)


def flag_exclusions(ws: Workspace, ids) -> tuple[np.ndarray, str]:
    """(mask over ``ids``: True where the document is not excluded in ``gem.flags``, the digest of
    the workspace's exclusions that a run fitted without them records)."""
    excluded = excluded_ids(ws)
    return keep_mask(ids, excluded), exclusions_digest(excluded)


# ---------------------------------------------------------------------------- making runs
METHODS = ("gem", "kmeans", "kmeans-unit", "spherical-kmeans", "faiss-spherical", "vmf")
GPU_METHODS = ("gem", "vmf")  # the methods fit_run can run on a GPU (device=)


@dataclass(frozen=True)
class FitSettings:
    """Everything that determines a fit (with the data): the same settings on the same data give
    the same run. ``balance`` is GEM's lambda ("auto" or >= 0; ignored by the other methods);
    ``target``: K positive shares GEM balances towards (None: uniform)."""

    method: str = "gem"
    k: int = 24
    balance: float | str = "auto"
    seed: int = 0
    representation: str = "final"
    regularizer: str = "quadratic"
    n_init: int = 1
    weight_by_tokens: bool = False
    target: tuple[float, ...] | None = None
    exclude_flagged: bool = False  # fit without the documents excluded in gem.flags

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if isinstance(self.balance, str):
            if self.balance != "auto":
                raise ValueError(f"balance must be 'auto' or a number >= 0, got {self.balance!r}")
        else:
            object.__setattr__(self, "balance", float(self.balance))
            if not self.balance >= 0:
                raise ValueError(f"balance must be 'auto' or a number >= 0, got {self.balance!r}")
        if self.target is not None:
            object.__setattr__(self, "target", tuple(float(x) for x in self.target))

    def params(self) -> dict:
        """What params.json records as the run's parameters."""
        gem = self.method == "gem"
        extra = {"exclude_flagged": True} if self.exclude_flagged else {}  # absent when off: older runs stay current
        return {**extra, "method": self.method, "k": int(self.k), "representation": self.representation, "seed": int(self.seed),
                "balance": self.balance if gem else None, "regularizer": self.regularizer if gem else None,
                "n_init": int(self.n_init), "weight_by_tokens": bool(self.weight_by_tokens),
                "target": list(self.target) if (gem and self.target is not None) else None}

    def slug(self) -> str:
        """A run name that spells the settings, e.g. ``gem-k24-auto-s0`` or ``gem-k24-l5000-s0-layer3``
        (the app's runs are named so; a custom target adds a short hash of it)."""
        parts = [self.method, f"k{self.k}"]
        if self.method == "gem":
            parts.append("auto" if self.balance == "auto" else f"l{self.balance:g}")
            if self.regularizer != "quadratic":
                parts.append(self.regularizer)
        parts.append(f"s{self.seed}")
        if self.representation != "final":
            parts.append(self.representation)
        if self.n_init != 1:
            parts.append(f"n{self.n_init}")
        if self.weight_by_tokens:
            parts.append("tok")
        if self.exclude_flagged:
            parts.append("x")
        if self.method == "gem" and self.target is not None:
            parts.append("t" + hashlib.sha256(json.dumps(list(self.target)).encode()).hexdigest()[:8])
        return "-".join(parts)

    def replace(self, **changes) -> "FitSettings":
        return FitSettings(**{**asdict(self), **changes})


def load_fit_data(ws: Workspace, representation: str = "final", raw: bool = False, columns: list[str] | None = None):
    """(embeddings, corpus) of a workspace, checked to belong together: same row count and, when the
    embeddings recorded it, the same ids in the same order. Raises ValueError naming the fix."""
    X = ws.load_raw_embeddings(representation) if raw else ws.load_embeddings(representation)
    corpus = ws.load_corpus(columns=columns)
    check_embeddings_match(ws, representation, corpus["id"] if "id" in corpus.columns else None, X.shape[0], len(corpus))
    return X, corpus


def check_embeddings_match(ws: Workspace, representation: str, ids, n_rows: int, n_corpus: int) -> None:
    """Refuse embeddings made for another corpus (row count, or the ids digest stored beside them)."""
    fix = f"re-embed with `gem embed -w {ws.root} --representation {representation}` (or on the Home page)"
    if n_rows != n_corpus:
        raise ValueError(f"{ws.embeddings_path(representation)} has {n_rows} rows but the corpus has {n_corpus}; {fix}")
    meta_path = ws.embeddings_meta_path(representation)
    stored = read_json(meta_path).get("ids_digest") if meta_path.exists() else None
    if stored is not None and ids is not None and stored != ids_digest(ids):
        raise ValueError(f"{ws.embeddings_path(representation)} was made for other documents (or another order) "
                         f"than {ws.corpus_path}; {fix}")


def run_is_current(ws: Workspace, name: str, settings: FitSettings) -> bool:
    """True when run ``name`` exists, was made with ``settings`` and on today's corpus and embeddings."""
    path = ws.run_dir(name) / "params.json"
    if not path.exists() or not ws.has_corpus() or not ws.embeddings_path(settings.representation).exists():
        return False
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return False
    stored = {k: v for k, v in (info.get("params") or {}).items() if k != "warm_start_from"}  # how, not what
    ids = ws.load_corpus(columns=["id"])["id"].astype(str)
    if settings.exclude_flagged:  # fitted without the excluded documents: the same exclusions, the rest of the ids
        keep, digest = flag_exclusions(ws, ids.to_numpy())
        if (info.get("exclusions") or {}).get("digest") != digest:
            return False
        ids = ids[keep]
    return (stored == json.loads(json.dumps(settings.params()))
            and info.get("embeddings_digest") == embeddings_digest(ws, settings.representation)
            and info.get("ids_digest") == ids_digest(ids))


def preload_engine():
    """Import the fitting stack (torch, scikit-learn, the GEM model and the baselines) in a daemon
    thread and return it. A server calls it at start: the first fit then skips ~2.5 s of imports
    (measured on the sample: 2.9 s for a first fit in a fresh process, 0.3 s for the next)."""
    import threading

    def work() -> None:
        import sklearn.cluster  # noqa: F401  (importing is the point; gem.model imports torch lazily)
        import torch  # noqa: F401

        from . import baselines, model  # noqa: F401

    thread = threading.Thread(target=work, name="gem-preload", daemon=True)
    thread.start()
    return thread


def fit_run(ws: Workspace, name: str, settings: FitSettings, warm_from: Run | None = None, device: str = "cpu"):
    """Fit ``settings`` on the workspace's embeddings and save it as run ``name``; returns the
    fitted estimator. ``warm_from``: a saved GEM run of the same data, K and representation whose
    parameters (directions, concentrations, potentials) start the fit (recorded in params.json).
    ``device``: where a GEM / vMF fit runs ("cpu", "cuda[:N]", "auto"; ``gem.devices.resolve_device``);
    not one of the settings (the results agree to float round-off), recorded in params.json."""
    from .baselines import make_estimator, uses_raw_vectors  # lazy: gem.baselines imports scikit-learn (~0.8 s)

    X, corpus = load_fit_data(ws, settings.representation, uses_raw_vectors(settings.method))
    ids = corpus["id"].astype(str).to_numpy()
    extra_info = None
    if settings.exclude_flagged:
        keep, digest = flag_exclusions(ws, ids)
        if int(keep.sum()) < settings.k:
            raise ValueError(f"only {int(keep.sum())} documents are left after the exclusions, fewer than K = "
                             f"{settings.k}: include some documents again or lower K")
        extra_info = {"exclusions": {"digest": digest, "n_excluded": int((~keep).sum())}}
        if not keep.all():
            X, corpus, ids = X[keep], corpus[keep].reset_index(drop=True), ids[keep]
    weights = None
    if settings.weight_by_tokens:
        if "n_tokens" not in corpus.columns:
            raise ValueError(f"{ws.corpus_path}: no n_tokens column to weight by; re-ingest the corpus")
        weights = corpus["n_tokens"].to_numpy(dtype=np.float64)
    kw: dict[str, Any] = {"random_state": settings.seed}
    if settings.method in GPU_METHODS:
        kw["device"] = resolve_device(device)
        extra_info = {**(extra_info or {}), "device": kw["device"]}
    elif device not in (None, "cpu", "auto"):
        raise ValueError(f"device={device!r}: only GEM and the vMF mixture run on a GPU, not {settings.method!r}")
    if settings.method == "gem":
        kw.update(balance=settings.balance, regularizer=settings.regularizer, n_init=settings.n_init)
        if settings.target is not None:
            kw["target"] = settings.target
    elif settings.method in ("vmf", "kmeans", "kmeans-unit"):
        kw.update(n_init=settings.n_init)
    params = settings.params()
    if warm_from is not None:
        if settings.method != "gem" or warm_from.method != "gem":
            raise ValueError("only a GEM fit can be warm-started from a GEM run")
        from .baselines import estimator_from_state  # lazy: gem.baselines imports scikit-learn (~0.8 s)

        est = estimator_from_state(*warm_from.model.to_state())  # a copy: the source run stays as saved
        if est.mean_directions_.shape != (settings.k, X.shape[1]):
            raise ValueError(f"run {warm_from.name!r} has another K or dimension than these settings")
        est.set_params(**kw, warm_start=True)
        params["warm_start_from"] = warm_from.name
    else:
        est = make_estimator(settings.method, settings.k, **kw)
    est.fit(X, sample_weight=weights)
    save_run(ws, name, est, settings.method, params, ids.tolist(), X=X if settings.method in ("gem", "vmf") else None,
             fitted_on=embeddings_digest(ws, settings.representation), extra_info=extra_info)
    return est
