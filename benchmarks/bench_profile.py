"""Where the seconds of a GEM fit go: a GEM(balance="auto") fit on real-derived rows (the sample's
MiniLM vectors plus noise, ``bench_fit.make_sample_noisy``) with every stage of the solver timed,
next to this machine's throughput for the products of those shapes.

    .venv/bin/python benchmarks/bench_profile.py [--n 100000] [--ks 64 256] [--max-iter 30] [--serial]

Each stage of ``gem.model`` is wrapped in a timer that counts its own time (a stage called inside
another, e.g. the products inside the M-step, is taken out of its caller's figure): the seeding,
the logits product X W^T, the softmax passes, the Hessians of the dual Newton steps (G^T G) and
their K x K solves, the M-step's product G^T X and its kappa solves, SQUAREM, the labels. What no
stage claims is "other" (Python between the stages, small K-sized work). Process CPU time against
wall time says how busy the two cores were. ``--serial`` also profiles each fit with the row
blocks computed one after another, each op on all torch threads (``gem.model._map_blocks`` before
its worker pool; the k-means++ seeding runs on one torch thread in both), in the same process right
after. Writes benchmarks/results/profile.md.
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# (module attribute, label): the stages timed, each by its own (exclusive) time
STAGES = [
    ("spherical_kmeans_init", "seeding (k-means++ and Lloyd)"),
    ("_logits", "logits X W^T (GEMM)"),
    ("_softmax_pass", "softmax passes"),
    ("_hessian", "Newton Hessians G^T G"),
    ("solve", "Newton K x K solves"),
    ("_m_step", "M-step except its product and kappa"),
    ("resultants", "M-step resultants G^T X (GEMM)"),
    ("solve_kappa", "kappa solves"),
    ("xt", "X^T copy for oneDNN"),
    ("_squarem_point", "SQUAREM extrapolation"),
    ("_labels_at", "labels (argmax)"),
    ("auto_balance", "automatic lambda (margins)"),
    ("unit_rows", "unit rows (input copy)"),
]


class StageTimer:
    """Exclusive wall time per stage: a stage's time minus the time of the stages it called."""

    def __init__(self):
        self.own: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.stack: list[float] = []  # time claimed by children of each open stage

    def wrap(self, name, fn):
        @functools.wraps(fn)
        def timed(*a, **kw):
            self.stack.append(0.0)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent = time.perf_counter() - t
                children = self.stack.pop()
                self.own[name] = self.own.get(name, 0.0) + spent - children
                self.calls[name] = self.calls.get(name, 0) + 1
                if self.stack:
                    self.stack[-1] += spent
        return timed


def instrument(timer: StageTimer):
    """Patch gem.model's stages with timers; returns a function that undoes it."""
    import gem.model as gm

    undo = []

    def patch(obj, attr, name):
        old = getattr(obj, attr)
        setattr(obj, attr, timer.wrap(name, old))
        undo.append(lambda: setattr(obj, attr, old))

    for attr in ("spherical_kmeans_init", "_logits", "_softmax_pass", "_hessian", "_m_step", "_squarem_point",
                 "_labels_at", "auto_balance", "unit_rows"):
        patch(gm, attr, attr)
    patch(gm.sphere, "solve_kappa", "solve_kappa")
    # the Newton step's K x K solve: np.linalg.solve, only called from _e_step in gem.model
    patch(np.linalg, "solve", "solve")
    # the M-step's product: gem.gemm.linear (logits call it too: those are inside _logits, which
    # claims them as its own since gemm.linear is timed as "resultants" only when called from _m_step)
    lin = gm.gemm.linear
    timed_lin = timer.wrap("resultants", lin)

    def linear(*a, **kw):
        return timed_lin(*a, **kw) if in_m_step[0] else lin(*a, **kw)

    in_m_step = [False]
    m_step = gm._m_step

    def m_step_flagged(*a, **kw):
        in_m_step[0] = True
        try:
            return m_step(*a, **kw)
        finally:
            in_m_step[0] = False

    gm._m_step = m_step_flagged
    undo.append(lambda: setattr(gm, "_m_step", m_step))
    gm.gemm.linear = linear
    undo.append(lambda: setattr(gm.gemm, "linear", lin))
    xt = gm._Data.__dict__["xt"]
    prop = functools.cached_property(timer.wrap("xt", xt.func))
    prop.__set_name__(gm._Data, "xt")
    gm._Data.xt = prop
    undo.append(lambda: setattr(gm._Data, "xt", xt))

    def restore():
        for f in reversed(undo):
            f()
    return restore


def gemm_seconds(n, d, k, reps=3):
    """Fastest of ``reps``: logits X W^T, resultants (X^T) G^T, Hessian G^T G, float32 on gem.gemm's kernel."""
    import torch

    from gem import gemm

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=gen)
    W = torch.randn(k, d, generator=gen)
    G = torch.softmax(torch.randn(n, k, generator=gen), dim=1)
    Xt = X.t().contiguous()
    fns = {"logits": lambda: gemm.linear(X, W), "resultants": lambda: gemm.linear(Xt, G.t()),
           "hessian": lambda: G.t() @ G}
    best = {}
    for name, f in fns.items():
        f()
        for _ in range(reps):
            t = time.perf_counter()
            f()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t)
    return best


def serial_blocks(data, fn, rows):
    """The row blocks one after another on this thread, each op on all torch threads."""
    return [fn(c) for c in data.chunks(rows)]


def profile_fit(X, k, max_iter, seed=0, serial=False):
    import gem.model as gm
    from gem import GEM

    timer = StageTimer()
    restore = instrument(timer)
    pooled = gm._map_blocks
    if serial:
        gm._map_blocks = serial_blocks
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        m = GEM(n_clusters=k, balance="auto", max_iter=max_iter, random_state=seed).fit(X)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        gm._map_blocks = pooled
        restore()
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return m, timer, wall, cpu


def main() -> int:
    import torch
    from bench_fit import make_sample_noisy
    from machine import cpu_line

    from gem import GEM, gemm
    from gem.store import write_text_atomic

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--ks", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--max-iter", type=int, default=30, help="M-steps of phase B at most (phase A: at most 30 too)")
    ap.add_argument("--serial", action="store_true", help="also profile with the row blocks one after another")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "profile.md"))
    args = ap.parse_args()
    GEM(n_clusters=2, balance=1.0).fit(np.random.default_rng(0).standard_normal((50, 8)))  # imports
    X = make_sample_noisy(args.n)
    n, d = X.shape
    lines = ["# Where a fit's seconds go (`bench_profile.py`)", "",
             f"Machine: {cpu_line()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}, products on {gemm.cpu_backend()} (`gem.gemm`), {time.strftime('%Y-%m-%d')}; "
             "the box was shared with other jobs. "
             f"Data: {n:,} x {d} real-derived float32 rows (`bench_fit.make_sample_noisy`: the sample's MiniLM "
             f"vectors plus noise). GEM(balance='auto', max_iter={args.max_iter}, seed 0), every stage of the "
             "solver timed by its own time (a stage's callees are taken out of its figure); 'per M-step' divides "
             "by all M-steps (phase A, the lambda = 0 fit lambda is read from, plus phase B). GEMM throughput: "
             "the same products on random data of these shapes, fastest of 3.", ""]
    modes = [(False, "row blocks on the worker pool (now)")]
    if args.serial:
        modes.append((True, "row blocks one after another, each op on all threads (before)"))
    for k, (serial, mode) in [(k, mode) for k in args.ks for mode in modes]:
        m, timer, wall, cpu = profile_fit(X, k, args.max_iter, serial=serial)
        steps = m.n_iter_auto_ + m.n_iter_
        g = gemm_seconds(n, d, k)
        stats = m.solver_stats_
        lines += [f"## N = {n:,}, K = {k}: {mode}", "",
                  f"Fit {wall:.1f} s wall, {cpu:.1f} s CPU ({cpu / wall:.2f} cores busy); M-steps {m.n_iter_auto_} + "
                  f"{m.n_iter_} ({'converged' if m.converged_ else 'max_iter'}), lambda {m.balance_:.0f}; phase B "
                  f"Newton steps {stats['newton_steps']}, softmax passes {stats['softmax_passes']}, SQUAREM "
                  f"{stats['extrapolated']} taken / {stats['rejected']} rejected.", "",
                  "| stage | calls | seconds | share | ms per M-step | ms per call |", "|---|---:|---:|---:|---:|---:|"]
        claimed = 0.0
        for key, label in STAGES:
            s = timer.own.get(key, 0.0)
            c = timer.calls.get(key, 0)
            claimed += s
            if c:
                lines.append(f"| {label} | {c} | {s:.2f} | {s / wall:.0%} | {s / steps * 1e3:.0f} | {s / c * 1e3:.1f} |")
        other = wall - claimed
        lines.append(f"| other (Python between stages, K-sized work) | | {other:.2f} | {other / wall:.0%} | "
                     f"{other / steps * 1e3:.0f} | |")
        gf = lambda t, kk=k: f"{t * 1e3:.1f} ms ({2 * n * d * kk / t / 1e9:.0f} GFLOP/s)"  # noqa: E731
        lines += ["", f"GEMM of these shapes on this machine: logits X W^T {gf(g['logits'])}, resultants G^T X "
                  f"{gf(g['resultants'])}, Hessian G^T G {g['hessian'] * 1e3:.1f} ms "
                  f"({2 * n * k * k / g['hessian'] / 1e9:.0f} GFLOP/s): the two products of an M-step take "
                  f"{(g['logits'] + g['resultants']) * 1e3:.0f} ms at this throughput.", ""]
        print("\n".join(lines[-20:]), flush=True)
    write_text_atomic(Path(args.out), "\n".join(lines).rstrip() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
