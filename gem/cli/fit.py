"""`gem fit` and `gem compare`."""
from __future__ import annotations

import argparse
import json

from ..runs import METHODS
from . import add_workspace_arg, existing_workspace, positive_int


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


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 0.9], got {text!r}")
    if not 0 < value <= 0.9:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 0.9], got {text!r}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser("fit", help="cluster the workspace embeddings and store a run",
                              description="Fit GEM or a baseline on a workspace's embeddings and store the run "
                                          "(params.json, model.json + .npy arrays, assignments.parquet).")
    add_workspace_arg(p)
    p.add_argument("--method", choices=METHODS, default="gem",
                   help="gem | kmeans (scikit-learn on the RAW vectors) | kmeans-unit | spherical-kmeans | "
                        "faiss-spherical (faiss's spherical k-means) | vmf (plain vMF mixture, learned prior)")
    p.add_argument("--k", type=positive_int, default=24, help="number of clusters (default 24)")
    p.add_argument("--balance", type=_balance, default="auto", help="GEM lambda: 'auto' (default) or a number")
    p.add_argument("--regularizer", choices=("quadratic", "kl"), default="quadratic")
    p.add_argument("--representation", default="final", help="embeddings to use: final or layer<N>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-init", type=positive_int, default=1)
    p.add_argument("--weight-by-tokens", action="store_true", help="weight documents by n_tokens (mass in tokens)")
    p.add_argument("--exclude-flagged", action=argparse.BooleanOptionalAction, default=None,
                   help="fit without the documents excluded with `gem flag --exclude` (default: on when any are "
                        "excluded); the run records which exclusions it used")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where a gem/vmf fit runs: cpu (default), cuda, cuda:N, or auto (CUDA when this torch "
                   "sees a GPU); results agree to float round-off, so it is not part of the run's settings")
    p.add_argument("--run", default=None, help="run name (default: <method>-k<K>)")
    p.add_argument("--warm-from", default=None, metavar="RUN",
                   help="start GEM from this saved GEM run's parameters (same K and representation). Without it "
                        "GEM starts, as in the app, from the previous fit of the same settings when only the "
                        "documents changed (exclusions, new documents), and a manual --balance from the 'auto' "
                        "run of the same K and seed (fitted first when missing)")
    p.add_argument("--cold", action="store_true",
                   help="fit GEM from a fresh k-means++ seeding, not from the previous fit of these settings")
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
    c.add_argument("--k", type=positive_int, default=24)
    c.add_argument("--representation", default="final")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--inject-synthetic", type=_share, default=None, metavar="SHARE",
                   help="stress test: add deterministic template 'textbook' passages on the corpus's own topic words "
                        "(templates, not LLM output) so they are SHARE (e.g. 0.15) of the data, embedded with the "
                        "workspace's model (cached in the workspace's cache/; the corpus files are not touched), "
                        "and report per method where they went")
    c.add_argument("--injected-set", default=None, metavar="COLUMN=VALUE",
                   help="stress view for real synthetic data: treat the corpus rows with COLUMN == VALUE as the "
                        "injected set (no passages are added)")
    c.add_argument("--json", action="store_true", help="print the table as JSON")
    c.set_defaults(handler=cmd_compare)


def cmd_fit(args) -> int:
    from ..metrics import balance_report
    from ..flags import DocFlags
    from ..refit import fit_with_policy
    from ..runs import FitSettings, load_run
    from ..store import validate_name

    ws = existing_workspace(args)
    n_excluded = DocFlags(ws).n_excluded()
    exclude = n_excluded > 0 if args.exclude_flagged is None else bool(args.exclude_flagged)
    settings = FitSettings(method=args.method, k=args.k, balance=args.balance, seed=args.seed,
                           representation=args.representation, regularizer=args.regularizer, n_init=args.n_init,
                           weight_by_tokens=bool(args.weight_by_tokens), exclude_flagged=exclude)
    name = validate_name(args.run or f"{args.method}-k{args.k}" + ("" if args.representation == "final" else f"-{args.representation}"),
                         "run name")
    if args.warm_from and args.cold:
        raise ValueError("--warm-from and --cold contradict each other: give one")
    warm_from = validate_name(args.warm_from, "run name") if args.warm_from else None
    if warm_from is not None:
        load_run(ws, warm_from)  # a missing run is one clear error before anything is fitted
    outcome = fit_with_policy(ws, settings, name, device=args.device, cold=args.cold, sync=not args.no_sync,
                              warm_from=warm_from)
    est, report = outcome.estimator, outcome.sync
    weights = None
    if args.weight_by_tokens:
        weights = load_run(ws, name).assignments[["id"]].merge(
            ws.load_corpus(columns=["id", "n_tokens"]).astype({"id": str}), on="id", how="left")["n_tokens"].to_numpy(float)
    summary = {"run": name, "path": str(ws.run_dir(name)), **balance_report(est.labels_, args.k, weights),
               "excluded_documents": n_excluded if exclude else 0,
               "fit_seconds": round(float(getattr(est, "fit_time_", float("nan"))), 3)}
    if hasattr(est, "balance_"):
        summary["balance"] = est.balance_
        summary["n_iter"] = est.n_iter_
        summary["converged"] = bool(est.converged_)
    if outcome.base is not None:
        summary["fitted_first"] = outcome.base.name
    if outcome.warm is not None:
        summary["warm_start_from"] = outcome.warm.run
    if report is not None:
        summary["taxonomy"] = report.summary()
    if outcome.moves is not None:
        summary["what_moved"] = outcome.moves.summary()
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
    ws = existing_workspace(args)
    if args.inject_synthetic is not None or args.injected_set is not None:
        return _compare_stress(args, ws)
    X, corpus = load_fit_data(ws, args.representation)
    X_raw = ws.load_raw_embeddings(args.representation, unit=X)
    refs = {c: corpus[c].to_numpy() for c in ("source", "category") if c in corpus.columns}
    methods = ("kmeans", "kmeans-unit", "spherical-kmeans", "faiss-spherical", "vmf", "gem", "gem-5000")
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


STRESS_COLUMNS = ["method", "n_injected", "top2_share", "clusters_dominated", "dominated_share",
                  "normalized_entropy", "largest_share", "balance", "fit_seconds"]


def _compare_stress(args, ws) -> int:
    """`gem compare --inject-synthetic SHARE` / `--injected-set COL=VALUE`: where the injected set goes."""
    import sys

    import numpy as np

    from ..runs import load_fit_data
    from ..stress import inject_synthetic, injected_mask, stress_compare, stress_embeddings

    if args.inject_synthetic is not None and args.injected_set is not None:
        raise ValueError("give either --inject-synthetic or --injected-set, not both")
    X, corpus = load_fit_data(ws, args.representation)
    norms = ws.load_norms(args.representation)
    if args.injected_set is not None:
        column, sep, value = args.injected_set.partition("=")
        if not sep:
            raise ValueError(f"--injected-set must be COLUMN=VALUE, got {args.injected_set!r}")
        injected = injected_mask(corpus, column, value)
        if not injected.any():
            raise ValueError(f"no corpus row has {column} == {value!r}")
        unit, frame = np.asarray(X, np.float32), corpus
        info = {"injected_set": f"{column}={value}"}
    else:
        frame = inject_synthetic(corpus, args.inject_synthetic, args.seed)

        def progress(done, total):
            if total and not args.json:
                print(f"\rembedding {done}/{total} template passages", end="", file=sys.stderr, flush=True)

        unit, norms = stress_embeddings(ws, frame, args.representation, progress=progress)
        injected = (frame["provenance"] != "corpus").to_numpy()
        info = {"inject_synthetic": args.inject_synthetic, "generator": "synthetic-template (templates, not LLM output)"}
    refs = {c: frame[c].to_numpy() for c in ("source", "category") if c in frame.columns}
    rows = stress_compare(unit, unit * norms[:, None], injected, args.k, seed=args.seed, references=refs)
    if args.json:
        print(json.dumps([{**info, **r} for r in rows], indent=2))
        return 0
    print(f"{int(injected.sum()):,} injected of {len(frame):,} documents ({injected.mean():.1%}); K = {args.k}, "
          f"seed {args.seed}")
    print("  ".join(f"{c:>18s}" for c in STRESS_COLUMNS))
    for row in rows:
        print("  ".join(f"{row[c]:>18.4g}" if isinstance(row.get(c), float) else f"{str(row.get(c, '')):>18s}"
                        for c in STRESS_COLUMNS))
    return 0
