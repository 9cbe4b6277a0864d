"""Warm re-fit time on a lambda change, as the Clusters page does it (pages/common.py fit_gem).

    .venv/bin/python benchmarks/bench_refit.py [--rep final] [--tol 1e-5] [--max-iter 15]

Fits GEM (K = 24, balance 0, seed 0) on the sample corpus from scratch, then walks lambda through
10, 100, 300, 1000, 5000, 20000 and back down to 0, each a warm start from the previous model with
the app's bounded settings; also the unbounded settings (tol 1e-6, max_iter 100) for comparison.
Prints a markdown section (wall and CPU seconds per re-fit: on a shared box wall time includes waiting).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SWEEP = [10, 100, 300, 1000, 5000, 20000, 5000, 1000, 300, 100, 10, 0]


def sweep(X, tol, max_iter):
    from gem.model import GEM

    est = GEM(24, balance=0.0, random_state=0).fit(X)
    rows = []
    for lam in SWEEP:
        est.set_params(balance=float(lam), warm_start=True, tol=tol, max_iter=max_iter)
        t, c = time.perf_counter(), time.process_time()
        est.fit(X)
        h = np.asarray(est.objective_history_)
        rows.append((lam, est.n_iter_, est.converged_, time.perf_counter() - t, time.process_time() - c,
                     bool(np.all(np.diff(h) >= -1e-9 * np.abs(h).max()))))
    return rows


def main():
    from gem.store import SAMPLE_DATA_DIR, Workspace, write_text_atomic

    ap = argparse.ArgumentParser()
    ap.add_argument("--rep", default="final")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--max-iter", type=int, default=15)
    args = ap.parse_args()
    X = Workspace(SAMPLE_DATA_DIR).load_embeddings(args.rep)
    out = ["# Warm re-fits on a lambda change (benchmarks/bench_refit.py)", "",
           f"Machine: 2-core CPU dev box. Sample corpus `{args.rep}`, {X.shape[0]:,} x {X.shape[1]}, K = 24; "
           "each row re-fits warm-started from the previous row's model (the app's path). First block: the app's "
           "interactive settings; second: the default tol/max_iter, for comparison in the same run.", ""]
    for tol, mi in [(args.tol, args.max_iter), (1e-6, 100)]:
        rows = sweep(X, tol, mi)
        wall = np.array([r[3] for r in rows])
        cpu = np.array([r[4] for r in rows])
        out += [f"tol {tol:g}, max_iter {mi}: wall max {wall.max():.2f} s / mean {wall.mean():.2f} s; "
                f"CPU max {cpu.max():.2f} s / mean {cpu.mean():.2f} s; monotone in every re-fit: "
                f"{all(r[5] for r in rows)}", "",
                "| lambda | iterations | converged | wall s | CPU s |", "|---:|---:|---|---:|---:|"]
        out += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.2f} |" for r in rows] + [""]
    print("\n".join(out))
    write_text_atomic(ROOT / "benchmarks" / "results" / "refit.md", "\n".join(out) + "\n")


if __name__ == "__main__":
    main()
