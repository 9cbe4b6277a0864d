"""Trainer formats: each renderer turns a ``Mixture`` into the text (or bytes) one trainer reads,
and its parser reads it back (``validate_bundle`` compares the two); importers read weights
learned elsewhere (DoReMi, RegMix). Also the canonical ``mixture.json`` and the strict JSON both
sides use: NaN and Infinity are not JSON, so nothing here writes or accepts them.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from gem.mixture.errors import BundleError, MixtureError
from gem.mixture.weights import Mixture, make_domains
from gem.store import utc_now_z

SCHEMA_VERSION = 1
DEFAULT_PREFIX_TEMPLATE = "{data_root}/{domain_id}_text_document"
DEFAULT_SPLIT_PREFIX_TEMPLATE = "{data_root}/{split}/{domain_id}_text_document"
DEFAULT_OLMO_PATH_TEMPLATE = "{data_root}/{domain_id}/*.npy"
DOLMA_ATTRIBUTE_PREFIX = "gem__domain__"
DOLMA_EXCLUDED_ATTRIBUTE = "gem__excluded_topic"  # a document of a curator-excluded topic: [[0, n_chars, 1.0]], no domain
DOLMA_TAG_PREFIX = "gem__tag__"  # a curator's tag t of a document: attribute gem__tag__<t> = [[0, n_chars, 1.0]]


# ============================================================================ strict JSON
def _nonfinite_path(obj, path: str = "") -> str | None:
    """Where the first NaN / inf sits in a JSON-able object (``topics[3].mass``), or None."""
    if isinstance(obj, (float, np.floating)):
        return None if math.isfinite(obj) else (path or "the value")
    if isinstance(obj, Mapping):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, np.ndarray)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for sub, value in items:
        found = _nonfinite_path(value, sub)
        if found:
            return found
    return None


def dumps_json(obj, where: str, **kw) -> str:
    """``json.dumps(obj, allow_nan=False, **kw)``; a NaN / inf raises MixtureError naming
    ``where`` and the value's place in ``obj`` (strict JSON readers reject NaN)."""
    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError as exc:
        at = _nonfinite_path(obj)
        if at is None:
            raise
        raise MixtureError(f"{where}: {at} is NaN or infinite, which JSON cannot hold: give it a finite "
                           f"value (or leave it out); nothing was written") from exc


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON (NaN and Infinity are not numbers a strict reader accepts)")


def loads_json(text, where: str, error: type[ValueError] = BundleError):
    """Strict ``json.loads``: NaN, Infinity and -Infinity are refused (``error`` naming ``where``)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:
        raise error(f"{where}: {exc}") from None


def embedding_model_info(value) -> dict | None:
    """``mixture.json``'s ``embedding_model``: ``{"name": readable model name or null,
    "fingerprint": the embedder's fingerprint or null}`` (extra keys kept). Bundles written before
    held a bare string: a lowercase hex string is read as the fingerprint, anything else as the name."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        out = {"name": None, "fingerprint": None}
        out.update({str(k): v for k, v in value.items()})
        return out
    text = str(value)
    if re.fullmatch(r"[0-9a-f]{8,64}", text):
        return {"name": None, "fingerprint": text}
    return {"name": text, "fingerprint": None}


# ============================================================================ importers
def _text(source) -> str:
    """``source`` as text: bytes decoded, a Path or an existing file's path read, else itself;
    UTF-8 (MixtureError naming the byte otherwise), a leading byte order mark dropped."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and _is_file(source)):
        source = Path(source).read_bytes()
    if isinstance(source, (bytes, bytearray)):
        try:
            return bytes(source).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise MixtureError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return str(source).removeprefix("\ufeff")


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except OSError:  # e.g. a one-line JSON text longer than a file name may be
        return False


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
    obj = loads_json(_text(source), "DoReMi weights", MixtureError)
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


def domain_prefix(template: str, row, data_root: str, split: str = "train") -> str:
    fields = dict(data_root=data_root, domain_id=row.id, label=row.label, split=split)
    out = _format_template(template, **fields)
    if any(c.isspace() for c in out):
        raise MixtureError(f"prefix {out!r} contains whitespace: Megatron splits --data-path on spaces")
    return out


def mixture_to_dict(mixture: Mixture) -> dict:
    """The canonical ``mixture.json`` object. Every domain's weight and natural weight must be
    finite (MixtureError naming the domain otherwise); NaN implied epochs / mass become null."""
    d = mixture.domains
    domains = []
    for r in d.itertuples(index=False):
        for name in ("weight", "natural_weight"):
            if not math.isfinite(float(getattr(r, name))):
                raise MixtureError(f"mixture.json: {name} of domain {r.id!r} is {getattr(r, name)}: weights must be "
                                   "finite; rebuild the mixture with build_mixture()")
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
        "created_at": mixture.created_at or utc_now_z(),
        "corpus_fingerprint": meta.pop("corpus_fingerprint", None),
        "embedding_model": embedding_model_info(meta.pop("embedding_model", None)),
        "clustering": meta.pop("clustering", None),
        "strategy": {"name": mixture.strategy, "level": mixture.level, "temperature": mixture.temperature,
                     "max_epochs": mixture.max_epochs, "overrides": dict(mixture.overrides)},
        "token_budget": mixture.token_budget,
        "warnings": list(mixture.warnings),
        "extra": meta,
        "domains": domains,
    }


def render_mixture_json(mixture: Mixture) -> str:
    return dumps_json(mixture_to_dict(mixture), "mixture.json", indent=2, ensure_ascii=False) + "\n"


def read_mixture_json(source) -> Mixture:
    """Parse a canonical ``mixture.json`` back into a Mixture (validated)."""
    obj = loads_json(_text(source), "mixture.json")
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
    try:
        d["natural_weight"] = [float(r["natural_weight"]) for r in rows]
        d["weight"] = [float(r["weight"]) for r in rows]
        d["implied_epochs"] = [np.nan if r.get("implied_epochs") is None else float(r["implied_epochs"]) for r in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"mixture.json: a domain's weight is missing or not a number ({exc})") from None
    d["weight_source"] = [r.get("weight_source", "") for r in rows]
    for name in ("natural_weight", "weight", "implied_epochs"):
        values = d[name].to_numpy(np.float64)
        bad = np.flatnonzero(np.isinf(values) if name == "implied_epochs" else ~np.isfinite(values))
        if bad.size:
            raise BundleError(f"mixture.json: {name} of domain {d.at[bad[0], 'id']!r} is {values[bad[0]]}")
    w = d["weight"].to_numpy(np.float64)
    if (w < 0).any() or abs(w.sum() - 1) > 1e-9:
        raise BundleError(f"mixture.json: weights must be >= 0 and sum to 1 (sum {w.sum()!r})")
    if (w[d["excluded"].to_numpy(bool)] > 0).any():
        raise BundleError("mixture.json: an excluded domain has a weight > 0")
    s = obj.get("strategy") or {}
    meta = dict(obj.get("extra") or {})
    for k in ("corpus_fingerprint", "embedding_model", "clustering"):
        if obj.get(k) is not None:
            meta[k] = embedding_model_info(obj[k]) if k == "embedding_model" else obj[k]
    return Mixture(domains=d, strategy=s.get("name", ""), token_budget=obj.get("token_budget"),
                   max_epochs=s.get("max_epochs"), temperature=s.get("temperature"),
                   overrides=dict(s.get("overrides") or {}), level=s.get("level", "topic"),
                   warnings=list(obj.get("warnings") or []), metadata=meta, created_at=obj.get("created_at", ""))


def render_megatron_blend(mixture: Mixture, prefix_template: str = DEFAULT_PREFIX_TEMPLATE,
                          data_root: str = "data") -> str:
    """Megatron ``--data-path`` / ``--data-args-path`` text: ``w1 prefix1 w2 prefix2 ...``."""
    parts = [f"{float(r.weight)!r} {domain_prefix(prefix_template, r, data_root)}" for r in mixture.active().itertuples(index=False)]
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
            flat += [float(r.weight), domain_prefix(prefix_template, r, data_root, split)]
        obj[split] = flat
    return dumps_json(obj, "Megatron per-split JSON", indent=2) + "\n"


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
                        "paths": [domain_prefix(path_template, r, data_root)]})
    obj: dict[str, Any] = {"source_configs": sources, "seed": int(seed)}
    if mixture.token_budget:
        obj["requested_tokens"] = int(mixture.token_budget)
    if global_batch_size:
        obj["global_batch_size"] = int(global_batch_size)
    if fmt == "json":
        return dumps_json(obj, "OLMo-core mixture", indent=2) + "\n"
    if fmt != "yaml":
        raise MixtureError(f"OLMo-core format must be 'yaml' or 'json', got {fmt!r}")
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def parse_olmo_core(text: str) -> dict[str, float]:
    """Both renderings: JSON strictly (a bare NaN is refused), else YAML (whose ``.nan`` the
    bundle's weight comparison refuses)."""
    import yaml

    obj = loads_json(text, "OLMo-core mixture") if text.lstrip().startswith("{") else yaml.safe_load(text)
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
    return dumps_json(obj, "HF interleave_datasets", indent=2) + "\n"


def parse_hf_interleave(text: str) -> dict[str, float]:
    obj = loads_json(text, "HF interleave_datasets")
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
    return dumps_json({"train_domain_weights": w, "eval_domain_weights": ev}, "DoReMi weights", indent=2) + "\n"


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
    return dumps_json([{"domain": k, "weight": v} for k, v in mixture.weights().items()], "WebOrganizer domains",
                      indent=2) + "\n"


def parse_weborganizer(text: str) -> dict[str, float]:
    try:
        return {r["domain"]: float(r["weight"]) for r in loads_json(text, "WebOrganizer domains")}
    except (KeyError, TypeError) as exc:
        raise BundleError(f"WebOrganizer domains: an entry lacks {exc}") from None


def render_dolma_attributes(assignments: pd.DataFrame) -> bytes:
    """One Dolma attributes file (JSONL.gz) for one document shard, rows in the shard's order.

    Dolma attribute values are span lists ``[[start, end, score], ...]`` with numeric scores, so
    the domain goes into the attribute *name* (as Dolma's fastText taggers do per label):
    ``{"id": .., "attributes": {"gem__domain__<id>": [[0, n_chars, probability]],
    "gem__domain__gis": [[0, n_chars, gis]]}}``. Mixer filters then select a domain with
    ``$.attributes[?(@.gem__domain__t03)]``. Needs columns id, domain_id, probability, n_chars;
    the gis attribute is written when there is a gis column (exported without GIS: none). Lines are
    strict JSON: a NaN probability or GIS raises MixtureError naming the document. With a ``tags``
    column (a list of a document's curator tags, ``gem.flags``), each tag t adds
    ``"gem__tag__<t>": [[0, n_chars, 1.0]]`` (select with ``$.attributes[?(@.gem__tag__t)]``).
    With an ``excluded`` column (``write_bundle`` sets it: the document's topic is excluded by a
    curator), an excluded document carries no domain attribute, so no domain filter selects it, but
    ``"gem__excluded_topic": [[0, n_chars, 1.0]]`` (drop them with
    ``$.attributes[?(@.gem__excluded_topic)]``)."""
    need = [c for c in ("id", "domain_id", "probability", "n_chars") if c not in assignments.columns]
    if need:
        raise MixtureError(f"Dolma attributes need assignment columns {need}")
    lines = []
    gis = assignments["gis"].to_numpy(np.float64) if "gis" in assignments.columns else None
    tags = assignments["tags"].tolist() if "tags" in assignments.columns else None
    excluded = (assignments["excluded"].to_numpy(bool) if "excluded" in assignments.columns
                else np.zeros(len(assignments), dtype=bool))
    for k, (i, dom, p, n) in enumerate(zip(assignments["id"], assignments["domain_id"],
                                           assignments["probability"], assignments["n_chars"])):
        if excluded[k]:
            attrs = {DOLMA_EXCLUDED_ATTRIBUTE: [[0, int(n), 1.0]]}
        else:
            attrs = {f"{DOLMA_ATTRIBUTE_PREFIX}{dom}": [[0, int(n), float(p)]]}
        if gis is not None:
            attrs[f"{DOLMA_ATTRIBUTE_PREFIX}gis"] = [[0, int(n), float(gis[k])]]
        if tags is not None and isinstance(tags[k], (list, tuple, np.ndarray)):
            for t in tags[k]:
                attrs[f"{DOLMA_TAG_PREFIX}{t}"] = [[0, int(n), 1.0]]
        lines.append(dumps_json({"id": str(i), "attributes": attrs}, f"Dolma attributes of document {str(i)!r}",
                                ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    return gzip.compress(data, mtime=0)  # mtime=0: same content, same bytes, same sha256


def read_dolma_attributes(data: bytes, where: str = "Dolma attributes") -> list[dict]:
    """The records of one attributes file, each line parsed as strict JSON (BundleError naming
    ``where`` and the line otherwise)."""
    lines = gzip.decompress(data).decode("utf-8").splitlines()
    return [loads_json(line, f"{where} line {k}") for k, line in enumerate(lines, start=1) if line.strip()]


