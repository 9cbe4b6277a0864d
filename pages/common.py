"""Shared UI state for every page. NOT a page (app.py lists the pages explicitly).

Import it in a page as ``from pages import common``. Everything a page needs from the session:

- ``workspace() -> gem.store.Workspace``: the session's workspace: the one named in the address
  (``?ws=NAME``) when a new session opens, else $GEM_WORKSPACE (the browser tests use it), else
  ``gem.store.open_workspace()`` (the shipped sample). ``set_workspace(path)`` switches;
  ``list_workspaces()`` names those under ``workspaces_root()`` (the sidebar lists them).
- ``corpus(ws=None) -> DataFrame`` and ``embeddings(representation="final", raw=False, ws=None)
  -> ndarray``: loaded once per process and cached by (file path, mtime), so a re-embed or a new
  ingest is picked up, and pages never reload on rerun. Treat the arrays as read-only.
- The current fit: ONE per session, shared by every page. ``fit_settings()`` reads its settings
  (gem.runs.FitSettings: representation, K, balance, seed, target) from the sidebar controls
  (``fit_controls``); ``current_fit()`` returns its FitResult: a saved run of the workspace named
  ``settings.slug()``, made by gem.runs.fit_run exactly as `gem fit` makes runs (so `gem export
  --run NAME` writes the same bundle as the Mixture page), loaded when it is on disk, and matched to
  the taxonomy (stable ids, names, parents, exclusions) as soon as it exists. A manual balance starts
  from the "auto" run of the same K, seed and representation, so the same visible settings always
  give the same run. ``baseline_fit(method)``: a baseline run with the same K, seed, representation.
- Exclusions: ``n_excluded(ws)`` counts the documents curators excluded (gem.flags); the sidebar's
  "Fit without excluded documents" (``fit_settings().exclude_flagged``) is on by default once any
  exist. A fit without them has label -1 for them in ``FitResult.labels`` (aligned with corpus rows
  by id). ``KEY_SEARCH_HIGHLIGHT``: ids a page asks the Clusters maps to highlight (the Documents
  page's search results).
- ``synced_taxonomy(run)``, ``run_topics(run)``: the taxonomy matched to a run, and its topics.
- ``run_analysis(run)`` / ``cached_analysis(run)``: the gem.gis.RunAnalysis (GIS, topic table,
  keywords) of a saved run, computed once and kept, one at a time, across pages.
- ``author() -> str``: the curator's name (sidebar text box; session_state key ``gem_author``),
  for pages that record who did what (taxonomy edits, exports).
- ``BALANCE_LEVELS`` / ``balance_label(v)``: the balance control's scale (named lambda stops).
- ``plain(text)``: untrusted text escaped for st.error / st.warning / st.caption (no markdown).
- Selections are sets of document ids, never row positions: ``selection_key(prefix, *parts)``
  keys a selectable table or map by a digest of what produced it (a new table is a new widget,
  starting with nothing selected); ``selection_text(ids)`` says what a selection holds;
  ``flag_form(ws, ids, key)`` acts on exactly those ids (refused when they are not the ones it
  showed).
- Outputs a page keeps in session state (exports, a student, proposals, uploads, a highlight) are
  scoped: ``keep_output(key, output_scope(ws, run), value)`` and ``kept_output(key, scope)`` (None,
  and the entry dropped, unless kept under that scope: same resolved workspace root and corpus, same
  run and params.json mtime), so no page shows or acts on another workspace's or fit's output.
- ``embedded_workspace() -> (ws, representations)``: the workspace, or a pointer to the Home page
  and st.stop() when it has no embedded corpus (the preamble of every analysis page).
- ``sidebar()``: workspace, curator name, a document search box (opens the Documents page) and the
  current fit, on every page (app.py calls it).

All logic beyond session bookkeeping lives in gem/ (engine) so it is usable without the UI.
"""
from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from gem.devices import configured_device
from gem.runs import GPU_METHODS
from gem.store import Workspace, missing_workspace, open_workspace

WORKSPACE_ENV = "GEM_WORKSPACE"
KEY_WORKSPACE = "gem_workspace"
KEY_AUTHOR = "gem_author"
KEY_ANALYSIS = "gem_analysis"  # (run key, RunAnalysis) of the last analysed run
KEY_SYNCED = "tx_synced"  # output_scope of a run -> taxonomy SyncReport of this session's syncs

# Baseline choices shown in the UI -> gem.baselines.make_estimator method names.
BASELINES = {
    "k-means on raw vectors": "kmeans",
    "k-means on unit vectors": "kmeans-unit",
    "spherical k-means": "spherical-kmeans",
    "spherical k-means (faiss)": "faiss-spherical",
    "plain vMF mixture (learned prior)": "vmf",
}
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


# ---------------------------------------------------------------------------- workspace
def _default_workspace_path() -> str:
    env = os.environ.get(WORKSPACE_ENV)
    if env:  # opened as it is: a folder that does not exist is refused on the pages, never made
        return str(Workspace(env).root)
    return str(open_workspace().root)


def workspaces_root() -> Path:
    """The folder holding this server's workspaces (the default workspace's parent): uploads
    become workspaces here, and the sidebar lists them."""
    return Path(_default_workspace_path()).parent


def data_roots() -> list[Path]:
    """The folders a server-side path typed into a page may name (gem.access: $GEM_DATA_ROOTS,
    default the workspaces folder and the shipped sample)."""
    from gem.access import data_roots as roots

    return roots(workspaces_root())


def list_workspaces() -> list[str]:
    """Names of the workspaces (folders with a corpus) under ``workspaces_root()``."""
    root = workspaces_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and Workspace(p).has_corpus())


def workspace() -> Workspace:
    """The session's workspace; a new session reopens the one named in the page address (``?ws=``,
    kept by ``set_workspace``, so a reload or a bookmark comes back to it), else the default."""
    if KEY_WORKSPACE not in st.session_state:
        path = _default_workspace_path()
        name = st.query_params.get("ws")
        if name and name in list_workspaces():
            path = str(workspaces_root() / name)
        st.session_state[KEY_WORKSPACE] = path
    return Workspace(st.session_state[KEY_WORKSPACE])


def set_workspace(path: str | os.PathLike) -> Workspace:
    ws = open_workspace(path)
    st.session_state[KEY_WORKSPACE] = str(ws.root)
    if ws.root.parent.resolve() == workspaces_root().resolve():
        st.query_params["ws"] = ws.root.name
    forget_runs()
    return ws


def workspace_missing(ws: Workspace) -> bool:
    """Whether the workspace folder does not exist (a mistyped $GEM_WORKSPACE): then its one
    message (the path, "create it with `gem ingest`") is shown. Nothing makes the folder."""
    if ws.root.is_dir():
        return False
    st.error(plain(str(missing_workspace(ws.root)) + ", or upload a corpus on the Home page"))
    return True


def embedded_workspace() -> tuple[Workspace, list[str]]:
    """(workspace, its representations); with no embedded corpus, a pointer to Home and st.stop()."""
    ws = workspace()
    if workspace_missing(ws):
        st.stop()
    reps = ws.representations() if ws.has_corpus() else []
    if not reps:
        st.warning("No embedded corpus in this workspace yet: open one and embed it on the Home page.")
        st.stop()
    return ws, reps


def forget_runs() -> None:
    """Drop the session's fits and everything derived from them (run keys repeat across workspaces)."""
    for key in (KEY_ANALYSIS, KEY_SYNCED, KEY_FIT_TARGET, KEY_FIT_TARGET_MODE):
        st.session_state.pop(key, None)


def mtime(path: Path) -> float:
    """A file's modification time for cache keys (-1 when it does not exist)."""
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
    return _load_corpus(str(ws.root), mtime(ws.corpus_path))


def embeddings(representation: str = "final", raw: bool = False, ws: Workspace | None = None) -> np.ndarray:
    ws = ws or workspace()
    return _load_embeddings(
        str(ws.root), representation, raw, mtime(ws.embeddings_path(representation)), mtime(ws.norms_path(representation))
    )


CORE_COLUMNS = ("id", "text", "n_tokens")


def label_columns(frame) -> list[str]:
    """The corpus's human label columns (source, category, or those chosen at upload)."""
    return [c for c in frame.columns if c not in CORE_COLUMNS]


# ---------------------------------------------------------------------------- the current fit
# One current fit per session, shared by every page: its settings live in plain session_state keys
# (widget state is dropped whenever a run does not draw the widget; these must persist), set by the
# sidebar widgets ``fit_controls`` draws on every page (keys ``w_<key>``), and the fit itself is a saved
# run of the workspace named after them (gem.runs.FitSettings.slug), made by gem.runs.fit_run as
# `gem fit` makes runs. The same visible settings always give the same run: a manual balance starts
# from the "auto" run of the same K, seed and representation (never from whatever was fitted last).
KEY_FIT_REP, KEY_FIT_K, KEY_FIT_SEED = "fit_rep", "fit_k", "fit_seed"
KEY_FIT_AUTO, KEY_FIT_LAMBDA = "fit_auto", "fit_lambda"
KEY_FIT_TARGET = "fit_target"  # None (uniform) or K shares, set on the Mixture page
KEY_FIT_TARGET_MODE = "fit_target_mode"  # how the Mixture page made it: uniform, natural, edited per topic
KEY_FIT_EXCLUDE = "fit_exclude"  # None: on when any document is excluded (the default), else the curator's choice
KEY_SEARCH_HIGHLIGHT = "search_highlight"  # (query, [ids]) the Clusters maps draw as a highlighted trace
DEFAULT_K, DEFAULT_LAMBDA = 24, 5000.0


def flags_mtime(ws: Workspace) -> tuple:
    """Cache key part that changes with every flag or taxonomy edit (the database and its WAL)."""
    return mtime(ws.taxonomy_db), mtime(ws.taxonomy_db.with_name(ws.taxonomy_db.name + "-wal"))


@st.cache_data(max_entries=16, show_spinner=False)
def _exclusions(root: str, stamp: tuple) -> tuple[int, str]:
    from gem.flags import excluded_ids, exclusions_digest

    ids = excluded_ids(Workspace(root))
    return len(ids), exclusions_digest(ids)


def n_excluded(ws: Workspace | None = None) -> int:
    """How many documents curators excluded in this workspace (gem.flags)."""
    ws = ws or workspace()
    return _exclusions(str(ws.root), flags_mtime(ws))[0]


def exclusions_stamp(ws: Workspace | None = None) -> str:
    """A digest of the excluded ids: changes when an exclusion does, not with other taxonomy edits."""
    ws = ws or workspace()
    return _exclusions(str(ws.root), flags_mtime(ws))[1]


@dataclass
class FitResult:
    """One saved run shown in the UI (``labels`` aligned with ``corpus()`` rows)."""

    name: str  # the run's folder name under runs/
    settings: Any  # gem.runs.FitSettings
    estimator: Any
    labels: np.ndarray
    seconds: float | None = None  # fit time when this session fitted it, None when it was on disk
    warm_from: str | None = None  # the run this fit started from

    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def representation(self) -> str:
        return self.settings.representation

    @property
    def n_clusters(self) -> int:
        return int(self.settings.k)

    @property
    def params(self) -> dict:
        return self.settings.params()

    @property
    def lambda_used(self) -> float | None:
        lam = getattr(self.estimator, "balance_", None)
        return None if lam is None else float(lam)


def fit_settings(ws: Workspace | None = None, method: str = "gem"):
    """The current fit's settings (gem.runs.FitSettings) from the session, with defaults."""
    from gem.runs import FitSettings

    ws = ws or workspace()
    reps = ws.representations()
    rep = st.session_state.get(KEY_FIT_REP)
    if rep not in reps:
        rep = "final" if "final" in reps or not reps else reps[0]
    balance = "auto" if st.session_state.get(KEY_FIT_AUTO, True) else float(st.session_state.get(KEY_FIT_LAMBDA, DEFAULT_LAMBDA))
    target = kept_output(KEY_FIT_TARGET, output_scope(ws))  # a target is K shares of this workspace's topics
    k = int(st.session_state.get(KEY_FIT_K, DEFAULT_K))
    if target is not None and len(target) != k:
        target = None
    exclude = st.session_state.get(KEY_FIT_EXCLUDE)
    if exclude is None:
        exclude = ws.has_corpus() and n_excluded(ws) > 0
    return FitSettings(method=method, k=k, balance=balance if method == "gem" else "auto",
                       seed=int(st.session_state.get(KEY_FIT_SEED, 0)), representation=rep,
                       target=target if method == "gem" else None, exclude_flagged=bool(exclude))


def _bound(state_key: str, value) -> dict:
    """Widget arguments for a control of the current fit: the widget (key ``w_<state_key>``) is set
    from the plain session key before it is drawn (no ``value=``: a keyed widget's value would
    otherwise be the browser's, whatever another control wrote), and copies a change back."""
    st.session_state[f"w_{state_key}"] = value
    return {"key": f"w_{state_key}", "on_change": _keep, "args": (f"w_{state_key}", state_key)}


def _keep(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


_FIT_KEYS = {"representation": KEY_FIT_REP, "k": KEY_FIT_K, "seed": KEY_FIT_SEED, "auto": KEY_FIT_AUTO,
             "lam": KEY_FIT_LAMBDA, "exclude": KEY_FIT_EXCLUDE}


def set_fit(**changes) -> None:
    """Make ``changes`` (representation, k, seed, auto, lam, exclude) part of the one current fit.
    Every control outside the sidebar that changes the fit (the sweep's "use this λ") calls it, so
    the sidebar shows it and the next rerun keeps it. Usable as an ``on_click`` callback."""
    for name, value in changes.items():
        st.session_state[_FIT_KEYS[name]] = value  # the sidebar's widgets are drawn from these keys


def _current(ws: Workspace, settings) -> bool:
    """Run ``settings.slug()`` is on disk and current (cached on the files it depends on)."""
    name = settings.slug()
    return _run_is_current(str(ws.root), name, settings, params_mtime(ws, name), mtime(ws.corpus_path),
                           mtime(ws.embeddings_path(settings.representation)),
                           flags_mtime(ws) if settings.exclude_flagged else ())


KEY_LAMBDA_SLOT = "_fit_lambda_slot"  # this run's sidebar line with the lambda in use (filled after a fit)


def lambda_in_use(ws: Workspace, settings) -> str:
    """The sidebar's line on the lambda in use: the current run's, or that it is set at the next fit."""
    if settings.balance != "auto":
        return f"λ in use: {settings.balance:g}"
    if not _current(ws, settings):
        return "λ in use: chosen by GEM at the next fit"
    lam = _load_run(str(ws.root), settings.slug(), params_mtime(ws, settings.slug())).model.balance_
    return f"λ in use: {lam:.4g} (chosen by GEM)"


def fit_controls(ws: Workspace) -> None:
    """The current fit's settings (sidebar): representation, K, balance, seed. Each widget is drawn
    from the session's one current fit (``fit_settings``), whichever control last changed it."""
    st.session_state.pop(KEY_LAMBDA_SLOT, None)  # a slot of an earlier run is gone
    reps = ws.representations() if ws.has_corpus() else []
    if not reps:
        return
    settings = fit_settings(ws)
    with st.expander("Current fit", expanded=True):
        st.selectbox("Representation", reps, **_bound(KEY_FIT_REP, settings.representation),
                     help="Embed more layers on the Home page.")
        st.number_input("K (topics)", min_value=2, max_value=256, step=1, **_bound(KEY_FIT_K, settings.k))
        auto = st.toggle("Automatic balance", **_bound(KEY_FIT_AUTO, settings.balance == "auto"),
                         help="GEM picks lambda from the fitted concentrations and cosine margins.")
        if not auto:
            levels = [lam for _, lam in BALANCE_LEVELS]
            lam = float(st.session_state.get(KEY_FIT_LAMBDA, DEFAULT_LAMBDA))
            if lam not in levels:
                lam = DEFAULT_LAMBDA
                st.session_state[KEY_FIT_LAMBDA] = lam
            st.select_slider("Balance strength", options=levels, format_func=balance_label, **_bound(KEY_FIT_LAMBDA, lam),
                             help="How hard GEM pulls topic masses toward the target composition (the regulariser "
                                  "(λ/2)‖π − u‖²). 0: plain vMF assignments with a uniform prior.")
        else:
            slot = st.empty()
            slot.text(lambda_in_use(ws, settings))
            st.session_state[KEY_LAMBDA_SLOT] = (settings, slot)
        st.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, **_bound(KEY_FIT_SEED, settings.seed))
        excluded = n_excluded(ws)
        if excluded or settings.exclude_flagged:
            st.toggle("Fit without excluded documents", **_bound(KEY_FIT_EXCLUDE, settings.exclude_flagged),
                      help=f"{excluded:,} documents are excluded (Documents page, `gem flag`). On: the fit, GIS and "
                           "keywords leave them out. Exports always leave them out.")
        if settings.target is not None:
            st.caption("Target composition: custom (set on the Mixture page)")
        st.caption("Run")
        st.text(settings.slug())  # the same name works with `gem export --run`, `gem distill --run`


def fit_caption(run: FitResult) -> str:
    """One line saying which run is shown, how it was made and the lambda GEM used."""
    how = ("loaded from disk" if run.seconds is None else
           f"fitted in {run.seconds:.1f} s" + (f", warm-started from {run.warm_from}" if run.warm_from else ""))
    lam = f"; λ used = {run.lambda_used:.4g}" + (" (chosen by GEM)" if run.settings.balance == "auto" else "") \
        if run.lambda_used is not None else ""
    return plain(f"Run {run.name} ({how}){lam}.")


_AUTOLINK = re.compile(r"(://|www\.|@)", re.IGNORECASE)


def plain(text) -> str:
    """Escape markdown so st.error / st.warning / st.caption show untrusted text (ids, names, paths,
    messages quoting them) as typed: no bold, no links, no images. Escapes do not stop GitHub-style
    autolinks of bare URLs and e-mail addresses, so a zero-width space breaks those up (invisible)."""
    text = _AUTOLINK.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], str(text))
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text)


_FIT_LOCKS: dict[str, threading.Lock] = {}
_FIT_LOCKS_GUARD = threading.Lock()


def _fit_lock(key: str) -> threading.Lock:
    with _FIT_LOCKS_GUARD:
        return _FIT_LOCKS.setdefault(key, threading.Lock())


@st.cache_data(max_entries=64, show_spinner=False)
def _run_is_current(root: str, name: str, settings, run_mtime: float, corpus_mtime: float, emb_mtime: float,
                    flags_stamp: tuple = ()) -> bool:
    from gem.runs import run_is_current

    return run_is_current(Workspace(root), name, settings)


@st.cache_resource(max_entries=16, show_spinner=False)
def _load_run(root: str, name: str, run_mtime: float):
    from gem.runs import load_run

    return load_run(Workspace(root), name)


def params_mtime(ws: Workspace, name: str) -> float:
    """When run ``name`` was last saved (its params.json's mtime): part of cache keys."""
    return mtime(ws.run_dir(name) / "params.json")


def ensure_run(settings, ws: Workspace | None = None, sync: bool = True) -> FitResult:
    """The saved run of ``settings``: loaded when it is on disk and current, else fitted by
    gem.refit.fit_with_policy, exactly as `gem fit` fits it (a re-fit after the documents changed
    starts from the previous fit of these settings; a manual balance from the "auto" run of the same
    K, seed and representation) and, for GEM, matched to the workspace taxonomy so names, parents and
    exclusions follow it. What moved against the run it started from is kept for ``show_fit``.
    ``sync=False``: pages that show no topic names skip the match of a run loaded from disk."""
    from gem.refit import fit_with_policy

    ws = ws or workspace()
    name = settings.slug()
    outcome = None
    if not _current(ws, settings):
        with _fit_lock(f"{ws.root}|{name}"):
            if not _current(ws, settings):  # another session may have fitted it while this one waited
                outcome = fit_with_policy(ws, settings, name, sync=sync and settings.method == "gem",
                                          device=configured_device() if settings.method in GPU_METHODS else "cpu")
    run = _load_run(str(ws.root), name, params_mtime(ws, name))
    if outcome is not None and outcome.sync is not None:
        st.session_state[KEY_ANALYSIS] = (_analysis_key(ws, name), outcome.analysis)
        st.session_state.setdefault(KEY_SYNCED, {})[output_scope(ws, name)] = outcome.sync
        keep_output(KEY_MOVES, output_scope(ws, name), (outcome.moves, outcome.sync))
    elif settings.method == "gem" and sync:
        synced_taxonomy(name, ws)
    slot = st.session_state.get(KEY_LAMBDA_SLOT)
    if outcome is not None and slot is not None and slot[0] == settings:
        slot[1].text(lambda_in_use(ws, settings))  # the sidebar was drawn before this fit
    warm = outcome.warm.run if outcome is not None and outcome.warm is not None else run.params.get("warm_start_from")
    return FitResult(name, settings, run.model, corpus_labels(run, ws), None if outcome is None else outcome.seconds,
                     warm)


KEY_MOVES = "fit_moves"  # (gem.refit.TopicMoves or None, SyncReport) of this session's last GEM fit, scoped to it


def show_fit(run: FitResult, extra: str = "") -> None:
    """The caption of ``fit_caption`` and, when this session's fit of ``run`` retired, created or
    moved topics, a "what moved" report: every page that can trigger a re-fit calls it."""
    st.caption(fit_caption(run) + (" " + extra if extra else ""))
    kept = kept_output(KEY_MOVES, output_scope(workspace(), run.name))
    if not kept:
        return
    moves, report = kept
    sync_moved = report is not None and (report.new or report.retired or report.changed) and report.matched
    if moves is None and not sync_moved:
        return
    if moves is not None and not moves.anything_moved:
        st.caption(plain(f"What moved: nothing. {moves.summary()}."))
        return
    with st.expander("What moved in this re-fit", expanded=True):
        if moves is not None:
            st.text(moves.summary())
            st.dataframe(moves.table(), hide_index=True, key=f"fit_moves_{run.name}",
                         column_config={"jaccard": st.column_config.NumberColumn("members' Jaccard", format="%.2f")})
        if report is not None:
            st.text(f"Taxonomy: {report.summary()}")


def corpus_labels(run, ws: Workspace | None = None) -> np.ndarray:
    """A saved run's cluster per corpus row, -1 for documents the run was fitted without (aligned
    by id: a current run holds the corpus's ids in order, or that order minus the excluded)."""
    ws = ws or workspace()
    cluster = run.assignments["cluster"].to_numpy().astype(np.int64)
    ids = corpus(ws)["id"]
    if len(cluster) == len(ids):
        return cluster
    import pandas as pd

    labels = np.full(len(ids), -1, dtype=np.int64)
    pos = pd.Index(ids.astype(str)).get_indexer(run.assignments["id"].astype(str))
    labels[pos[pos >= 0]] = cluster[pos >= 0]
    return labels


def current_fit(ws: Workspace | None = None, sync: bool = True) -> FitResult:
    """The session's current GEM fit (sidebar settings), fitted or loaded once (see ``ensure_run``)."""
    return ensure_run(fit_settings(ws), ws, sync)


def baseline_fit(method: str, ws: Workspace | None = None) -> FitResult:
    """A baseline run (k-means on raw vectors, on unit vectors, spherical k-means, plain vMF) with
    the current fit's K, seed and representation."""
    return ensure_run(fit_settings(ws, method=method), ws)


def synced_taxonomy(name: str, ws: Workspace | None = None, analysis=None):
    """(gem.taxonomy.Taxonomy, SyncReport or None) with run ``name`` matched to the workspace
    taxonomy (stable ids), once per run; the report when this session made the match. The first
    time, the run's GIS analysis (keywords for provisional names) is computed and kept."""
    from gem.taxonomy import Taxonomy
    from gem.workspace_ops import sync_saved_run

    ws = ws or workspace()
    tax = Taxonomy(ws.taxonomy_db)
    if not tax.run_mapping(name):
        with _fit_lock(f"{ws.root}|sync"):
            if not tax.run_mapping(name):  # another session may have synced it meanwhile
                with st.spinner("Matching the topics to the taxonomy (GIS, keywords)…"):
                    _, report, analysis = sync_saved_run(ws, name, analysis=analysis)
                st.session_state[KEY_ANALYSIS] = (_analysis_key(ws, name), analysis)
                st.session_state.setdefault(KEY_SYNCED, {})[output_scope(ws, name)] = report
    return tax, st.session_state.get(KEY_SYNCED, {}).get(output_scope(ws, name))


def _analysis_key(ws: Workspace, name: str) -> str:
    # analyze_run leaves excluded documents out, also of runs fitted with them
    return f"{ws.root}|{name}|{params_mtime(ws, name)}|{exclusions_stamp(ws)}"


def run_topics(run_name: str, ws: Workspace | None = None):
    """The taxonomy's topics of a synced run (columns cluster, id, name, parent, parent_name,
    excluded, ...; one per cluster), or None when the run is not synced."""
    ws = ws or workspace()
    if not ws.taxonomy_db.exists():
        return None
    from gem.taxonomy import Taxonomy

    try:
        topics = Taxonomy(ws.taxonomy_db).topics(run=run_name)
    except KeyError:
        return None
    return topics if len(topics) else None


def run_analysis(run_name: str, ws: Workspace | None = None):  # noqa: D401
    """The gem.gis.RunAnalysis (GIS, topic table, keywords) of a saved run: the kept one, or
    computed now (one is kept at a time: its GIS is N floats)."""
    from gem.workspace_ops import analyze_run

    ws = ws or workspace()
    key = _analysis_key(ws, run_name)
    kept = st.session_state.get(KEY_ANALYSIS)
    if kept is None or kept[0] != key:
        st.session_state.pop(KEY_ANALYSIS, None)  # free the old one first; a failed compute keeps none
        with st.spinner(f"Scoring the documents of run {run_name} (GIS), keywords…"):
            kept = (key, analyze_run(ws, run_name))
        st.session_state[KEY_ANALYSIS] = kept
    return kept[1]


def cached_analysis(run_name: str, ws: Workspace | None = None):
    """The kept RunAnalysis of ``run_name`` when a page has computed it, else None."""
    kept = st.session_state.get(KEY_ANALYSIS)
    return kept[1] if kept is not None and kept[0] == _analysis_key(ws or workspace(), run_name) else None


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


CURRENT_FIT = "current fit (this session)"


def run_source(ws: Workspace, key: str) -> tuple[str, bool]:
    """The "Topics from" choice of a page: the current fit (its settings in the sidebar) or any run
    saved in the workspace. Returns (choice, is_current); ``current_run_name`` gives the name."""
    source = st.selectbox("Topics from", [CURRENT_FIT] + ws.runs(), key=key,
                          help="The current fit (its settings are in the sidebar: K, balance, seed), or any run "
                               "saved in this workspace (`gem fit`, or earlier fits of the app).")
    return source, source == CURRENT_FIT


def current_run_name(ws: Workspace, source: str, is_current: bool) -> str:
    """The run behind a ``run_source`` choice: the current fit is fitted (or loaded) now, with its
    caption shown."""
    if not is_current:
        return source
    with st.spinner("Fitting GEM…"):
        run = current_fit(ws)
    show_fit(run)
    return run.name


def selection_key(prefix: str, *parts) -> str:
    """The key of a selectable widget (st.dataframe / st.plotly_chart with on_select): ``prefix``
    and a short digest of what produced its content (workspace root, run, query, the ids shown, ...),
    so new content is a new widget that starts with nothing selected (Streamlit keeps a keyed
    widget's selected row positions when its data changes, which would select other documents)."""
    import hashlib
    import json

    h = hashlib.blake2b(digest_size=6)
    for part in parts:
        if not isinstance(part, (str, bytes, int, float, type(None))) and hasattr(part, "__iter__"):
            part = [str(x) for x in part]  # ids: a list, an array, a Series
        h.update(json.dumps(part, default=str).encode("utf-8", "surrogatepass") + b"\x00")
    return f"{prefix}_{h.hexdigest()}"


def id_preview(ids, shown: int = 3, width: int = 40) -> str:
    """The first ``shown`` ids (each cut to ``width`` characters), then how many more: "a, b, c, …
    (and 3 more)". Untrusted text: show it with plain() or st.text."""
    ids = [str(i) for i in ids]
    cut = [i if len(i) <= width else i[:width - 1] + "…" for i in ids[:shown]]
    rest = len(ids) - len(cut)
    return ", ".join(cut) + (f", … (and {rest:,} more)" if rest else "")


def selection_text(ids, shown: int = 3, width: int = 40) -> str:
    """What a selection holds, for the curator to check before acting: "6 selected: a, b, c, …
    (and 3 more)", or "0 selected". Untrusted text: show it with plain() or st.text."""
    ids = list(ids)
    return f"{len(ids):,} selected" + (": " + id_preview(ids, shown, width) if ids else "")


def selection_guard(key: str, ws: Workspace, ids: list[str]) -> tuple[bool, list[str]]:
    """Remember the ids a selection panel shows now (session key ``key``); return whether they are
    the ids it showed on the previous run, and those (of this workspace): an action clicked there
    must act on what the curator saw, not on a table that changed between the draw and the click.
    Streamlit drops a click on a button that is disabled in the click's run, so a panel keeps its
    buttons enabled when nothing is selected now but a selection was shown and one of them was
    clicked (``clicked``), for the refusal to say so. Call it once per run, where the selection is
    shown, before acting."""
    now = (str(ws.root), [str(i) for i in ids])
    before = st.session_state.get(key)
    st.session_state[key] = now
    shown = list(before[1]) if before and before[0] == now[0] else []
    return before == now, shown


def clicked(*keys: str) -> bool:
    """Whether one of these buttons (their keys) was clicked for this run, read before they are drawn."""
    return any(bool(st.session_state.get(k)) for k in keys)


SELECTION_CHANGED = ("The selection changed since it was shown (the table or map was redrawn); nothing was "
                     "written. Check the selection and try again.")


def flag_form(ws: Workspace, ids: list[str], key: str) -> None:
    """Exclude or tag exactly the documents ``ids`` (a map selection, a topic's members) in one form,
    saved with the curator's name (gem.flags); the Documents page has the full set of actions and
    undo. Nothing is written when ``ids`` are not the ids the form showed on the previous run."""
    from gem.flags import REASONS, DocFlags

    ids = list(dict.fromkeys(str(i) for i in ids))
    as_shown, shown = selection_guard(f"{key}_shown", ws, ids)
    with st.form(f"{key}_form", border=True):
        st.caption(plain(f"Curate the {len(ids):,} selected documents" + (f": {id_preview(ids)}" if ids else "")
                         + " (saved in the taxonomy database with your name; Undo on the Documents page)"))
        f1, f2, f3 = st.columns([1, 2, 2])
        reason = f1.selectbox("Reason", REASONS, key=f"{key}_reason")
        note = f2.text_input("Note (optional)", key=f"{key}_note")
        tag = f3.text_input("Tag", key=f"{key}_tag", placeholder="e.g. needs-review")
        b1, b2 = st.columns(2)
        # enabled with nothing selected only for a click on a selection shown before (refused below)
        off = not ids and not (shown and clicked(f"{key}_exclude", f"{key}_tag_submit"))
        do_exclude = b1.form_submit_button("Exclude the selected documents", key=f"{key}_exclude", disabled=off)
        do_tag = b2.form_submit_button("Tag the selected documents", key=f"{key}_tag_submit", disabled=off)
    if not (do_exclude or do_tag):
        return
    if not as_shown:
        st.error(SELECTION_CHANGED)
        return
    who = author()
    if not who:
        st.warning("Enter your name in the sidebar first: every flag is saved with its author.")
        return
    try:
        flags = DocFlags(ws)
        result = flags.exclude(ids, reason, who, note=note or None) if do_exclude else flags.tag(ids, tag, who)
    except ValueError as exc:
        st.error(plain(exc))
    else:
        st.success(plain(result.summary() + (" Re-fit without them: the sidebar's Fit without excluded documents "
                                             "is on once any exist." if do_exclude else "")))


def _search_from_sidebar() -> None:
    query = str(st.session_state.get("sb_search") or "").strip()
    if query:
        st.session_state["doc_query"] = query  # the Documents page's search box
        st.session_state["sb_search_go"] = True


def _switch_workspace() -> None:
    name = st.session_state.get("sb_workspace")
    if name in list_workspaces():
        set_workspace(workspaces_root() / name)


@st.cache_resource(show_spinner=False)
def preload_engine():
    """Once per server process: import the fitting stack in the background (gem.runs.preload_engine),
    while the curator reads the Home page, so the first fit does not wait for it."""
    from gem.runs import preload_engine as start

    return start()


def sidebar() -> None:
    """Workspace, curator and the current fit, on every page (app.py calls it)."""
    ws = workspace()
    with st.sidebar:
        names = list_workspaces()
        if ws.root.name in names and ws.root.parent.resolve() == workspaces_root().resolve():
            st.session_state["sb_workspace"] = ws.root.name
            st.selectbox("Workspace", names, key="sb_workspace", on_change=_switch_workspace,
                         help="Each opened corpus is a workspace; upload a new one on the Home page.")
        else:
            st.caption("Workspace")
            st.text(ws.root.name)
        user = signed_in_user()
        if user:
            st.text(f"Signed in as {user} (recorded with curation edits)")
        else:
            st.text_input("Your name (recorded with curation edits)", key=KEY_AUTHOR, placeholder="type your name",
                          help="Taxonomy edits and exports are saved with this name.")
        if ws.has_corpus():
            st.text_input("Search documents", key="sb_search", placeholder="words, then Enter", on_change=_search_from_sidebar,
                          help="Opens the Documents page with this query (full-text; semantic there).")
        fit_controls(ws)
    if st.session_state.pop("sb_search_go", False):
        st.switch_page("pages/7_Documents.py")


# ---------------------------------------------------------------------------- corpus ingest
def ingest(path: str | os.PathLike, display_name: str | None = None, dedup: str = "exact", **fields):
    """Open a workspace folder, or ingest a corpus file (JSONL / CSV / Parquet) into its own
    workspace under ``workspaces_root()`` (gem.corpus.ingest_file: named after the file, its content
    and ``dedup``; ``fields``: the loader's text_field / id_field / label_fields), and make it the
    current workspace. Returns (workspace, LoadReport or None when
    nothing was ingested). Raises ValueError / OSError with the loader's message on bad input."""
    from gem.corpus import ingest_file

    path = Path(path)
    if path.is_dir():
        if not Workspace(path).has_corpus():
            raise ValueError(f"{path}: folder has no corpus.parquet; give a JSONL, CSV or Parquet file or a workspace folder")
        return set_workspace(path), None
    ws, report = ingest_file(path, workspaces_root(), display_name=display_name, dedup=dedup, **fields)
    return set_workspace(ws.root), report


# ---------------------------------------------------------------------------- scoped session outputs
# What a page made and keeps in session state (an export, a student, a split proposal, uploaded
# results, a search highlight) is stored with the scope it came from and shown, downloaded or acted
# on only under that same scope: run names (gem-k24-auto-s0), swarm names and topic ids (T001) repeat
# across workspaces, and a re-fit under the same run name is another fit. Checking the scope, not
# popping keys when the workspace changes, is what keeps one workspace's output out of another.
SCOPE_SUFFIX = "@scope"  # session key of an output's scope: the output's own key + this


def output_scope(ws: Workspace | None = None, run_name: str | None = None) -> tuple:
    """Where an output came from: the workspace (resolved root, corpus mtime: a re-ingest into the
    same folder is another corpus) and, with ``run_name``, that run (its name and params.json mtime,
    so a re-fit of the same name is a new scope). Extend it with more parts (``+ (swarm, ...)``)."""
    ws = ws or workspace()
    scope = (str(Path(ws.root).resolve()), mtime(ws.corpus_path))
    if run_name is not None:
        scope += (str(run_name), params_mtime(ws, str(run_name)))
    return scope


def keep_output(key: str, scope: tuple, value) -> None:
    """Keep ``value`` in session state under ``key`` (as it is: pages and tests read it there) with
    its ``scope`` (``output_scope``)."""
    st.session_state[key] = value
    st.session_state[key + SCOPE_SUFFIX] = scope


def kept_output(key: str, scope: tuple):
    """The value kept under ``key`` when it was kept with this ``scope``, else None; an entry of
    another scope (or kept without one) is dropped."""
    if key not in st.session_state:
        st.session_state.pop(key + SCOPE_SUFFIX, None)
        return None
    if st.session_state.get(key + SCOPE_SUFFIX) != scope:
        drop_output(key)
        return None
    return st.session_state[key]


def drop_output(key: str) -> None:
    """Forget the output kept under ``key`` (and its scope)."""
    st.session_state.pop(key, None)
    st.session_state.pop(key + SCOPE_SUFFIX, None)
