"""Shared UI state for every page. NOT a page (app.py lists the pages explicitly).

Import it in a page as ``from pages import common``. Everything a page needs from the session:

- ``workspace() -> gem.store.Workspace``: the current workspace. Default: $GEM_WORKSPACE if set
  (the browser tests use it), else ``gem.store.open_workspace()`` (the shipped sample, seeded
  from sample_data/). ``set_workspace(path)`` switches (and forgets the fitted runs).
- ``corpus(ws=None) -> DataFrame`` and ``embeddings(representation="final", raw=False, ws=None)
  -> ndarray``: loaded once per process and cached by (file path, mtime), so a re-embed or a new
  ingest is picked up, and pages never reload on rerun. Treat the arrays as read-only.
- ``current_runs() -> (FitResult | None, FitResult | None)``: the current GEM run and the current
  baseline run (session_state keys ``gem_run`` and ``gem_baseline``). FitResult carries the fitted
  estimator, its labels aligned with ``corpus()`` rows, the parameters and the fit time.
- ``fit_gem(n_clusters, balance, seed, representation)``: fits GEM, or re-uses the current run when
  nothing changed, or re-fits WARM-STARTED from the current model when only the balance (lambda)
  changed. ``fit_baseline(method, n_clusters, seed, representation)`` likewise (no warm start).
- ``author() -> str``: the curator's name (sidebar text box; session_state key ``gem_author``),
  for pages that record who did what (taxonomy edits, exports).
- ``BALANCE_LEVELS`` / ``balance_label(v)``: the balance control's scale (named lambda stops);
  ``balance_control(key_prefix, default_auto, default_lambda, help) -> (balance, note)`` draws it
  ("auto" or a lambda), ``show_auto_lambda(note, run)`` writes the lambda GEM chose under it.
- ``embedded_workspace() -> (ws, representations)``: the workspace, or a pointer to the Home page
  and st.stop() when it has no embedded corpus (the preamble of every analysis page).
- ``session_run_key(fit)`` / ``session_topics(fit)``: the taxonomy run name of a session fit, and
  its topics (stable ids, curator names, parents) once the Taxonomy page has synced it, else None.
- ``run_analysis(run_key, compute)`` / ``cached_analysis(run_key)``: the gem.gis.RunAnalysis (GIS,
  topic table, keywords) of one fit or saved run, computed once by ``compute()`` and kept, one at a
  time, across pages (session_state key ``gem_analysis``); ``cached_analysis`` only reads it.
- ``sidebar()``: the workspace / author box shown on every page (app.py calls it).

All logic beyond session bookkeeping lives in gem/ (engine) so it is usable without the UI.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import streamlit as st

from gem.store import Workspace, ids_digest, open_workspace

WORKSPACE_ENV = "GEM_WORKSPACE"
KEY_WORKSPACE = "gem_workspace"
KEY_AUTHOR = "gem_author"
KEY_RUN = "gem_run"
KEY_BASELINE = "gem_baseline"
KEY_ANALYSIS = "gem_analysis"  # (run key, RunAnalysis) of the last analysed fit
KEY_SYNCED = "tx_synced"  # run key -> taxonomy SyncReport of this session (Taxonomy page)

# Baseline choices shown in the UI -> gem.baselines.make_estimator method names.
BASELINES = {
    "k-means on raw vectors": "kmeans",
    "k-means on unit vectors": "kmeans-unit",
    "spherical k-means": "spherical-kmeans",
    "plain vMF mixture (learned prior)": "vmf",
}
# Methods that see the raw (pre-normalisation) vectors, as practitioners run them.
RAW_METHODS = {"kmeans"}

# The balance control: named lambda stops (the paper's setting is 5000). "auto" lets GEM pick.
BALANCE_LEVELS: list[tuple[str, float]] = [
    ("none", 0.0),
    ("very light", 10.0),
    ("light", 100.0),
    ("moderate", 1000.0),
    ("paper", 5000.0),
    ("strong", 20000.0),
    ("strict", 100000.0),
]


def balance_label(value: float | str) -> str:
    if value == "auto":
        return "auto (GEM chooses lambda)"
    for name, lam in BALANCE_LEVELS:
        if lam == value:
            return f"{name} (λ = {lam:g})"
    return f"λ = {float(value):g}"


def balance_control(key_prefix: str, default_auto: bool, default_lambda: float | str | None, help: str):
    """The "Automatic balance" toggle over the named-lambda slider (keys ``<prefix>_auto`` and
    ``<prefix>_lambda``; a ``default_lambda`` off the scale starts at "moderate"). Returns
    ("auto" or the lambda, note): ``note`` is an empty slot under the slider for
    ``show_auto_lambda`` once the fit has chosen lambda."""
    auto = st.toggle("Automatic balance", value=default_auto, key=f"{key_prefix}_auto",
                     help="GEM picks lambda from the fitted concentrations and cosine margins.")
    levels = [lam for _, lam in BALANCE_LEVELS]
    lam = st.select_slider("Balance strength", options=levels,
                           value=default_lambda if default_lambda in levels else 1000.0,
                           format_func=balance_label, key=f"{key_prefix}_lambda", disabled=auto, help=help)
    note = st.empty()
    return ("auto" if auto else float(lam)), note


def show_auto_lambda(note, run) -> None:
    """Under an automatic balance control, the lambda GEM chose (the greyed slider keeps the manual one)."""
    if run is not None and run.params.get("balance") == "auto" and run.lambda_used is not None:
        note.caption(f"auto: λ = {run.lambda_used:.1f} (chosen by GEM; the slider is used when automatic is off)")


# ---------------------------------------------------------------------------- workspace
def _default_workspace_path() -> str:
    env = os.environ.get(WORKSPACE_ENV)
    if env:
        return str(open_workspace(env).root)
    return str(open_workspace().root)


def workspace() -> Workspace:
    if KEY_WORKSPACE not in st.session_state:
        st.session_state[KEY_WORKSPACE] = _default_workspace_path()
    return Workspace(st.session_state[KEY_WORKSPACE])


def set_workspace(path: str | os.PathLike) -> Workspace:
    ws = open_workspace(path)
    st.session_state[KEY_WORKSPACE] = str(ws.root)
    forget_runs()
    return ws


def embedded_workspace() -> tuple[Workspace, list[str]]:
    """(workspace, its representations); with no embedded corpus, a pointer to Home and st.stop()."""
    ws = workspace()
    reps = ws.representations() if ws.has_corpus() else []
    if not reps:
        st.warning("No embedded corpus in this workspace yet: open one and embed it on the Home page.")
        st.stop()
    return ws, reps


def forget_runs() -> None:
    """Drop the session's fits and everything derived from them (run keys repeat across workspaces)."""
    for key in (KEY_RUN, KEY_BASELINE, KEY_ANALYSIS, KEY_SYNCED):
        st.session_state.pop(key, None)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else -1


@st.cache_resource(max_entries=4, show_spinner=False)
def _load_corpus(path: str, mtime: float):
    return Workspace(path).load_corpus()


@st.cache_resource(max_entries=8, show_spinner=False)
def _load_embeddings(path: str, representation: str, raw: bool, mtime: float, norms_mtime: float) -> np.ndarray:
    ws = Workspace(path)
    X = ws.load_raw_embeddings(representation) if raw else ws.load_embeddings(representation)
    X = np.ascontiguousarray(X, dtype=np.float32)
    X.setflags(write=False)  # shared across sessions: nobody may modify it
    return X


def corpus(ws: Workspace | None = None):
    ws = ws or workspace()
    return _load_corpus(str(ws.root), _mtime(ws.corpus_path))


def embeddings(representation: str = "final", raw: bool = False, ws: Workspace | None = None) -> np.ndarray:
    ws = ws or workspace()
    return _load_embeddings(
        str(ws.root), representation, raw, _mtime(ws.embeddings_path(representation)), _mtime(ws.norms_path(representation))
    )


def corpus_ids(ws: Workspace | None = None) -> np.ndarray:
    return corpus(ws)["id"].to_numpy()


# ---------------------------------------------------------------------------- runs
@dataclass
class FitResult:
    """One fitted clustering shown in the UI (labels aligned with corpus() rows)."""

    method: str  # "gem" or a make_estimator method name
    estimator: Any
    labels: np.ndarray
    params: dict
    seconds: float
    warm_started: bool = False
    data_key: str = ""  # workspace + representation + ids digest the fit belongs to
    representation: str = "final"  # the embeddings the fit was made on (final or layerN)
    extra: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.params["n_clusters"])

    @property
    def lambda_used(self) -> float | None:
        lam = getattr(self.estimator, "balance_", None)
        return None if lam is None else float(lam)


def current_runs() -> tuple[FitResult | None, FitResult | None]:
    return st.session_state.get(KEY_RUN), st.session_state.get(KEY_BASELINE)


@st.cache_data(max_entries=8, show_spinner=False)
def _corpus_digest(path: str, mtime: float) -> str:
    """ids digest of a corpus file version: hashed once, not on every rerun (each map selection is one)."""
    return ids_digest(_load_corpus(path, mtime)["id"].to_numpy())


def _data_key(ws: Workspace, representation: str) -> str:
    return (f"{ws.root}|{representation}|{_mtime(ws.embeddings_path(representation))}|"
            f"{_corpus_digest(str(ws.root), _mtime(ws.corpus_path))}")


WARM_TOL, WARM_MAX_ITER = 1e-5, 15  # bounded warm re-fits on a lambda change (engine engineer)


def fit_gem(n_clusters: int, balance: float | str = "auto", seed: int = 0, representation: str = "final",
            ws: Workspace | None = None, **gem_kwargs) -> FitResult:
    """The current GEM run for these settings: re-used if unchanged, warm-started if only the
    balance changed (same data, K, seed and other settings), fitted from scratch otherwise."""
    from gem.model import GEM

    ws = ws or workspace()
    params = dict(n_clusters=int(n_clusters), balance=balance, random_state=int(seed), **gem_kwargs)
    key = _data_key(ws, representation)
    current: FitResult | None = st.session_state.get(KEY_RUN)
    if current is not None and current.data_key == key and current.params == params:
        return current
    X = embeddings(representation, ws=ws)
    same_but_balance = (
        current is not None
        and current.data_key == key
        and {k: v for k, v in current.params.items() if k != "balance"} == {k: v for k, v in params.items() if k != "balance"}
    )
    start = time.perf_counter()
    if same_but_balance:
        est = current.estimator
        # continue from the current mean directions / concentrations / potentials; interactive
        # re-fits are bounded (each MM step still never lowers F): tol 1e-5, at most 15 iterations
        est.set_params(balance=balance, warm_start=True, tol=WARM_TOL, max_iter=WARM_MAX_ITER)
        est.fit(X)
    else:
        est = GEM(**params)
        est.fit(X)
    seconds = time.perf_counter() - start
    result = FitResult("gem", est, np.asarray(est.labels_), params, seconds, bool(same_but_balance), key,
                       representation=representation)
    st.session_state[KEY_RUN] = result
    return result


def fit_baseline(method: str, n_clusters: int, seed: int = 0, representation: str = "final",
                 ws: Workspace | None = None) -> FitResult:
    """The current baseline run (k-means on raw vectors, or on unit vectors, spherical k-means,
    plain vMF): re-used when nothing changed."""
    from gem.baselines import make_estimator

    ws = ws or workspace()
    params = dict(method=method, n_clusters=int(n_clusters), random_state=int(seed))
    key = _data_key(ws, representation)
    current: FitResult | None = st.session_state.get(KEY_BASELINE)
    if current is not None and current.data_key == key and current.params == params:
        return current
    X = embeddings(representation, raw=method in RAW_METHODS, ws=ws)
    start = time.perf_counter()
    est = make_estimator(method, int(n_clusters), random_state=int(seed))
    est.fit(X)
    seconds = time.perf_counter() - start
    result = FitResult(method, est, np.asarray(est.labels_), params, seconds, False, key,
                       representation=representation)
    st.session_state[KEY_BASELINE] = result
    return result


def session_run_key(fit: FitResult) -> str:
    """The taxonomy run name of a session fit: changes with the data, the settings and the fitted
    mean directions (so a warm re-fit is a new run, matched to the previous one by the taxonomy)."""
    import hashlib

    h = hashlib.sha256(f"{fit.data_key}|{sorted(fit.params.items())}".encode())
    h.update(np.ascontiguousarray(fit.estimator.mean_directions_, dtype=np.float32).tobytes())
    return f"session-{h.hexdigest()[:12]}"


def session_topics(fit: FitResult | None, ws: Workspace | None = None):
    """The taxonomy's topics of this session fit (columns cluster, id, name, parent, parent_name,
    excluded, ...; one per cluster) when the Taxonomy page has synced it, else None."""
    ws = ws or workspace()
    if fit is None or fit.method != "gem" or not ws.taxonomy_db.exists():
        return None
    from gem.taxonomy import Taxonomy

    try:
        topics = Taxonomy(ws.taxonomy_db).topics(run=session_run_key(fit))
    except KeyError:  # this fit was never synced
        return None
    return topics if len(topics) == fit.n_clusters else None


def run_analysis(run_key: str, compute: Callable[[], Any]):
    """The RunAnalysis of ``run_key`` (a ``session_run_key`` or a saved run's name): the kept one, or
    ``compute()``'s, which then replaces it (one is kept: its GIS is N floats)."""
    kept = st.session_state.get(KEY_ANALYSIS)
    if kept is None or kept[0] != run_key:
        st.session_state.pop(KEY_ANALYSIS, None)  # free the old one first; a failed compute keeps none
        kept = (run_key, compute())
        st.session_state[KEY_ANALYSIS] = kept
    return kept[1]


def cached_analysis(run_key: str):
    """The kept RunAnalysis of ``run_key`` when a page has computed it, else None."""
    kept = st.session_state.get(KEY_ANALYSIS)
    return kept[1] if kept is not None and kept[0] == run_key else None


# ---------------------------------------------------------------------------- sidebar
def signed_in_user() -> str | None:
    """The signed-in user's name or email when Streamlit login (st.login, OIDC) is configured."""
    try:
        user = st.user
        if user.get("is_logged_in"):
            return str(user.get("name") or user.get("email") or "").strip() or None
    except Exception:  # no auth configured here: curators type their name instead
        return None
    return None


def author() -> str:
    """Who is editing: the signed-in user when login is configured, else the sidebar name field."""
    return signed_in_user() or str(st.session_state.get(KEY_AUTHOR, "") or "").strip()


def sidebar() -> None:
    ws = workspace()
    with st.sidebar:
        st.caption("Workspace")
        # the folder and its parent (the full path would be cut to its start); the full path on hover
        st.text(f"{ws.root.parent.name}/{ws.root.name}", help=f"Full path: `{ws.root}`")
        user = signed_in_user()
        if user:
            st.text(f"Signed in as {user} (recorded with curation edits)")
        else:
            st.text_input("Your name (recorded with curation edits)", key=KEY_AUTHOR, placeholder="curator")


# ---------------------------------------------------------------------------- corpus ingest
def ingest(path: str | os.PathLike, display_name: str | None = None):
    """Validate a corpus file (JSONL / CSV / Parquet) with gem.corpus.load_corpus and make it the
    current workspace (a sibling of the current one, named after the file and its content).
    Returns (workspace, LoadReport or None when the corpus was already ingested). Raises gem.corpus.CorpusError (a ValueError) with the loader's message on bad input."""
    from gem.corpus import load_corpus
    from gem.store import file_sha256, validate_name, write_parquet_atomic

    path = Path(path)
    if path.is_dir():
        if not Workspace(path).has_corpus():
            raise ValueError(f"{path}: folder has no corpus.parquet; give a JSONL, CSV or Parquet file or a workspace folder")
        return set_workspace(path), None
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(display_name or path.name).stem)[:40] or "corpus"
    dest = validate_name(f"{stem}-{file_sha256(path)[:10]}", "workspace name")
    ws = Workspace(workspace().root.parent / dest)
    report = None
    if not ws.has_corpus():
        frame, report = load_corpus([str(path)], rejects_path=ws.rejects_path)
        write_parquet_atomic(ws.corpus_path, frame)
    return set_workspace(ws.root), report
