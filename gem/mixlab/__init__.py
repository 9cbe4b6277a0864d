"""Mixture lab: design mixing experiments, read their results, predict the best mixture.

The loop RegMix describes, on the curator's own buckets (a run's topics, taxonomy ids):

1. ``design``      a swarm of mixtures around the token prior (Dirichlet + natural, balanced,
                   UniMax), each within max epochs; swarm.csv and per-mixture trainer files
2. ``proxy``       a built-in Kneser-Ney bigram proxy per mixture, scored on a held-out target,
                   so the loop runs end to end on one CPU machine (or import real results)
3. ``regression``  results CSV -> per-metric regressions (boosted trees, ridge), held-out
                   Spearman rho and its uncertainty
4. ``optimize``    the best predicted mixture under max epochs, floors, ceilings, exclusions
5. ``compare``     the same procedure on GEM and k-means buckets: which is more predictable

``constraints`` holds the feasible set and its projection; ``charts`` the page's figures.
"""
from gem.mixlab.constraints import Bounds, ConstraintError, bounds, linear_optimum, project
from gem.mixlab.design import (
    Swarm, design_run, design_swarm, export_mixture, list_swarms, load_swarm, resolve_swarm, swarm_root,
    verify_swarm,
)
from gem.mixlab.optimize import Best, best_mixture
from gem.mixlab.proxy import BigramKN, Target, parse_target, run_proxy
from gem.mixlab.regression import Fit, fit_metric, fit_swarm, lower_is_better, read_results

__all__ = [
    "Best", "BigramKN", "Bounds", "ConstraintError", "Fit", "Swarm", "Target", "best_mixture", "bounds",
    "design_run", "design_swarm", "export_mixture", "fit_metric", "fit_swarm", "linear_optimum", "list_swarms",
    "load_swarm", "lower_is_better", "parse_target", "project", "read_results", "resolve_swarm", "run_proxy",
    "swarm_root", "verify_swarm",
]
