"""GIS and keyword throughput on synthetic data (N x 384, K clusters); writes benchmarks/results/gis.md.

    .venv/bin/python benchmarks/bench_gis.py [N] [K]
"""
import sys
import time

import numpy as np

from gem.gis import document_gis, topic_keywords


def main(n: int = 100_000, k: int = 64, d: int = 384) -> None:
    rng = np.random.default_rng(0)
    mus = rng.standard_normal((k, d))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    X = mus[labels] + 0.08 * rng.standard_normal((n, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    L = (X @ mus.T) * 50.0
    L -= L.max(axis=1, keepdims=True)
    P = np.exp(L)
    P /= P.sum(axis=1, keepdims=True)
    t = time.perf_counter()
    gis = document_gis(X, labels, P, mus, np.full(k, 50.0), beta=0.5, n_neighbors=10, max_reference=2000)
    t_gis = time.perf_counter() - t
    words = np.array([f"w{i}x" for i in range(5000)])
    texts = [" ".join(words[rng.integers(0, 5000, 40)]) for _ in range(min(n, 50_000))]
    t = time.perf_counter()
    topic_keywords(texts, labels[: len(texts)], gis[: len(texts)], n_keywords=10)
    t_kw = time.perf_counter() - t
    lines = [
        "# GIS and keywords (benchmarks/bench_gis.py)", "",
        f"Machine: 2-core CPU dev box. Synthetic planted clusters, {n:,} x {d}, K = {k}; GIS with beta 0.5, "
        "M = 10 neighbours, reference sets sampled to <= 2,000 members per cluster.", "",
        "| step | time |", "|---|---|",
        f"| GIS N={n:,} d={d} K={k} M=10 ref<=2000 | {t_gis:.2f} s ({n / t_gis:,.0f} docs/s) |",
        f"| keywords (GIS-weighted c-TF-IDF) {len(texts):,} docs x 40 words | {t_kw:.2f} s |",
    ]
    print("\n".join(lines))
    from pathlib import Path

    from gem.store import write_text_atomic

    write_text_atomic(Path(__file__).resolve().parent / "results" / "gis.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
