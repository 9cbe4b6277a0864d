"""`gem sweep`: the lambda trade-off table (balance vs meaning vs stability) of a workspace."""
from __future__ import annotations

import argparse
import json
import sys

from . import add_workspace_arg, existing_workspace


def _lambdas(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lambdas must be comma-separated numbers >= 0, got {text!r}")
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--lambdas must be comma-separated numbers >= 0, got {text!r}")
    return values


def _seeds(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}")
    if not values or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"--seeds must be distinct comma-separated integers, got {text!r}")
    return values


def register(subparsers) -> None:
    from ..sweep import DEFAULT_LAMBDAS

    p = subparsers.add_parser(
        "sweep", help="lambda sweep: balance, NMI/ARI to the label columns and seed stability per lambda",
        description="Fit GEM with balance 'auto' once per seed, then every lambda warm-started from it (as the app "
                    "does), and report per lambda the normalised entropy, largest share, NMI/ARI to each label "
                    "column of the corpus and the stability (mean ARI between seeds), with k-means on raw and on "
                    "unit vectors as reference rows.")
    add_workspace_arg(p)
    p.add_argument("--k", type=int, default=24)
    p.add_argument("--representation", default="final")
    p.add_argument("--lambdas", type=_lambdas, default=list(DEFAULT_LAMBDAS),
                   help="comma-separated lambdas (default: the app's named stops 0,10,100,1000,5000,20000)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args) -> int:
    from ..runs import load_fit_data
    from ..sweep import lambda_sweep

    if args.k < 2:
        raise ValueError(f"--k must be >= 2, got {args.k}")
    ws = existing_workspace(args)
    X, corpus = load_fit_data(ws, args.representation)
    X_raw = ws.load_raw_embeddings(args.representation, unit=X)
    refs = {c: corpus[c].to_numpy() for c in corpus.columns if c not in ("id", "text", "n_tokens")}

    def progress(done, total, what):
        if not args.json:
            print(f"\r[{done}/{total}] {what}".ljust(60), end="", file=sys.stderr, flush=True)

    result = lambda_sweep(X, refs, args.k, args.lambdas, args.seeds, X_raw=X_raw, progress=progress)
    if args.json:
        print(json.dumps({"k": result.k, "seeds": result.seeds, "seconds": round(result.seconds, 2),
                          "rows": result.rows, "references": result.references}, indent=2))
        return 0
    print(file=sys.stderr)
    cols = ["method", "lambda", "normalized_entropy", "largest_share", "stability"]
    cols += [c for c in result.rows[0] if c.startswith(("nmi_", "ari_"))]
    print("  ".join(f"{c:>22s}" for c in cols))
    for row in result.table():
        print("  ".join(f"{row[c]:>22.4g}" if isinstance(row.get(c), float)
                        else f"{'' if row.get(c) is None else str(row[c]):>22s}" for c in cols))  # k-means: no λ
    return 0
