"""The GPU path, measured against the CPU in one process: GEM fits and (when the model is there)
embeddings. One short prepared script for a session that is lent a GPU machine.

    python3 benchmarks/bench_gpu.py                 # writes benchmarks/results/gpu.md (or $OUT/gpu.md)
    python3 benchmarks/bench_gpu.py --model DIR     # also embed, with this sentence-transformers folder
    python3 benchmarks/bench_gpu.py --quick         # small cases only (~1 minute)

Fits: the sample's final vectors (K = 24, 64) and real-derived rows (``bench_fit.make_sample_noisy``,
200k x 384, K = 256, 30 M-steps at most) on the CPU and on CUDA, same seed: wall time, the speed-up,
the adjusted Rand index between the two labelings and F's relative difference. Embeddings: 2,000
sample texts, CPU float32 vs CUDA float32 and CUDA auto (bf16 / float16): docs/s and the lowest cosine
to the CPU's vectors. Exits 2 where torch sees no GPU. Names the GPU and the CPU it ran on.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from machine import cpu_model  # noqa: E402


def fit_pair(X, k, max_iter=100):
    import torch
    from sklearn.metrics import adjusted_rand_score

    from gem import GEM

    out = {}
    for device in ("cpu", "cuda"):
        est = GEM(n_clusters=k, random_state=0, max_iter=max_iter, device=device)
        GEM(n_clusters=k, random_state=0, max_iter=2, device=device).fit(X[:5000])  # warm-up (CUDA: context, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        est.fit(X)
        if device == "cuda":
            torch.cuda.synchronize()
        out[device] = (time.perf_counter() - t0, est)
    (tc, cpu), (tg, gpu) = out["cpu"], out["cuda"]
    return (f"| {X.shape[0]:,} x {X.shape[1]} | {k} | {tc:.2f} ({cpu.n_iter_auto_}+{cpu.n_iter_}) | "
            f"{tg:.2f} ({gpu.n_iter_auto_}+{gpu.n_iter_}) | {tc / tg:.1f}x | "
            f"{adjusted_rand_score(cpu.labels_, gpu.labels_):.4f} | "
            f"{(gpu.objective_ - cpu.objective_) / abs(cpu.objective_):+.1e} |")


def embed_rows(texts, model):
    from gem.embed import SentenceTransformerEmbedder

    rows, ref = [], None
    for device, precision in (("cpu", "float32"), ("cuda", "float32"), ("cuda", "auto")):
        emb = SentenceTransformerEmbedder(model_path=model, device=device, precision=precision)
        emb.encode(texts[:64])  # load and warm up
        t0 = time.perf_counter()
        X, _ = emb.encode(texts)
        dt = time.perf_counter() - t0
        ref = X if ref is None else ref
        cos = float(np.einsum("ij,ij->i", X, ref).min())
        rows.append(f"| {device} | {emb.precision} | {len(texts) / dt:,.0f} | {cos:.5f} |")
    return rows


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="sentence-transformers folder (default: the installed MiniLM, if any)")
    ap.add_argument("--quick", action="store_true", help="the sample's cases only")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA device here; nothing to measure", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_fit import load_sample, make_sample_noisy

    Xs, _ = load_sample()
    lines = ["# GPU path (benchmarks/bench_gpu.py)", "",
             f"Machine: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}, torch {torch.__version__}; "
             f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "## GEM(auto) fits, CPU vs CUDA (seed 0; M-steps phase A + phase B)", "",
             "| data | K | CPU s (M-steps) | CUDA s (M-steps) | speed-up | ARI CPU vs CUDA | relative F difference (CUDA - CPU) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    cases = [(Xs, 24, 100), (Xs, 64, 100)]
    if not args.quick:
        cases.append((make_sample_noisy(200_000), 256, 30))
    from gem.store import write_text_atomic

    out = Path(os.environ["OUT"]) / "gpu.md" if os.environ.get("OUT") else ROOT / "benchmarks" / "results" / "gpu.md"

    def save():  # after every row: a crash later keeps what was measured
        write_text_atomic(out, "\n".join(lines) + "\n")

    for X, k, it in cases:
        lines.append(fit_pair(X, k, it))
        print(lines[-1], flush=True)
        save()
    model = args.model
    if model is None:
        try:
            from gem.embed import default_model_path

            model = str(default_model_path())
        except ImportError:
            model = None
    if model:
        import pandas as pd

        texts = pd.read_parquet(ROOT / "sample_data" / "corpus.parquet", columns=["text"])["text"].tolist()[:2000]
        from gem.embed import model_label

        lines += ["", f"## Embeddings: {len(texts):,} sample texts ({model_label(model)})", "",
                  "| device | precision | docs/s | lowest cosine to CPU float32 |", "|---|---|---:|---:|"]
        lines += embed_rows(texts, model)
        print("\n".join(lines[-3:]), flush=True)
    else:
        lines += ["", "Embeddings: not measured (no model folder; pass --model)."]
    save()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
