"""The export bundle: ``write_bundle`` renders the chosen formats and writes them atomically into
one folder with a ``MANIFEST.json`` of sha256 sums; ``validate_bundle`` re-reads every file and
compares it with ``mixture.json``; ``bundle_zip_bytes`` zips a bundle for a download button.

What a valid bundle is (``validate_bundle`` checks each point, ``write_bundle`` never writes
anything else):

- ``MANIFEST.json`` lists every file with its sha256, and ``mixture.json`` among them; the formats
  it names are exactly the formats present.
- Strict JSON everywhere: every ``*.json`` file and every line of the Dolma attribute files parses
  with NaN, Infinity and -Infinity refused; YAML, text and CSV weights must be finite too.
- Every trainer format carries the weights of ``mixture.json`` (to 1e-9), for the same domains in
  the same order.
- ``assignments.parquet`` has id (unique), domain_id (a mixture domain), probability (in [0, 1]),
  n_tokens and, unless exported without GIS, gis; every numeric column is finite in every row.
  "Not computed" is a missing column, never NaN.
- ``excluded_documents.jsonl`` (written when documents are excluded, ``gem.flags``): the blocklist,
  one strict-JSON object per line (id, reason, note, author, at), ids unique, reasons from
  ``gem.flags.REASONS``; none of its ids appears in ``assignments.parquet`` or the Dolma attributes.
  Dolma attributes other than the domain and gis ones are curator tags (``gem__tag__<tag>``).
- Documents of a curator-excluded topic (an excluded domain of ``mixture.json``, weight 0) stay in
  the per-document files, marked: ``assignments.parquet`` column ``excluded`` is true for exactly
  them (false for every other row), and their Dolma attributes carry no domain attribute (no
  ``gem__domain__<id>`` selects them) but ``gem__excluded_topic``. ``MANIFEST.json`` says so under
  ``excluded_topics`` (the domain ids, the number of such documents, and this rule in words).
  Bundles written before the column existed have no ``excluded`` column; they still validate.
- Per-document files (``assignments.parquet``, Dolma attributes) name domains by taxonomy id, so
  a bundle with either must hold ``taxonomy.json`` (a JSON object): ``write_bundle`` adds the
  taxonomy format to them, and refuses them without a taxonomy.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from gem.flags import REASONS
from gem.mixture.errors import BundleError, MixtureError
from gem.mixture.formats import (
    DEFAULT_OLMO_PATH_TEMPLATE, DEFAULT_PREFIX_TEMPLATE, DEFAULT_SPLIT_PREFIX_TEMPLATE, DOLMA_ATTRIBUTE_PREFIX,
    DOLMA_EXCLUDED_ATTRIBUTE, DOLMA_TAG_PREFIX, SCHEMA_VERSION, domain_prefix, dumps_json, loads_json, parse_hf_interleave, parse_megatron_blend, parse_olmo_core,
    parse_weborganizer, read_dolma_attributes, read_doremi_weights, read_mixture_json, read_regmix_weights,
    render_doremi, render_dolma_attributes, render_hf_interleave, render_megatron_blend, render_megatron_per_split,
    render_mixture_json, render_olmo_core, render_regmix, render_regmix_token_prior, render_weborganizer,
)
from gem.mixture.weights import Mixture
from gem.store import atomic_dir, file_sha256, short, show_path, utc_now_z, validate_name

FORMATS = ("megatron", "olmo", "hf", "doremi", "regmix", "weborganizer", "dolma", "assignments", "taxonomy")
PER_DOCUMENT_FORMATS = ("assignments", "dolma")
AGREE_TOL = 1e-9         # a rendered weight must parse back within this
BLOCKLIST_FILE = "excluded_documents.jsonl"
BLOCKLIST_COLUMNS = ("id", "reason", "note", "author", "at")
ASSIGNMENT_COLUMNS = ("id", "domain_id", "probability", "gis", "n_tokens")  # gis: absent when not computed
EXCLUDED_TOPICS_NOTE = (
    "documents of these curator-excluded topics (weight 0 in every trainer format) are in "
    "assignments.parquet with excluded = true, and their Dolma attributes carry no gem__domain__<id> "
    f"attribute but {DOLMA_EXCLUDED_ATTRIBUTE}; documents excluded one by one are left out entirely "
    f"({BLOCKLIST_FILE})"
)
_FIX = {
    "probability": "pass each document's probability of its domain (the model's predict_proba of the assigned "
                   "cluster, 1.0 for a hard clustering; RunMixtureInputs.with_scores fills it)",
    "gis": "compute GIS (gem.gis.gis_for_model; RunMixtureInputs.with_scores fills it), or drop the gis column "
           "to export without GIS (gem export --no-gis)",
}


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
    blocklist: pd.DataFrame | None = None,
) -> Path:
    """Write an export bundle folder atomically (built aside, moved into place when complete).

    ``formats`` "all" writes every format whose inputs are present (assignments / Dolma need
    ``assignments``, taxonomy needs ``taxonomy``); naming a format explicitly without its input
    is an error. Assignments and Dolma always come with ``taxonomy.json`` (added when not named;
    an error without ``taxonomy``). ``assignments``: DataFrame with id, domain_id, probability,
    n_tokens, gis (optional: leave it out to export without GIS), and n_chars for Dolma (an
    optional ``shard`` column names Dolma's per-shard files); NaN or inf in any numeric column is
    refused. ``taxonomy``: a JSON-able object (or JSON text). ``blocklist``: the excluded documents
    (columns id, reason and optionally note, author, at; ``gem.flags.DocFlags.blocklist``), written
    as ``excluded_documents.jsonl`` when not empty; an excluded id among the assignments is refused.
    Documents in an excluded domain of ``mixture`` are marked (column ``excluded``; no Dolma domain
    attribute) and counted in the manifest's ``excluded_topics``.
    Every file is rendered (strict JSON)
    before anything touches the disk: on any error nothing is written. Returns the bundle path."""
    out_dir = Path(out_dir)
    validate_name(out_dir.name, "export folder name")
    explicit = not (formats is None or formats == "all")
    chosen = parse_formats(formats)
    if assignments is None:
        missing = [f for f in PER_DOCUMENT_FORMATS if f in chosen]
        if explicit and missing:
            raise MixtureError(f"format(s) {missing} need per-document assignments")
        chosen = [f for f in chosen if f not in PER_DOCUMENT_FORMATS]
    if "dolma" in chosen and "n_chars" not in assignments.columns:
        if explicit:
            raise MixtureError("Dolma attributes need the documents' character lengths (assignments column n_chars)")
        chosen.remove("dolma")
    per_document = [f for f in PER_DOCUMENT_FORMATS if f in chosen]
    if per_document and taxonomy is None:
        raise MixtureError(f"format(s) {per_document} name each document's domain by taxonomy id, so the bundle "
                           "needs taxonomy.json: pass the taxonomy (or leave those formats out)")
    if taxonomy is None:
        if explicit and "taxonomy" in chosen:
            raise MixtureError("format 'taxonomy' needs a taxonomy")
        chosen = [f for f in chosen if f != "taxonomy"]
    elif per_document and "taxonomy" not in chosen:
        chosen.append("taxonomy")
    # render everything before touching the disk: bad input fails with nothing written
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
        tax = loads_json(taxonomy, "taxonomy", MixtureError) if isinstance(taxonomy, (str, bytes)) else taxonomy
        files["taxonomy.json"] = (dumps_json(tax, "taxonomy.json", indent=2, ensure_ascii=False, default=_jsonable)
                                  + "\n").encode()
    table = _check_assignments(assignments, mixture, per_document) if per_document else None
    if blocklist is not None and len(blocklist):
        files[BLOCKLIST_FILE] = _render_blocklist(blocklist, table)
    if "dolma" in chosen:
        if "shard" in table.columns:
            groups = [(validate_name(str(s), "Dolma shard name"), g) for s, g in table.groupby("shard", sort=False)]
        else:
            size = max(1, int(dolma_shard_size))
            groups = [(f"part-{k // size:05d}", table.iloc[k:k + size]) for k in range(0, len(table), size)]
        for name, g in groups:
            files[f"dolma/attributes/gem/{name}.jsonl.gz"] = render_dolma_attributes(g)
    manifest = {
        "schema_version": SCHEMA_VERSION, "kind": "gem.export-bundle", "created_at": mixture.created_at or utc_now_z(),
        "formats": [f for f in chosen],
        "excluded_documents": int(len(blocklist)) if blocklist is not None else 0,
        "excluded_topics": _excluded_topics(mixture, table),
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
        if "assignments" in chosen:
            first = [c for c in (*ASSIGNMENT_COLUMNS, "excluded") if c in table.columns]
            with open(tmp / "assignments.parquet", "wb") as fh:  # a file object: the path need not be UTF-8
                table[first + [c for c in table.columns if c not in first]].to_parquet(fh, index=False)
            manifest["files"]["assignments.parquet"] = {
                "sha256": file_sha256(tmp / "assignments.parquet"), "bytes": (tmp / "assignments.parquet").stat().st_size}
            manifest["files"] = dict(sorted(manifest["files"].items()))
        (tmp / "MANIFEST.json").write_text(dumps_json(manifest, "MANIFEST.json", indent=2) + "\n", encoding="utf-8")
    return out_dir


def _excluded_domains(mixture: Mixture) -> list[str]:
    d = mixture.domains
    return d.loc[d["excluded"].to_numpy(bool), "id"].astype(str).tolist()


def _excluded_topics(mixture: Mixture, table: pd.DataFrame | None) -> dict:
    """The manifest's account of the curator-excluded topics and their documents."""
    out: dict[str, Any] = {"domains": _excluded_domains(mixture)}
    if table is not None:
        out["documents"] = int(table["excluded"].sum())
        out["note"] = EXCLUDED_TOPICS_NOTE
    return out


def _render_blocklist(blocklist: pd.DataFrame, table: pd.DataFrame | None) -> bytes:
    if "id" not in blocklist.columns or "reason" not in blocklist.columns:
        raise MixtureError("the blocklist needs columns id and reason")
    ids = blocklist["id"].astype(str)
    if ids.duplicated().any():
        raise MixtureError(f"blocklist: document id {ids[ids.duplicated()].iloc[0]!r} appears twice")
    bad = sorted(set(blocklist["reason"].astype(str)) - set(REASONS))
    if bad:
        raise MixtureError(f"blocklist: reason(s) {bad} are not among {', '.join(REASONS)}")
    if table is not None:
        inside = ids[ids.isin(table["id"])]
        if len(inside):
            raise MixtureError(f"document {inside.iloc[0]!r} is excluded but still among the assignments "
                               f"({len(inside)} such); drop excluded documents before writing; nothing was written")
    cols = [c for c in BLOCKLIST_COLUMNS if c in blocklist.columns]
    lines = []
    for rec in blocklist[cols].astype(object).where(blocklist[cols].notna(), None).to_dict("records"):
        rec = {k: (None if v is None else str(v)) for k, v in rec.items()}
        lines.append(dumps_json(rec, f"blocklist entry {rec['id']!r}", ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"taxonomy: {type(obj).__name__} is not JSON serialisable")


def _check_assignments(assignments: pd.DataFrame, mixture: Mixture, formats: list[str]) -> pd.DataFrame:
    """The per-document table as written: typed columns, known domains, unique ids, and every
    numeric column finite (MixtureError naming the column, how many rows, the first document and
    what to do)."""
    need = ["id", "domain_id", "probability"] + (["n_tokens"] if "assignments" in formats else [])
    missing = [c for c in need if c not in assignments.columns]
    if missing:
        fix = f": {_FIX['probability']}" if "probability" in missing else ""
        raise MixtureError(f"assignments lack column(s) {missing}{fix}")
    t = assignments.copy()
    t["id"] = t["id"].astype(str)
    t["domain_id"] = t["domain_id"].astype(str)
    for c in ("probability", "gis"):
        if c in t.columns:
            t[c] = pd.to_numeric(t[c], errors="coerce").astype(np.float64)
    found = _nonfinite(t)
    if found:
        c, bad, value = found
        raise MixtureError(
            f"assignments column {c!r} is {value} for {bad.size} of {len(t)} documents (first: "
            f"{t['id'].iat[bad[0]]!r} in domain {t['domain_id'].iat[bad[0]]!r}): "
            f"{_FIX.get(c, 'give every document a finite value, or drop the column')}; nothing was written")
    p = t["probability"].to_numpy(np.float64)
    if ((p < 0) | (p > 1)).any():
        k = int(np.flatnonzero((p < 0) | (p > 1))[0])
        raise MixtureError(f"assignments: probability of document {t['id'].iat[k]!r} is {p[k]}: must be in [0, 1]")
    if "n_tokens" in t.columns:
        t["n_tokens"] = t["n_tokens"].astype(np.int64)
    known = set(mixture.domains["id"])
    unknown = sorted(set(t["domain_id"]) - known)
    if unknown:
        raise MixtureError(f"assignments name domain(s) not in the mixture: {unknown[:5]}")
    if t["id"].duplicated().any():
        raise MixtureError(f"assignments: document id {t['id'][t['id'].duplicated()].iloc[0]!r} appears twice")
    t["excluded"] = t["domain_id"].isin(_excluded_domains(mixture)).to_numpy(bool)  # the mixture decides
    return t


def _nonfinite(frame: pd.DataFrame) -> tuple[str, np.ndarray, float] | None:
    """The first numeric column holding NaN / inf (or a missing value): its name, the rows, the first value."""
    for c in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]):
            values = frame[c].to_numpy(np.float64, na_value=np.nan)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                return c, bad, float(values[bad[0]])
    return None


# the files of each format (dolma: every file under dolma/); mixture.json belongs to none: every bundle has it
FORMAT_FILES = {
    "megatron": ("megatron_data_path.txt", "megatron_per_split.json"),
    "olmo": ("olmo_core_mixture.yaml", "olmo_core_mixture.json"),
    "hf": ("hf_interleave_datasets.json",),
    "doremi": ("doremi_domain_weights.json",),
    "regmix": ("regmix_mixture.yaml", "regmix_token_prior.csv"),
    "weborganizer": ("weborganizer_domains.json",),
    "assignments": ("assignments.parquet",),
    "taxonomy": ("taxonomy.json",),
}
MANIFEST = "MANIFEST.json"


def format_of(name: str) -> str | None:
    """The bundle format a file of a bundle belongs to (None: mixture.json, the blocklist, ...)."""
    if name.startswith("dolma/"):
        return "dolma"
    return next((f for f, names in FORMAT_FILES.items() if name in names), None)


def read_manifest(root: str | os.PathLike, what: str = "an export bundle") -> dict:
    """``root``/MANIFEST.json parsed (strict JSON), with a ``files`` object of {name: {sha256, ...}}
    whose names stay inside ``root``; BundleError otherwise."""
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{show_path(root)}: no {MANIFEST} (not {what}, or an interrupted copy)")
    try:
        raw = mpath.read_bytes()
    except OSError as exc:
        raise BundleError(f"{show_path(mpath)}: cannot read it ({exc.strerror or exc})") from None
    manifest = loads_json(raw, MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise BundleError(f"{show_path(mpath)}: no 'files' object (not {what})")
    for name, info in files.items():
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or name.startswith(MANIFEST):
            raise BundleError(f"{show_path(mpath)}: file name {short(name)!r} points outside the bundle")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise BundleError(f"{show_path(mpath)}: entry {short(name)!r} has no sha256")
    return manifest


def check_files(root: str | os.PathLike, manifest: dict, names: Iterable[str] | None = None) -> None:
    """Every file of ``manifest`` (or only ``names``, which it must list) against its sha256:
    BundleError naming the first file missing or changed since it was written."""
    root = Path(root)
    files = manifest["files"]
    for name in (files if names is None else names):
        if name not in files:
            raise BundleError(f"{show_path(root / name)}: not listed in {MANIFEST} (added after it was written)")
        p = root / name
        if not p.is_file():
            raise BundleError(f"{show_path(p)}: listed in {MANIFEST} but missing")
        if file_sha256(p) != files[name]["sha256"]:
            raise BundleError(f"{show_path(p)}: sha256 differs from {MANIFEST} (file changed after export)")


def bundle_of(path: str | os.PathLike, levels: int = 3) -> tuple[Path, str] | None:
    """(bundle folder, name in its manifest) of a file inside a bundle: the nearest folder at most
    ``levels`` above it holding a MANIFEST.json; None for a file outside any bundle."""
    p = Path(path)
    try:
        p = p.resolve()
    except (OSError, RuntimeError):
        return None
    for folder in list(p.parents)[: levels + 1]:
        if (folder / MANIFEST).is_file():
            return folder, p.relative_to(folder).as_posix()
    return None


def verify_read(path: str | os.PathLike) -> dict | None:
    """The check of a file read from a bundle (imported weights, an uploaded bundle's file): when
    ``path`` lies in a bundle, the file must be listed in its MANIFEST.json, and the bundle is
    validated for that file's format (``validate_bundle(..., formats=[its format])``: the format's
    files and mixture.json against their sha256, the format parsed and compared with mixture.json,
    whose weights sum to 1). BundleError naming the file otherwise; None for a file in no bundle."""
    found = bundle_of(path)
    if found is None:
        return None
    root, name = found
    manifest = read_manifest(root)
    check_files(root, manifest, [name])
    fmt = format_of(name)
    return validate_bundle(root, formats=[fmt] if fmt else [])


def validate_bundle(bundle_dir: str | os.PathLike, formats: Iterable[str] | None = None) -> dict:
    """Re-read a bundle and check every rule of this module's docstring: manifest hashes, strict
    JSON, every format parsed back and compared with ``mixture.json`` (to 1e-9), finite numbers,
    assignments and Dolma attributes, and taxonomy.json beside them. Raises BundleError naming the
    first bad file; returns a report {"domains", "weights", "active", "formats", "files", "warnings"}.
    ``formats``: check only these formats' files (and mixture.json), not the rules across formats:
    what a reader of one file needs (``verify_read``)."""
    root = Path(bundle_dir)
    manifest = read_manifest(root)
    files = manifest["files"]
    scope = None if formats is None else set(formats)

    def wanted(name: str) -> bool:
        return scope is None or name == "mixture.json" or format_of(name) in scope

    check_files(root, manifest, [n for n in files if wanted(n)])
    if "mixture.json" not in files:
        raise BundleError("MANIFEST.json does not list mixture.json: every bundle carries it")

    def text(name):
        if name not in files:
            raise BundleError(f"{name}: missing from MANIFEST.json (its format's other file is there)")
        try:
            return (root / name).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"{show_path(root / name)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None

    parsed = {name: loads_json(text(name), name) for name in files if name.endswith(".json") and wanted(name)}  # strict
    mix = read_mixture_json(text("mixture.json"))
    expected = mix.weights()
    opts = manifest.get("options", {})
    data_root = opts.get("data_root", "data")

    def same(got: Mapping[str, float], where: str) -> None:
        if list(got) != list(expected):
            raise BundleError(f"{where}: domains {list(got)[:5]} ... differ from mixture.json {list(expected)[:5]} ...")
        for k, v in got.items():
            if not math.isfinite(v) or abs(v - expected[k]) > AGREE_TOL:
                raise BundleError(f"{where}: weight of {k!r} is {v!r}, mixture.json says {expected[k]!r}")

    def by_prefix(pairs, template, split="train", where=""):
        names = {domain_prefix(template, r, data_root, split): r.id for r in mix.active().itertuples(index=False)}
        out = {}
        for w, p in pairs:
            if p not in names:
                raise BundleError(f"{where}: unexpected prefix {p!r}")
            out[names[p]] = w
        return out

    checked = []
    if "megatron_data_path.txt" in files and wanted("megatron_data_path.txt"):
        same(by_prefix(parse_megatron_blend(text("megatron_data_path.txt")), opts.get("prefix_template", DEFAULT_PREFIX_TEMPLATE),
                       where="megatron_data_path.txt"), "megatron_data_path.txt")
        per = loads_json(text("megatron_per_split.json"), "megatron_per_split.json")
        for split in ("train", "valid", "test"):
            same(by_prefix(parse_megatron_blend([str(x) for x in per[split]]),
                           opts.get("split_prefix_template", DEFAULT_SPLIT_PREFIX_TEMPLATE), split, "megatron_per_split.json"),
                 f"megatron_per_split.json[{split}]")
        checked.append("megatron")
    if "olmo_core_mixture.yaml" in files and wanted("olmo_core_mixture.yaml"):
        same(parse_olmo_core(text("olmo_core_mixture.yaml")), "olmo_core_mixture.yaml")
        same(parse_olmo_core(text("olmo_core_mixture.json")), "olmo_core_mixture.json")
        checked.append("olmo")
    if "hf_interleave_datasets.json" in files and wanted("hf_interleave_datasets.json"):
        same(parse_hf_interleave(text("hf_interleave_datasets.json")), "hf_interleave_datasets.json")
        checked.append("hf")
    if "doremi_domain_weights.json" in files and wanted("doremi_domain_weights.json"):
        same(_imported(read_doremi_weights, text("doremi_domain_weights.json"), "doremi_domain_weights.json"),
             "doremi_domain_weights.json")
        checked.append("doremi")
    if "regmix_mixture.yaml" in files and wanted("regmix_mixture.yaml"):
        same(_imported(read_regmix_weights, text("regmix_mixture.yaml"), "regmix_mixture.yaml"), "regmix_mixture.yaml")
        _check_token_prior(text("regmix_token_prior.csv"), mix)
        checked.append("regmix")
    if "weborganizer_domains.json" in files and wanted("weborganizer_domains.json"):
        same(parse_weborganizer(text("weborganizer_domains.json")), "weborganizer_domains.json")
        checked.append("weborganizer")
    per_doc_ids: set[str] = set()
    if "assignments.parquet" in files and wanted("assignments.parquet"):
        per_doc_ids |= _check_assignments_file(root / "assignments.parquet", mix)
        checked.append("assignments")
    dolma = sorted(n for n in files if n.startswith("dolma/") and wanted(n))
    for name in dolma:
        per_doc_ids |= _check_dolma_file(root / name, name, mix)
    if dolma:
        checked.append("dolma")
    if scope is not None:  # one reader's formats: the rules across formats are the whole check's
        return {"domains": len(mix.domains), "weights": expected, "active": sorted(expected), "formats": checked,
                "files": sorted(n for n in files if wanted(n)), "warnings": mix.warnings}
    n_excluded = _check_blocklist(text(BLOCKLIST_FILE), per_doc_ids) if BLOCKLIST_FILE in files else 0
    if "taxonomy.json" in files:
        if not isinstance(parsed["taxonomy.json"], dict):
            raise BundleError("taxonomy.json: expected a JSON object")
        checked.append("taxonomy")
    per_document = [f for f in PER_DOCUMENT_FORMATS if f in checked]
    if per_document and "taxonomy" not in checked:
        raise BundleError(f"{per_document} name each document's domain by taxonomy id but the bundle has no "
                          "taxonomy.json: re-export with the taxonomy")
    listed = manifest.get("formats")
    if listed is not None and set(listed) != set(checked):
        raise BundleError(f"MANIFEST.json lists formats {sorted(listed)} but the bundle holds {sorted(checked)}")
    return {"domains": len(mix.domains), "weights": expected, "active": sorted(expected), "formats": checked,
            "files": sorted(files) + ["MANIFEST.json"], "warnings": mix.warnings, "excluded_documents": n_excluded}


def _check_blocklist(text: str, per_doc_ids: set[str]) -> int:
    """excluded_documents.jsonl: strict JSON lines with a unique id and a known reason, none of them
    among the per-document files' ids. Returns the number of entries."""
    seen: set[str] = set()
    for k, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rec = loads_json(line, f"{BLOCKLIST_FILE} line {k}")
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise BundleError(f"{BLOCKLIST_FILE} line {k}: expected an object with a string id")
        if rec.get("reason") not in REASONS:
            raise BundleError(f"{BLOCKLIST_FILE} line {k}: reason {rec.get('reason')!r} is not one of {', '.join(REASONS)}")
        if rec["id"] in seen:
            raise BundleError(f"{BLOCKLIST_FILE} line {k}: document {rec['id']!r} listed twice")
        if rec["id"] in per_doc_ids:
            raise BundleError(f"{BLOCKLIST_FILE} line {k}: excluded document {rec['id']!r} is still in the "
                              "assignments or Dolma attributes")
        seen.add(rec["id"])
    return len(seen)


def _imported(reader, text: str, name: str) -> dict[str, float]:
    """An importer's weights, its MixtureError (say, a NaN weight) raised as this bundle's BundleError."""
    try:
        return reader(text)
    except MixtureError as exc:
        raise BundleError(f"{name}: {exc}") from None


def _check_token_prior(text: str, mix: Mixture) -> None:
    """regmix_token_prior.csv: the active domains in order, their tokens, a finite prior summing to 1."""
    try:
        prior = pd.read_csv(io.StringIO(text), dtype={"domain": str})
        doms, tok, share = prior["domain"].tolist(), prior["n_tokens"].to_numpy(), prior["token_prior"].to_numpy(np.float64)
    except (KeyError, ValueError, pd.errors.ParserError) as exc:
        raise BundleError(f"regmix_token_prior.csv: cannot read it ({exc})") from None
    active = mix.active()
    if doms != active["id"].tolist() or not np.array_equal(tok, active["n_tokens"].to_numpy()):
        raise BundleError("regmix_token_prior.csv: domains or token counts differ from mixture.json")
    if not np.isfinite(share).all() or (len(share) and abs(share.sum() - 1) > AGREE_TOL):
        raise BundleError(f"regmix_token_prior.csv: token_prior must be finite and sum to 1 (sum {share.sum()!r})")


def _check_assignments_file(path: Path, mix: Mixture) -> set[str]:
    with open(path, "rb") as fh:  # a file object: the path need not be UTF-8
        a = pd.read_parquet(fh)
    miss = [c for c in ASSIGNMENT_COLUMNS if c != "gis" and c not in a.columns]
    if miss:
        raise BundleError(f"assignments.parquet: missing columns {miss}")
    found = _nonfinite(a)
    if found:
        c, bad, value = found
        raise BundleError(f"assignments.parquet: column {c!r} is {value} for {bad.size} of {len(a)} documents "
                          f"(first: {str(a['id'].iat[bad[0]])!r})")
    for c in ("probability", "gis", "n_tokens"):
        if c in a.columns and not pd.api.types.is_numeric_dtype(a[c]):
            raise BundleError(f"assignments.parquet: column {c!r} is not numeric ({a[c].dtype})")
    p = a["probability"].to_numpy(np.float64)
    if ((p < 0) | (p > 1)).any():
        raise BundleError("assignments.parquet: a probability lies outside [0, 1]")
    if a["id"].astype(str).duplicated().any():
        raise BundleError("assignments.parquet: a document id appears twice")
    unknown = set(a["domain_id"].astype(str)) - set(mix.domains["id"])
    if unknown:
        raise BundleError(f"assignments.parquet: unknown domain ids {sorted(unknown)[:5]}")
    if "excluded" in a.columns:  # absent in bundles written before it
        if not pd.api.types.is_bool_dtype(a["excluded"]):
            raise BundleError(f"assignments.parquet: column 'excluded' is not boolean ({a['excluded'].dtype})")
        want = a["domain_id"].astype(str).isin(_excluded_domains(mix)).to_numpy(bool)
        bad = np.flatnonzero(a["excluded"].to_numpy(bool) != want)
        if bad.size:
            k = int(bad[0])
            raise BundleError(f"assignments.parquet: document {str(a['id'].iat[k])!r} in domain "
                              f"{str(a['domain_id'].iat[k])!r} has excluded = {not want[k]}, but mixture.json says "
                              f"the domain is {'' if want[k] else 'not '}excluded")
    return set(a["id"].astype(str))


def _check_dolma_file(path: Path, name: str, mix: Mixture) -> set[str]:
    excluded = set(_excluded_domains(mix))
    known = set(mix.domains["id"]) - excluded
    ids: set[str] = set()
    for rec in read_dolma_attributes(path.read_bytes(), name):
        attrs = rec.get("attributes") if isinstance(rec, dict) else None
        if not isinstance(attrs, dict):
            raise BundleError(f"{name}: a record has no 'attributes' object")
        ids.add(str(rec.get("id")))
        doms = [k[len(DOLMA_ATTRIBUTE_PREFIX):] for k in attrs
                if k not in (f"{DOLMA_ATTRIBUTE_PREFIX}gis", DOLMA_EXCLUDED_ATTRIBUTE) and not k.startswith(DOLMA_TAG_PREFIX)]
        if DOLMA_EXCLUDED_ATTRIBUTE in attrs:  # a document of an excluded topic: no domain attribute
            if doms:
                raise BundleError(f"{name}: document {rec.get('id')!r} is marked {DOLMA_EXCLUDED_ATTRIBUTE} but has "
                                  f"domain attributes {doms}")
        elif len(doms) == 1 and doms[0] in excluded:
            raise BundleError(f"{name}: document {rec.get('id')!r} has the domain attribute of excluded topic "
                              f"{doms[0]!r}: documents of excluded topics carry {DOLMA_EXCLUDED_ATTRIBUTE} instead; "
                              "export again")
        elif len(doms) != 1 or doms[0] not in known:
            raise BundleError(f"{name}: document {rec.get('id')!r} has domain attributes {doms}")
        for key, spans in attrs.items():
            try:
                finite = all(isinstance(x, (int, float)) and math.isfinite(x) for span in spans for x in span)
            except TypeError:
                finite = False
            if not finite:
                raise BundleError(f"{name}: document {rec.get('id')!r}: {key} is not a list of numeric spans")
    return ids


ZIP_LIMIT = 2 << 30  # the most an uploaded bundle zip may unpack to (bytes)


def read_bundle_zip(data: bytes, names: Iterable[str] = (), limit: int = ZIP_LIMIT) -> tuple[dict, dict[str, bytes]]:
    """An uploaded bundle zip (as ``bundle_zip_bytes`` writes it: entries under one folder, or at
    the top) unpacked into a temporary folder and validated whole (``validate_bundle``), then
    (report, {name: bytes} of ``names``). BundleError naming the file (as inside the zip) when it
    does not validate, holds a name outside its folder or a link, or unpacks to more than ``limit``."""
    import tempfile

    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"not a zip file ({exc})") from None
    with zf, tempfile.TemporaryDirectory(prefix="gem-bundle-") as tmp:
        members = [i for i in zf.infolist() if not i.is_dir()]
        if sum(i.file_size for i in members) > limit:
            raise BundleError(f"the zip unpacks to more than {limit / 1e9:.1f} GB: too large for a bundle upload")
        for info in members:
            parts = Path(info.filename).parts
            if Path(info.filename).is_absolute() or ".." in parts or "\\" in info.filename:
                raise BundleError(f"{short(info.filename)!r}: a name outside the bundle folder")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise BundleError(f"{short(info.filename)!r}: a link, not a file of a bundle")
        tops = {Path(i.filename).parts[0] for i in members}
        flat = any(i.filename == MANIFEST for i in members)
        if not flat and len(tops) != 1:
            raise BundleError(f"no {MANIFEST} at the top of the zip or of its one folder (not an export bundle)")
        root = Path(tmp) / "bundle"
        for info in members:
            rel = Path(info.filename) if flat else Path(*Path(info.filename).parts[1:])
            if not rel.parts:
                continue
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        try:
            report = validate_bundle(root)
            wanted = {}
            for name in names:
                if name not in report["files"]:
                    raise BundleError(f"{name}: not in this bundle")
                wanted[name] = (root / name).read_bytes()
        except BundleError as exc:
            raise BundleError(str(exc).replace(f"{root}/", "").replace(str(root), "the bundle")) from None
    return report, wanted


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
