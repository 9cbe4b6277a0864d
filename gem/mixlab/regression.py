"""Reading measured results and fitting mixture -> metric regressions (RegMix's step 2).

``read_results`` reads a CSV with a ``mixture_id`` column and one or more metric columns (the
validation loss, a benchmark score, ...) and checks it against the swarm: every error names the
line and what to do (unknown or duplicated ids, swarm mixtures without a row, empty or
non-numeric values).

``fit_metric`` fits candidate regressions from the mixture weights to one metric and picks the one
with the lowest K-fold cross-validated error:

- ``gbt``           sklearn GradientBoostingRegressor (RegMix uses LightGBM: a boosted tree model too)
- ``ridge``         RidgeCV on the weights (RegMix's linear baseline)
- ``ridge-log``     RidgeCV on log(w + 1e-4) (a power-law-like response to each domain's share)
- ``ridge-quad``    RidgeCV on the weights and their pairwise products (a smooth interior optimum)

The quality of the chosen fit is its *held-out* Spearman rho: each mixture's prediction comes from
the fold model that did not see it (``cross_val_predict``), so rho says how well the fit ranks
mixtures it was not trained on. Uncertainty: a 90 % bootstrap interval of that rho (mixtures
resampled), and for any predicted mixture the spread (standard deviation) of the K fold models'
predictions (``Fit.predict_spread``).

Direction: ``lower_is_better(name)`` says a metric is minimised when its name contains loss,
ppl, perplexity, xent, bpb, bits or nll, else maximised; the caller can say otherwise.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from gem.store import short

LOWER_WORDS = ("loss", "ppl", "perplexity", "xent", "bpb", "bits", "nll")
MODELS = ("gbt", "ridge", "ridge-log", "ridge-quad")
LOG_EPS = 1e-4
MIN_MIXTURES = 8
WEAK_RHO = 0.5


def lower_is_better(metric: str) -> bool:
    name = str(metric).lower()
    return any(w in name for w in LOWER_WORDS)


# ============================================================================ results CSV
SEPARATORS = (",", ";", "\t", "|")
_SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def results_separator(text: str) -> str:
    """The field separator of a results CSV: the one of ``SEPARATORS`` (comma first) that splits
    the header line into a ``mixture_id`` column, else what csv.Sniffer sees in the first lines,
    else a comma."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ","
    for sep in SEPARATORS:
        if "mixture_id" in (h.strip().strip('"') for h in lines[0].split(sep)):
            return sep
    try:
        return csv.Sniffer().sniff("\n".join(lines[:20]), delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        return ","


def read_results(source, mixture_ids: Sequence[str], where: str = "results CSV") -> pd.DataFrame:
    """Metrics per mixture from a CSV (path, text or bytes): index ``mixture_id`` in swarm order,
    one float column per metric. Comma-, semicolon-, tab- or pipe-separated (``results_separator``),
    a byte order mark dropped. ValueError naming the line for every problem."""
    if isinstance(source, (bytes, bytearray)):
        text = bytes(source).decode("utf-8-sig", errors="replace")
    elif isinstance(source, str) and "\n" in source:
        text = source
    else:
        with open(source, encoding="utf-8-sig", errors="replace") as fh:
            text = fh.read()
    text = text.removeprefix("\ufeff")
    sep = results_separator(text)
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{where}: empty file: write a header line mixture_id,<metric>,...") from None
    if "mixture_id" not in header:
        seen = _SEPARATOR_NAMES.get(sep, repr(sep))
        raise ValueError(f"{where} line 1: no 'mixture_id' column (columns: {', '.join(short(h, 40) for h in header[:6])}; "
                         f"read as {seen}-separated); name the column of mixture ids mixture_id")
    metrics = [h for h in header if h != "mixture_id"]
    if not metrics:
        raise ValueError(f"{where} line 1: no metric column beside mixture_id: add one, e.g. val_loss")
    dup = [h for h in header if header.count(h) > 1]
    if dup:
        raise ValueError(f"{where} line 1: column {dup[0]!r} appears twice")
    if any(not h for h in metrics):
        raise ValueError(f"{where} line 1: a metric column has no name")
    known = {str(m): k for k, m in enumerate(mixture_ids)}
    values = np.full((len(known), len(metrics)), np.nan)
    seen: dict[str, int] = {}
    icol = header.index("mixture_id")
    for lineno, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{where} line {lineno}: {len(row)} fields, the header has {len(header)}")
        mid = row[icol].strip()
        if mid not in known:
            raise ValueError(f"{where} line {lineno}: unknown mixture id {short(mid)!r}: ids come from swarm.csv "
                             f"({', '.join(list(known)[:4])} ...)")
        if mid in seen:
            raise ValueError(f"{where} line {lineno}: mixture {mid!r} already on line {seen[mid]}: keep one row per mixture")
        seen[mid] = lineno
        for j, name in enumerate(metrics):
            cell = row[header.index(name)].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                what = "is empty" if not cell else f"is {short(cell)!r}, not a finite number"
                if sep != "," and re.fullmatch(r"[-+]?\d+,\d+", cell):
                    what += " (a decimal comma: write 3.25, not 3,25)"
                raise ValueError(f"{where} line {lineno}: {name} of mixture {mid!r} {what}")
            values[known[mid], j] = value
    missing = [m for m in known if m not in seen]
    if missing:
        raise ValueError(f"{where}: {len(missing)} swarm mixture(s) have no row ({', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}): add their results, or design a swarm without them")
    return pd.DataFrame(values, columns=metrics, index=pd.Index(list(known), name="mixture_id"))


# ============================================================================ models
def _features(kind: str):
    from sklearn.preprocessing import FunctionTransformer, PolynomialFeatures

    if kind == "ridge":
        return []
    if kind == "ridge-log":
        return [FunctionTransformer(lambda w: np.log(w + LOG_EPS))]
    if kind == "ridge-quad":
        return [PolynomialFeatures(2, include_bias=False)]
    raise KeyError(kind)


def make_model(kind: str, seed: int = 0):
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "gbt":
        return GradientBoostingRegressor(n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.8,
                                         min_samples_leaf=3, random_state=seed)
    return make_pipeline(*_features(kind), StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 30)))


@dataclass
class Fit:
    """One metric's fitted regression: the chosen model refitted on every mixture, its fold
    models, and the cross-validated evidence."""

    metric: str
    minimize: bool
    ids: list[str]
    model_kind: str
    model: object
    fold_models: list
    measured: np.ndarray
    cv_predicted: np.ndarray
    rho: float
    rho_interval: tuple[float, float]
    candidates: pd.DataFrame          # model, cv_rmse, cv_spearman (all candidates)
    mixture_ids: list[str] = field(default_factory=list)

    def predict(self, W: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.atleast_2d(W)), dtype=np.float64)

    def predict_spread(self, W: np.ndarray) -> np.ndarray:
        """Standard deviation of the fold models' predictions (how much the fit hinges on which
        mixtures it saw)."""
        W = np.atleast_2d(W)
        return np.std([m.predict(W) for m in self.fold_models], axis=0)

    @property
    def warning(self) -> str | None:
        """A plain warning when the fit ranks held-out mixtures too poorly to trust its optimum."""
        if self.rho < WEAK_RHO:
            return (f"the fit ranks held-out mixtures poorly (Spearman rho {self.rho:.2f} < {WEAK_RHO}): its predicted "
                    "best is not to be trusted; add mixtures, a larger proxy budget, or a target the domains differ on")
        return None

    @property
    def is_tree(self) -> bool:
        return self.model_kind == "gbt"

    @property
    def linear_coef(self) -> np.ndarray | None:
        """Per-domain coefficients of the ``ridge`` model in weight units (None for other models)."""
        if self.model_kind != "ridge":
            return None
        scaler, ridge = self.model.steps[-2][1], self.model.steps[-1][1]
        return ridge.coef_ / scaler.scale_

    def summary(self) -> dict:
        lo, hi = self.rho_interval
        return {"metric": self.metric, "minimize": self.minimize, "model": self.model_kind, "n_mixtures": len(self.measured),
                "spearman_rho_cv": self.rho, "rho_90ci": [lo, hi],
                "candidates": self.candidates.to_dict(orient="records")}


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a, b).statistic
    return float(r) if np.isfinite(r) else 0.0


def bootstrap_rho(y: np.ndarray, yhat: np.ndarray, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.9) -> tuple[float, float]:
    """Percentile interval of Spearman rho over mixtures resampled with replacement."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    ry = rankdata(y[idx], axis=1)
    rp = rankdata(yhat[idx], axis=1)
    ry -= ry.mean(axis=1, keepdims=True)
    rp -= rp.mean(axis=1, keepdims=True)
    den = np.sqrt((ry ** 2).sum(axis=1) * (rp ** 2).sum(axis=1))
    rho = np.where(den > 0, (ry * rp).sum(axis=1) / np.where(den > 0, den, 1), 0.0)
    a = (1 - level) / 2
    return float(np.quantile(rho, a)), float(np.quantile(rho, 1 - a))


def fit_metric(W: np.ndarray, y: np.ndarray, metric: str, ids: Sequence[str], *, minimize: bool | None = None,
               models: Sequence[str] = MODELS, folds: int = 5, seed: int = 0,
               mixture_ids: Sequence[str] | None = None) -> Fit:
    """Fit ``models`` from weights ``W`` (mixtures x domains) to ``y``; keep the one with the lowest
    K-fold cross-validated RMSE (see the module docstring)."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    W = np.asarray(W, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) < MIN_MIXTURES:
        raise ValueError(f"{metric}: {len(y)} mixtures with results; a fit needs at least {MIN_MIXTURES}")
    if np.ptp(y) == 0:
        raise ValueError(f"{metric}: every mixture has the same value {y[0]:g}: nothing to fit")
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    minimize = lower_is_better(metric) if minimize is None else bool(minimize)
    kf = KFold(n_splits=min(int(folds), len(y)), shuffle=True, random_state=seed)
    splits = list(kf.split(W))
    rows, per_kind = [], {}
    for kind in models:
        pred = np.empty_like(y)
        fold_models = []
        for train, test in splits:
            m = clone(make_model(kind, seed)).fit(W[train], y[train])
            pred[test] = m.predict(W[test])
            fold_models.append(m)
        rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
        rows.append({"model": kind, "cv_rmse": rmse, "cv_spearman": spearman(y, pred)})
        per_kind[kind] = (pred, fold_models)
    table = pd.DataFrame(rows)
    best = str(table.loc[table["cv_rmse"].idxmin(), "model"])
    pred, fold_models = per_kind[best]
    model = make_model(best, seed).fit(W, y)
    rho = spearman(y, pred)
    return Fit(metric, minimize, list(ids), best, model, fold_models, y, pred, rho,
               bootstrap_rho(y, pred, seed=seed), table, list(mixture_ids or []))


def fit_swarm(swarm, results: pd.DataFrame, metrics: Sequence[str] | None = None,
              directions: dict[str, bool] | None = None, **kw) -> dict[str, Fit]:
    """``fit_metric`` for each metric column of ``results`` (index mixture_id, as ``read_results``);
    ``directions``: {metric: minimize} overriding ``lower_is_better``."""
    metrics = list(metrics or results.columns)
    unknown = [m for m in metrics if m not in results.columns]
    if unknown:
        raise ValueError(f"metric {unknown[0]!r} is not a column of the results ({', '.join(results.columns)})")
    W = swarm.weights.loc[results.index, swarm.ids].to_numpy(np.float64)
    directions = directions or {}
    return {m: fit_metric(W, results[m].to_numpy(np.float64), m, swarm.ids, minimize=directions.get(m),
                          mixture_ids=list(results.index), **kw) for m in metrics}


def metric_safe(name: str) -> str:
    """A metric name usable in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))[:60] or "metric"
