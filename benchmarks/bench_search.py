"""Search latency at 100k documents (gem.search); writes benchmarks/results/search.md.

    .venv/bin/python benchmarks/bench_search.py [N]

Corpus: N documents built from real PyPI package summaries (/work/.library/env/packages/pypi.tsv,
each document = 5 consecutive non-empty summaries with their package names), written to a temporary
workspace that is deleted afterwards (never committed). Semantic search embeds each query for real
with the bundled MiniLM (the workspace's model), but ranks it against N x 384 RANDOM unit rows:
embedding 100k documents takes too long on this box, and the ranking time does not depend on the
values. Baselines measured in the same run: a Python loop over the lower-cased texts (substring
test per document) and pandas ``str.contains(case=False, regex=False)``.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from machine import cpu_model  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parent.parent
PYPI = Path("/work/.library/env/packages/pypi.tsv")
QUERIES = ["python", "client library", "machine learning", "http server", "aws lambda", "django rest framework",
           "command line tool", "jupyter", "async", "database migration", "pytorch model", "web scraping",
           "json schema validation", "kubernetes operator", "image processing", "natural language processing",
           "unit testing", "data visualization", "encryption", "telegram bot"]


def build_workspace(root: Path, n: int, d: int = 384):
    from gem.embed import SentenceTransformerEmbedder
    from gem.store import Workspace, ids_digest, write_parquet_atomic

    rows = pd.read_csv(PYPI, sep="\t", usecols=["name", "summary"], dtype=str, keep_default_na=False,
                       quoting=3, on_bad_lines="skip")
    rows = rows[rows["summary"].str.len() > 20]
    per = 5
    need = n * per
    if len(rows) < need:
        raise SystemExit(f"{PYPI}: only {len(rows)} usable summaries for {n} documents")
    rows = rows.iloc[:need]
    parts = (rows["name"] + ": " + rows["summary"]).to_numpy().reshape(n, per)
    texts = [" ".join(p) for p in parts]
    ids = [f"pypi-{i:06d}" for i in range(n)]
    ws = Workspace(root)
    root.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(ws.corpus_path, pd.DataFrame({"id": ids, "text": texts,
                                                       "n_tokens": [len(t.split()) for t in texts]}))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    emb = SentenceTransformerEmbedder()  # the model a real workspace would have been embedded with
    ws.save_embeddings("final", X, np.ones(n, np.float32),
                       {"representation": "final", "source": "model", "model": "all-MiniLM-L6-v2 (bench: random rows)",
                        "fingerprint": emb.fingerprint, "ids_digest": ids_digest(ids), "n": n, "dim": d})
    return ws, texts


def timed(fn, reps: int = 1) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(xs, q):
    return float(np.percentile(np.asarray(xs) * 1000, q))


def main(n: int = 100_000) -> None:
    from gem.flags import DocFlags
    from gem.search import full_text, search, semantic

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="gem-bench-search-") as tmp:
        t = time.perf_counter()
        ws, texts = build_workspace(Path(tmp) / "ws", n)
        build_s = time.perf_counter() - t
        mb = sum(len(x) for x in texts) / 1e6
        # flags on 1% of the documents, so annotation reads a real flag table
        DocFlags(ws).exclude([f"pypi-{i:06d}" for i in range(0, n, 100)], "junk", "bench")
        first_text = timed(lambda: full_text(ws, "python", k=20))[0]  # loads + lower-cases the text column
        first_sem = timed(lambda: semantic(ws, "python", k=20))[0]  # loads the model, maps the matrix
        from gem.search import embed_query

        res = {"full-text auto (phrase, then all words)": [], "full-text phrase only": [],
               "semantic (query embedded + cosine top-20)": [], "full-text + annotation (flags)": []}
        hits, embed_only = [], []
        for q in QUERIES:
            for _ in range(3):
                embed_only += timed(lambda: embed_query(ws, q))  # the query embedding alone, same conditions
                res["full-text auto (phrase, then all words)"] += timed(lambda: full_text(ws, q, k=20))
                res["full-text phrase only"] += timed(lambda: full_text(ws, q, k=20, mode="phrase"))
                res["semantic (query embedded + cosine top-20)"] += timed(lambda: semantic(ws, q, k=20))
                res["full-text + annotation (flags)"] += timed(lambda: search(ws, q, k=20))
            hits.append(full_text(ws, q, k=20).n_matches)
        lowered = [x.lower() for x in texts]
        series = pd.Series(texts)
        base_loop, base_pandas = [], []
        for q in QUERIES:
            base_loop += timed(lambda: [i for i, x in enumerate(lowered) if q in x])
            base_pandas += timed(lambda: np.flatnonzero(series.str.contains(q, case=False, regex=False).to_numpy()))

    load_after = os.getloadavg()[0]
    cpu = cpu_model()
    cores = os.cpu_count()
    ft = res["full-text phrase only"]
    lines = [
        "# Search (benchmarks/bench_search.py)", "",
        f"Machine: {cpu}, {cores} cores visible (the 2-core dev box), shared with other work while measuring "
        f"(other helpers' tests and benchmarks ran at the same time: 1-minute load average {load_before:.1f} at the "
        f"start, {load_after:.1f} at the end, on {cores} cores), so treat the figures as upper bounds.", "",
        f"Corpus: {n:,} documents built from real PyPI package summaries (5 summaries each, {mb:.1f} MB of text; "
        f"built in {build_s:.1f} s, temporary, not committed). Semantic: every query embedded for real with the "
        f"bundled MiniLM, ranked against {n:,} x 384 **random** unit rows (embedding 100k documents here takes too "
        "long; the ranking time does not depend on the values). 1% of the documents flagged. "
        f"{len(QUERIES)} queries x 3 repetitions; matches per query: median {int(np.median(hits)):,}, "
        f"max {max(hits):,}.", "",
        "| query type | p50 | p95 | max |", "|---|---|---|---|",
    ]
    for name, xs in res.items():
        lines.append(f"| {name} | {pct(xs, 50):.0f} ms | {pct(xs, 95):.0f} ms | {max(xs) * 1000:.0f} ms |")
    lines += [
        f"| (query embedding alone, MiniLM on CPU) | {pct(embed_only, 50):.0f} ms | {pct(embed_only, 95):.0f} ms | "
        f"{max(embed_only) * 1000:.0f} ms |",
        f"| baseline: Python loop, `q in text.lower()` (texts pre-lowered) | {pct(base_loop, 50):.0f} ms | "
        f"{pct(base_loop, 95):.0f} ms | {max(base_loop) * 1000:.0f} ms |",
        f"| baseline: pandas `str.contains(case=False, regex=False)` | {pct(base_pandas, 50):.0f} ms | "
        f"{pct(base_pandas, 95):.0f} ms | {max(base_pandas) * 1000:.0f} ms |",
        "",
        f"First query of a process: full-text {first_text:.2f} s (reads the text column once, then kept per "
        f"corpus file), semantic {first_sem:.2f} s (loads MiniLM, memory-maps the matrix).",
        "",
        f"Ratios at p50 (baseline time / gem.search phrase time, > 1 means gem.search is faster): pandas "
        f"{pct(base_pandas, 50) / max(pct(ft, 50), 1e-9):.2f}, Python loop {pct(base_loop, 50) / max(pct(ft, 50), 1e-9):.2f}. "
        "A single phrase match is about as fast as pandas' (both end in the same kind of vectorised scan); the "
        "search's extra time goes to ranking (occurrence counts over every hit: a common word such as \"python\" "
        "hits more than half of the corpus), the all-words pass (one scan per word) and, with annotation, the flag "
        "lookup of the shown results. Semantic: the query's MiniLM forward pass runs on one torch thread "
        "(gem.search.embed_query); with the default two threads on this loaded box it took p50 ~800 ms, p95 ~1 s "
        "per query (measured the same day, same model), one thread 10-13 ms. The cosine over 100k x 384 takes "
        "~10-30 ms.",
        f"The issue's target, under 1 s per query at 100k documents: "
        f"{'met by every query type at p95' if all(pct(x, 95) < 1000 for x in res.values()) else 'NOT met at p95'}.",
    ]
    print("\n".join(lines))
    from gem.store import write_text_atomic

    write_text_atomic(ROOT / "benchmarks" / "results" / "search.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
