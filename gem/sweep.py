"""The lambda trade-off curve: balance vs meaning vs stability across GEM's balance strength.

``lambda_sweep(X, labels_ref, k, lambdas, seeds)`` fits, for every seed, GEM with
``balance="auto"`` once, then every lambda warm-started from that fit (as the app does when only
the balance changes: ``warm_start=True`` from a copy of the auto fit). Per lambda (and for "auto")
it reports, averaged over the seeds:

- ``normalized_entropy`` and ``largest_share`` (balance; ``gem.metrics.balance_report``),
- ``nmi_<col>`` / ``ari_<col>`` to each reference labelling (meaning; ``gem.metrics.agreement``),
- ``stability``: mean ARI between the fits of different seeds (``gem.metrics.mean_pairwise_ari``;
  1 = every seed gives the same partition),

plus the same figures for k-means on raw and on unit vectors (``references``), the horizontal
lines a curator compares against; their ``balance`` and ``lambda`` are None (k-means has no λ:
an empty cell in a table, null in JSON, never a number). The default lambdas are the app's named balance stops up to
"strong" (0 ... 20000), so a point of the curve is a setting the sidebar offers.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .metrics import agreement, balance_report, mean_pairwise_ari

__all__ = ["DEFAULT_LAMBDAS", "SweepResult", "lambda_sweep", "summarise"]

DEFAULT_LAMBDAS = (0.0, 10.0, 100.0, 1000.0, 5000.0, 20000.0)
ProgressFn = Callable[[int, int, str], None]


@dataclass
class SweepResult:
    rows: list[dict]  # one per lambda, "auto" first (balance "auto" or the lambda)
    references: list[dict]  # k-means raw / unit (balance and lambda None)
    k: int
    seeds: list[int]
    seconds: float = 0.0
    labels: dict = field(default_factory=dict, repr=False)  # row name -> [labels per seed]

    def table(self) -> list[dict]:
        """Every row (GEM rows, then references) as plain JSON-able dicts."""
        return [dict(r) for r in self.rows + self.references]


def summarise(name: str, labelings: list[np.ndarray], k: int, references: dict | None = None, **extra) -> dict:
    """Mean balance and agreement over the seeds' labelings, and their stability."""
    reps = [balance_report(lab, k) for lab in labelings]
    row = {"method": name, **extra,
           "normalized_entropy": float(np.mean([r["normalized_entropy"] for r in reps])),
           "largest_share": float(np.mean([r["largest_share"] for r in reps])),
           "effective_clusters": float(np.mean([r["effective_clusters"] for r in reps])),
           "stability": mean_pairwise_ari(labelings)}
    for col, ref in (references or {}).items():
        agr = [agreement(lab, ref) for lab in labelings]
        row[f"nmi_{col}"] = float(np.mean([a["nmi"] for a in agr]))
        row[f"ari_{col}"] = float(np.mean([a["ari"] for a in agr]))
    return row


def lambda_sweep(X, labels_ref: dict | None = None, k: int = 24, lambdas=DEFAULT_LAMBDAS, seeds=(0, 1, 2),
                 X_raw=None, progress: ProgressFn | None = None, kmeans_references: bool = True) -> SweepResult:
    """Sweep GEM's lambda on unit rows ``X`` (see the module docstring). ``labels_ref``: {column:
    labels} for NMI / ARI (missing values skipped); ``X_raw``: the raw vectors for k-means's raw
    reference row (default: X). ``progress(done, total, what)`` after every fit."""
    # lazy: gem.baselines and gem.model import scikit-learn (~0.8 s)
    from .baselines import make_estimator
    from .model import GEM

    seeds = [int(s) for s in seeds]
    lambdas = [float(x) for x in lambdas]
    if not seeds:
        raise ValueError("give at least one seed")
    if any(not lam >= 0 for lam in lambdas):
        raise ValueError(f"lambdas must be >= 0, got {lambdas}")
    total = len(seeds) * (1 + len(lambdas) + (2 if kmeans_references else 0))
    done = 0
    t0 = time.perf_counter()

    def tick(what: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total, what)

    auto_labels, auto_lams = [], []
    per_lambda: dict[float, list[np.ndarray]] = {lam: [] for lam in lambdas}
    for seed in seeds:
        auto = GEM(n_clusters=k, balance="auto", random_state=seed).fit(X)
        auto_labels.append(np.asarray(auto.labels_))
        auto_lams.append(float(auto.balance_))
        tick(f"GEM auto, seed {seed}")
        for lam in lambdas:
            est = GEM.from_state(*auto.to_state())  # a copy: every lambda starts from the auto fit
            est.set_params(balance=lam, warm_start=True)
            est.fit(X)
            per_lambda[lam].append(np.asarray(est.labels_))
            tick(f"GEM λ = {lam:g}, seed {seed}")
    rows = [summarise("GEM (auto)", auto_labels, k, labels_ref, balance="auto", lambda_=0.0)]
    rows[0]["lambda"] = float(np.mean(auto_lams))
    rows[0].pop("lambda_")
    labels = {"GEM (auto)": auto_labels}
    for lam in lambdas:
        rows.append(summarise(f"GEM (λ = {lam:g})", per_lambda[lam], k, labels_ref, balance=lam, **{"lambda": lam}))
        labels[rows[-1]["method"]] = per_lambda[lam]
    refs = []
    if kmeans_references:
        for name, method, data in (("k-means (raw vectors)", "kmeans", X if X_raw is None else X_raw),
                                   ("k-means (unit vectors)", "kmeans-unit", X)):
            labs = []
            for seed in seeds:
                labs.append(np.asarray(make_estimator(method, k, random_state=seed).fit(data).labels_))
                tick(f"{name}, seed {seed}")
            refs.append(summarise(name, labs, k, labels_ref, balance=None, **{"lambda": None}))  # no λ: not GEM
            labels[name] = labs
    return SweepResult(rows, refs, int(k), seeds, time.perf_counter() - t0, labels)
