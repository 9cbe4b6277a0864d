"""The best mixture under the curator's constraints, by searching the simplex with a fitted regression.

``best_mixture`` draws candidate mixtures, keeps them feasible (``gem.mixlab.constraints``:
max epochs under the budget, floors, ceilings, excluded domains at 0), predicts the metric of each
with the ``gem.mixlab.regression.Fit`` and returns the best:

1. candidates: the swarm's own mixtures; ``Dirichlet(alpha * prior)`` draws (the swarm's own
   distribution); Dirichlet draws concentrated around the 10 best-predicted swarm mixtures; and,
   for a linear model on the weights, the exact optimum of the linear objective over the bounds;
2. three refinement rounds around the best so far (Dirichlet draws ever more concentrated), then,
   for a smooth model (ridge variants), SLSQP from the three best candidates;
3. a tree model (``gbt``) is piecewise constant and says nothing beyond the data it saw, so its
   candidates must lie within the swarm's reach (L1 distance to the nearest swarm mixture at most
   the 90th percentile of the swarm's own nearest-neighbour distances), and its answer is the mean
   of its 25 best-predicted candidates, as RegMix averages its top predictions.

Every candidate is projected onto the bounds, so the answer always respects them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gem.mixlab.constraints import Bounds, linear_optimum, project

TREE_TOP_K = 25
REFINE = (50.0, 200.0, 1000.0)


@dataclass
class Best:
    """The predicted best mixture, and the reference mixtures beside it."""

    weights: np.ndarray
    ids: list[str]
    predicted: float
    spread: float
    comparison: pd.DataFrame      # mixture, predicted, spread, measured (NaN when not measured), weights...
    notes: list[str] = field(default_factory=list)
    distance_to_swarm: float = 0.0

    def as_dict(self, min_weight: float = 0.0) -> dict[str, float]:
        return {i: float(w) for i, w in zip(self.ids, self.weights) if w > min_weight}


def _nearest_l1(C: np.ndarray, S: np.ndarray, chunk: int = 2048) -> np.ndarray:
    out = np.empty(len(C))
    for s in range(0, len(C), chunk):
        out[s:s + chunk] = np.abs(C[s:s + chunk, None, :] - S[None, :, :]).sum(axis=2).min(axis=1)
    return out


def swarm_radius(S: np.ndarray) -> float:
    """90th percentile of the swarm mixtures' L1 distances to their nearest other swarm mixture."""
    D = np.abs(S[:, None, :] - S[None, :, :]).sum(axis=2)
    np.fill_diagonal(D, np.inf)
    return float(np.quantile(D.min(axis=1), 0.9))


def _polish(score, starts: np.ndarray, b: Bounds, best: np.ndarray) -> np.ndarray:
    """A smooth model's optimum, refined by SLSQP (bounds and sum = 1) from the best candidates."""
    from scipy.optimize import minimize

    value = float(score(best[None, :])[0])
    for x0 in starts:
        res = minimize(lambda w: float(score(w[None, :])[0]), x0, method="SLSQP",
                       bounds=list(zip(b.lo, b.hi)), constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
                       options={"maxiter": 200, "ftol": 1e-12})
        w = project(np.clip(res.x, b.lo, b.hi), b)
        v = float(score(w[None, :])[0])
        if v < value:
            best, value = w, v
    return best


def best_mixture(fit, swarm, b: Bounds, *, n_candidates: int = 20_000, seed: int = 0) -> Best:
    """Search the feasible set for the mixture ``fit`` predicts best (see the module docstring)."""
    if list(b.ids) != list(swarm.ids):
        raise ValueError("the bounds and the swarm list different domains")
    rng = np.random.default_rng(seed)
    sign = 1.0 if fit.minimize else -1.0
    S = swarm.matrix()
    prior = swarm.prior()
    alpha = float(swarm.params.get("alpha", 1.0))
    notes = []

    def score(C):
        return sign * fit.predict(C)

    S_proj = project(S, b)
    parts = [S_proj, project(rng.dirichlet(np.maximum(alpha * prior, 1e-3), size=n_candidates // 2), b)]
    top = S_proj[np.argsort(score(S_proj))[:10]]
    per = max(1, n_candidates // 2 // (2 * len(top)))
    for conc in (20.0, 100.0):
        for w in top:
            parts.append(project(rng.dirichlet(conc * w + 1e-2, size=per), b))
    if fit.linear_coef is not None:
        parts.append(linear_optimum(fit.linear_coef, b, minimize=fit.minimize)[None, :])
    C = np.vstack(parts)
    radius = None
    if fit.is_tree:
        radius = swarm_radius(S)
        notes.append(f"tree model: candidates kept within L1 distance {radius:.3f} of a swarm mixture (it cannot "
                     f"extrapolate), answer = mean of its {TREE_TOP_K} best predictions (as RegMix does)")

    def trusted(C):
        return C if radius is None else C[_nearest_l1(C, S) <= radius + 1e-12]

    C = trusted(C)
    if len(C) == 0:
        C = S_proj
        notes.append("no candidate within the swarm's reach satisfies the constraints: searched the swarm only")
    s = score(C)
    best = C[np.argmin(s)]
    for conc in REFINE:
        R = trusted(project(rng.dirichlet(conc * best + 1e-3, size=2000), b))
        if len(R):
            C, s = np.vstack([C, R]), np.concatenate([s, score(R)])
            best = C[np.argmin(s)]
    if fit.is_tree:
        best = C[np.argsort(s)[:TREE_TOP_K]].mean(axis=0)  # a convex combination: still feasible
    else:
        best = _polish(score, C[np.argsort(s)[:3]], b, best)
    best = project(best, b)
    predicted = float(fit.predict(best)[0])
    spread = float(fit.predict_spread(best)[0])
    # the references: natural, balanced, UniMax as designed (measured when the swarm was measured)
    rows = []
    measured = dict(zip(fit.mixture_ids, fit.measured)) if fit.mixture_ids else {}
    for kind in ("natural", "balanced", "unimax"):
        w = swarm.fixed(kind)
        if w is not None:
            rows.append((kind, w, measured.get(kind, np.nan)))
    if measured:
        k = int(np.argmin(sign * fit.measured))
        mid = fit.mixture_ids[k]
        rows.append((f"best measured ({mid})", swarm.weights.loc[mid, swarm.ids].to_numpy(np.float64), fit.measured[k]))
    rows.append(("predicted best", best, np.nan))
    W = np.vstack([r[1] for r in rows])
    comp = pd.DataFrame({"mixture": [r[0] for r in rows], "predicted": fit.predict(W),
                         "spread": fit.predict_spread(W), "measured": [r[2] for r in rows]})
    comp = pd.concat([comp, pd.DataFrame(W, columns=swarm.ids)], axis=1)
    dist = float(_nearest_l1(best[None, :], S)[0])
    reach = radius if radius is not None else swarm_radius(S)
    if dist > reach:
        notes.append(f"the predicted best lies {dist:.3f} (L1) from the nearest swarm mixture, beyond the swarm's "
                     f"reach ({reach:.3f}): the fit extrapolates there; measure this mixture before trusting it")
    if fit.model_kind == "ridge":
        notes.append("linear model: its optimum is a corner of the feasible set (the best domains filled to their "
                     "caps)")
    return Best(best, list(swarm.ids), predicted, spread, comp, notes, dist)
