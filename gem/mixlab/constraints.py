"""Feasible mixtures: per-domain bounds and the projection onto them.

A mixture over D domains is feasible when its weights sum to 1 and every weight lies in
``[lo_i, hi_i]``. ``bounds`` builds the bounds from the curator's constraints:

- max epochs under a token budget: ``hi_i <= max_epochs * n_tokens_i / budget`` (a domain may be
  repeated at most ``max_epochs`` times);
- per-domain floors and ceilings (shares of the mix);
- excluded domains (and domains with no tokens): ``lo_i = hi_i = 0``.

``project`` maps any non-negative vector onto that set by *scale and clip*:
``w_i = min(hi_i, max(lo_i, s * v_i))`` with the scale ``s`` found by bisection so that
``sum(w) = 1``. Domains that hit neither bound keep their proportions to each other, so a sample
drawn around the token prior stays a sample around it, only trimmed where a cap binds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

TOL = 1e-12


class ConstraintError(ValueError):
    """Constraints no mixture satisfies (the message says which and what to change)."""


@dataclass(frozen=True)
class Bounds:
    """Per-domain bounds (``lo``, ``hi``) over ``ids``, in the order of the swarm's columns."""

    ids: tuple[str, ...]
    lo: np.ndarray
    hi: np.ndarray

    def feasible(self, w: np.ndarray, tol: float = 1e-9) -> np.ndarray:
        """Which rows of ``w`` (n x D, or one vector) satisfy the bounds and sum to 1."""
        w = np.atleast_2d(w)
        return ((w >= self.lo - tol) & (w <= self.hi + tol)).all(axis=1) & (np.abs(w.sum(axis=1) - 1) <= tol * 10)


def bounds(ids: Sequence[str], n_tokens: Sequence[float], *, token_budget: float | None = None,
           max_epochs: float | None = None, floors: Mapping[str, float] | None = None,
           ceilings: Mapping[str, float] | None = None, excluded: Sequence[str] = ()) -> Bounds:
    """The bounds of the feasible set; ``ConstraintError`` when it is empty or a constraint names
    an unknown domain."""
    ids = tuple(str(i) for i in ids)
    index = {d: k for k, d in enumerate(ids)}
    tok = np.asarray(n_tokens, dtype=np.float64)
    lo = np.zeros(len(ids))
    hi = np.ones(len(ids))
    hi[tok <= 0] = 0.0
    if token_budget is not None and max_epochs is not None:
        if not (float(token_budget) > 0 and float(max_epochs) > 0):
            raise ConstraintError(f"token budget ({token_budget}) and max epochs ({max_epochs}) must be > 0")
        hi = np.minimum(hi, float(max_epochs) * tok / float(token_budget))

    def check(name: str, mapping: Mapping[str, float] | None) -> dict[int, float]:
        out = {}
        for dom, value in (mapping or {}).items():
            if str(dom) not in index:
                raise ConstraintError(f"{name} for unknown domain {str(dom)!r}; domains: {', '.join(ids[:8])}"
                                      + (" ..." if len(ids) > 8 else ""))
            value = float(value)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ConstraintError(f"{name} of domain {str(dom)!r} is {value}: give a share between 0 and 1")
            out[index[str(dom)]] = value
        return out

    for k, v in check("ceiling", ceilings).items():
        hi[k] = min(hi[k], v)
    for dom in excluded:
        if str(dom) not in index:
            raise ConstraintError(f"excluded domain {str(dom)!r} is not in this swarm")
        hi[index[str(dom)]] = 0.0
    for k, v in check("floor", floors).items():
        if v > hi[k] + 1e-12:
            why = "it is excluded" if str(ids[k]) in set(map(str, excluded)) else f"its cap is {hi[k]:.4g}"
            raise ConstraintError(f"floor {v:g} of domain {ids[k]!r} is above what it may get ({why}): "
                                  "lower the floor, raise max epochs or lower the budget")
        lo[k] = v
    if lo.sum() > 1 + 1e-9:
        raise ConstraintError(f"floors sum to {lo.sum():.4g} > 1: lower them")
    if hi.sum() < 1 - 1e-9:
        raise ConstraintError(
            f"the domains' caps sum to {hi.sum():.4g} < 1: no mixture fits (under max epochs the budget needs more "
            "tokens than the included domains may give): lower the token budget, raise max epochs, or loosen "
            "ceilings / exclusions")
    return Bounds(ids, lo, hi)


def project(v: np.ndarray, b: Bounds, iters: int = 200) -> np.ndarray:
    """Scale and clip each row of ``v`` (n x D or one vector, entries >= 0) onto the bounds: the
    feasible ``w_i = min(hi_i, max(lo_i, s v_i))`` with ``sum(w) = 1``. A row whose positive
    entries cannot reach 1 under their caps gets a small uniform share added on the open domains
    first."""
    single = np.ndim(v) == 1
    v = np.atleast_2d(np.asarray(v, dtype=np.float64)).copy()
    v = np.where(np.isfinite(v) & (v > 0), v, 0.0)
    lo, hi = b.lo, b.hi
    open_ = hi > 0
    reach = np.where(v > 0, hi, lo).sum(axis=1)  # sum of w as s -> infinity
    short = reach < 1 - 1e-12
    if short.any():
        v[short] += np.where(open_, 1e-6, 0.0)
    # bisection on log s: sum(clip(s v)) is non-decreasing in s
    lo_s = np.full(v.shape[0], -60.0)
    hi_s = np.full(v.shape[0], 60.0)
    for _ in range(iters):
        mid = 0.5 * (lo_s + hi_s)
        total = np.clip(np.exp(mid)[:, None] * v, lo, hi).sum(axis=1)
        up = total < 1
        lo_s = np.where(up, mid, lo_s)
        hi_s = np.where(up, hi_s, mid)
        if np.all(hi_s - lo_s < 1e-13):
            break
    w = np.clip(np.exp(0.5 * (lo_s + hi_s))[:, None] * v, lo, hi)
    # the bisection leaves a tiny residue: put it on the domains strictly inside their bounds
    resid = 1.0 - w.sum(axis=1)
    free = (w > lo + TOL) & (w < hi - TOL)
    share = np.where(free, w, 0.0)
    denom = share.sum(axis=1)
    ok = denom > 0
    w[ok] += resid[ok, None] * share[ok] / denom[ok, None]
    w = np.clip(w, lo, hi)
    w /= w.sum(axis=1, keepdims=True)
    return w[0] if single else w


def linear_optimum(coef: np.ndarray, b: Bounds, minimize: bool = True) -> np.ndarray:
    """The exact optimum of a linear objective ``coef . w`` over the bounds: every domain at its
    floor, then the rest of the mass poured into the best domains (lowest coefficient when
    minimising) up to their caps."""
    coef = np.asarray(coef, dtype=np.float64)
    w = b.lo.copy()
    left = 1.0 - w.sum()
    for k in np.argsort(coef if minimize else -coef, kind="stable"):
        if left <= 0:
            break
        add = min(b.hi[k] - w[k], left)
        w[k] += add
        left -= add
    return w / w.sum()
