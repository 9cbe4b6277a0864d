"""Mixture weights per domain, and the export bundle that trainers read directly.

A *domain* is a non-excluded topic (or a parent topic when mixing at parent level). The domain
table is a pandas DataFrame with one row per domain and the columns of ``DOMAIN_COLUMNS``; the
strategies below fill ``weight`` and ``weight_source``:

- natural      token share n_i / sum n
- balanced     the fitted GEM mass per topic (given as input), renormalised
- temperature  p_i ~ n_i^(1/T)  (T = 1 is natural, T -> inf is uniform)
- unimax       Chung et al. 2023: a uniform token budget per domain, each capped at
               max_epochs x n_i, the leftover spread over the uncapped ones (smallest first)
- imported     weights learned elsewhere (DoReMi domain-weights JSON, RegMix YAML / CSV)
- manual       overrides {domain: weight}; the rest keep the base strategy's proportions

Excluded domains always get weight 0 and are left out of every trainer format. Weights sum to 1
(checked to 1e-12). Under a token budget each domain's implied epochs is weight x budget /
n_tokens; a domain that would need more than ``max_epochs`` is reported in ``Mixture.warnings``.

Renderers return text or bytes; ``write_bundle`` writes a chosen set of them atomically into one
folder with a ``MANIFEST.json`` of sha256 sums, and ``validate_bundle`` parses every file back.
"""
from __future__ import annotations

import csv
import datetime as _dt
import gzip
import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from gem.store import atomic_dir, file_sha256, read_json, validate_name

SCHEMA_VERSION = 1
DOMAIN_COLUMNS = [
    "id", "label", "parent", "n_docs", "n_tokens", "mass", "excluded",
    "natural_weight", "weight", "implied_epochs", "weight_source",
]
STRATEGIES = ("natural", "balanced", "temperature", "unimax", "imported", "manual")
FORMATS = ("megatron", "olmo", "hf", "doremi", "regmix", "weborganizer", "dolma", "assignments", "taxonomy")
SUM_TOL = 1e-12          # weights must sum to 1 within this
AGREE_TOL = 1e-9         # a rendered weight must parse back within this
DEFAULT_PREFIX_TEMPLATE = "{data_root}/{domain_id}_text_document"
DEFAULT_SPLIT_PREFIX_TEMPLATE = "{data_root}/{split}/{domain_id}_text_document"
DEFAULT_OLMO_PATH_TEMPLATE = "{data_root}/{domain_id}/*.npy"
DOLMA_ATTRIBUTE_PREFIX = "gem__domain__"


class MixtureError(ValueError):
    """Bad mixture input: the message says which domain / file and what to do."""


class BundleError(ValueError):
    """An export bundle that does not validate."""


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
    if token_budget is not None and not (float(token_budget) > 0):
        raise MixtureError(f"token budget must be > 0, got {token_budget}")
    if max_epochs is not None and not (float(max_epochs) > 0):
        raise MixtureError(f"max_epochs must be > 0, got {max_epochs}")
    ids = d["id"].tolist()
    tok = np.where(excluded, 0.0, d["n_tokens"].to_numpy(np.float64))
    d["natural_weight"] = _natural(d)
    overrides = {str(k): float(v) for k, v in (overrides or {}).items()}
    base_name = base if strategy == "manual" else strategy
    if base_name == "manual" or base_name not in STRATEGIES:
        raise MixtureError(f"base strategy for manual overrides must be one of "
                           f"{', '.join(s for s in STRATEGIES if s != 'manual')}, got {base!r}")
    if strategy == "manual" and not overrides:
        raise MixtureError("strategy 'manual' needs at least one override (id=weight)")
    notes: list[str] = []

    if base_name == "natural":
        w = natural_weights(tok)
    elif base_name == "temperature":
        w = temperature_weights(tok, temperature)
    elif base_name == "unimax":
        if token_budget is None or max_epochs is None:
            raise MixtureError("UniMax needs both a token budget (--budget-tokens) and max epochs (--max-epochs)")
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
        for i in np.flatnonzero(np.isinf(epochs)):
            warnings.append(f"domain {ids[i]!r} ({d.at[i, 'label']}) has weight {w[i]:.3g} but no tokens")
        if max_epochs is not None:
            for i in np.flatnonzero(np.isfinite(epochs) & (epochs > float(max_epochs) * (1 + 1e-9))):
                warnings.append(
                    f"domain {ids[i]!r} ({d.at[i, 'label']}) needs {epochs[i]:.3g} epochs of its "
                    f"{int(tok[i]):,} tokens under a {int(token_budget):,}-token budget (max {max_epochs:g})")
    else:
        d["implied_epochs"] = np.nan
    return Mixture(
        domains=d[DOMAIN_COLUMNS], strategy=strategy, token_budget=None if token_budget is None else int(token_budget),
        max_epochs=None if max_epochs is None else float(max_epochs),
        temperature=float(temperature) if base_name == "temperature" else None,
        overrides=overrides, level=level, warnings=warnings, metadata=dict(metadata or {}),
        created_at=_now(),
    )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ============================================================================ importers
def _text(source) -> str:
    if isinstance(source, (bytes, bytearray)):
        return source.decode("utf-8")
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and len(source) < 4096
                                     and Path(source).exists()):
        return Path(source).read_text(encoding="utf-8")
    return str(source)


def _check_weights(weights: Mapping, where: str) -> dict[str, float]:
    out = {}
    for k, v in weights.items():
        try:
            value = float(v)
        except (TypeError, ValueError):
            raise MixtureError(f"{where}: weight of {k!r} is {v!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise MixtureError(f"{where}: weight of {k!r} is {value}: weights must be finite and >= 0")
        out[str(k)] = value
    if not out:
        raise MixtureError(f"{where}: no weights found")
    return out


def read_doremi_weights(source, key: str = "train_domain_weights") -> dict[str, float]:
    """DoReMi domain-weights JSON: ``{"train_domain_weights": {domain: w}, ...}`` (a flat
    ``{domain: w}`` object is accepted too). ``source``: path, text or bytes."""
    try:
        obj = json.loads(_text(source))
    except json.JSONDecodeError as exc:
        raise MixtureError(f"DoReMi weights: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(obj, dict):
        raise MixtureError("DoReMi weights: expected a JSON object with 'train_domain_weights'")
    if key in obj:
        obj = obj[key]
    elif any(isinstance(v, dict) for v in obj.values()):
        raise MixtureError(f"DoReMi weights: no '{key}' object (keys: {', '.join(obj)})")
    if not isinstance(obj, dict):
        raise MixtureError(f"DoReMi weights: '{key}' must be an object {{domain: weight}}")
    return _check_weights(obj, "DoReMi weights")


def read_regmix_weights(source, split: str = "train") -> dict[str, float]:
    """RegMix mixture: YAML ``train: {domain: w}``, or CSV with columns ``domain,weight``."""
    import yaml

    text = _text(source)
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.replace(" ", "").lower().startswith("domain,"):
        reader = csv.DictReader(io.StringIO(text))
        if "weight" not in (reader.fieldnames or []):
            raise MixtureError("RegMix CSV: needs columns 'domain' and 'weight'")
        rows = {}
        for lineno, row in enumerate(reader, start=2):
            if row["domain"] in rows:
                raise MixtureError(f"RegMix CSV line {lineno}: domain {row['domain']!r} listed twice")
            rows[row["domain"]] = row["weight"]
        return _check_weights(rows, "RegMix CSV")
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MixtureError(f"RegMix YAML: cannot parse ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(split), dict):
        raise MixtureError(f"RegMix YAML: expected a '{split}:' mapping of domain: weight")
    return _check_weights(obj[split], "RegMix YAML")


# ============================================================================ renderers
def _format_template(template: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise MixtureError(f"bad template {template!r}: {exc}; available fields: {', '.join(fields)}") from None


def _prefix(template: str, row, data_root: str, split: str = "train") -> str:
    fields = dict(data_root=data_root, domain_id=row.id, label=row.label, split=split)
    out = _format_template(template, **fields)
    if any(c.isspace() for c in out):
        raise MixtureError(f"prefix {out!r} contains whitespace: Megatron splits --data-path on spaces")
    return out


def mixture_to_dict(mixture: Mixture) -> dict:
    d = mixture.domains
    domains = []
    for r in d.itertuples(index=False):
        domains.append({
            "id": r.id, "label": r.label, "parent": r.parent, "n_docs": int(r.n_docs), "n_tokens": int(r.n_tokens),
            "natural_weight": float(r.natural_weight), "weight": float(r.weight),
            # null: no budget given (or a weighted domain with 0 tokens, which the warnings name)
            "implied_epochs": float(r.implied_epochs) if np.isfinite(r.implied_epochs) else None,
            "weight_source": r.weight_source, "excluded": bool(r.excluded),
            "mass": None if not np.isfinite(r.mass) else float(r.mass),
        })
    meta = dict(mixture.metadata)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "gem.mixture",
        "created_at": mixture.created_at or _now(),
        "corpus_fingerprint": meta.pop("corpus_fingerprint", None),
        "embedding_model": meta.pop("embedding_model", None),
        "clustering": meta.pop("clustering", None),
        "strategy": {"name": mixture.strategy, "level": mixture.level, "temperature": mixture.temperature,
                     "max_epochs": mixture.max_epochs, "overrides": dict(mixture.overrides)},
        "token_budget": mixture.token_budget,
        "warnings": list(mixture.warnings),
        "extra": meta,
        "domains": domains,
    }


def render_mixture_json(mixture: Mixture) -> str:
    return json.dumps(mixture_to_dict(mixture), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def read_mixture_json(source) -> Mixture:
    """Parse a canonical ``mixture.json`` back into a Mixture (validated)."""
    try:
        obj = json.loads(_text(source))
    except json.JSONDecodeError as exc:
        raise BundleError(f"mixture.json: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(obj, dict) or obj.get("kind") != "gem.mixture":
        raise BundleError("mixture.json: not a GEM mixture (missing kind: gem.mixture)")
    if obj.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"mixture.json: schema_version {obj.get('schema_version')!r}, this version reads {SCHEMA_VERSION}")
    rows = obj.get("domains") or []
    try:
        d = make_domains([r["id"] for r in rows], [r["n_tokens"] for r in rows], n_docs=[r["n_docs"] for r in rows],
                         labels=[r["label"] for r in rows], parents=[r.get("parent") for r in rows],
                         mass=[np.nan if r.get("mass") is None else r["mass"] for r in rows],
                         excluded=[bool(r.get("excluded", False)) for r in rows])
    except (KeyError, TypeError) as exc:
        raise BundleError(f"mixture.json: a domain lacks field {exc}") from None
    d["natural_weight"] = [float(r["natural_weight"]) for r in rows]
    d["weight"] = [float(r["weight"]) for r in rows]
    d["implied_epochs"] = [np.nan if r.get("implied_epochs") is None else float(r["implied_epochs"]) for r in rows]
    d["weight_source"] = [r.get("weight_source", "") for r in rows]
    w = d["weight"].to_numpy(np.float64)
    if (w < 0).any() or abs(w.sum() - 1) > 1e-9:
        raise BundleError(f"mixture.json: weights must be >= 0 and sum to 1 (sum {w.sum()!r})")
    if (w[d["excluded"].to_numpy(bool)] > 0).any():
        raise BundleError("mixture.json: an excluded domain has a weight > 0")
    s = obj.get("strategy") or {}
    meta = dict(obj.get("extra") or {})
    for k in ("corpus_fingerprint", "embedding_model", "clustering"):
        if obj.get(k) is not None:
            meta[k] = obj[k]
    return Mixture(domains=d, strategy=s.get("name", ""), token_budget=obj.get("token_budget"),
                   max_epochs=s.get("max_epochs"), temperature=s.get("temperature"),
                   overrides=dict(s.get("overrides") or {}), level=s.get("level", "topic"),
                   warnings=list(obj.get("warnings") or []), metadata=meta, created_at=obj.get("created_at", ""))


def render_megatron_blend(mixture: Mixture, prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
                          data_root: str = "data") -> str:
    """Megatron ``--data-path`` / ``--data-args-path`` text: ``w1 prefix1 w2 prefix2 ...``."""
    parts = [f"{float(r.weight)!r} {_prefix(prefix_template, r, data_root)}" for r in mixture.active().itertuples(index=False)]
    return " ".join(parts) + "\n"


def parse_megatron_blend(text: str) -> list[tuple[float, str]]:
    """Inverse of ``render_megatron_blend`` (also reads Megatron's whitespace-split list form)."""
    tokens = text.split() if isinstance(text, str) else [str(t) for t in text]
    if len(tokens) % 2:
        raise BundleError(f"Megatron blend: {len(tokens)} tokens, expected weight/prefix pairs")
    out = []
    for k in range(0, len(tokens), 2):
        try:
            out.append((float(tokens[k]), tokens[k + 1]))
        except ValueError:
            raise BundleError(f"Megatron blend: item {k + 1} ({tokens[k]!r}) is not a weight") from None
    return out


def render_megatron_per_split(mixture: Mixture, prefix_template: str = DEFAULT_SPLIT_PREFIX_TEMPLATE,
                              data_root: str = "data", splits=("train", "valid", "test")) -> str:
    """Megatron ``--per-split-data-args-path`` JSON: ``{"train": [w, prefix, ...], ...}``."""
    obj = {}
    for split in splits:
        flat: list = []
        for r in mixture.active().itertuples(index=False):
            flat += [float(r.weight), _prefix(prefix_template, r, data_root, split)]
        obj[split] = flat
    return json.dumps(obj, indent=2) + "\n"


def render_olmo_core(mixture: Mixture, path_template: str = DEFAULT_OLMO_PATH_TEMPLATE, data_root: str = "data",
                     fmt: str = "yaml", seed: int = 0, global_batch_size: int | None = None) -> str:
    """OLMo-core ``SourceMixtureDatasetConfig``: ``source_configs`` of ``SourceMixtureConfig``
    (source_name, target_ratio, max_repetitions, paths). max_repetitions is max_epochs (>= 1),
    or the implied epochs when a domain needs more (the over-budget warning says so)."""
    sources = []
    cap = max(1.0, float(mixture.max_epochs or 1.0))
    for r in mixture.active().itertuples(index=False):
        reps = cap
        if np.isfinite(r.implied_epochs) and r.implied_epochs > reps:
            reps = float(math.ceil(r.implied_epochs * 1000) / 1000)
        sources.append({"source_name": r.id, "target_ratio": float(r.weight), "max_repetitions": reps,
                        "paths": [_prefix(path_template, r, data_root)]})
    obj: dict[str, Any] = {"source_configs": sources, "seed": int(seed)}
    if mixture.token_budget:
        obj["requested_tokens"] = int(mixture.token_budget)
    if global_batch_size:
        obj["global_batch_size"] = int(global_batch_size)
    if fmt == "json":
        return json.dumps(obj, indent=2) + "\n"
    if fmt != "yaml":
        raise MixtureError(f"OLMo-core format must be 'yaml' or 'json', got {fmt!r}")
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def parse_olmo_core(text: str) -> dict[str, float]:
    import yaml

    obj = yaml.safe_load(text)  # YAML is a superset of JSON: reads both renderings
    try:
        return {s["source_name"]: float(s["target_ratio"]) for s in obj["source_configs"]}
    except (KeyError, TypeError) as exc:
        raise BundleError(f"OLMo-core mixture: missing {exc}") from None


def render_hf_interleave(mixture: Mixture, seed: int = 0, stopping_strategy: str = "all_exhausted") -> str:
    """Keyword arguments for ``datasets.interleave_datasets(datasets, **kwargs)``; ``domains``
    gives the order in which to pass the per-domain datasets."""
    a = mixture.active()
    obj = {"domains": a["id"].tolist(),
           "kwargs": {"probabilities": [float(x) for x in a["weight"]], "seed": int(seed),
                      "stopping_strategy": stopping_strategy}}
    return json.dumps(obj, indent=2) + "\n"


def parse_hf_interleave(text: str) -> dict[str, float]:
    obj = json.loads(text)
    doms, probs = obj["domains"], obj["kwargs"]["probabilities"]
    if len(doms) != len(probs):
        raise BundleError(f"HF interleave: {len(doms)} domains but {len(probs)} probabilities")
    return dict(zip(doms, map(float, probs)))


def render_doremi(mixture: Mixture, eval_weights: str = "uniform") -> str:
    """DoReMi domain config: ``train_domain_weights`` (the mixture) and ``eval_domain_weights``
    (uniform over the same domains by default, as in DoReMi's configs; or "same")."""
    w = mixture.weights()
    if eval_weights == "uniform":
        ev = {k: 1.0 / len(w) for k in w}
    elif eval_weights == "same":
        ev = dict(w)
    else:
        raise MixtureError(f"eval_weights must be 'uniform' or 'same', got {eval_weights!r}")
    return json.dumps({"train_domain_weights": w, "eval_domain_weights": ev}, indent=2) + "\n"


def render_regmix(mixture: Mixture) -> str:
    import yaml

    return yaml.safe_dump({"train": mixture.weights()}, sort_keys=False)


def render_regmix_token_prior(mixture: Mixture) -> str:
    """RegMix samples candidate mixtures around the token distribution: domain, tokens, share."""
    a = mixture.active()
    tok = a["n_tokens"].to_numpy(np.float64)
    share = tok / tok.sum() if tok.sum() > 0 else np.zeros_like(tok)
    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["domain", "n_tokens", "token_prior"])
    for dom, n, s in zip(a["id"], a["n_tokens"], share):
        wr.writerow([dom, int(n), repr(float(s))])
    return buf.getvalue()


def render_weborganizer(mixture: Mixture) -> str:
    return json.dumps([{"domain": k, "weight": v} for k, v in mixture.weights().items()], indent=2) + "\n"


def parse_weborganizer(text: str) -> dict[str, float]:
    return {r["domain"]: float(r["weight"]) for r in json.loads(text)}


def render_dolma_attributes(assignments: pd.DataFrame) -> bytes:
    """One Dolma attributes file (JSONL.gz) for one document shard, rows in the shard's order.

    Dolma attribute values are span lists ``[[start, end, score], ...]`` with numeric scores, so
    the domain goes into the attribute *name* (as Dolma's fastText taggers do per label):
    ``{"id": .., "attributes": {"gem__domain__<id>": [[0, n_chars, probability]],
    "gem__domain__gis": [[0, n_chars, gis]]}}``. Mixer filters then select a domain with
    ``$.attributes[?(@.gem__domain__t03)]``. Needs columns id, domain_id, probability, n_chars."""
    need = [c for c in ("id", "domain_id", "probability", "n_chars") if c not in assignments.columns]
    if need:
        raise MixtureError(f"Dolma attributes need assignment columns {need}")
    lines = []
    gis = assignments["gis"].to_numpy(np.float64) if "gis" in assignments.columns else None
    for k, (i, dom, p, n) in enumerate(zip(assignments["id"], assignments["domain_id"],
                                           assignments["probability"], assignments["n_chars"])):
        attrs = {f"{DOLMA_ATTRIBUTE_PREFIX}{dom}": [[0, int(n), float(p)]]}
        if gis is not None and np.isfinite(gis[k]):
            attrs[f"{DOLMA_ATTRIBUTE_PREFIX}gis"] = [[0, int(n), float(gis[k])]]
        lines.append(json.dumps({"id": str(i), "attributes": attrs}, ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    return gzip.compress(data, mtime=0)  # mtime=0: same content, same bytes, same sha256


def read_dolma_attributes(data: bytes) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").splitlines() if line.strip()]


# ============================================================================ bundle
def parse_formats(formats: str | Iterable[str] | None) -> list[str]:
    if formats is None or formats == "all":
        return list(FORMATS)
    items = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    bad = [f for f in items if f not in FORMATS and f != "all"]
    if bad:
        raise MixtureError(f"unknown export format(s) {bad}; choose from all, {', '.join(FORMATS)}")
    return list(FORMATS) if "all" in items else list(dict.fromkeys(items))


def write_bundle(
    out_dir: str | os.PathLike,
    mixture: Mixture,
    formats: str | Iterable[str] | None = "all",
    assignments: pd.DataFrame | None = None,
    taxonomy: Any = None,
    *,
    data_root: str = "data",
    prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
    split_prefix_template: str = DEFAULT_SPLIT_PREFIX_TEMPLATE,
    olmo_path_template: str = DEFAULT_OLMO_PATH_TEMPLATE,
    seed: int = 0,
    dolma_shard_size: int = 100_000,
) -> Path:
    """Write an export bundle folder atomically (built aside, moved into place when complete).

    ``formats`` "all" writes every format whose inputs are present (assignments / Dolma need
    ``assignments``, taxonomy needs ``taxonomy``); naming a format explicitly without its input
    is an error. ``assignments``: DataFrame with id, domain_id, probability, gis, n_tokens (and
    n_chars for Dolma; an optional ``shard`` column names Dolma's per-shard files).
    ``taxonomy``: a JSON-able object (or JSON text). Returns the bundle path."""
    out_dir = Path(out_dir)
    validate_name(out_dir.name, "export folder name")
    explicit = not (formats is None or formats == "all")
    chosen = parse_formats(formats)
    if assignments is None:
        missing = [f for f in ("assignments", "dolma") if f in chosen]
        if explicit and missing:
            raise MixtureError(f"format(s) {missing} need per-document assignments")
        chosen = [f for f in chosen if f not in ("assignments", "dolma")]
    if taxonomy is None:
        if explicit and "taxonomy" in chosen:
            raise MixtureError("format 'taxonomy' needs a taxonomy")
        chosen = [f for f in chosen if f != "taxonomy"]
    if "dolma" in chosen and "n_chars" not in assignments.columns:
        if explicit:
            raise MixtureError("Dolma attributes need the documents' character lengths (assignments column n_chars)")
        chosen.remove("dolma")
    # render everything before touching the disk: a bad template fails with nothing written
    files: dict[str, bytes] = {"mixture.json": render_mixture_json(mixture).encode()}
    if "megatron" in chosen:
        files["megatron_data_path.txt"] = render_megatron_blend(mixture, prefix_template, data_root).encode()
        files["megatron_per_split.json"] = render_megatron_per_split(mixture, split_prefix_template, data_root).encode()
    if "olmo" in chosen:
        files["olmo_core_mixture.yaml"] = render_olmo_core(mixture, olmo_path_template, data_root, "yaml", seed).encode()
        files["olmo_core_mixture.json"] = render_olmo_core(mixture, olmo_path_template, data_root, "json", seed).encode()
    if "hf" in chosen:
        files["hf_interleave_datasets.json"] = render_hf_interleave(mixture, seed).encode()
    if "doremi" in chosen:
        files["doremi_domain_weights.json"] = render_doremi(mixture).encode()
    if "regmix" in chosen:
        files["regmix_mixture.yaml"] = render_regmix(mixture).encode()
        files["regmix_token_prior.csv"] = render_regmix_token_prior(mixture).encode()
    if "weborganizer" in chosen:
        files["weborganizer_domains.json"] = render_weborganizer(mixture).encode()
    if "taxonomy" in chosen:
        tax = json.loads(taxonomy) if isinstance(taxonomy, (str, bytes)) else taxonomy
        files["taxonomy.json"] = (json.dumps(tax, indent=2, ensure_ascii=False, default=_jsonable) + "\n").encode()
    table = None
    if assignments is not None and ("assignments" in chosen or "dolma" in chosen):
        table = _check_assignments(assignments, mixture)
    if "dolma" in chosen:
        if "shard" in table.columns:
            groups = [(validate_name(str(s), "Dolma shard name"), g) for s, g in table.groupby("shard", sort=False)]
        else:
            size = max(1, int(dolma_shard_size))
            groups = [(f"part-{k // size:05d}", table.iloc[k:k + size]) for k in range(0, len(table), size)]
        for name, g in groups:
            files[f"dolma/attributes/gem/{name}.jsonl.gz"] = render_dolma_attributes(g)
    manifest = {
        "schema_version": SCHEMA_VERSION, "kind": "gem.export-bundle", "created_at": mixture.created_at or _now(),
        "formats": [f for f in chosen],
        "options": {"data_root": data_root, "prefix_template": prefix_template,
                    "split_prefix_template": split_prefix_template, "olmo_path_template": olmo_path_template,
                    "seed": int(seed)},
        "files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                  for name, data in sorted(files.items())},
    }
    with atomic_dir(out_dir) as tmp:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if table is not None and "assignments" in chosen:
            cols = ["id", "domain_id", "probability", "gis", "n_tokens"] + [
                c for c in table.columns if c not in ("id", "domain_id", "probability", "gis", "n_tokens")]
            table[cols].to_parquet(tmp / "assignments.parquet", index=False)
            manifest["files"]["assignments.parquet"] = {
                "sha256": file_sha256(tmp / "assignments.parquet"), "bytes": (tmp / "assignments.parquet").stat().st_size}
            manifest["files"] = dict(sorted(manifest["files"].items()))
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"taxonomy: {type(obj).__name__} is not JSON serialisable")


def _check_assignments(assignments: pd.DataFrame, mixture: Mixture) -> pd.DataFrame:
    need = [c for c in ("id", "domain_id") if c not in assignments.columns]
    if need:
        raise MixtureError(f"assignments lack columns {need}")
    t = assignments.copy()
    t["id"] = t["id"].astype(str)
    t["domain_id"] = t["domain_id"].astype(str)
    for c in ("probability", "gis"):
        t[c] = t[c].astype(np.float64) if c in t.columns else np.nan
    t["n_tokens"] = t["n_tokens"].astype(np.int64) if "n_tokens" in t.columns else 0
    known = set(mixture.domains["id"])
    unknown = sorted(set(t["domain_id"]) - known)
    if unknown:
        raise MixtureError(f"assignments name domain(s) not in the mixture: {unknown[:5]}")
    if t["id"].duplicated().any():
        raise MixtureError(f"assignments: document id {t['id'][t['id'].duplicated()].iloc[0]!r} appears twice")
    return t


def validate_bundle(bundle_dir: str | os.PathLike) -> dict:
    """Re-read a bundle: manifest hashes, then every format parsed back and compared with
    ``mixture.json`` (to 1e-9). Raises BundleError naming the first bad file; returns a report
    {"domains", "weights", "formats", "files"}."""
    root = Path(bundle_dir)
    mpath = root / "MANIFEST.json"
    if not mpath.exists():
        raise BundleError(f"{root}: no MANIFEST.json (not an export bundle, or an interrupted copy)")
    manifest = read_json(mpath)
    for name, info in manifest.get("files", {}).items():
        p = root / name
        if not p.exists():
            raise BundleError(f"{p}: listed in MANIFEST.json but missing")
        if file_sha256(p) != info["sha256"]:
            raise BundleError(f"{p}: sha256 differs from MANIFEST.json (file changed after export)")
    mix = read_mixture_json((root / "mixture.json").read_bytes())
    expected = mix.weights()
    opts = manifest.get("options", {})
    data_root = opts.get("data_root", "data")
    files = manifest.get("files", {})

    def same(got: Mapping[str, float], where: str) -> None:
        if list(got) != list(expected):
            raise BundleError(f"{where}: domains {list(got)[:5]} ... differ from mixture.json {list(expected)[:5]} ...")
        for k, v in got.items():
            if abs(v - expected[k]) > AGREE_TOL:
                raise BundleError(f"{where}: weight of {k!r} is {v!r}, mixture.json says {expected[k]!r}")

    def by_prefix(pairs, template, split="train", where=""):
        names = {_prefix(template, r, data_root, split): r.id for r in mix.active().itertuples(index=False)}
        out = {}
        for w, p in pairs:
            if p not in names:
                raise BundleError(f"{where}: unexpected prefix {p!r}")
            out[names[p]] = w
        return out

    def text(name):
        return (root / name).read_text(encoding="utf-8")

    checked = []
    if "megatron_data_path.txt" in files:
        same(by_prefix(parse_megatron_blend(text("megatron_data_path.txt")), opts.get("prefix_template", DEFAULT_PREFIX_TEMPLATE),
                       where="megatron_data_path.txt"), "megatron_data_path.txt")
        per = json.loads(text("megatron_per_split.json"))
        for split in ("train", "valid", "test"):
            same(by_prefix(parse_megatron_blend([str(x) for x in per[split]]),
                           opts.get("split_prefix_template", DEFAULT_SPLIT_PREFIX_TEMPLATE), split, "megatron_per_split.json"),
                 f"megatron_per_split.json[{split}]")
        checked.append("megatron")
    if "olmo_core_mixture.yaml" in files:
        same(parse_olmo_core(text("olmo_core_mixture.yaml")), "olmo_core_mixture.yaml")
        same(parse_olmo_core(text("olmo_core_mixture.json")), "olmo_core_mixture.json")
        checked.append("olmo")
    if "hf_interleave_datasets.json" in files:
        same(parse_hf_interleave(text("hf_interleave_datasets.json")), "hf_interleave_datasets.json")
        checked.append("hf")
    if "doremi_domain_weights.json" in files:
        same(read_doremi_weights(text("doremi_domain_weights.json")), "doremi_domain_weights.json")
        checked.append("doremi")
    if "regmix_mixture.yaml" in files:
        same(read_regmix_weights(text("regmix_mixture.yaml")), "regmix_mixture.yaml")
        checked.append("regmix")
    if "weborganizer_domains.json" in files:
        same(parse_weborganizer(text("weborganizer_domains.json")), "weborganizer_domains.json")
        checked.append("weborganizer")
    active = set(expected)
    if "assignments.parquet" in files:
        a = pd.read_parquet(root / "assignments.parquet")
        miss = [c for c in ("id", "domain_id", "probability", "gis", "n_tokens") if c not in a.columns]
        if miss:
            raise BundleError(f"assignments.parquet: missing columns {miss}")
        unknown = set(a["domain_id"].astype(str)) - set(mix.domains["id"])
        if unknown:
            raise BundleError(f"assignments.parquet: unknown domain ids {sorted(unknown)[:5]}")
        checked.append("assignments")
    dolma = sorted(n for n in files if n.startswith("dolma/"))
    for name in dolma:
        for rec in read_dolma_attributes((root / name).read_bytes()):
            doms = [k[len(DOLMA_ATTRIBUTE_PREFIX):] for k in rec["attributes"] if k != f"{DOLMA_ATTRIBUTE_PREFIX}gis"]
            if len(doms) != 1 or doms[0] not in set(mix.domains["id"]):
                raise BundleError(f"{name}: document {rec.get('id')!r} has domain attributes {doms}")
    if dolma:
        checked.append("dolma")
    if "taxonomy.json" in files:
        json.loads(text("taxonomy.json"))
        checked.append("taxonomy")
    return {"domains": len(mix.domains), "weights": expected, "active": sorted(active), "formats": checked,
            "files": sorted(files) + ["MANIFEST.json"], "warnings": mix.warnings}


def bundle_zip_bytes(bundle_dir: str | os.PathLike) -> bytes:
    """The bundle as a zip (for a download button), entries under the bundle's folder name."""
    root = Path(bundle_dir)
    if not (root / "MANIFEST.json").exists():
        raise BundleError(f"{root}: not an export bundle (no MANIFEST.json)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"{root.name}/{p.relative_to(root).as_posix()}")
    return buf.getvalue()


# ============================================================================ from a fitted run
def run_domains(
    assignments: pd.DataFrame,
    corpus: pd.DataFrame,
    n_clusters: int,
    mass: Iterable | None = None,
    topics: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Topic-level domain table of one run, and its per-document table.

    ``assignments``: id, cluster (and probability) per document. ``corpus``: id, n_tokens (text
    gives n_chars for Dolma). ``mass``: the fitted GEM mass per cluster (``model.weights_``).
    ``topics``: the taxonomy's topics of this run (``Taxonomy.topics(run=...)``: cluster, id,
    name, parent, parent_name, excluded) — the stable ids; without it a cluster's id is "t<k>".
    Returns (domains, documents[id, cluster, topic_id, probability, n_tokens, n_chars],
    parent_labels)."""
    need = [c for c in ("id", "cluster") if c not in assignments.columns]
    if need:
        raise MixtureError(f"run assignments lack columns {need}")
    if "n_tokens" not in corpus.columns:
        raise MixtureError("corpus has no n_tokens column: re-ingest it (gem ingest counts tokens)")
    K = int(n_clusters)
    cl = assignments["cluster"].to_numpy().astype(np.int64)
    if cl.size and (cl.min() < 0 or cl.max() >= K):
        raise MixtureError(f"run assignments name cluster {int(cl.max())} but the model has {K} clusters")
    docs = pd.DataFrame({"id": assignments["id"].astype(str).to_numpy(), "cluster": cl})
    docs["probability"] = (assignments["probability"].to_numpy(np.float64) if "probability" in assignments.columns
                           else np.nan)
    cidx = pd.Index(corpus["id"].astype(str))
    pos = cidx.get_indexer(docs["id"])
    if (pos < 0).any():
        raise MixtureError(f"run document {docs['id'][pos < 0].iloc[0]!r} is not in the workspace corpus "
                           "(the corpus changed after the fit: re-run `gem fit`)")
    docs["n_tokens"] = corpus["n_tokens"].to_numpy()[pos].astype(np.int64)
    if "text" in corpus.columns:
        docs["n_chars"] = corpus["text"].astype(str).str.len().to_numpy()[pos].astype(np.int64)
    width = max(2, len(str(K - 1)))
    ids = [f"t{k:0{width}d}" for k in range(K)]
    labels = [f"topic {k}" for k in range(K)]
    parents: list[str | None] = [None] * K
    excluded = [False] * K
    parent_labels: dict[str, str] = {}
    if topics is not None and len(topics):
        t = topics.dropna(subset=["cluster"])
        by_cluster = {int(r.cluster): r for r in t.itertuples(index=False)}
        missing = [k for k in range(K) if k not in by_cluster]
        if missing:
            raise MixtureError(f"the taxonomy maps no topic to cluster(s) {missing[:5]} of this run: re-sync it")
        for k in range(K):
            r = by_cluster[k]
            ids[k] = str(r.id)
            labels[k] = str(r.name) if isinstance(r.name, str) and r.name else str(r.id)
            parent = getattr(r, "parent", None)
            parents[k] = parent if isinstance(parent, str) and parent else None
            excluded[k] = bool(r.excluded)
            pname = getattr(r, "parent_name", None)
            if parents[k] and isinstance(pname, str) and pname:
                parent_labels[parents[k]] = pname
    docs["topic_id"] = np.asarray(ids, dtype=object)[cl] if K else []
    n_docs = np.bincount(cl, minlength=K)
    n_tok = np.bincount(cl, weights=docs["n_tokens"].to_numpy(np.float64), minlength=K)
    domains = make_domains(ids, n_tok.round().astype(np.int64), n_docs=n_docs, labels=labels, parents=parents,
                           mass=None if mass is None else np.asarray(mass, dtype=np.float64), excluded=excluded)
    return domains, docs, parent_labels


def corpus_fingerprint(path: str | os.PathLike) -> str:
    """The corpus fingerprint written into mixture.json: ``sha256:<hex>`` of the file's bytes."""
    return "sha256:" + file_sha256(path)


def run_metadata(ws, representation: str, clustering: dict, fingerprint: str | None = None) -> dict[str, Any]:
    """Provenance for mixture.json: the corpus fingerprint (``fingerprint`` when the caller already
    has it, else hashed now), the embedding model of ``representation`` and the ``clustering``."""
    meta_path = ws.embeddings_meta_path(representation)
    emb_meta = read_json(meta_path) if meta_path.exists() else {}
    return {
        "corpus_fingerprint": fingerprint or corpus_fingerprint(ws.corpus_path),
        "embedding_model": emb_meta.get("fingerprint") or emb_meta.get("model") or None,
        "clustering": clustering,
    }


@dataclass
class RunMixtureInputs:
    """Everything ``mixture_inputs_from_run`` gathers for one run (used by the CLI and the app)."""

    domains: pd.DataFrame
    documents: pd.DataFrame
    parent_labels: dict[str, str]
    metadata: dict[str, Any]
    taxonomy: dict | None
    notes: list[str]

    def build(self, strategy: str, level: str = "topic", **kw) -> tuple[Mixture, pd.DataFrame]:
        """The mixture and the assignments table for ``write_bundle`` (domain ids at ``level``)."""
        mix = build_mixture(self.domains, strategy, level=level, parent_labels=self.parent_labels,
                            metadata=self.metadata, **kw)
        mix.warnings = list(self.notes) + mix.warnings
        return mix, self.assignments(level)

    def assignments(self, level: str = "topic") -> pd.DataFrame:
        """Per-document rows for ``write_bundle``, with domain ids at ``level``."""
        t = self.domains
        domain_of = {i: topic_domain_id(i, p, bool(x), level) for i, p, x in zip(t["id"], t["parent"], t["excluded"])}
        a = self.documents.copy()
        a["domain_id"] = a["topic_id"].map(domain_of)
        if "gis" not in a.columns:
            a["gis"] = np.nan
        return a


def mixture_inputs_from_run(ws, run_name: str, with_gis: bool = True) -> RunMixtureInputs:
    """Gather a saved run's domains (stable taxonomy ids when the run is synced into the
    workspace taxonomy, else "t<k>"), documents, GIS, and provenance for mixture.json."""
    from gem.runs import load_run

    run = load_run(ws, run_name)
    model = run.model
    corpus = ws.load_corpus()
    notes: list[str] = []
    mass = getattr(model, "weights_", None)
    K = int(len(mass) if mass is not None else np.asarray(model.mean_directions_).shape[0])
    topics, taxonomy = None, None
    if Path(ws.taxonomy_db).exists():
        from gem.taxonomy import Taxonomy

        tax = Taxonomy(ws.taxonomy_db)
        try:
            topics = tax.topics(run=run_name)
        except KeyError:
            notes.append(f"run {run_name!r} is not synced into the taxonomy: domains use cluster ids t<k>")
        taxonomy = tax.export_json()
    domains, docs, parent_labels = run_domains(run.assignments, corpus, K, mass=mass, topics=topics)
    params = dict(getattr(run, "params", {}) or {})
    rep = run.representation
    if with_gis:
        try:
            from gem.gis import gis_for_model

            X_all = ws.load_embeddings(rep, mmap=True)
            pos = pd.Index(corpus["id"].astype(str)).get_indexer(docs["id"])
            docs["gis"] = gis_for_model(np.asarray(X_all[pos], dtype=np.float32), model,
                                        labels=docs["cluster"].to_numpy())
        except FileNotFoundError as exc:
            notes.append(f"no GIS in assignments ({exc})")
    if taxonomy is None:
        taxonomy = {"format": "gem-topics", "run": run_name,
                    "topics": [{"id": r.id, "cluster": k, "label": r.label, "n_docs": int(r.n_docs),
                                "n_tokens": int(r.n_tokens)} for k, r in enumerate(domains.itertuples(index=False))]}
    metadata = run_metadata(ws, rep, {"run": run_name, "method": getattr(run, "method", None),
                                      "representation": rep, "n_clusters": K, "params": params})
    return RunMixtureInputs(domains, docs, parent_labels, metadata, taxonomy, notes)
