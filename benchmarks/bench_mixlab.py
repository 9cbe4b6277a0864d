"""Mixture lab: the cost of the 64-mixture loop on the sample, whether the predicted best beats the
reference mixtures on the proxy, and GEM vs k-means buckets (held-out Spearman rho of the
mixture -> proxy-loss regression). Writes benchmarks/results/mixlab.md.

    .venv/bin/python benchmarks/bench_mixlab.py [--extra WS] [--extra-targets SPEC ...]

``--extra WS``: a second, already embedded workspace (docs/benchmarks.md says how the
PyPI-summaries one was built); its label targets come from ``--extra-targets``.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gem.mixlab import best_mixture, design_run, fit_swarm, parse_target, run_proxy
from gem.mixlab.compare import compare_bucketings, kmeans_twin
from gem.mixlab.proxy import prepare_proxy
from machine import cpu_model  # benchmarks/machine.py
from gem.runs import FitSettings, fit_run
from gem.store import seed_sample_workspace, write_text_atomic

SAMPLE_TARGETS = ["label:source=python-docs", "label:source=kjv", "label:source=wordnet", "label:source=debian",
                  "label:category=python"]
SEEDS = (0, 1, 2)
K = 24


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores visible, Python {platform.python_version()}; load average at start "
            f"{os.getloadavg()[0]:.1f}. The box was shared with other work while measuring: times are indicative.")


def runs(ws) -> dict[str, str]:
    out = {}
    for label, method in (("GEM", "gem"), ("k-means", "kmeans"), ("spherical k-means", "spherical-kmeans")):
        s = FitSettings(method=method, k=K, seed=0)
        if not (ws.run_dir(s.slug()) / "params.json").exists():
            fit_run(ws, s.slug(), s)
        out[label] = s.slug()
    assert out["k-means"] == kmeans_twin(ws, out["GEM"])
    return out


def loop_timing(ws, run: str, target: str, tokens: int, eval_tokens: int) -> tuple[list[str], dict]:
    t = {}
    t0 = time.perf_counter()
    swarm = design_run(ws, run, 64, 1.0, seed=0)
    t["design (67 mixtures, trainer files)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run_proxy(ws, swarm, parse_target(target), tokens_per_mixture=tokens, eval_tokens=eval_tokens, seed=0)
    t["proxy (encode corpus + 67 bigram models)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_swarm(swarm, out.results.set_index("mixture_id"))["xent_bits"]
    t["fit (4 models x 5 folds + bootstrap)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    best = best_mixture(fit, swarm, swarm.bounds())
    t["best (20,000 candidates + refinement)"] = time.perf_counter() - t0
    # does the predicted best beat the references when the proxy measures it (fresh sampling seeds)?
    setup = prepare_proxy(ws, swarm, parse_target(target), eval_tokens=eval_tokens, seed=0)
    measured = {}
    for name in ("natural", "balanced", "unimax"):
        measured[name] = np.mean([setup.score(swarm.fixed(name), tokens, np.random.default_rng([99, s]))
                                  for s in range(3)])
    measured["best swarm mixture (measured)"] = float(out.results["xent_bits"].min())
    measured["predicted best"] = np.mean([setup.score(best.weights, tokens, np.random.default_rng([99, s]))
                                          for s in range(3)])
    lines = ["| step | seconds |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in t.items()]
    lines.append(f"| **whole loop** | **{sum(t.values()):.1f}** |")
    lines += ["", f"Fit: model {fit.model_kind}, held-out Spearman rho {fit.rho:.3f} "
              f"(90% bootstrap {fit.rho_interval[0]:.3f}-{fit.rho_interval[1]:.3f}); predicted best "
              f"{best.predicted:.3f} bits/token, L1 distance {best.distance_to_swarm:.2f} from the nearest swarm mixture.",
              "", "Proxy cross-entropy on the target (bits/token, lower is better; the references and the predicted "
              "best re-measured with 3 fresh sampling seeds each):", "",
              "| mixture | xent (bits/token) |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in measured.items()]
    return lines, {"fit": fit, "best": best, "measured": measured, "seconds": sum(t.values())}


def comparison(ws, bucketings: dict[str, str], targets: list[str], tokens: int, eval_tokens: int):
    rows = []
    for target in targets:
        for seed in SEEDS:
            df = compare_bucketings(ws, bucketings, parse_target(target), n=64, seed=seed, tokens_per_mixture=tokens,
                                    eval_tokens=eval_tokens)
            df.insert(0, "target", target)
            df.insert(1, "seed", seed)
            rows.append(df)
    table = pd.concat(rows, ignore_index=True)
    wide = table.pivot_table(index=["target"], columns="bucketing", values="rho", aggfunc="mean")
    wide = wide[list(bucketings)]
    lines = ["| target | " + " | ".join(f"rho {b}" for b in bucketings) + " | best |",
             "|---|" + "---|" * (len(bucketings) + 1)]
    for target, r in wide.iterrows():
        lines.append(f"| {target} | " + " | ".join(f"{r[b]:.3f}" for b in bucketings) + f" | {r.idxmax()} |")
    means = table.groupby("bucketing")["rho"].mean()
    lines.append("| **mean over targets and seeds** | " + " | ".join(f"**{means[b]:.3f}**" for b in bucketings)
                 + f" | {means.idxmax()} |")
    paired = table.pivot_table(index=["target", "seed"], columns="bucketing", values="rho")
    wins = {b: int((paired[b] == paired.max(axis=1)).sum()) for b in bucketings}
    lines += ["", f"Per (target, seed) swarm, {len(paired)} in all, the bucketing with the highest rho: "
              + ", ".join(f"{b} {wins[b]}" for b in bucketings) + "."]
    return lines, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", help="a second embedded workspace")
    ap.add_argument("--extra-name", default="second corpus")
    ap.add_argument("--extra-targets", nargs="*", default=[])
    ap.add_argument("--extra-tokens", type=int, default=20_000)
    args = ap.parse_args()
    from gem.store import Workspace

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_mixlab_"))
    ws = seed_sample_workspace(tmp / "sample")
    bucketings = runs(ws)
    out = ["# Mixture lab (benchmarks/bench_mixlab.py)", "", f"Machine: {machine()}", "",
           "## The 64-mixture loop on the sample", "",
           f"Shipped sample (11,500 documents), GEM run K = {K} (automatic balance, seed 0), 64 Dirichlet mixtures "
           "(alpha 1) + natural, balanced, UniMax; budget = the corpus once, max 4 epochs; proxy target "
           f"`{SAMPLE_TARGETS[0]}` (half of those documents held out), 100,000 training tokens per mixture, "
           "at most 50,000 target tokens. One process, no parallelism.", ""]
    lines, _ = loop_timing(ws, bucketings["GEM"], SAMPLE_TARGETS[0], 100_000, 50_000)
    out += lines
    out += ["", "## GEM vs k-means buckets: how predictable is the mixture -> loss regression?", "",
            f"Same K = {K}, same swarm procedure (64 + 3 mixtures, alpha 1, budget = the corpus once, max 4 epochs), "
            "same proxy and target, same regression candidates; held-out Spearman rho of the chosen model's "
            f"cross-validated predictions, mean over seeds {', '.join(map(str, SEEDS))} (seed of the swarm, the "
            "held-out split and the samples). The sample:", ""]
    lines, table = comparison(ws, bucketings, SAMPLE_TARGETS, 100_000, 50_000)
    out += lines
    tables = [table.assign(corpus="sample")]
    if args.extra:
        xws = Workspace(args.extra)
        xb = runs(xws)
        n_docs = len(xws.load_corpus(columns=["id"]))
        out += ["", f"The {args.extra_name} ({n_docs:,} documents; {args.extra_tokens:,} training tokens per mixture, "
                "at most 10,000 target tokens):", ""]
        lines, table = comparison(xws, xb, args.extra_targets, args.extra_tokens, 10_000)
        out += lines
        tables.append(table.assign(corpus=args.extra_name))
    allt = pd.concat(tables, ignore_index=True)
    means = allt.groupby("bucketing")["rho"].mean().sort_values(ascending=False)
    out += ["", "## Reading", "",
            "Over every corpus, target and seed measured here, mean held-out rho: "
            + ", ".join(f"{b} {v:.3f}" for b, v in means.items()) + ". "
            "Which bucketing is more predictable depends on the target: read the per-target rows, not only the "
            "mean. The proxy is a word bigram model, not a transformer, and 67 mixtures per swarm give rho "
            "intervals about ±0.05 wide; the paper's claim (on real training runs) is not settled by this "
            "table either way.", "",
            f"Whole benchmark: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(out) + "\n"
    print(text)
    write_text_atomic(Path(__file__).resolve().parent / "results" / "mixlab.md", text)


if __name__ == "__main__":
    main()
