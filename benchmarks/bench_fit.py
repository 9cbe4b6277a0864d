"""Speed and memory of a GEM fit vs scikit-learn KMeans(n_init=1) on the same data.

    .venv/bin/python benchmarks/bench_fit.py            # 100k x 384 synthetic, K=64, and 1M x 384 real-derived, K=256
    .venv/bin/python benchmarks/bench_fit.py --no-large # without the 1M-row case
    .venv/bin/python benchmarks/bench_fit.py --n 20000  # quick smoke run
    .venv/bin/python benchmarks/bench_fit.py --real     # real embeddings, K = 24 and 64 (~3 minutes)
    .venv/bin/python benchmarks/bench_fit.py --real --sweep 8   # ... and quality over 8 seeds (~10 more)
    .venv/bin/python benchmarks/bench_fit.py --real --time-seeds 8   # ... and GEM / KMeans time per seed
    .venv/bin/python benchmarks/bench_fit.py --passes   # softmax row blocks: now vs 16 MB (--no-large: no 1M case)
    .venv/bin/python benchmarks/bench_fit.py --gemm     # the fit's products: oneDNN vs torch.mm (gem.gemm)
    .venv/bin/python benchmarks/bench_fit.py --peers    # GEM(auto) vs faiss / scikit-learn on the sample, per seed

Synthetic cases run each in its own subprocess so peak RSS (resource.getrusage ru_maxrss) is per
case. Timings on a shared machine are noisy: ratios count.

``--real`` fits real sentence embeddings in one process, alternating KMeans(n_init=1),
GEM(balance="auto") and GEM(balance="auto", accelerate=False) (the plain MM solver, for comparison) in a
rotating order over ``--reps`` rounds:
- the sample corpus's final vectors (sample_data/embeddings/final.npy, 11,500 x 384; NMI against
  its ``category`` column);
- the summaries of the 10,000 most downloaded PyPI packages (name + summary from the package
  list ``--pypi-tsv``), embedded once with the bundled encoder (gem.embed.SentenceTransformerEmbedder,
  all-MiniLM-L6-v2) and cached in ``--cache`` (default ~/.cache/gem-bench), outside the repository.
Both modes write benchmarks/results/fit.md, each its own part (see ``write_fit_md``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from machine import cpu_line  # noqa: E402  (benchmarks/machine.py)


def make_data(n, d, k_true, seed=0):
    """Anisotropic synthetic embeddings: topic directions in a cone, vMF spread, float32 unit rows."""
    rng = np.random.default_rng(seed)
    axis = rng.standard_normal(d)
    axis /= np.linalg.norm(axis)
    dirs = 0.6 * axis + 0.8 * _unit(rng.standard_normal((k_true, d)))
    dirs = _unit(dirs)
    dirs = dirs.astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 50_000):  # float32 chunks: the generator must not dominate peak memory
        e = min(n, s + 50_000)
        lab = rng.integers(0, k_true, size=e - s)
        X[s:e] = dirs[lab] + rng.standard_normal((e - s, d), dtype=np.float32) * 0.05
        X[s:e] /= np.linalg.norm(X[s:e], axis=1, keepdims=True)
    return X


def make_sample_noisy(n, d=384, seed=0, noise=0.03):
    """Real-derived rows for the large case: random rows of the sample's MiniLM vectors
    (sample_data/embeddings/final.npy) plus Gaussian noise (``noise`` per coordinate: cosine ~0.86
    to the source row), renormalised. They keep the real corpus's anisotropy and overlapping topics,
    so a fit needs as many iterations as on real data, unlike the planted synthetic cones."""
    src = np.load(ROOT / "sample_data" / "embeddings" / "final.npy", mmap_mode="r")
    if src.shape[1] != d:
        raise SystemExit(f"the sample's vectors are {src.shape[1]}-d, not {d}")
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        X[s:e] = src[rng.integers(0, src.shape[0], size=e - s)]
        X[s:e] += rng.standard_normal((e - s, d), dtype=np.float32) * noise
        X[s:e] /= np.linalg.norm(X[s:e], axis=1, keepdims=True)
    return X


def _unit(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def gemm_gflops(n, d, k):
    """This machine's float32 N x d x K product, GFLOP/s, on the kernel the fit uses (``gem.gemm``)."""
    import torch

    from gem.gemm import linear

    X = torch.randn(n, d)
    M = torch.randn(k, d)
    linear(X, M)
    t = time.perf_counter()
    reps = 5
    for _ in range(reps):
        linear(X, M)
    return 2 * n * d * k * reps / (time.perf_counter() - t) / 1e9


def fit_products_seconds(n, d, k, reps=5):
    """Fastest of ``reps`` of the fit's two products, logits X W^T (N x K) and resultants G^T X
    (K x d), on each backend of ``gem.gemm``: {backend: (logits s, resultants s)}."""
    import torch

    from gem import gemm

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=gen)
    X /= X.norm(dim=1, keepdim=True)
    W = torch.randn(k, d, generator=gen)
    G = torch.softmax(torch.randn(n, k, generator=gen), dim=1)
    Xt = X.t().contiguous()  # the fit keeps X^T for the resultants on oneDNN (gem.model._Data.xt)
    products = {"mm": (lambda: X @ W.t(), lambda: G.t() @ X),
                "onednn": (lambda: gemm.linear(X, W), lambda: gemm.linear(Xt, G.t()))}
    best = {b: [np.inf, np.inf] for b in products}
    for _ in range(reps):
        for b, fs in products.items():
            with gemm.using(b):
                for i, f in enumerate(fs):
                    f()
                    t = time.perf_counter()
                    f()
                    best[b][i] = min(best[b][i], time.perf_counter() - t)
    return best


def continued_fit(model, X, steps: int) -> tuple[float, int]:
    """(seconds, M-steps) of a copy of the fitted ``model`` continued for ``steps`` M-steps (tol 0)."""
    m = copy.deepcopy(model).set_params(warm_start=True, tol=0.0, max_iter=steps)
    t = time.perf_counter()
    m.fit(X)
    return time.perf_counter() - t, m.n_iter_


def marginal_mstep_seconds(model, X, short: int = 1, long: int = 6, reps: int = 1) -> float:
    """An M-step's marginal cost: the fitted ``model`` continued for ``short`` and for ``long``
    M-steps, each the fastest of ``reps`` runs; (time(long) - time(short)) / (long - short), so the
    seeding-free setup of a fit (unit rows, work matrices, the first E-step), paid by both, cancels.
    (The minimum of each arm, not of their differences: that one is biased low, below 0 on a small
    problem.)"""
    spent = {steps: min(continued_fit(model, X, steps) for _ in range(reps)) for steps in (short, long)}
    return (spent[long][0] - spent[short][0]) / max(spent[long][1] - spent[short][1], 1)


def run_case(case, n, d, k, max_iter, data="synthetic"):
    # import and warm up first: the timing and the memory delta are the fit's own
    import torch  # noqa: F401
    from sklearn.cluster import KMeans  # noqa: F401

    from gem import GEM

    GEM(n_clusters=2, balance=1.0).fit(np.random.default_rng(0).standard_normal((50, 8)))
    rss_libs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    X = make_data(n, d, k) if data == "synthetic" else make_sample_noisy(n, d)
    t0 = time.perf_counter()
    out = {"case": case, "n": n, "d": d, "k": k, "data": data}
    if case == "gem":
        m = GEM(n_clusters=k, balance=5000.0, max_iter=max_iter, tol=1e-6).fit(X)
        out.update(n_iter=m.n_iter_, converged=m.converged_)
        fit_seconds = time.perf_counter() - t0
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the fit's own peak
        out["iter_seconds"] = marginal_mstep_seconds(m, X)
        out["seconds"] = fit_seconds
    elif case == "kmeans":
        m = KMeans(n_clusters=k, n_init=1, random_state=0).fit(X)
        out.update(n_iter=int(m.n_iter_))
    elif case == "gemm":
        out["gflops"] = gemm_gflops(n, d, k)
    out.setdefault("seconds", time.perf_counter() - t0)
    out.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out["libs_rss_mb"] = rss_libs
    out["data_mb"] = X.nbytes / 2**20
    return out


def subprocess_case(case, n, d, k, max_iter, data="synthetic"):
    cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--d", str(d), "--k", str(k),
           "--max-iter", str(max_iter), "--data", data]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- real embeddings
PYPI_TSV = Path("/work/.library/env/packages/pypi.tsv")
CACHE = Path.home() / ".cache" / "gem-bench"


def load_sample():
    """(unit rows, category labels) of the sample corpus's final representation."""
    from gem.store import SAMPLE_DATA_DIR, Workspace

    ws = Workspace(SAMPLE_DATA_DIR)
    return ws.load_embeddings("final"), ws.load_corpus(columns=["category"])["category"].to_numpy()


def pypi_texts(tsv: Path, n: int) -> list[str]:
    """'name: summary' of the n most downloaded PyPI packages with a summary (distinct summaries)."""
    import csv

    rows = []
    with open(tsv, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE):
            rank, summary = rec.get("rank_among_15000_most_downloaded") or "", (rec.get("summary") or "").strip()
            if rank.strip() and len(summary) >= 10:
                rows.append((int(rank), rec["name"], summary))
    rows.sort()
    seen, texts = set(), []
    for _, name, summary in rows:
        key = " ".join(summary.casefold().split())
        if key not in seen:
            seen.add(key)
            texts.append(f"{name}: {summary}")
        if len(texts) == n:
            break
    return texts


def load_pypi(tsv: Path, cache: Path, n: int = 10_000):
    """Unit rows of the PyPI summaries, embedded once and cached under ``cache``."""
    path = cache / f"pypi{n}_minilm_final.npy"
    if path.exists():
        return np.load(path), None
    if not tsv.exists():
        raise SystemExit(f"{tsv}: no PyPI package list to embed; pass --pypi-tsv or drop the case with --no-pypi")
    from gem.embed import SentenceTransformerEmbedder

    texts = pypi_texts(tsv, n)
    emb = SentenceTransformerEmbedder()
    t0 = time.perf_counter()
    unit, _norms = emb.encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, unit.astype(np.float32))
    (cache / f"pypi{n}_minilm_final.json").write_text(json.dumps({
        "source": str(tsv), "n": len(texts), "model": str(emb.model_path), "precision": emb.precision,
        "seconds": time.perf_counter() - t0}, indent=1))
    return unit.astype(np.float32), None


def real_case(name, X, y, k, reps):
    """Alternate KMeans / GEM (accelerated) / GEM (plain, accelerate=False) ``reps`` times."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    from gem import GEM
    from gem.model import gem_solve

    makers = {
        "kmeans": lambda: KMeans(n_clusters=k, n_init=1, random_state=0),
        "gem": lambda: GEM(n_clusters=k, random_state=0),
        "plain": lambda: GEM(n_clusters=k, random_state=0, accelerate=False),
    }
    order = list(makers)
    times = {m: [] for m in makers}
    fitted = {}
    for r in range(reps):
        for m in order[r % 3:] + order[: r % 3]:  # rotate who runs first
            est = makers[m]()
            t0 = time.perf_counter()
            est.fit(X)
            times[m].append(time.perf_counter() - t0)
            fitted[m] = est
    km, g, p = (np.array(times[m]) for m in order)
    out = {"case": name, "n": X.shape[0], "d": X.shape[1], "k": k, "reps": reps,
           "kmeans_s": float(np.median(km)), "kmeans_iter": int(fitted["kmeans"].n_iter_)}
    for m, t in (("gem", g), ("plain", p)):
        est = fitted[m]
        steps = est.n_iter_auto_ + est.n_iter_
        out[m] = {"s": float(np.median(t)), "ratio_median": float(np.median(t / km)),
                  "ratio_min": float(t.min() / km.min()), "iter_auto": int(est.n_iter_auto_),
                  "iter": int(est.n_iter_), "ms_per_step": 1e3 * float(np.median(t)) / max(steps, 1),
                  "F": float(est.objective_), "lam": float(est.balance_), "converged": bool(est.converged_),
                  "labels_changed": int(est.labels_changed_), "max_share": float(est.weights_.max()),
                  "nmi": float(normalized_mutual_info_score(y, est.labels_)) if y is not None else None}
    # F of both at the same lambda: the plain solver's parameters re-evaluated (exact E-step) at the
    # accelerated fit's lambda, and vice versa
    g_est, p_est = fitted["gem"], fitted["plain"]

    def f_at(est, lam):
        return gem_solve(X, est.mean_directions_, est.concentrations_, balance=lam, max_iter=0,
                         potentials=est.potentials_ * (lam / est.balance_)).objective

    # an M-step's marginal cost on these data, and its GEMM efficiency against this machine's GEMM
    # of the same shape measured now
    step = marginal_mstep_seconds(g_est, X, reps=3)
    gemm = max(gemm_gflops(X.shape[0], X.shape[1], k) for _ in range(3))
    out["gem"].update(mstep_ms=1e3 * step, mstep_gflops=4 * X.shape[0] * X.shape[1] * k / step / 1e9, gemm_gflops=gemm)
    out["dF_at_gem_lam"] = g_est.objective_ - f_at(p_est, g_est.balance_)
    out["dF_at_plain_lam"] = f_at(g_est, p_est.balance_) - p_est.objective_
    return out


def seed_times(name, X, k, seeds, reps=2):
    """GEM(auto) / KMeans(n_init=1) time per seed (all seeded alike, ``reps`` rounds in a rotating
    order, medians): what a user waits for depends on the seed as much as on the solver. GEM runs
    on this process's product kernel (``gem.gemm.cpu_backend()``) and, where that is oneDNN, on
    torch.mm too (the kernel before it), so both ratios come from the same rounds."""
    from sklearn.cluster import KMeans

    from gem import GEM, gemm

    backend = gemm.cpu_backend()
    methods = ["kmeans", "gem"] + (["gem_mm"] if backend != "mm" else [])
    rows = []
    for seed in range(seeds):
        times = {m: [] for m in methods}
        for r in range(reps):
            for m in methods[r % len(methods):] + methods[:r % len(methods)]:
                est = (KMeans(n_clusters=k, n_init=1, random_state=seed) if m == "kmeans"
                       else GEM(n_clusters=k, random_state=seed))
                with gemm.using("mm" if m == "gem_mm" else backend):
                    t0 = time.perf_counter()
                    est.fit(X)
                    times[m].append(time.perf_counter() - t0)
                if m == "gem":
                    steps = est.n_iter_auto_ + est.n_iter_
                elif m == "kmeans":
                    iters = int(est.n_iter_)
        km = np.median(times["kmeans"])
        rows.append((float(np.median(times["gem"]) / km), steps, iters,
                     float(np.median(times["gem_mm"]) / km) if "gem_mm" in times else None))
    ratio = np.array([r[0] for r in rows])
    worst = int(np.argmax(ratio))
    mm = (f"{np.median([r[3] for r in rows]):.2f}" if rows[0][3] is not None else "—")
    return (f"| {name} | {k} | {seeds} | **{np.median(ratio):.2f}** | {ratio.min():.2f} - {ratio.max():.2f} "
            f"(seed {worst}) | {np.sum(ratio <= 1.0)} / {seeds} | {mm} | {np.median([r[1] for r in rows]):.0f} | "
            f"{np.median([r[2] for r in rows]):.0f} |")


def seed_sweep(name, X, y, k, seeds):
    """Quality over seeds (no timing): plain vs accelerated phase-B M-steps, F, NMI, balance."""
    from sklearn.metrics import normalized_mutual_info_score

    from gem import GEM

    rows = []
    for seed in range(seeds):
        p = GEM(n_clusters=k, random_state=seed, accelerate=False).fit(X)
        g = GEM(n_clusters=k, random_state=seed).fit(X)
        nmi = ((normalized_mutual_info_score(y, g.labels_), normalized_mutual_info_score(y, p.labels_))
               if y is not None else None)
        rows.append({"seed": seed, "iter": (g.n_iter_, p.n_iter_), "auto": g.n_iter_auto_,
                     "plain_capped": not p.converged_, "dF": g.objective_ - p.objective_,
                     "rel": (g.objective_ - p.objective_) / abs(p.objective_), "same_lam": g.balance_ == p.balance_,
                     "nmi": nmi, "share": (g.weights_.max(), p.weights_.max())})
    dF = np.array([r["dF"] for r in rows])
    it = np.array([r["iter"] for r in rows])
    line = (f"| {name} | {k} | {seeds} | {np.median(it[:, 0]):.0f} / {np.median(it[:, 1]):.0f} | "
            f"{np.median(it[:, 1] / it[:, 0]):.2f} | {np.sum(dF >= 0)} / {seeds} | {np.median(dF):+.4f} | "
            f"{dF.min():+.4f} ({rows[int(np.argmin(dF))]['rel']:+.1e}, seed {rows[int(np.argmin(dF))]['seed']}"
            f"{', plain hit max_iter' if rows[int(np.argmin(dF))]['plain_capped'] else ''}) | {dF.max():+.4f} | ")
    if y is not None:
        n = np.array([r["nmi"] for r in rows])
        line += f"{n[:, 0].mean():.4f} / {n[:, 1].mean():.4f} | "
    else:
        line += "— | "
    sh = np.array([r["share"] for r in rows])
    line += f"{sh[:, 0].mean():.4f} / {sh[:, 1].mean():.4f} |"
    assert all(r["same_lam"] for r in rows)
    return line


REAL_HEADING = "## Real embeddings: GEM(balance=\"auto\") vs KMeans(n_init=1)"
NOTES_HEADING = "## Notes"  # hand-written notes (before / after, profile, reading): kept as they are


def write_fit_md(part: str, text: str) -> None:
    """benchmarks/results/fit.md holds three parts: the synthetic cases (default run), the real
    embeddings (``--real``) and hand-written notes; a run rewrites its own part and keeps the others."""
    from gem.store import write_text_atomic

    path = ROOT / "benchmarks" / "results" / "fit.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""

    def cut(doc, heading):
        i = doc.find("\n" + heading)
        return (doc, "") if i < 0 else (doc[:i], doc[i + 1:])

    synthetic, rest = cut(old, REAL_HEADING)
    if not rest:
        synthetic, notes = cut(synthetic, NOTES_HEADING)
        real = ""
    else:
        real, notes = cut(rest, NOTES_HEADING)
    parts = {"synthetic": synthetic.strip(), "real": real.strip(), "notes": notes.strip()}
    parts[part] = text.strip()
    write_text_atomic(path, "\n\n".join(p for p in parts.values() if p) + "\n")


def main_real(args):
    import datetime

    import torch

    from gem import GEM, gemm

    GEM(n_clusters=2, balance=1.0).fit(np.random.default_rng(0).standard_normal((50, 8)))  # warm-up imports
    cases = [("sample final (11,500 x 384)", *load_sample())]
    if args.pypi:
        Xp, yp = load_pypi(Path(args.pypi_tsv), Path(args.cache))
        cases.append((f"PyPI summaries ({Xp.shape[0]:,} x {Xp.shape[1]})", Xp, yp))
    rows = []
    for name, X, y in cases:
        for k in args.ks:
            res = real_case(name, X, y, k, args.reps)
            rows.append(res)
            print(json.dumps(res), flush=True)
    lines = [
        REAL_HEADING + " (`bench_fit.py --real`)",
        "",
        f"Machine: {cpu_line()}, {os.cpu_count()} cores, shared with other jobs (KVM guest); torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch threads, products on {gemm.cpu_backend()} "
        f"(`gem.gemm`); {datetime.date.today().isoformat()}.",
        f"Each round fits KMeans(n_init=1), GEM (default: accelerated) and GEM(accelerate=False) (the "
        f"the plain MM solver) in one process, rotating the order; {args.reps} rounds; "
        "times are medians, ratio = GEM / KMeans of the same round (median) and of the fastest runs (min). "
        "M-steps = phase A (the lambda = 0 fit auto reads lambda from) + phase B; ms per M-step = fit "
        "time / M-steps (seeding included); marginal: an M-step's own cost (continued fits, 6 minus 1 M-step, "
        "/ 5; fastest of 3) and its GFLOP/s counting the two N x d x K GEMMs, as a share of this machine's "
        "float32 GEMM of that shape measured in the same run. dF = F(accelerated) - F(plain) at the same lambda (the "
        "other fit's parameters re-evaluated with an exact E-step at that lambda); > 0: the "
        "accelerated fit is better.",
        "",
        "| data | K | KMeans s (iter) | GEM s | GEM / KMeans median (min) | M-steps A+B | ms / M-step | "
        "marginal ms / M-step | GFLOP/s (% of GEMM) | "
        "plain s | plain / KMeans median (min) | plain M-steps A+B | ms / M-step | lambda GEM / plain | "
        "F GEM / plain | dF at GEM's / plain's lambda | NMI GEM / plain | max share GEM / plain | labels changed in last step GEM / plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        g, p = r["gem"], r["plain"]
        nmi = f"{g['nmi']:.3f} / {p['nmi']:.3f}" if g["nmi"] is not None else "—"
        conv = lambda e: "" if e["converged"] else " (max_iter)"  # noqa: E731
        lines.append(
            f"| {r['case']} | {r['k']} | {r['kmeans_s']:.2f} ({r['kmeans_iter']}) | {g['s']:.2f} | "
            f"**{g['ratio_median']:.2f}** ({g['ratio_min']:.2f}) | {g['iter_auto']}+{g['iter']}{conv(g)} | "
            f"{g['ms_per_step']:.1f} | {g['mstep_ms']:.1f} | {g['mstep_gflops']:.0f} "
            f"({g['mstep_gflops'] / g['gemm_gflops']:.0%} of {g['gemm_gflops']:.0f}) | {p['s']:.2f} | {p['ratio_median']:.2f} ({p['ratio_min']:.2f}) | "
            f"{p['iter_auto']}+{p['iter']}{conv(p)} | {p['ms_per_step']:.1f} | {g['lam']:.0f} / {p['lam']:.0f} | "
            f"{g['F']:.4f} / {p['F']:.4f} | {r['dF_at_gem_lam']:+.4f} / {r['dF_at_plain_lam']:+.4f} | {nmi} | "
            f"{g['max_share']:.4f} / {p['max_share']:.4f} | {g['labels_changed']} / {p['labels_changed']} |")
    tables = []  # (title, intro, header, row(name, X, y, k)): the optional per-seed tables
    if args.time_seeds:
        tables.append((f"### Time over seeds 0-{args.time_seeds - 1} (`--time-seeds {args.time_seeds}`)",
                       "The table above uses seed 0 only. Here each seed fits KMeans(n_init=1) and GEM(auto) "
                       "with that seed, 2 rounds in a rotating order, ratio = median GEM time / median KMeans "
                       "time of the seed; then the median, range and count of seeds at or under 1.0. The "
                       "torch.mm column: GEM in the same rounds with its products on torch.mm (MKL) instead "
                       "of oneDNN (`gem.gemm`), the kernel before it.",
                       "| data | K | seeds | GEM / KMeans median over seeds | range (slowest seed) | seeds <= 1.0 | "
                       "median with products on torch.mm | GEM M-steps A+B (median) | KMeans iterations (median) |",
                       lambda name, X, y, k: seed_times(name, X, k, args.time_seeds)))
    if args.sweep:
        tables.append((f"### Quality over seeds 0-{args.sweep - 1} (`--sweep {args.sweep}`, no timing)",
                       "Same seeding and (phase A being the plain MM in both) the same lambda, so F compares "
                       "directly. Phase-B M-steps: medians; dF = F(accelerated) - F(plain).",
                       "| data | K | seeds | phase-B M-steps GEM / plain | plain / GEM | dF >= 0 | median dF | "
                       "min dF (relative) | max dF | mean NMI GEM / plain | mean max share GEM / plain |",
                       lambda name, X, y, k: seed_sweep(name, X, y, k, args.sweep)))
    for title, intro, header, row in tables:
        lines += ["", title, "", intro, "", header, "|---|" + "---:|" * (header.count("|") - 2)]
        for name, X, y in cases:
            for k in args.ks:
                lines.append(row(name, X, y, k))
                print(lines[-1], flush=True)
    write_fit_md("real", "\n".join(lines))
    print("\n".join(lines))


def main_passes(args):
    """Row blocks of the N x K work: one softmax pass and one MM iteration with the current blocks
    (gem.model._PASS_BLOCK) and with 16 MB pass blocks (the former setting), alternating in one process."""
    import torch

    import gem.model as gm
    from gem import GEM

    cases = [("sample final", load_sample()[0], 64), ("sample-noisy", make_sample_noisy(200_000), 256)]
    if args.large:
        cases.append(("sample-noisy", make_sample_noisy(1_000_000), 256))
    blocks = {"16 MB (before)": gm._GEMM_BLOCK, f"{gm._PASS_BLOCK * 4 / 2**20:g} MB (now)": gm._PASS_BLOCK}
    lines = ["# Softmax passes: row block size (`bench_fit.py --passes`)", "",
             f"Machine: {cpu_line()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
             f"{time.strftime('%Y-%m-%d')}. Each figure is the fastest of {args.reps} alternating rounds "
             "(ratios count). A pass: softmax(L - v) row-wise with max, clamp, exp and sums over N x K "
             "float32; an M-step: its marginal cost (the fitted model continued for 4 minus for 1 M-step, / 3; "
             "balance 5000, tol 0).", "",
             "| data | N | K | pass, 16 MB blocks | pass, now | speed-up | M-step, 16 MB blocks | "
             "M-step, now | speed-up |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, X, k in cases:
        n = X.shape[0]
        model = GEM(n_clusters=k, balance=5000.0, max_iter=3, random_state=0).fit(X)
        data = gm._Data(X, np.full(n, 1.0 / n), k)
        L, G = gm._logits(data, model.mean_directions_, model.concentrations_, None), data.empty()
        bias = model.log_prior_ + gm.sphere.log_vmf_normalizer(model.concentrations_, X.shape[1])
        best_pass = {b: np.inf for b in blocks}
        arms = {(b, steps): (np.inf, 0) for b in blocks for steps in (1, 4)}  # fastest continued fits
        for _ in range(args.reps):
            for label, block in blocks.items():
                gm._PASS_BLOCK = block
                data.pass_chunk = max(256, block // k)
                t = time.perf_counter()
                gm._softmax_pass(data, L, model.potentials_, G, bias)
                best_pass[label] = min(best_pass[label], time.perf_counter() - t)
                for steps in (1, 4):
                    arms[label, steps] = min(arms[label, steps], continued_fit(model, X, steps))
        gm._PASS_BLOCK = blocks[list(blocks)[1]]
        best_iter = {b: (arms[b, 4][0] - arms[b, 1][0]) / max(arms[b, 4][1] - arms[b, 1][1], 1) for b in blocks}
        (b0, b1) = list(blocks)
        lines.append(f"| {name} | {n:,} | {k} | {best_pass[b0] * 1e3:.1f} ms | {best_pass[b1] * 1e3:.1f} ms | "
                     f"{best_pass[b0] / best_pass[b1]:.2f}x | {best_iter[b0] * 1e3:.0f} ms | "
                     f"{best_iter[b1] * 1e3:.0f} ms | {best_iter[b0] / best_iter[b1]:.2f}x |")
        print(lines[-1], flush=True)
    from gem.store import write_text_atomic

    write_text_atomic(ROOT / "benchmarks" / "results" / "fit_passes.md", "\n".join(lines) + "\n")


def main_gemm(args):
    """The fit's two float32 products on each backend of ``gem.gemm``, one process, alternating."""
    import torch

    shapes = [(11_500, 384, 24), (11_500, 384, 64), (200_000, 384, 64), (200_000, 384, 256)]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    lines = ["# The fit's products: oneDNN vs torch.mm (`bench_fit.py --gemm`)", "",
             f"Machine: {cpu_line()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}"
             + (f", oneDNN limited to {isa} (ONEDNN_MAX_CPU_ISA)" if isa else "") + ". Fastest of "
             f"{args.reps} alternating rounds. Logits: X W^T (N x d by d x K, into N x K); resultants: G^T X "
             "(the M-step's K x d), on oneDNN computed as (X^T) G from a kept X^T. GFLOP/s = 2 N d K / time. "
             "torch.mm runs MKL, which on AMD CPUs takes its AVX2 code.", "",
             "| N | d | K | logits mm | logits oneDNN | speed-up | resultants mm | resultants oneDNN | speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, d, k in shapes:
        best = fit_products_seconds(n, d, k, args.reps)
        (lm, rm), (lo, ro) = best["mm"], best["onednn"]
        gf = lambda t: f"{t * 1e3:.2f} ms ({2 * n * d * k / t / 1e9:.0f} GFLOP/s)"  # noqa: E731
        lines.append(f"| {n:,} | {d} | {k} | {gf(lm)} | {gf(lo)} | {lm / lo:.2f}x | {gf(rm)} | {gf(ro)} | "
                     f"{rm / ro:.2f}x |")
        print(lines[-1], flush=True)
    from gem.store import write_text_atomic

    name = "fit_gemm.md" if not isa else f"fit_gemm_{isa.lower()}.md"
    write_text_atomic(ROOT / "benchmarks" / "results" / name, "\n".join(lines) + "\n")


PEERS = ("GEM(auto)", "faiss spherical", "KMeans(n_init=1)")


def peer_estimator(name, k, seed):
    """GEM(balance="auto"); faiss's spherical k-means (niter 25, its default 256 rows per centroid);
    scikit-learn's KMeans(n_init=1) (Lloyd, greedy k-means++)."""
    from sklearn.cluster import KMeans

    from gem import GEM
    from gem.baselines import FaissSphericalKMeans

    if name == "GEM(auto)":
        return GEM(n_clusters=k, random_state=seed)
    if name == "faiss spherical":
        return FaissSphericalKMeans(n_clusters=k, random_state=seed)
    return KMeans(n_clusters=k, n_init=1, random_state=seed)


def main_peers(args):
    """GEM(auto), faiss spherical k-means and KMeans(n_init=1) on the sample's unit vectors, one
    process: per K and seed, ``--reps`` rounds in a rotating order (median time), then the balance
    and the NMI of the last round's labels to the corpus's category and source columns."""
    import torch
    from sklearn.metrics import normalized_mutual_info_score as nmi

    from gem import GEM
    from gem.metrics import balance_report
    from gem.store import SAMPLE_DATA_DIR, Workspace, write_text_atomic

    ws = Workspace(SAMPLE_DATA_DIR)
    X = ws.load_embeddings("final")
    refs = ws.load_corpus(columns=["category", "source"])
    seeds = list(range(args.seeds))
    for name in PEERS:  # imports and first-call set-up outside the timings
        peer_estimator(name, 4, 0).fit(X[:2000])
    GEM(n_clusters=2, balance=1.0).fit(np.random.default_rng(0).standard_normal((50, 8)))
    load0 = os.getloadavg()
    lines = ["# GEM against the peers on the sample (`bench_fit.py --peers`)", "",
             f"Machine: {cpu_line()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
             f"{torch.__version__}, {time.strftime('%Y-%m-%d')}; the box was shared with other jobs (load average "
             f"{load0[0]:.1f} at the start, LOAD_END at the end, on 2 cores), so times are noisy: ratios of the same "
             f"round count. Data: the sample's final vectors ({X.shape[0]:,} x {X.shape[1]}, unit rows, "
             "float32). GEM(balance='auto'); faiss `Kmeans(d, K, spherical=True, niter=25, seed=s)` with its "
             "default subsample (at most 256 rows per centroid), every row then labelled by its nearest "
             "centroid; scikit-learn KMeans(n_init=1, random_state=s). Each seed: "
             f"{args.reps} rounds in a rotating order, times are the median of the rounds, ratio = GEM / peer "
             "of the medians. Entropy = H(shares)/log K of the hard labels; NMI to the corpus's "
             f"`category` ({refs['category'].nunique()} values) and `source` ({refs['source'].nunique()}).", ""]
    head = ("| K | seed | GEM s | faiss s | KMeans s | GEM / faiss | GEM / KMeans | entropy GEM / faiss / KMeans | "
            "largest share GEM / faiss / KMeans | NMI category GEM / faiss / KMeans | NMI source GEM / faiss / KMeans |")
    summary = []
    for k in args.ks:
        lines += [f"## K = {k}", "", head, "|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"]
        per_seed = []
        for seed in seeds:
            times = {m: [] for m in PEERS}
            labels = {}
            for r in range(args.reps):
                order = list(PEERS[r % 3:] + PEERS[: r % 3])
                for m in order:
                    est = peer_estimator(m, k, seed)
                    t0 = time.perf_counter()
                    est.fit(X)
                    times[m].append(time.perf_counter() - t0)
                    labels[m] = np.asarray(est.labels_)
            med = {m: float(np.median(times[m])) for m in PEERS}
            rep_ = {m: balance_report(labels[m], k) for m in PEERS}
            q = {m: (nmi(refs["category"], labels[m]), nmi(refs["source"], labels[m])) for m in PEERS}
            row = dict(seed=seed, t=med, ent={m: rep_[m]["normalized_entropy"] for m in PEERS},
                       top={m: rep_[m]["largest_share"] for m in PEERS}, cat={m: q[m][0] for m in PEERS},
                       src={m: q[m][1] for m in PEERS})
            per_seed.append(row)
            three = lambda d, f="{:.3f}": " / ".join(f.format(d[m]) for m in PEERS)  # noqa: E731
            lines.append(f"| {k} | {seed} | {med['GEM(auto)']:.2f} | {med['faiss spherical']:.2f} | "
                         f"{med['KMeans(n_init=1)']:.2f} | {med['GEM(auto)'] / med['faiss spherical']:.1f} | "
                         f"{med['GEM(auto)'] / med['KMeans(n_init=1)']:.2f} | {three(row['ent'])} | {three(row['top'])} | "
                         f"{three(row['cat'])} | {three(row['src'])} |")
            print(lines[-1], flush=True)
        summary.append((k, per_seed))
        lines.append("")
    lines += ["## Medians over the seeds", "",
              "| K | GEM / faiss | GEM / KMeans | entropy GEM / faiss / KMeans (sd) | NMI category GEM / faiss / KMeans (sd) | "
              "NMI source GEM / faiss / KMeans (sd) |", "|---:|---:|---:|---|---|---|"]
    for k, rows in summary:
        ratio = lambda peer: np.median([r["t"]["GEM(auto)"] / r["t"][peer] for r in rows])  # noqa: E731
        stat = lambda key: " / ".join(  # noqa: E731
            f"{np.mean([r[key][m] for r in rows]):.3f} ({np.std([r[key][m] for r in rows], ddof=1) if len(rows) > 1 else 0:.3f})"
            for m in PEERS)
        lines.append(f"| {k} | {ratio('faiss spherical'):.1f} | {ratio('KMeans(n_init=1)'):.2f} | {stat('ent')} | "
                     f"{stat('cat')} | {stat('src')} |")
    text = "\n".join(lines).replace("LOAD_END", f"{os.getloadavg()[0]:.1f}")
    write_text_atomic(ROOT / "benchmarks" / "results" / "fit_peers.md", text + "\n")
    print(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--max-iter", type=int, default=50)
    ap.add_argument("--data", choices=["synthetic", "sample-noisy"], default="synthetic",
                    help="data of a --case run (the large case uses sample-noisy)")
    ap.add_argument("--large-max-iter", type=int, default=30, help="max_iter of GEM in the 1M-row case")
    ap.add_argument("--no-large", dest="large", action="store_false",
                    help="skip the 1,000,000 x 384, K = 256 case (about 10 minutes, ~6 GB)")
    ap.add_argument("--real", action="store_true", help="the real-embedding cases only (their part of fit.md)")
    ap.add_argument("--ks", type=int, nargs="+", default=[24, 64], help="K values of the real-embedding cases")
    ap.add_argument("--reps", type=int, default=5, help="rounds of the real-embedding cases")
    ap.add_argument("--pypi-tsv", default=str(PYPI_TSV), help="PyPI package list (name, ..., rank, summary)")
    ap.add_argument("--cache", default=str(CACHE), help="where the embedded PyPI summaries are cached")
    ap.add_argument("--no-pypi", dest="pypi", action="store_false", help="skip the PyPI summaries case")
    ap.add_argument("--time-seeds", type=int, default=0, metavar="SEEDS",
                    help="also time GEM / KMeans over this many seeds (2 rounds each, ~1 min per 5 seeds)")
    ap.add_argument("--sweep", type=int, default=0, metavar="SEEDS",
                    help="also compare plain and accelerated fits over this many seeds (quality only, ~1 min each)")
    ap.add_argument("--passes", action="store_true",
                    help="time softmax passes and MM iterations with the current and the former row blocks")
    ap.add_argument("--gemm", action="store_true",
                    help="time the fit's two products on oneDNN and on torch.mm (results/fit_gemm.md)")
    ap.add_argument("--peers", action="store_true",
                    help="GEM(auto) vs faiss spherical k-means vs KMeans(n_init=1) on the sample, per seed "
                         "(results/fit_peers.md; --ks, --seeds, --reps)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds of --peers")
    args = ap.parse_args()
    if args.peers:
        if args.ks == [24, 64]:
            args.ks = [24, 64, 256]
        if args.reps == 5:
            args.reps = 2
        main_peers(args)
        return
    if args.gemm:
        main_gemm(args)
        return
    if args.passes:
        main_passes(args)
        return
    if args.real:
        main_real(args)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args.n, args.d, args.k, args.max_iter, args.data)))
        return
    from gem.gemm import cpu_backend

    rows = []
    n, d, k = args.n, args.d, args.k
    gemm = subprocess_case("gemm", n, d, k, 0)
    g = subprocess_case("gem", n, d, k, args.max_iter)
    km = subprocess_case("kmeans", n, d, k, 0)
    rows += [g, km]
    per_iter = g["iter_seconds"]
    flops = 2 * 2 * n * d * k  # two N x d x K products per iteration
    lines = [
        "# GEM fit speed and memory",
        "",
        f"Machine: {cpu_line()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')} (timings vary with other "
        f"jobs on the box; ratios count). torch threads: {os.cpu_count()}. Products on {cpu_backend()} (`gem.gemm`).",
        f"Data: {n:,} x {d} anisotropic float32 unit rows ({g['data_mb']:.0f} MB), K = {k}.",
        "GEM: balance=5000, tol 1e-6, max_iter " + str(args.max_iter) + ", greedy k-means++ seeding + Lloyd included.",
        "",
        "| method | seconds | iterations | peak RSS MB | RSS after imports MB | peak - imports MB |",
        "|---|---:|---:|---:|---:|---:|",
        f"| GEM | {g['seconds']:.2f} | {g['n_iter']} | {g['peak_rss_mb']:.0f} | {g['libs_rss_mb']:.0f} | {g['peak_rss_mb'] - g['libs_rss_mb']:.0f} |",
        f"| sklearn KMeans(n_init=1) | {km['seconds']:.2f} | {km['n_iter']} | {km['peak_rss_mb']:.0f} | {km['libs_rss_mb']:.0f} | {km['peak_rss_mb'] - km['libs_rss_mb']:.0f} |",
        "",
        f"- GEM / KMeans time ratio: **{g['seconds'] / km['seconds']:.2f}**",
        f"- GEM time per MM iteration (marginal: the fit continued for 6 minus for 1 M-step, / 5): "
        f"{per_iter * 1e3:.0f} ms, {flops / per_iter / 1e9:.1f} GFLOP/s counting the two N x d x K GEMMs, vs "
        f"this machine's measured float32 GEMM {gemm['gflops']:.1f} GFLOP/s (the rest of an iteration: "
        f"exp/softmax over N x K, the Newton passes of the exact E-step, the kappa solves)",
        f"- memory bound (data, its transposed copy for oneDNN's G^T X, 3 N K floats, 300 MB): "
        f"{2 * g['data_mb'] + 3 * n * k * 4 / 2**20 + 300:.0f} MB "
        f"vs GEM's peak - imports {g['peak_rss_mb'] - g['libs_rss_mb']:.0f} MB (data generation temporaries included)",
    ]
    if args.large:
        n_big, k_big, it = 1_000_000, 256, args.large_max_iter
        big = subprocess_case("gem", n_big, 384, k_big, it, "sample-noisy")
        big_km = subprocess_case("kmeans", n_big, 384, k_big, 0, "sample-noisy")
        big_gemm = subprocess_case("gemm", 200_000, 384, k_big, 0)  # the same shape per row, 1/5 the rows
        big_gflops = 2 * 2 * n_big * 384 * k_big / big["iter_seconds"] / 1e9
        lines += ["", f"## {n_big:,} x 384, K = {k_big}, real-derived rows (GEM max_iter {it})", "",
                  "Data: random rows of the sample's MiniLM vectors plus Gaussian noise (0.03 per coordinate, "
                  "cosine ~0.86 to the source row), renormalised: the real corpus's anisotropy and overlapping "
                  "topics at a million rows (`make_sample_noisy`), not the planted cones above. GEM: balance=5000, "
                  "tol 1e-6; each method in its own process.", "",
                  "| method | seconds | iterations | peak RSS MB | peak - imports MB | data MB |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| GEM | {big['seconds']:.1f} | {big['n_iter']}{'' if big['converged'] else ' (max_iter)'} | "
                  f"{big['peak_rss_mb']:.0f} | {big['peak_rss_mb'] - big['libs_rss_mb']:.0f} | {big['data_mb']:.0f} |",
                  f"| sklearn KMeans(n_init=1) | {big_km['seconds']:.1f} | {big_km['n_iter']} | "
                  f"{big_km['peak_rss_mb']:.0f} | {big_km['peak_rss_mb'] - big_km['libs_rss_mb']:.0f} | "
                  f"{big_km['data_mb']:.0f} |", "",
                  f"- GEM / KMeans time ratio: **{big['seconds'] / big_km['seconds']:.2f}**"
                  + ("" if big["converged"] else
                     f" (unequal work: GEM stopped at max_iter {it}, not converged; KMeans ran to its own "
                     f"convergence)") + f"; per iteration GEM {big['iter_seconds']:.2f} s (marginal, as above: "
                  f"{big_gflops:.0f} GFLOP/s counting the two N x d x K GEMMs, "
                  f"{big_gflops / big_gemm['gflops']:.0%} of this machine's float32 GEMM at K = {k_big}, "
                  f"{big_gemm['gflops']:.0f} GFLOP/s), KMeans {big_km['seconds'] / big_km['n_iter']:.2f} s (its time / iterations, "
                  f"seeding included); peak RSS limit 24 GB: {'met' if big['peak_rss_mb'] < 24 * 1024 else 'NOT met'}"]
    write_fit_md("synthetic", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
