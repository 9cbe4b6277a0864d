"""`gem fit` and `gem compare`."""
from __future__ import annotations

import argparse
import json

from . import add_workspace_arg

METHODS = ("gem", "kmeans", "kmeans-unit", "spherical-kmeans", "vmf")


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


def _load(ws, representation, raw: bool):
    X = ws.load_raw_embeddings(representation) if raw else ws.load_embeddings(representation)
    corpus = ws.load_corpus()
    if len(corpus) != X.shape[0]:
        raise ValueError(f"{ws.embeddings_path(representation)}: {X.shape[0]} rows but the corpus has "
                         f"{len(corpus)}; re-run `gem embed`")
    return X, corpus


def cmd_fit(args) -> int:
    import numpy as np

    from ..baselines import make_estimator, uses_raw_vectors
    from ..metrics import balance_report
    from ..runs import save_run
    from ..store import open_workspace, validate_name

    ws = open_workspace(args.workspace)
    name = validate_name(args.run or f"{args.method}-k{args.k}" + ("" if args.representation == "final" else f"-{args.representation}"),
                         "run name")
    X, corpus = _load(ws, args.representation, uses_raw_vectors(args.method))
    kw = {"random_state": args.seed}
    if args.method == "gem":
        kw.update(balance=args.balance, regularizer=args.regularizer, n_init=args.n_init)
    elif args.method in ("vmf", "kmeans", "kmeans-unit"):
        kw.update(n_init=args.n_init)
    weights = None
    if args.weight_by_tokens:
        if "n_tokens" not in corpus.columns:
            raise ValueError(f"{ws.corpus_path}: no n_tokens column to weight by; re-ingest the corpus")
        weights = corpus["n_tokens"].to_numpy(dtype=np.float64)
    est = make_estimator(args.method, args.k, **kw)
    est.fit(X, sample_weight=weights)
    params = {"method": args.method, "k": args.k, "representation": args.representation, "seed": args.seed,
              "balance": args.balance if args.method == "gem" else None,
              "regularizer": args.regularizer if args.method == "gem" else None,
              "n_init": args.n_init, "weight_by_tokens": bool(args.weight_by_tokens)}
    folder = save_run(ws, name, est, args.method, params, corpus["id"].tolist(),
                      X=X if args.method in ("gem", "vmf") else None)
    summary = {"run": name, "path": str(folder), **balance_report(est.labels_, args.k, weights),
               "fit_seconds": round(float(getattr(est, "fit_time_", float("nan"))), 3)}
    if hasattr(est, "balance_"):
        summary["balance"] = est.balance_
        summary["n_iter"] = est.n_iter_
        summary["converged"] = bool(est.converged_)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"saved run {name!r} in {folder}")
        for key, value in summary.items():
            if key not in ("run", "path"):
                print(f"  {key:20s} {value:.4g}" if isinstance(value, float) else f"  {key:20s} {value}")
    return 0


def cmd_compare(args) -> int:
    from ..baselines import compare_methods
    from ..store import open_workspace

    ws = open_workspace(args.workspace)
    X, corpus = _load(ws, args.representation, raw=False)
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
