"""Mixture weights: the domain table, the weight strategies and ``Mixture``.

A *domain* is a non-excluded topic (or a parent topic when mixing at parent level). The domain
table is a pandas DataFrame with one row per domain and the columns of ``DOMAIN_COLUMNS``
(``make_domains``); ``build_mixture`` fills ``weight``, ``weight_source`` and, under a token
budget, ``implied_epochs``. The strategies are described in ``gem.mixture``'s docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from gem.mixture.errors import MixtureError
from gem.store import utc_now_z

DOMAIN_COLUMNS = [
    "id", "label", "parent", "n_docs", "n_tokens", "mass", "excluded",
    "natural_weight", "weight", "implied_epochs", "weight_source",
]
STRATEGIES = ("natural", "balanced", "temperature", "unimax", "imported", "manual")
SUM_TOL = 1e-12          # weights must sum to 1 within this
WORST_LISTED = 5         # a summary warning names at most this many domains


# ============================================================================ domain table
def make_domains(
    ids: Iterable,
    n_tokens: Iterable,
    n_docs: Iterable | None = None,
    labels: Iterable | None = None,
    parents: Iterable | None = None,
    mass: Iterable | None = None,
    excluded: Iterable | None = None,
) -> pd.DataFrame:
    """Validated domain table (weights not set yet). ``mass`` is the fitted GEM mass per domain
    (any non-negative scale); ``excluded`` flags domains the curator removed."""
    ids = [str(i) for i in ids]
    n = len(ids)
    if n == 0:
        raise MixtureError("no domains given")
    if len(set(ids)) != n:
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise MixtureError(f"duplicate domain id {dup!r}: domain ids must be unique")

    def col(values, name, default):
        if values is None:
            return list(default)
        values = list(values)
        if len(values) != n:
            raise MixtureError(f"{name}: {len(values)} values for {n} domains")
        return values

    tok = np.asarray(col(n_tokens, "n_tokens", []), dtype=np.float64)
    docs = np.asarray(col(n_docs, "n_docs", [0] * n), dtype=np.float64)
    m = np.asarray(col(mass, "mass", [np.nan] * n), dtype=np.float64)
    for name, arr in (("n_tokens", tok), ("n_docs", docs)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            raise MixtureError(f"{name} of domain {ids[bad[0]]!r} is {arr[bad[0]]}: must be a finite count >= 0")
    bad = np.flatnonzero(np.isfinite(m) & (m < 0))
    if bad.size:
        raise MixtureError(f"mass of domain {ids[bad[0]]!r} is negative ({m[bad[0]]})")
    labels = [str(x) if x is not None else i for x, i in zip(col(labels, "labels", ids), ids)]
    parents = [None if (p is None or (isinstance(p, float) and math.isnan(p)) or p == "") else str(p)
               for p in col(parents, "parents", [None] * n)]
    frame = pd.DataFrame({
        "id": pd.Series(ids, dtype=object),
        "label": pd.Series(labels, dtype=object),
        "parent": pd.Series(parents, dtype=object),
        "n_docs": docs.astype(np.int64),
        "n_tokens": tok.astype(np.int64),
        "mass": m,
        "excluded": np.asarray(col(excluded, "excluded", [False] * n), dtype=bool),
    })
    frame["natural_weight"] = _natural(frame)
    frame["weight"] = np.nan
    frame["implied_epochs"] = np.nan
    frame["weight_source"] = pd.Series([""] * n, dtype=object)
    return frame[DOMAIN_COLUMNS]


def _natural(domains: pd.DataFrame) -> np.ndarray:
    tok = np.where(domains["excluded"].to_numpy(), 0.0, domains["n_tokens"].to_numpy(np.float64))
    total = tok.sum()
    return tok / total if total > 0 else np.zeros_like(tok)


def aggregate_parents(domains: pd.DataFrame, parent_labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Parent-level mixing: included children under one parent become one domain (id = parent
    id; a parent that is itself a topic merges with it). A topic with no parent stays a domain of
    its own; an excluded topic stays its own excluded domain (its documents still need a domain
    id in assignments, and must not carry weight into its parent). Returns a new domain table."""
    parent_labels = dict(parent_labels or {})
    if domains["excluded"].to_numpy(bool).all():
        raise MixtureError("every domain is excluded: nothing to mix")
    rows: dict[str, dict] = {}
    for r in domains.itertuples(index=False):
        key = topic_domain_id(r.id, r.parent, bool(r.excluded), "parent")
        grouped = key != r.id
        agg = rows.setdefault(key, {
            "id": key, "label": parent_labels.get(key, key) if grouped else r.label,
            "excluded": bool(r.excluded), "n_docs": 0, "n_tokens": 0, "mass": 0.0, "has_mass": True})
        agg["n_docs"] += int(r.n_docs)
        agg["n_tokens"] += int(r.n_tokens)
        if np.isfinite(r.mass):
            agg["mass"] += float(r.mass)
        else:
            agg["has_mass"] = False
    out = list(rows.values())
    return make_domains(
        [r["id"] for r in out], [r["n_tokens"] for r in out], n_docs=[r["n_docs"] for r in out],
        labels=[r["label"] for r in out], mass=[r["mass"] if r["has_mass"] else np.nan for r in out],
        excluded=[r["excluded"] for r in out],
    )


def topic_domain_id(topic_id: str, parent: str | None, excluded: bool, level: str) -> str:
    """The mixing domain a topic's documents belong to: its parent at parent level (unless the
    topic is excluded or has no parent), else the topic itself."""
    if level == "parent" and parent is not None and not excluded:
        return str(parent)
    return str(topic_id)


# ============================================================================ strategies
def natural_weights(n_tokens) -> np.ndarray:
    n = np.asarray(n_tokens, dtype=np.float64)
    if n.sum() <= 0:
        raise MixtureError("all domains have 0 tokens: natural weights are undefined")
    return n / n.sum()


def natural_target(labels, n_tokens, n_clusters: int, floor: float = 1e-6) -> np.ndarray:
    """The "natural" target composition of a GEM fit: each cluster's share of the tokens of the
    documents it holds (``labels`` -1: a document the fit left out), floored at ``floor`` and
    renormalised, since GEM's target shares must be positive."""
    labels = np.asarray(labels)
    tokens = np.asarray(n_tokens, dtype=np.float64)
    fitted = labels >= 0
    share = np.bincount(labels[fitted], weights=tokens[fitted], minlength=n_clusters).astype(np.float64)
    if not share.sum() > 0:
        raise MixtureError("no tokens in the fitted documents: the natural target is undefined")
    share = np.maximum(share / share.sum(), floor)
    return share / share.sum()


def temperature_weights(n_tokens, temperature: float) -> np.ndarray:
    """p_i ~ n_i^(1/T), computed in log space (no overflow for large counts / small T)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise MixtureError(f"temperature must be a finite number > 0, got {temperature}")
    n = np.asarray(n_tokens, dtype=np.float64)
    if not (n > 0).any():
        raise MixtureError("all domains have 0 tokens: temperature weights are undefined")
    logp = np.full(n.shape, -np.inf)
    pos = n > 0
    logp[pos] = np.log(n[pos]) / temperature
    p = np.exp(logp - logp[pos].max())
    return p / p.sum()


def unimax_weights(n_tokens, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax (Chung et al. 2023): walk the domains from smallest to largest, giving each the
    uniform share of the budget still left, capped at max_epochs x its tokens. When every domain
    is capped (budget > max_epochs x corpus) the allocation falls short of the budget; the
    weights are then the capped allocation renormalised, and implied epochs exceed max_epochs
    (reported by ``build_mixture``)."""
    if not (budget > 0 and math.isfinite(budget)):
        raise MixtureError(f"UniMax needs a token budget > 0, got {budget}")
    if not (max_epochs > 0 and math.isfinite(max_epochs)):
        raise MixtureError(f"max_epochs must be a finite number > 0, got {max_epochs}")
    n = np.asarray(n_tokens, dtype=np.float64)
    if not (n > 0).any():
        raise MixtureError("all domains have 0 tokens: UniMax is undefined")
    alloc = np.zeros_like(n)
    order = [i for i in np.argsort(n, kind="stable") if n[i] > 0]
    left = float(budget)
    for rank, i in enumerate(order):
        share = left / (len(order) - rank)
        alloc[i] = min(share, max_epochs * n[i])
        left -= alloc[i]
    return alloc / alloc.sum()


def apply_overrides(base: np.ndarray, ids: list[str], overrides: Mapping[str, float],
                    excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fix the given domains' weights; the rest share 1 - sum(overrides) in the base proportions.

    Returns (weights, overridden mask)."""
    base = np.asarray(base, dtype=np.float64)
    excluded = np.zeros(len(ids), bool) if excluded is None else np.asarray(excluded, bool)
    index = {d: k for k, d in enumerate(ids)}
    fixed = np.zeros(len(ids), bool)
    w = np.zeros(len(ids))
    for dom, value in overrides.items():
        dom = str(dom)
        if dom not in index:
            raise MixtureError(f"manual weight for unknown domain {dom!r}; known domains: {', '.join(ids[:10])}"
                               + (" ..." if len(ids) > 10 else ""))
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise MixtureError(f"manual weight of domain {dom!r} is {value}: weights must be >= 0")
        if excluded[index[dom]] and value > 0:
            raise MixtureError(f"domain {dom!r} is excluded: it cannot get a manual weight (include it first)")
        w[index[dom]] = value
        fixed[index[dom]] = True
    total = w[fixed].sum()
    if total > 1 + 1e-9:
        raise MixtureError(f"manual weights sum to {total:.6g} > 1: lower them so the rest can share 1 - sum")
    free = ~fixed & ~excluded
    rest = base[free].sum()
    left = max(0.0, 1.0 - total)
    if free.any() and rest > 0:
        w[free] = left * base[free] / rest
    elif left > 1e-9:
        raise MixtureError(
            f"manual weights sum to {total:.6g} < 1 and no other domain has weight to take the remaining "
            f"{left:.6g}: make them sum to 1 or leave some domain free")
    if w.sum() <= 0:
        raise MixtureError("all weights are 0 after the manual overrides")
    return w / w.sum(), fixed


# ============================================================================ the mixture
@dataclass
class Mixture:
    """A domain table with chosen weights, plus what produced it (for ``mixture.json``)."""

    domains: pd.DataFrame
    strategy: str
    token_budget: int | None = None
    max_epochs: float | None = None
    temperature: float | None = None
    overrides: dict[str, float] = field(default_factory=dict)
    level: str = "topic"
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def active(self) -> pd.DataFrame:
        """Domains that get data: not excluded, weight > 0 (what trainer formats list)."""
        d = self.domains
        return d[(~d["excluded"].to_numpy(bool)) & (d["weight"].to_numpy(np.float64) > 0)]

    def weights(self) -> dict[str, float]:
        a = self.active()
        return dict(zip(a["id"].tolist(), a["weight"].astype(float).tolist()))


def build_mixture(
    domains: pd.DataFrame,
    strategy: str = "natural",
    *,
    token_budget: float | None = None,
    max_epochs: float | None = 4.0,
    temperature: float = 1.0,
    overrides: Mapping[str, float] | None = None,
    base: str = "natural",
    imported: Mapping[str, float] | None = None,
    level: str = "topic",
    parent_labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Mixture:
    """Choose weights for ``domains`` (a table from ``make_domains``).

    strategy "manual" applies ``overrides`` on top of ``base`` (any other strategy); any strategy
    accepts ``overrides`` the same way. ``level="parent"`` first aggregates children under their
    parent. ``imported`` is a {domain: weight} dict (``read_doremi_weights`` /
    ``read_regmix_weights``) for strategy "imported".
    """
    if strategy not in STRATEGIES:
        raise MixtureError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if level not in ("topic", "parent"):
        raise MixtureError(f"level must be 'topic' or 'parent', got {level!r}")
    missing = [c for c in ("id", "n_tokens", "excluded") if c not in domains.columns]
    if missing:
        raise MixtureError(f"domain table lacks columns {missing}: build it with make_domains()")
    if level == "parent":
        domains = aggregate_parents(domains, parent_labels)
    d = domains.copy().reset_index(drop=True)
    excluded = d["excluded"].to_numpy(bool)
    if excluded.all():
        raise MixtureError("every domain is excluded: nothing to mix")
    base_name = base if strategy == "manual" else strategy
    if base_name == "manual" or base_name not in STRATEGIES:
        raise MixtureError(f"base strategy for manual overrides must be one of "
                           f"{', '.join(s for s in STRATEGIES if s != 'manual')}, got {base!r}")
    if base_name == "unimax" and not token_budget:  # None or 0 (the app's "0 = none")
        raise MixtureError("UniMax needs a token budget: set one (the training tokens of this mix, which "
                           "UniMax spreads uniformly over the domains, each capped at max epochs)")
    if base_name == "unimax" and max_epochs is None:
        raise MixtureError("UniMax needs max epochs: set one (the most repetitions of any one domain)")
    if token_budget is not None and not (math.isfinite(float(token_budget)) and float(token_budget) > 0):
        raise MixtureError(f"token budget must be a finite number > 0, got {token_budget}")
    if max_epochs is not None and not (math.isfinite(float(max_epochs)) and float(max_epochs) > 0):
        raise MixtureError(f"max_epochs must be a finite number > 0, got {max_epochs}")
    ids = d["id"].tolist()
    tok = np.where(excluded, 0.0, d["n_tokens"].to_numpy(np.float64))
    d["natural_weight"] = _natural(d)
    overrides = {str(k): float(v) for k, v in (overrides or {}).items()}
    if strategy == "manual" and not overrides:
        raise MixtureError("strategy 'manual' needs at least one override (id=weight)")
    notes: list[str] = []

    if base_name == "natural":
        w = natural_weights(tok)
    elif base_name == "temperature":
        w = temperature_weights(tok, temperature)
    elif base_name == "unimax":
        w = unimax_weights(tok, float(token_budget), float(max_epochs))
    elif base_name == "balanced":
        m = d["mass"].to_numpy(np.float64)
        if not np.isfinite(m[~excluded]).all():
            raise MixtureError("balanced weights need the fitted GEM mass of every domain (column 'mass')")
        m = np.where(excluded, 0.0, np.nan_to_num(m))
        if m.sum() <= 0:
            raise MixtureError("the fitted mass of all included domains is 0")
        w = m / m.sum()
    else:  # imported
        if not imported:
            raise MixtureError("strategy 'imported' needs weights (a DoReMi JSON or RegMix YAML/CSV file)")
        known = set(ids)
        unknown = [k for k in imported if str(k) not in known]
        if unknown:
            raise MixtureError(f"imported weights name unknown domain(s) {unknown[:5]}: they must use this "
                               f"export's domain ids ({', '.join(ids[:5])} ...)")
        w = np.array([float(imported.get(i, 0.0)) for i in ids])
        if (~np.isfinite(w) | (w < 0)).any():
            raise MixtureError("imported weights must be finite and >= 0")
        absent = [i for i, x in zip(ids, excluded) if not x and i not in imported]
        if absent:
            notes.append(f"imported weights do not list {len(absent)} domain(s) ({', '.join(absent[:5])}); they get 0")
        w = np.where(excluded, 0.0, w)
        if w.sum() <= 0:
            raise MixtureError("imported weights of the included domains sum to 0")
        w = w / w.sum()

    source = np.array([base_name] * len(ids), dtype=object)
    if overrides:
        w, fixed = apply_overrides(w, ids, overrides, excluded)
        source[fixed] = "manual"
    w = np.where(excluded, 0.0, w)
    w = w / w.sum()
    source[excluded] = "excluded"
    total = float(w.sum())
    assert abs(total - 1.0) <= SUM_TOL, f"weights sum to {total!r}"
    d["weight"] = w
    d["weight_source"] = source

    warnings = list(notes)
    if token_budget is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            epochs = np.where(w > 0, w * float(token_budget) / np.where(tok > 0, tok, np.nan), 0.0)
        epochs = np.where((w > 0) & (tok <= 0), np.inf, epochs)
        d["implied_epochs"] = epochs
        warnings += epoch_warnings(d, epochs, int(token_budget), max_epochs)
    else:
        d["implied_epochs"] = np.nan
    return Mixture(
        domains=d[DOMAIN_COLUMNS], strategy=strategy, token_budget=None if token_budget is None else int(token_budget),
        max_epochs=None if max_epochs is None else float(max_epochs),
        temperature=float(temperature) if base_name == "temperature" else None,
        overrides=overrides, level=level, warnings=warnings, metadata=dict(metadata or {}),
        created_at=utc_now_z(),
    )


def epoch_warnings(domains: pd.DataFrame, epochs: np.ndarray, token_budget: int,
                   max_epochs: float | None) -> list[str]:
    """At most two summary warnings under a token budget, however many domains they concern: the
    weighted domains with no tokens, and the domains needing more than ``max_epochs`` epochs
    (their count, and the worst ``WORST_LISTED`` by implied epochs)."""
    ids, labels = domains["id"].tolist(), domains["label"].tolist()
    tok = domains["n_tokens"].to_numpy(np.float64)
    out = []

    def listed(rows, describe) -> str:
        text = ", ".join(f"{ids[i]!r} ({labels[i]}) {describe(i)}" for i in rows[:WORST_LISTED])
        return text + (f" and {len(rows) - WORST_LISTED} more" if len(rows) > WORST_LISTED else "")

    empty = list(np.flatnonzero(np.isinf(epochs)))
    if empty:
        weight = domains["weight"].to_numpy(np.float64)
        out.append(f"{_count(len(empty))} weight but no tokens: "
                   f"{listed(empty, lambda i: f'weight {weight[i]:.3g}')}; give them weight 0 or exclude them")
    if max_epochs is not None:
        over = np.flatnonzero(np.isfinite(epochs) & (epochs > float(max_epochs) * (1 + 1e-9)))
        worst = list(over[np.argsort(-epochs[over], kind="stable")])
        if worst:
            out.append(
                f"{_count(len(worst), 'needs', 'need')} more than {max_epochs:g} epochs under a "
                f"{token_budget:,}-token budget; worst: "
                f"{listed(worst, lambda i: f'{epochs[i]:.3g} epochs of {int(tok[i]):,} tokens')}. "
                "Lower the budget, raise max epochs, or give these domains less weight")
    return out


def _count(n: int, one: str = "has", many: str = "have") -> str:
    return f"1 domain {one}" if n == 1 else f"{n} domains {many}"
