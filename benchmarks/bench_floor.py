"""The softmax floor and subnormal floats: the fit's products with gamma's tails at exp(-80) (the old
floor) against exp(-36) (gem.model._CLAMP), alternating in one process, on real-derived rows (the
sample's MiniLM vectors plus noise, as bench_fit.py makes them).

    .venv/bin/python benchmarks/bench_floor.py [--n 200000] [--k 256] [--rounds 3]

For each floor: gamma = softmax of a fitted model's logits (floored), then the Hessian product
G^T G and the M-step product G^T X (best of the rounds), and a whole GEM(balance=5000) fit from the
same start. Intel CPUs pay microcode assists for subnormal operands and results, AMD CPUs far less:
the ratio depends on the CPU named in the header. Writes benchmarks/results/floor.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

OLD = {np.float32: 80.0, np.float64: 700.0}


def main() -> int:
    import torch
    from bench_fit import make_sample_noisy
    from machine import cpu_line

    import gem.model as model
    from gem.store import write_text_atomic

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fit-iter", type=int, default=10, help="M-steps of the timed fits (from one start)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "floor.md"))
    args = ap.parse_args()
    new = dict(model._CLAMP)
    X = make_sample_noisy(args.n)
    start = model.GEM(n_clusters=args.k, balance=0.0, max_iter=5, random_state=0, precision="float32").fit(X)
    Xt = torch.from_numpy(X)
    L = torch.from_numpy(X @ (start.mean_directions_.T * start.concentrations_).astype(np.float32))
    times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    stats = {}
    for r in range(args.rounds):
        for label, clamp in (("old", OLD), ("new", new)):
            Z = L.clone()
            Z.sub_(Z.amax(1, keepdim=True)).clamp_(min=-clamp[np.float32]).exp_()
            Z.div_(Z.sum(1, keepdim=True))
            if r == 0:
                tiny = torch.finfo(torch.float32).tiny
                low = float(Z.min())
                stats[label] = (low, float((Z * Z < tiny).float().mean()))  # entries whose square underflows
            for name, fn in (("G^T G", lambda: Z.t() @ Z), ("G^T X", lambda: Z.t() @ Xt)):
                t = time.perf_counter()
                fn()
                times[label].setdefault(name, []).append(time.perf_counter() - t)
            model._CLAMP = clamp
            try:
                est = model.GEM(n_clusters=args.k, balance=5000.0, init=start.mean_directions_, max_iter=args.fit_iter,
                                tol=0.0, random_state=0, precision="float32")
                t = time.perf_counter()
                est.fit(X)
                times[label].setdefault("fit", []).append(time.perf_counter() - t)
            finally:
                model._CLAMP = new
    lines = [
        "## The softmax floor: subnormal floats in the fit's products", "",
        f"Machine: {cpu_line()}, torch {torch.__version__} with {torch.get_num_threads()} threads. "
        f"`benchmarks/bench_floor.py --n {args.n} --k {args.k} --rounds {args.rounds}`: {args.n:,} x 384 real-derived "
        f"rows, K = {args.k}, float32; best of {args.rounds} alternating rounds. 'fit': GEM(balance = 5000), "
        f"{args.fit_iter} M-steps from one start (tol 0).", "",
        "| floor | smallest gamma | entries whose square underflows | G^T G s | G^T X s | fit s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, clamp in (("old", OLD), ("new", new)):
        low, share = stats[label]
        t = {k: min(v) for k, v in times[label].items()}
        lines.append(f"| exp(-{clamp[np.float32]:g}) ({label}) | {low:.2e} | {share:.1%} | {t['G^T G']:.3f} | "
                     f"{t['G^T X']:.3f} | {t['fit']:.2f} |")
    ratio = {k: min(times["old"][k]) / min(times["new"][k]) for k in times["new"]}
    lines += ["", f"Speed-up of the new floor: G^T G {ratio['G^T G']:.2f}x, G^T X {ratio['G^T X']:.2f}x, "
                  f"fit {ratio['fit']:.2f}x.", ""]
    write_text_atomic(Path(args.out), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
