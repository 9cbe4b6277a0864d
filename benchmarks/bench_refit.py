"""Re-fit time on a lambda change, as the app makes it (pages.common.ensure_run -> gem.runs.fit_run):
every manual lambda is fitted warm-started from a copy of the "auto" run of the same K and seed,
to convergence (default tol), so the same settings always give the same run. Each row is compared,
in the same process, with a cold fit at that lambda (k-means++ seeding, as `gem fit --balance L`).

    .venv/bin/python benchmarks/bench_refit.py [--rep final] [--k 24]

Writes benchmarks/results/refit.md (wall and CPU seconds; on a shared box wall time includes waiting).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAMBDAS = [0, 10, 100, 1000, 5000, 20000, 100000]


def _timed(est, X):
    t, c = time.perf_counter(), time.process_time()
    est.fit(X)
    h = np.asarray(est.objective_history_)
    return est, time.perf_counter() - t, time.process_time() - c, bool(np.all(np.diff(h) >= -1e-9 * np.abs(h).max()))


def main():
    from gem.baselines import estimator_from_state
    from gem.model import GEM
    from gem.store import SAMPLE_DATA_DIR, Workspace, write_text_atomic

    ap = argparse.ArgumentParser()
    ap.add_argument("--rep", default="final")
    ap.add_argument("--k", type=int, default=24)
    args = ap.parse_args()
    X = Workspace(SAMPLE_DATA_DIR).load_embeddings(args.rep)
    auto, auto_wall, auto_cpu, _ = _timed(GEM(args.k, balance="auto", random_state=0), X)
    rows = []
    for lam in LAMBDAS:
        warm = estimator_from_state(*auto.to_state())  # a copy, as gem.runs.fit_run makes it
        warm.set_params(balance=float(lam), warm_start=True)
        warm, w_wall, w_cpu, w_mono = _timed(warm, X)
        cold, c_wall, c_cpu, c_mono = _timed(GEM(args.k, balance=float(lam), random_state=0), X)
        rows.append((lam, warm.n_iter_, w_wall, w_cpu, warm.objective_, cold.n_iter_, c_wall, c_cpu, cold.objective_,
                     w_mono and c_mono))
    w = np.array([r[2] for r in rows])
    c = np.array([r[6] for r in rows])
    out = ["# Re-fits on a lambda change (benchmarks/bench_refit.py)", "",
           f"Machine: 2-core CPU dev box. Sample corpus `{args.rep}`, {X.shape[0]:,} x {X.shape[1]}, K = {args.k}, "
           f"seed 0. The app's path: each lambda warm-started from a copy of the auto run (fitted once: "
           f"{auto_wall:.2f} s wall, lambda {auto.balance_:.1f}), to convergence; beside it a cold fit at the same "
           "lambda, in the same process.", "",
           f"Warm: wall max {w.max():.2f} s / mean {w.mean():.2f} s; cold: wall max {c.max():.2f} s / mean "
           f"{c.mean():.2f} s; warm F >= cold F in {sum(r[4] >= r[8] - 1e-9 * abs(r[8]) for r in rows)} of "
           f"{len(rows)}; objective monotone in every fit: {all(r[9] for r in rows)}.", "",
           "| lambda | warm iterations | warm wall s | warm CPU s | warm F | cold iterations | cold wall s | cold CPU s | cold F |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r[0]:g} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.5f} | {r[5]} | {r[6]:.2f} | {r[7]:.2f} | {r[8]:.5f} |"
            for r in rows]
    print("\n".join(out))
    write_text_atomic(ROOT / "benchmarks" / "results" / "refit.md", "\n".join(out) + "\n")


if __name__ == "__main__":
    main()
