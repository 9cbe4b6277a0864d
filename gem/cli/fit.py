"""`gem fit` and `gem compare`."""
from __future__ import annotations

import argparse
import json

from ..runs import METHODS
from . import add_workspace_arg


def _balance(text: str):
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--balance must be 'auto' or a number >= 0, got {text!r}")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"--balance must be >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="cluster the workspace embeddings and store a run",
                              description="Fit GEM or a baseline on a workspace's embeddings and store the run "
                                          "(params.json, model.json + .npy arrays, assignments.parquet).")
    add_workspace_arg(p)
    p.add_argument("--method", choices=METHODS, default="gem",
                   help="gem | kmeans (scikit-learn on the RAW vectors) | kmeans-unit | spherical-kmeans | "
                        "vmf (plain vMF mixture, learned prior)")
    p.add_argument("--k", type=_positive_int, default=24, help="number of clusters (default 24)")
    p.add_argument("--balance", type=_balance, default="auto", help="GEM lambda: 'auto' (default) or a number")
    p.add_argument("--regularizer", choices=("quadratic", "kl"), default="quadratic")
    p.add_argument("--representation", default="final", help="embeddings to use: final or layer<N>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-init", type=_positive_int, default=1)
    p.add_argument("--weight-by-tokens", action="store_true", help="weight documents by n_tokens (mass in tokens)")
    p.add_argument("--run", default=None, help="run name (default: <method>-k<K>)")
    p.add_argument("--warm-from", default=None, metavar="RUN",
                   help="start GEM from a saved GEM run's parameters (same K and representation), as the app "
                        "does when only the balance changes")
    p.add_argument("--no-sync", action="store_true",
                   help="do not match a GEM run to the workspace taxonomy (by default its clusters get the "
                        "taxonomy's stable topic ids at once, as in the app)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_fit)

    c = subparsers.add_parser("compare", help="fit GEM and the baselines; print balance and agreement",
                              description="Fit GEM (auto and 5000) and the baselines on the same embeddings and "
                                          "print normalised entropy, largest share, effective clusters and NMI/ARI "
                                          "against the corpus's `source` and `category` labels when present.")
    add_workspace_arg(c)
    c.add_argument("--k", type=_positive_int, default=24)
    c.add_argument("--representation", default="final")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json", action="store_true", help="print the table as JSON")
    c.set_defaults(handler=cmd_compare)


def cmd_fit(args) -> int:
    from ..metrics import balance_report
    from ..runs import FitSettings, fit_run, load_run
    from ..store import open_workspace, validate_name

    ws = open_workspace(args.workspace)
    settings = FitSettings(method=args.method, k=args.k, balance=args.balance, seed=args.seed,
                           representation=args.representation, regularizer=args.regularizer, n_init=args.n_init,
                           weight_by_tokens=bool(args.weight_by_tokens))
    name = validate_name(args.run or f"{args.method}-k{args.k}" + ("" if args.representation == "final" else f"-{args.representation}"),
                         "run name")
    warm = load_run(ws, validate_name(args.warm_from, "run name")) if args.warm_from else None
    est = fit_run(ws, name, settings, warm_from=warm)
    report = None
    if args.method == "gem" and not args.no_sync:
        from ..taxonomy import sync_saved_run

        _, report, _ = sync_saved_run(ws, name)
    weights = None
    if args.weight_by_tokens:
        weights = ws.load_corpus(columns=["n_tokens"])["n_tokens"].to_numpy(dtype=float)
    summary = {"run": name, "path": str(ws.run_dir(name)), **balance_report(est.labels_, args.k, weights),
               "fit_seconds": round(float(getattr(est, "fit_time_", float("nan"))), 3)}
    if hasattr(est, "balance_"):
        summary["balance"] = est.balance_
        summary["n_iter"] = est.n_iter_
        summary["converged"] = bool(est.converged_)
    if report is not None:
        summary["taxonomy"] = report.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"saved run {name!r} in {summary['path']}")
        for key, value in summary.items():
            if key not in ("run", "path"):
                print(f"  {key:20s} {value:.4g}" if isinstance(value, float) else f"  {key:20s} {value}")
    return 0


def cmd_compare(args) -> int:
    from ..baselines import compare_methods
    from ..runs import load_fit_data
    from ..store import open_workspace

    ws = open_workspace(args.workspace)
    X, corpus = load_fit_data(ws, args.representation)
    X_raw = ws.load_raw_embeddings(args.representation, unit=X)
    refs = {c: corpus[c].to_numpy() for c in ("source", "category") if c in corpus.columns}
    methods = ("kmeans", "kmeans-unit", "spherical-kmeans", "vmf", "gem", "gem-5000")
    rows = compare_methods(X, X_raw, args.k, refs, methods=methods, random_state=args.seed,
                           estimator_kw={"gem": {"label": "gem (auto)"},
                                         "gem-5000": {"method": "gem", "balance": 5000.0, "label": "gem (5000)"}})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["method", "normalized_entropy", "largest_share", "effective_clusters"]
    cols += [c for c in rows[0] if c.startswith(("nmi_", "ari_"))] + ["balance", "fit_seconds"]
    print("  ".join(f"{c:>18s}" for c in cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:>18.4g}" if isinstance(v, float) else f"{str(v):>18s}")
        print("  ".join(cells))
    return 0
