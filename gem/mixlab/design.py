"""Swarm design (RegMix-style): N mixtures around the token prior, each within the max-epochs cap.

A *swarm* is the set of mixtures one trains small proxy models on:

- ``natural``   the token prior (each domain's share of the included tokens);
- ``balanced``  uniform over the included domains;
- ``unimax``    UniMax (``gem.mixture.unimax_weights``: a uniform budget per domain, capped);
- ``m000`` ...  N draws from ``Dirichlet(alpha * prior)``: a small ``alpha`` gives sparse, varied
  mixtures, a large one mixtures close to the prior.

Every mixture is projected onto the feasible set of ``gem.mixlab.constraints`` (weight_i <=
max_epochs * n_tokens_i / budget; scale and clip, so the uncapped domains keep their proportions).
Domains are the run's topics with the taxonomy's stable ids; excluded topics are left out.

On disk (``write_swarm``, one atomic folder, by default ``WS/mixlab/<name>/``)::

    swarm.json                   run, parameters, domains (id, label, tokens), weight_source "mixlab"
    swarm.csv                    mixture_id, kind, one column of weights per domain id
    mixtures/<mixture_id>/       the trainer files of that mixture (Megatron, OLMo-core, HF
                                 interleave, mixture.json, MANIFEST.json), rendered by
                                 gem.mixture.write_bundle exactly as an export bundle
    MANIFEST.json                the sha256 of every file above (kind "gem.mixlab-swarm")

``load_swarm`` checks what the lab reads (swarm.csv and swarm.json against the manifest, each
swarm.csv row finite and summing to 1 over domains of swarm.json); ``verify_swarm(full=True)``
(`gem verify SWARM`) also every mixture's trainer files (``gem.mixture.validate_bundle``) against
its swarm.csv row. A swarm written before manifests has none: its files are checked, not hashed.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from gem.mixlab.constraints import Bounds, bounds, project
from gem.mixture import (
    AGREE_TOL, BundleError, check_files, loads_json, mixture_inputs_from_run, read_manifest, unimax_weights,
    validate_bundle, write_bundle, write_run_bundle,
)
from gem.store import (
    atomic_dir, file_sha256, short, show_path, sweep_leftovers, utc_now_z, validate_name, write_json_atomic,
)

WEIGHT_SOURCE = "mixlab"
SWARM_FORMATS = ("megatron", "olmo", "hf")
FIXED_KINDS = ("natural", "balanced", "unimax")
RESERVED = ("mixture_id", "kind")
MIXLAB_DIR = "mixlab"
SWARM_KIND = "gem.mixlab-swarm"
READ_FILES = ("swarm.csv", "swarm.json")  # what the lab reads of a swarm


@dataclass
class Swarm:
    """A designed swarm: ``weights`` has one row per mixture (index ``mixture_id``), a ``kind``
    column and one column per included domain (``ids``), rows summing to 1."""

    run: str
    domains: pd.DataFrame            # id, label, n_docs, n_tokens, excluded: every domain of the run
    weights: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def ids(self) -> list[str]:
        return [c for c in self.weights.columns if c != "kind"]

    def matrix(self) -> np.ndarray:
        return self.weights[self.ids].to_numpy(np.float64)

    def tokens(self) -> np.ndarray:
        return self.domains.set_index("id").loc[self.ids, "n_tokens"].to_numpy(np.float64)

    def prior(self) -> np.ndarray:
        t = self.tokens()
        return t / t.sum()

    def bounds(self, **constraints) -> Bounds:
        """The feasible set of this swarm's design (its budget and max epochs), plus ``constraints``
        (floors, ceilings, excluded; a different max_epochs / token_budget)."""
        kw = {"token_budget": self.params.get("token_budget"), "max_epochs": self.params.get("max_epochs")}
        kw.update({k: v for k, v in constraints.items() if v is not None})
        return bounds(self.ids, self.tokens(), **kw)

    def fixed(self, kind: str) -> np.ndarray | None:
        rows = self.weights[self.weights["kind"] == kind]
        return None if rows.empty else rows[self.ids].to_numpy(np.float64)[0]


def design_swarm(domains: pd.DataFrame, n: int = 64, alpha: float = 1.0, *, token_budget: float | None = None,
                 max_epochs: float = 4.0, seed: int = 0, run: str = "") -> Swarm:
    """``n`` Dirichlet mixtures plus natural, balanced and UniMax over the included domains of
    ``domains`` (a ``gem.mixture`` domain table), each within ``max_epochs`` under ``token_budget``
    (default: the included tokens, one epoch of the natural mix). Same inputs and seed, same swarm."""
    n = int(n)
    if not 1 <= n <= 10_000:
        raise ValueError(f"swarm size must be between 1 and 10000, got {n}")
    if not (math.isfinite(float(alpha)) and float(alpha) > 0):
        raise ValueError(f"alpha (the Dirichlet concentration) must be a number > 0, got {alpha}")
    d = domains[~domains["excluded"].to_numpy(bool) & (domains["n_tokens"].to_numpy() > 0)]
    ids = [str(i) for i in d["id"]]
    if len(ids) < 2:
        raise ValueError("a swarm needs at least 2 included domains with tokens")
    clash = [i for i in ids if i in RESERVED]
    if clash:
        raise ValueError(f"domain id {clash[0]!r} clashes with a swarm.csv column name")
    tok = d["n_tokens"].to_numpy(np.float64)
    budget = float(token_budget) if token_budget else float(tok.sum())
    b = bounds(ids, tok, token_budget=budget, max_epochs=float(max_epochs))
    prior = tok / tok.sum()
    rng = np.random.default_rng(seed)
    draws = np.empty((n, len(ids)))
    for k in range(n):
        x = rng.dirichlet(np.maximum(float(alpha) * prior, 1e-3))
        while not np.isfinite(x).all() or x.sum() <= 0:  # underflow of every gamma draw: draw again
            x = rng.dirichlet(np.maximum(float(alpha) * prior, 1e-3))
        draws[k] = x
    fixed = np.vstack([prior, np.full(len(ids), 1.0 / len(ids)), unimax_weights(tok, budget, float(max_epochs))])
    w = project(np.vstack([fixed, draws]), b)
    width = max(3, len(str(n - 1)))
    index = list(FIXED_KINDS) + [f"m{k:0{width}d}" for k in range(n)]
    frame = pd.DataFrame(w, columns=ids, index=pd.Index(index, name="mixture_id"))
    frame.insert(0, "kind", list(FIXED_KINDS) + ["dirichlet"] * n)
    params = {"n": n, "alpha": float(alpha), "seed": int(seed), "token_budget": budget,
              "max_epochs": float(max_epochs), "weight_source": WEIGHT_SOURCE,
              "projection": "scale and clip onto w_i <= max_epochs * n_tokens_i / token_budget"}
    return Swarm(run, domains[["id", "label", "n_docs", "n_tokens", "excluded"]].reset_index(drop=True), frame, params)


def swarm_name(run: str, n: int, alpha: float, seed: int) -> str:
    return validate_name(f"{run}-n{int(n)}-a{float(alpha):g}-s{int(seed)}", "swarm name")


def swarm_root(ws) -> Path:
    return Path(ws.root) / MIXLAB_DIR


def list_swarms(ws) -> list[str]:
    root = swarm_root(ws)
    return sorted(p.name for p in root.iterdir() if (p / "swarm.csv").exists()) if root.is_dir() else []


def resolve_swarm(ws, name_or_path: str | os.PathLike) -> Path:
    """A swarm folder given by name (under ``WS/mixlab/``) or by path (CLI)."""
    p = Path(name_or_path)
    try:
        direct = (p / "swarm.csv").exists()
    except (OSError, ValueError):  # a name no path can be (too long, a NUL): try it as a name
        direct = False
    if direct:
        return p
    q = swarm_root(ws) / validate_name(str(name_or_path), "swarm name") if ws is not None else p
    if not (q / "swarm.csv").exists():
        known = ", ".join(list_swarms(ws)) if ws is not None else ""
        raise FileNotFoundError(f"{q}: no swarm there (swarms: {known or 'none'}); design one with `gem mixlab design`")
    return q


def mixture_of(inputs, weights: dict[str, float], *, token_budget: float | None, max_epochs: float | None,
               extra: dict | None = None):
    """A ``gem.mixture.Mixture`` over the run's domains with these weights (strategy "imported"),
    its weight_source "mixlab", the mixlab details in mixture.json's ``extra``."""
    mixture, assignments = inputs.build("imported", imported=weights, token_budget=token_budget,
                                        max_epochs=max_epochs)
    d = mixture.domains
    d.loc[d["weight_source"] == "imported", "weight_source"] = WEIGHT_SOURCE
    mixture.metadata = {**mixture.metadata, "mixlab": dict(extra or {})}
    return mixture, assignments


def write_swarm(out_dir: str | os.PathLike, swarm: Swarm, inputs, formats: Iterable[str] = SWARM_FORMATS,
                progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the swarm folder atomically (see the module docstring); ``inputs``: the run's
    ``gem.mixture.RunMixtureInputs`` (provenance for each mixture.json). Returns the folder."""
    out_dir = Path(out_dir)
    validate_name(out_dir.name, "swarm name")
    formats = list(formats)
    rows = list(swarm.weights.iterrows())
    with atomic_dir(out_dir) as tmp:
        for k, (mid, row) in enumerate(rows):
            weights = {i: float(row[i]) for i in swarm.ids if row[i] > 0}
            mixture, _ = mixture_of(inputs, weights, token_budget=swarm.params["token_budget"],
                                    max_epochs=swarm.params["max_epochs"],
                                    extra={"swarm": out_dir.name, "mixture_id": mid, "kind": row["kind"]})
            write_bundle(tmp / "mixtures" / mid, mixture, formats)
            if progress:
                progress(k + 1, len(rows))
        (tmp / "swarm.csv").write_text(swarm_csv(swarm), encoding="utf-8")
        meta = {"kind": "gem.mixlab-swarm", "run": swarm.run, **swarm.params, "formats": formats,
                "domains": [{"id": str(r.id), "label": str(r.label), "n_docs": int(r.n_docs),
                             "n_tokens": int(r.n_tokens), "excluded": bool(r.excluded)}
                            for r in swarm.domains.itertuples(index=False)]}
        write_json_atomic(tmp / "swarm.json", meta)
        files = {f.relative_to(tmp).as_posix(): {"sha256": file_sha256(f), "bytes": f.stat().st_size}
                 for f in sorted(tmp.rglob("*")) if f.is_file()}
        write_json_atomic(tmp / "MANIFEST.json", {"kind": SWARM_KIND, "created_at": utc_now_z(), "files": files})
    swarm.path = out_dir
    return out_dir


def swarm_csv(swarm: Swarm) -> str:
    buf = io.StringIO()
    swarm.weights.reset_index().to_csv(buf, index=False, float_format="%.17g", lineterminator="\n")
    return buf.getvalue()


def load_swarm(path: str | os.PathLike) -> Swarm:
    """Read a swarm folder back (``swarm.json`` + ``swarm.csv``), checked first: both against the
    swarm's MANIFEST.json (when it has one), every swarm.csv row finite, >= 0 and summing to 1
    over domains of swarm.json (BundleError naming the file otherwise)."""
    path = Path(path)
    manifest = _swarm_manifest(path)
    if manifest is not None:
        check_files(path, manifest, READ_FILES)
    return _read_swarm(path)


def verify_swarm(path: str | os.PathLike, full: bool = True) -> dict:
    """Check a swarm folder: with ``full``, every file of its MANIFEST.json against its sha256 and
    every mixture's trainer files (``validate_bundle``) against its swarm.csv row (to 1e-9); else
    what ``load_swarm`` checks. BundleError naming the first bad file; returns a report
    {"mixtures", "domains", "formats", "files", "manifest"}."""
    path = Path(path)
    manifest = _swarm_manifest(path)
    if manifest is not None:
        check_files(path, manifest, None if full else READ_FILES)
    swarm = _read_swarm(path)
    formats: set[str] = set()
    if full:
        for mid, row in swarm.weights[swarm.ids].iterrows():
            folder = path / "mixtures" / str(mid)
            report = validate_bundle(folder)
            formats.update(report["formats"])
            got = report["weights"]
            extra = sorted(set(got) - set(swarm.ids))
            if extra:
                raise BundleError(f"{show_path(folder / 'mixture.json')}: domain {short(extra[0])!r} is not in swarm.csv")
            for dom in swarm.ids:
                if abs(float(got.get(dom, 0.0)) - float(row[dom])) > AGREE_TOL:
                    raise BundleError(f"{show_path(folder / 'mixture.json')}: weight of {short(dom)!r} is "
                                      f"{got.get(dom, 0.0)!r}, swarm.csv says {float(row[dom])!r}")
    files = sorted(manifest["files"]) if manifest is not None else list(READ_FILES)
    return {"mixtures": len(swarm.weights), "domains": len(swarm.ids), "formats": sorted(formats),
            "files": files + (["MANIFEST.json"] if manifest is not None else []), "manifest": manifest is not None}


def _swarm_manifest(path: Path) -> dict | None:
    if not (path / "MANIFEST.json").exists():
        return None  # a swarm written before manifests
    manifest = read_manifest(path, "a mixlab swarm")
    if manifest.get("kind") != SWARM_KIND:
        raise BundleError(f"{show_path(path / 'MANIFEST.json')}: kind {short(manifest.get('kind'))!r}, not "
                          f"{SWARM_KIND!r} (an export bundle, not a swarm?)")
    return manifest


def _read_swarm(path: Path) -> Swarm:
    """swarm.json and swarm.csv parsed and checked (BundleError naming the file and the line)."""
    jpath, cpath = path / "swarm.json", path / "swarm.csv"
    for f in (jpath, cpath):
        if not f.is_file():
            raise BundleError(f"{show_path(f)}: missing (not a swarm folder, or an interrupted copy)")
    meta = loads_json(jpath.read_bytes(), "swarm.json")
    if not isinstance(meta, dict) or not isinstance(meta.get("domains"), list) or not isinstance(meta.get("run"), str):
        raise BundleError(f"{show_path(jpath)}: expected an object with 'run' and a 'domains' list")
    try:
        domains = pd.DataFrame(meta.pop("domains"))
        domains["id"] = domains["id"].astype(str)
        excluded = set(domains.loc[domains["excluded"].astype(bool), "id"])
        for c in ("n_docs", "n_tokens"):
            domains[c] = domains[c].astype(np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{show_path(jpath)}: a domain lacks id, label, n_docs, n_tokens or excluded ({exc})") from None
    try:
        weights = pd.read_csv(cpath, dtype={"mixture_id": str, "kind": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BundleError(f"{show_path(cpath)}: cannot read it ({str(exc).splitlines()[0]})") from None
    if list(weights.columns[:2]) != list(RESERVED):
        raise BundleError(f"{show_path(cpath)} line 1: expected columns mixture_id, kind, then one per domain")
    weights.columns = [str(c) for c in weights.columns]
    ids = list(weights.columns[2:])
    unknown = [i for i in ids if i not in set(domains["id"]) or i in excluded]
    if unknown or not ids:
        raise BundleError(f"{show_path(cpath)} line 1: column {short(unknown[0]) if unknown else '(none)'!r} is not an "
                          "included domain of swarm.json")
    mids = weights["mixture_id"]
    if mids.isna().any() or mids.duplicated().any():
        k = int(np.flatnonzero(mids.isna().to_numpy() | mids.duplicated().to_numpy())[0])
        raise BundleError(f"{show_path(cpath)} line {k + 2}: mixture id missing or given twice")
    for c in ids:
        if not pd.api.types.is_numeric_dtype(weights[c]):
            raise BundleError(f"{show_path(cpath)}: column {short(c)!r} holds something other than numbers")
    W = weights[ids].to_numpy(np.float64)
    bad = np.flatnonzero(~np.isfinite(W).all(axis=1) | (W < 0).any(axis=1) | (np.abs(W.sum(axis=1) - 1) > AGREE_TOL))
    if bad.size:
        k = int(bad[0])
        raise BundleError(f"{show_path(cpath)} line {k + 2}: the weights of mixture {short(mids.iat[k])!r} must be "
                          f"finite, >= 0 and sum to 1 (sum {W[k].sum()!r})")
    run = meta.pop("run")
    return Swarm(run, domains, weights.set_index("mixture_id"), meta, path)


def design_run(ws, run: str, n: int = 64, alpha: float = 1.0, *, token_budget: float | None = None,
               max_epochs: float = 4.0, seed: int = 0, out_dir: str | os.PathLike | None = None,
               progress: Callable[[int, int], None] | None = None) -> Swarm:
    """Design a swarm over run ``run``'s topics and write it (default ``WS/mixlab/<run>-n<N>-a<alpha>-s<seed>``)."""
    inputs = mixture_inputs_from_run(ws, run, with_gis=False)
    swarm = design_swarm(inputs.domains, n, alpha, token_budget=token_budget, max_epochs=max_epochs, seed=seed, run=run)
    out = Path(out_dir) if out_dir else swarm_root(ws) / swarm_name(run, n, alpha, seed)
    sweep_leftovers(out.parent)  # what a killed design left there
    write_swarm(out, swarm, inputs, progress=progress)
    return swarm


def export_mixture(ws, swarm: Swarm, weights: dict[str, float], out_dir: str | os.PathLike,
                   formats: str | Iterable[str] = "all", *, with_gis: bool = False, extra: dict | None = None,
                   token_budget: float | None = None, max_epochs: float | None = None):
    """Export a mixture over the swarm's domains (the predicted best) as a normal, validated
    ``gem export`` bundle: strategy "imported", each weighted domain's weight_source "mixlab",
    the swarm's budget and max epochs unless given, ``extra`` (metric, fit, prediction) in mixture.json.
    Returns (bundle path, ``validate_bundle`` report)."""
    inputs = mixture_inputs_from_run(ws, swarm.run, with_gis=with_gis)
    mixture, assignments = mixture_of(inputs, weights, token_budget=token_budget or swarm.params.get("token_budget"),
                                      max_epochs=max_epochs or swarm.params.get("max_epochs"),
                                      extra={"swarm": swarm.path.name if swarm.path else None, **(extra or {})})
    return write_run_bundle(inputs, mixture, assignments, out_dir, formats)
