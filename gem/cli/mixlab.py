"""`gem mixlab design|proxy|fit|best|compare`: mixing experiments over a run's topics (see gem.mixlab)."""
from __future__ import annotations

import argparse
import sys

from gem.cli import add_workspace_arg, existing_workspace


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "mixlab", help="design mixing experiments, read their results, predict the best mixture",
        description="RegMix-style mixture lab over a fitted run's topics: design a swarm of mixtures, score them "
                    "with the built-in n-gram proxy (or import measured results), fit mixture -> metric "
                    "regressions (held-out Spearman rho), and export the best predicted mixture as a bundle.")
    sub = p.add_subparsers(dest="mixlab_command", required=True, metavar="STEP")

    d = sub.add_parser("design", help="write a swarm of mixtures (swarm.csv + per-mixture trainer files)")
    add_workspace_arg(d)
    d.add_argument("--run", required=True, metavar="NAME", help="fitted run whose topics are the domains")
    d.add_argument("--n", type=int, default=64, help="Dirichlet mixtures, besides natural, balanced and UniMax (default 64)")
    d.add_argument("--alpha", type=float, default=1.0,
                   help="Dirichlet concentration around the token prior: small = varied, sparse mixtures (default 1)")
    d.add_argument("--budget-tokens", type=float, metavar="N",
                   help="training tokens of each mixture (default: the included tokens, one epoch)")
    d.add_argument("--max-epochs", type=float, default=4.0, metavar="E", help="max repetitions of a domain (default 4)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", metavar="DIR", help="swarm folder (default WS/mixlab/<run>-n<N>-a<alpha>-s<seed>)")
    d.set_defaults(handler=run_design)

    x = sub.add_parser("proxy", help="score every mixture with the built-in n-gram proxy (writes results.csv)")
    add_workspace_arg(x)
    _swarm_arg(x)
    x.add_argument("--target", required=True, metavar="SPEC",
                   help="held-out target: topic:<id>, label:<column>=<value> (e.g. label:category=python) or "
                        "file:<path> (JSONL with a text field, or plain text split on blank lines)")
    x.add_argument("--holdout", type=float, default=0.5,
                   help="share of a topic's / label's documents held out as the target (default 0.5)")
    x.add_argument("--tokens", type=int, default=100_000, help="training tokens sampled per mixture (default 100000)")
    x.add_argument("--eval-tokens", type=int, default=50_000, help="target tokens scored, at most (default 50000)")
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(handler=run_proxy_cmd)

    c = sub.add_parser("compare", help="GEM vs k-means buckets: held-out rho of the same swarm + proxy + fit",
                       description="Run the same swarm, proxy and regression on a GEM run and on k-means of the same "
                                   "K, seed and representation (fitted when missing, or --against RUN), and print "
                                   "each bucketing's held-out Spearman rho. Nothing is written but the k-means run.")
    add_workspace_arg(c)
    c.add_argument("--run", required=True, metavar="NAME", help="the GEM run")
    c.add_argument("--against", nargs="+", default=[], metavar="RUN",
                   help="runs to compare with (default: Euclidean k-means with the same K)")
    c.add_argument("--target", required=True, metavar="SPEC",
                   help="label:<column>=<value> or file:<path> (topic ids differ between bucketings)")
    c.add_argument("--n", type=int, default=64)
    c.add_argument("--alpha", type=float, default=1.0)
    c.add_argument("--max-epochs", type=float, default=4.0)
    c.add_argument("--tokens", type=int, default=100_000)
    c.add_argument("--eval-tokens", type=int, default=50_000)
    c.add_argument("--seeds", type=int, nargs="+", default=[0], help="one swarm per seed (default 0)")
    c.set_defaults(handler=run_compare)

    for name, help_ in (("fit", "fit mixture -> metric regressions; report held-out Spearman rho"),
                        ("best", "predict the best mixture under constraints and export it as a bundle")):
        f = sub.add_parser(name, help=help_)
        add_workspace_arg(f)
        _swarm_arg(f)
        f.add_argument("--results", metavar="CSV",
                       help="measured results: mixture_id + metric columns (default: the swarm's results.csv)")
        f.add_argument("--metric", action="append", metavar="NAME",
                       help="metric column(s) to fit (default: all; `best` uses the first)")
        f.add_argument("--minimize", action="append", default=[], metavar="NAME",
                       help="lower is better for this metric (default: names with loss/ppl/xent/bits/nll)")
        f.add_argument("--maximize", action="append", default=[], metavar="NAME", help="higher is better for this metric")
        f.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
        f.add_argument("--seed", type=int, default=0)
        if name == "fit":
            f.set_defaults(handler=run_fit)
            continue
        f.add_argument("--max-epochs", type=float, metavar="E", help="max epochs (default: the swarm's)")
        f.add_argument("--budget-tokens", type=float, metavar="N", help="token budget (default: the swarm's)")
        f.add_argument("--floor", nargs="+", default=[], metavar="ID=W", help="lowest share of a domain")
        f.add_argument("--ceiling", nargs="+", default=[], metavar="ID=W", help="highest share of a domain")
        f.add_argument("--exclude", nargs="+", default=[], metavar="ID", help="domains that get no weight")
        f.add_argument("--candidates", type=int, default=20_000, help="mixtures searched (default 20000)")
        f.add_argument("--out", metavar="DIR", help="bundle folder (default WS/exports/<swarm>-best-<metric>)")
        f.add_argument("--formats", default="all", metavar="LIST", help="bundle formats, as `gem export --formats`")
        f.add_argument("--no-export", action="store_true", help="print the prediction only")
        f.set_defaults(handler=run_best)


def _swarm_arg(p) -> None:
    p.add_argument("--swarm", required=True, metavar="NAME|DIR", help="swarm folder, or its name under WS/mixlab/")


def _progress(what: str):
    def report(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} mixtures", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


def _swarm(args):
    from gem.mixlab import load_swarm, resolve_swarm

    ws = existing_workspace(args)
    return ws, load_swarm(resolve_swarm(ws, args.swarm))


def run_design(args: argparse.Namespace) -> int:
    from gem.mixlab import design_run

    ws = existing_workspace(args)
    swarm = design_run(ws, args.run, args.n, args.alpha, token_budget=args.budget_tokens, max_epochs=args.max_epochs,
                       seed=args.seed, out_dir=args.out, progress=_progress("design"))
    W = swarm.matrix()
    print(f"wrote {swarm.path}: {len(W)} mixtures over {len(swarm.ids)} domains "
          f"(budget {swarm.params['token_budget']:,.0f} tokens, max {swarm.params['max_epochs']:g} epochs); "
          f"swarm.csv and mixtures/<id>/ trainer files")
    print(f"next: gem mixlab proxy -w {ws.root} --swarm {swarm.path.name} --target label:<column>=<value>, "
          "or train each mixture and pass --results to `gem mixlab fit`")
    return 0


def run_proxy_cmd(args: argparse.Namespace) -> int:
    from gem.mixlab import parse_target, run_proxy

    ws, swarm = _swarm(args)
    target = parse_target(args.target, args.holdout)
    if args.tokens < 1000 or args.eval_tokens < 100:
        raise ValueError("--tokens must be >= 1000 and --eval-tokens >= 100")
    out = run_proxy(ws, swarm, target, tokens_per_mixture=args.tokens, eval_tokens=args.eval_tokens, seed=args.seed,
                    progress=_progress("proxy"))
    r, info = out.results, out.info
    print(f"proxy ({info['model']}) on {info['target']}: {info['eval_tokens']:,} target tokens in "
          f"{info['eval_docs']:,} documents, {info['tokens_per_mixture']:,} training tokens per mixture, "
          f"{info['seconds']:.1f} s")
    print(f"xent_bits: min {r['xent_bits'].min():.4f}, median {r['xent_bits'].median():.4f}, "
          f"max {r['xent_bits'].max():.4f}; wrote {swarm.path / 'results.csv'}")
    return 0


def _results(args, swarm):
    from pathlib import Path

    from gem.mixlab import read_results

    path = Path(args.results) if args.results else swarm.path / "results.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results: run `gem mixlab proxy` or pass --results CSV")
    return read_results(path, list(swarm.weights.index), where=str(path))


def _directions(args) -> dict[str, bool]:
    both = set(args.minimize) & set(args.maximize)
    if both:
        raise ValueError(f"metric {sorted(both)[0]!r} is given to both --minimize and --maximize")
    return {**{m: True for m in args.minimize}, **{m: False for m in args.maximize}}


def _fits(args, swarm, results, metrics=None):
    from gem.mixlab import fit_swarm

    return fit_swarm(swarm, results, metrics or args.metric, _directions(args), folds=args.folds, seed=args.seed)


def run_fit(args: argparse.Namespace) -> int:
    from gem.store import write_json_atomic

    ws, swarm = _swarm(args)
    results = _results(args, swarm)
    fits = _fits(args, swarm, results)
    for metric, fit in fits.items():
        lo, hi = fit.rho_interval
        print(f"{metric} ({'lower' if fit.minimize else 'higher'} is better): model {fit.model_kind}, held-out "
              f"Spearman rho {fit.rho:.3f} (90% bootstrap {lo:.3f}-{hi:.3f}) over {len(fit.measured)} mixtures")
        for r in fit.candidates.itertuples(index=False):
            print(f"  {r.model:<11} cv rmse {r.cv_rmse:.5g}  cv rho {r.cv_spearman:.3f}")
        if fit.warning:
            print(f"warning: {fit.warning}")
    write_json_atomic(swarm.path / "fit.json", {m: f.summary() for m, f in fits.items()})
    print(f"wrote {swarm.path / 'fit.json'}")
    return 0


def _assignments(items: list[str], what: str) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--{what} {item!r}: write domain=share, e.g. T003=0.05") from None
        if not sep or not key:
            raise ValueError(f"--{what} {item!r}: write domain=share, e.g. T003=0.05")
    return out


def run_best(args: argparse.Namespace) -> int:
    from gem.mixlab import best_mixture, export_mixture
    from gem.mixlab.regression import metric_safe

    ws, swarm = _swarm(args)
    results = _results(args, swarm)
    metric = (args.metric or [results.columns[0]])[0]
    fit = _fits(args, swarm, results, [metric])[metric]
    floors, ceilings = _assignments(args.floor, "floor"), _assignments(args.ceiling, "ceiling")
    b = swarm.bounds(token_budget=args.budget_tokens, max_epochs=args.max_epochs, floors=floors, ceilings=ceilings,
                     excluded=args.exclude)
    best = best_mixture(fit, swarm, b, n_candidates=args.candidates, seed=args.seed)
    print(f"{metric}: model {fit.model_kind}, held-out Spearman rho {fit.rho:.3f}")
    print(f"{'mixture':<24} {'predicted':>10} {'± spread':>9} {'measured':>10}")
    for r in best.comparison.itertuples(index=False):
        measured = f"{r.measured:10.4f}" if r.measured == r.measured else "         -"
        print(f"{r.mixture:<24} {r.predicted:10.4f} {r.spread:9.4f} {measured}")
    print("predicted best weights: " + ", ".join(f"{k}={v:.4f}" for k, v in best.as_dict(1e-4).items()))
    for note in best.notes:
        print(f"note: {note}")
    if fit.warning:
        print(f"warning: {fit.warning}")
    if args.no_export:
        return 0
    out = args.out or ws.exports_dir / f"{swarm.path.name}-best-{metric_safe(metric)}"
    path, report = export_mixture(ws, swarm, best.as_dict(), out, args.formats, token_budget=args.budget_tokens,
                                  max_epochs=args.max_epochs, extra={
        "metric": metric, "minimize": fit.minimize, "model": fit.model_kind, "spearman_rho_cv": fit.rho,
        "predicted": best.predicted, "spread": best.spread,
        "constraints": {"floors": floors, "ceilings": ceilings,
                        "excluded": list(args.exclude), "max_epochs": args.max_epochs or swarm.params["max_epochs"],
                        "token_budget": args.budget_tokens or swarm.params["token_budget"]}})
    print(f"wrote {path} ({len(report['files'])} files, formats: {', '.join(report['formats'])}; validated; "
          "weight_source mixlab)")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from gem.mixlab import parse_target
    from gem.mixlab.compare import compare_bucketings, kmeans_twin

    ws = existing_workspace(args)
    target = parse_target(args.target)
    runs = {f"GEM ({args.run})": args.run}
    for other in args.against or [kmeans_twin(ws, args.run)]:
        runs[other] = other
    print(f"{'seed':>4}  {'bucketing':<32} {'K':>4} {'model':<10} {'rho':>6}  90% interval")
    for seed in args.seeds:
        table = compare_bucketings(
            ws, runs, target, n=args.n, alpha=args.alpha, max_epochs=args.max_epochs, seed=seed,
            tokens_per_mixture=args.tokens, eval_tokens=args.eval_tokens,
            progress=lambda label, d, t: _progress(label)(d, t))
        for r in table.itertuples(index=False):
            print(f"{seed:>4}  {r.bucketing:<32} {r.K:>4} {r.model:<10} {r.rho:6.3f}  {r.rho_lo:.3f}-{r.rho_hi:.3f}")
    return 0
