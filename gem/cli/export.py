"""`gem export`: mixture weights of a fitted run, written as a bundle trainers read directly;
`gem verify`: a bundle (or a mixlab swarm) checked file by file against its MANIFEST.json."""
from __future__ import annotations

import argparse
import json

from gem.cli import add_workspace_arg, existing_workspace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="choose mixture weights for a run's topics and write an export bundle",
        description=(
            "Build one domain per topic of a fitted run (stable taxonomy ids when the run is synced, "
            "else t<k>), choose weights with a strategy, and write mixture.json plus trainer formats "
            "(Megatron, OLMo-core, HF datasets, DoReMi, RegMix, WebOrganizer, Dolma attributes), "
            "assignments.parquet and taxonomy.json, atomically, with a MANIFEST.json of sha256 sums."
        ),
    )
    add_workspace_arg(p)
    p.add_argument("--run", required=True, metavar="NAME", help="fitted run (see `gem fit`)")
    p.add_argument("--out", metavar="DIR", help="bundle folder (default: WS/exports/<run>-<strategy>)")
    p.add_argument("--strategy", default="natural",
                   choices=["natural", "balanced", "temperature", "unimax", "manual", "imported"],
                   help="natural = token share; balanced = fitted GEM mass; temperature = n^(1/T); "
                        "unimax = uniform budget capped at max epochs; manual = --manual overrides on --base; "
                        "imported = --weights file (default: natural)")
    p.add_argument("--budget-tokens", type=float, metavar="N", help="training token budget (implied epochs, UniMax)")
    p.add_argument("--max-epochs", type=float, default=4.0, metavar="E", help="max repetitions of a domain (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="temperature (default 1 = natural)")
    p.add_argument("--manual", nargs="+", default=[], metavar="ID=W",
                   help="fixed weights for some domains; the rest share the remainder in --base proportions")
    p.add_argument("--base", default="natural", choices=["natural", "balanced", "temperature", "unimax", "imported"],
                   help="base strategy under --strategy manual (default natural)")
    p.add_argument("--weights", metavar="FILE",
                   help="weights learned elsewhere: DoReMi JSON, RegMix YAML or CSV; a file of an export bundle "
                        "(a MANIFEST.json beside it) is verified first, as `gem verify` does")
    p.add_argument("--level", default="topic", choices=["topic", "parent"], help="mix topics or their parent groups")
    p.add_argument("--formats", default="all", metavar="LIST",
                   help="all (default, taxonomy.json included), or a comma list of megatron,olmo,hf,doremi,regmix,"
                        "weborganizer,dolma,assignments,taxonomy; assignments and dolma always bring taxonomy.json")
    p.add_argument("--data-root", default="data", help="root substituted into path templates (default 'data')")
    p.add_argument("--prefix-template", default=None, metavar="TPL",
                   help="Megatron prefix, fields {data_root} {domain_id} {label} {split} "
                        "(default '{data_root}/{domain_id}_text_document')")
    p.add_argument("--olmo-path-template", default=None, metavar="TPL",
                   help="OLMo-core paths (default '{data_root}/{domain_id}/*.npy')")
    p.add_argument("--seed", type=int, default=0, help="seed written into HF / OLMo-core configs")
    p.add_argument("--no-gis", action="store_true",
                   help="skip GIS (faster): assignments.parquet has no gis column, Dolma attributes no gis attribute")
    p.set_defaults(handler=run_export)

    v = subparsers.add_parser(
        "verify",
        help="check an export bundle (or a mixlab swarm) against its MANIFEST.json",
        description=(
            "Check every file of an export bundle against the sha256 of its MANIFEST.json, parse each "
            "format (strict JSON, YAML, CSV, Parquet, Dolma attributes) and compare its weights with "
            "mixture.json, whose weights must sum to 1. A mixlab swarm folder (swarm.csv) is checked the "
            "same way: its MANIFEST.json, swarm.csv's rows (finite, summing to 1) and every mixture's "
            "trainer files. Exit 0 when valid, 2 with one line naming the first bad file."
        ),
    )
    v.add_argument("bundle", metavar="BUNDLE", help="bundle folder, a file inside one, or a swarm folder")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=run_verify)


def parse_overrides(items: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--manual {item!r}: write domain=weight, e.g. T003=0.1")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"--manual {item!r}: {value!r} is not a number") from None
        if key in out:
            raise ValueError(f"--manual: domain {key!r} given twice")
        out[key] = weight
    return out


def _read_weights(path: str) -> dict[str, float]:
    from gem import mixture as mx
    from gem.store import show_path

    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"{show_path(path)}: no such weights file")
    mx.verify_read(path)  # a file of a bundle: the bundle checked for it first (BundleError: exit 2)
    try:
        if path.lower().endswith(".json"):
            return mx.read_doremi_weights(Path(path))
        return mx.read_regmix_weights(Path(path))
    except mx.MixtureError as exc:
        raise ValueError(f"{show_path(path)}: {exc}") from None


def run_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gem import mixture as mx
    from gem.store import show_path

    ws = existing_workspace(args)
    overrides = parse_overrides(args.manual)
    imported = _read_weights(args.weights) if args.weights else None
    if args.strategy == "imported" or (args.strategy == "manual" and args.base == "imported"):
        if imported is None:
            raise ValueError("--strategy imported needs --weights FILE (DoReMi JSON or RegMix YAML/CSV)")
    out = Path(args.out) if args.out else ws.exports_dir / f"{args.run}-{args.strategy}"
    options = {"data_root": args.data_root, "seed": args.seed}
    if args.prefix_template:
        options["prefix_template"] = args.prefix_template
        options["split_prefix_template"] = args.prefix_template
    if args.olmo_path_template:
        options["olmo_path_template"] = args.olmo_path_template
    bundle, report = mx.export_run(
        ws, args.run, out, args.formats, with_gis=not args.no_gis, bundle_options=options,
        strategy=args.strategy, level=args.level, token_budget=args.budget_tokens, max_epochs=args.max_epochs,
        temperature=args.temperature, overrides=overrides, base=args.base, imported=imported,
    )
    mixture = mx.read_mixture_json((bundle / "mixture.json").read_bytes())  # the table below is what was written

    d = mixture.domains
    print(f"{'domain':<10} {'label':<32} {'docs':>7} {'tokens':>11} {'natural':>8} {'weight':>8} {'epochs':>7}  source")
    for r in d.itertuples(index=False):
        label = (r.label[:29] + "...") if len(r.label) > 32 else r.label
        epochs = f"{r.implied_epochs:7.2f}" if r.implied_epochs == r.implied_epochs else "      -"
        print(f"{r.id:<10} {label:<32} {r.n_docs:>7,} {r.n_tokens:>11,} {r.natural_weight:8.4f} {r.weight:8.4f} "
              f"{epochs}  {r.weight_source}")
    for w in mixture.warnings:
        print(f"warning: {w}")
    print(f"wrote {show_path(bundle)} ({len(report['files'])} files, formats: {', '.join(report['formats'])}; validated)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gem import mixture as mx
    from gem.mixlab import verify_swarm
    from gem.store import show_path

    path = Path(args.bundle)
    if not path.exists():
        raise FileNotFoundError(f"{show_path(path)}: no such bundle folder or file")
    if path.is_dir() and (path / "swarm.csv").exists():
        report = verify_swarm(path, full=True)
        kind = "mixlab swarm"
        line = (f"{report['mixtures']} mixtures over {report['domains']} domains, swarm.csv rows sum to 1, every "
                f"mixture's trainer files ({', '.join(report['formats'])}) agree with it")
    else:
        if path.is_dir():
            report = mx.validate_bundle(path)
        else:
            found = mx.bundle_of(path)
            if found is None:
                raise mx.BundleError(f"{show_path(path)}: no MANIFEST.json beside it (not a file of an export bundle)")
            path = found[0]
            report = mx.validate_bundle(path)
        kind = "export bundle"
        line = (f"formats {', '.join(report['formats']) or 'none'}; {report['domains']} domains, weights sum to 1 "
                "in every format")
    if args.json:
        print(json.dumps({"path": show_path(path), "kind": kind, "valid": True,
                          **{k: v for k, v in report.items() if k != "weights"}}, indent=2, ensure_ascii=False))
        return 0
    manifest = "MANIFEST.json" if report.get("manifest", True) else "no MANIFEST.json (a swarm made before them)"
    print(f"{show_path(path)}: valid {kind}: {len(report['files'])} files checked against {manifest} "
          f"(sha256); {line}")
    return 0
