"""Bucketings compared: is the mixture -> metric regression more predictable on GEM buckets?

RegMix's argument for a bucketing is how well a regression over mixtures of its buckets ranks
mixtures it did not see. ``compare_bucketings`` runs the same procedure on each run (GEM topics,
k-means clusters of the same K): a swarm with the same size, concentration, budget rule, max
epochs and seed; the proxy scored on the same held-out target (a corpus label or a file, since
topic ids differ between bucketings; its documents are barred from every training sample); the
same regression candidates. It reports each bucketing's held-out Spearman rho with its bootstrap
interval, whatever the result is.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping

import pandas as pd

from gem import mixture  # mixture.mixture_inputs_from_run looked up at each call: tests count its reads
from gem.mixlab.design import design_swarm
from gem.mixlab.proxy import DEFAULT_EVAL_TOKENS, DEFAULT_TOKENS, RESULT_COLUMN, Target, run_proxy
from gem.mixlab.regression import fit_metric
from gem.runs import FitSettings, fit_run, load_run


def kmeans_twin(ws, gem_run: str) -> str:
    """A Euclidean k-means run with the GEM run's K, seed and representation (fitted when missing);
    returns its name."""
    run = load_run(ws, gem_run)
    k = int(run.info.get("n_clusters") or len(run.model.weights_))
    settings = FitSettings(method="kmeans", k=k, seed=int(run.params.get("seed", 0) or 0),
                           representation=run.representation)
    name = settings.slug()
    if not (ws.run_dir(name) / "params.json").exists():
        fit_run(ws, name, settings)
    return name


def compare_bucketings(ws, runs: Mapping[str, str], target: Target, *, n: int = 64, alpha: float = 1.0,
                       max_epochs: float = 4.0, seed: int = 0, tokens_per_mixture: int = DEFAULT_TOKENS,
                       eval_tokens: int = DEFAULT_EVAL_TOKENS,
                       progress: Callable[[str, int, int], None] | None = None) -> pd.DataFrame:
    """One row per bucketing (``runs``: {label: run name}): K, the chosen model, held-out Spearman
    rho and its 90 % interval, the spread of the proxy metric, seconds. The token budget of each
    swarm is its included tokens (the same corpus minus the same exclusions)."""
    if target.kind == "topic":
        raise ValueError("compare bucketings on a label or file target: topic ids differ between bucketings")
    rows = []
    for label, run in runs.items():
        t0 = time.perf_counter()
        inputs = mixture.mixture_inputs_from_run(ws, run, with_gis=False)
        swarm = design_swarm(inputs.domains, n, alpha, max_epochs=max_epochs, seed=seed, run=run)
        cb = (lambda d, t, lab=label: progress(lab, d, t)) if progress else None
        res = run_proxy(ws, swarm, target, tokens_per_mixture=tokens_per_mixture, eval_tokens=eval_tokens,
                        seed=seed, progress=cb, write=False,
                        documents=inputs.documents).results.set_index("mixture_id")
        y = res.loc[swarm.weights.index, RESULT_COLUMN].to_numpy()
        fit = fit_metric(swarm.matrix(), y, RESULT_COLUMN, swarm.ids, seed=seed,
                         mixture_ids=list(swarm.weights.index))
        rows.append({"bucketing": label, "run": run, "K": len(swarm.ids), "model": fit.model_kind,
                     "rho": fit.rho, "rho_lo": fit.rho_interval[0], "rho_hi": fit.rho_interval[1],
                     "metric_min": float(y.min()), "metric_max": float(y.max()),
                     "seconds": round(time.perf_counter() - t0, 2)})
    return pd.DataFrame(rows)
