#!/usr/bin/env python3
"""Student vs teacher: throughput, agreement, and a >= 500k-document labelling run on both engines.

1. Teacher: GEM (K=24) on MiniLM embeddings of the sample corpus (sample_data/embeddings/final.npy
   when built, else embedded here). Student: distilled from its GIS-selected documents, plain and
   from teacher word vectors; agreement with the teacher on held-out documents (3 seeds), next to
   the same students on k-means labels, two reference models, and agreement against K.
2. Throughput: teacher = MiniLM embed + GEM predict_proba; student = normalise + fastText predict.
3. Scale: every summary of a PyPI package index (--pypi, default the machine's pypi.tsv, 886k
   rows; read in place, never copied into the repository) written as gzip JSONL shards in a temp
   dir, labelled with the local process pool and with Ray; wall time and peak RSS of the whole
   process tree (driver + workers / Ray processes, sampled from /proc every 0.2 s).

Usage: .venv/bin/python benchmarks/bench_label.py [--pypi PATH] [--sample-docs N] [--out benchmarks/results/label.md]
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class TreeRSS:
    """Peak resident memory of this process and all its descendants (Linux /proc)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> int:
        kids: dict[int, list[int]] = {}
        rss: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{d}/statm") as fh:
                    rss[int(d)] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        total, todo = 0, [os.getpid()]
        while todo:
            p = todo.pop()
            total += rss.get(p, 0)
            todo.extend(kids.get(p, []))
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def teacher_and_student(sample_docs: int, workdir: Path, log):
    import pandas as pd
    from sklearn.cluster import KMeans

    from gem.distill import (TeacherGeometry, distill_labels, evaluate, fasttext_line, holdout_split,
                             teacher_scores)
    from gem.embed import EmbeddingCache, SentenceTransformerEmbedder, encode_cached, vocabulary_words
    from gem.gis import gis_for_model
    from gem.model import GEM
    from gem.store import SAMPLE_DATA_DIR, load_npy

    corpus = pd.read_parquet(SAMPLE_DATA_DIR / "corpus.parquet")
    emb_path = SAMPLE_DATA_DIR / "embeddings" / "final.npy"
    embedder = SentenceTransformerEmbedder()
    if emb_path.exists():
        X = load_npy(emb_path)
        norms = load_npy(SAMPLE_DATA_DIR / "embeddings" / "final.norms.npy")
        rows = np.sort(np.random.default_rng(0).permutation(len(corpus))[:sample_docs])
        corpus, X, norms = corpus.iloc[rows].reset_index(drop=True), X[rows], norms[rows]
        log(f"teacher embeddings: {emb_path} ({len(X)} rows)")
    else:
        corpus = corpus.sample(min(sample_docs, len(corpus)), random_state=0).reset_index(drop=True)
        t = time.perf_counter()
        X, norms = embedder.encode(corpus["text"].tolist())
        log(f"teacher embeddings: computed here, {len(X)} docs in {time.perf_counter() - t:.0f} s")
    texts = corpus["text"].tolist()
    cache = EmbeddingCache(workdir / "cache")  # the words' embeddings, shared by every run below
    vocab = vocabulary_words()

    def geometry(directions):
        return TeacherGeometry(X, directions, lambda words: encode_cached(embedder, words, cache)[0], vocab)

    t = time.perf_counter()
    gem = GEM(n_clusters=24, random_state=0).fit(X)
    results = {"n_docs": len(texts), "gem_fit_s": time.perf_counter() - t}
    scores = teacher_scores(gem, X, gem.labels_, "gis")
    km = KMeans(24, n_init=1, random_state=0).fit(X * norms[:, None])
    km_scores = gis_for_model(X, km, labels=km.labels_)
    km_dirs = km.cluster_centers_ / np.linalg.norm(km.cluster_centers_, axis=1, keepdims=True)
    teachers = {"gem": (gem.labels_, scores, gem.mean_directions_), "kmeans": (km.labels_, km_scores, km_dirs)}
    # seeds: the held-out split and fastText's seed; fastText's lock-free threads add run-to-run noise
    for name, (labels, sc, dirs) in teachers.items():
        for recipe in ("plain", "vectors"):
            for q in ((0.5, 1.0) if name == "gem" else (1.0,)):
                runs = []
                for seed in (0, 1, 2):
                    t = time.perf_counter()
                    student, rep = distill_labels(texts, labels, sc, holdout=0.2, top_fraction=q, random_state=seed,
                                                  geometry=geometry(dirs) if recipe == "vectors" else None)
                    runs.append(dict(agreement=rep["agreement"], macro_f1=rep["macro_f1"], n_train=rep["training"]["n"],
                                     by_conf=rep["agreement_by_confidence"], seconds=time.perf_counter() - t,
                                     word_vectors=rep.get("word_vectors")))
                    if (name, recipe, q, seed) == ("gem", "vectors", 1.0, 0):
                        best, best_held = student, holdout_split(len(texts), 0.2, 0)[1]
                    if (name, recipe, q, seed) == ("gem", "plain", 1.0, 0):
                        plain = student
                    print(f"  {name} {recipe} q={q} seed={seed}: {rep['agreement']:.3f} ({runs[-1]['seconds']:.0f} s)",
                          flush=True)
                results[f"{name}_{recipe}_q{q}"] = runs
    # references that are not fastText students: a text-only linear SVM (word + char TF-IDF) and a
    # logistic regression on the teacher's own embeddings, both on the GEM student's rows
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    norm = [fasttext_line(x) for x in texts]
    pool, held = holdout_split(len(texts), 0.2, 0)
    vecs = [TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)).fit([norm[i] for i in pool]),
            TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(3, 5), min_df=2).fit([norm[i] for i in pool])]
    feats = lambda rows: hstack([v.transform([norm[i] for i in rows]) for v in vecs]).tocsr()  # noqa: E731
    svm = LinearSVC(C=0.5).fit(feats(pool), gem.labels_[pool])
    results["svm_agreement"] = float((svm.predict(feats(held)) == gem.labels_[held]).mean())
    lr = LogisticRegression(C=10, max_iter=3000).fit(X[pool], gem.labels_[pool])
    results["embedding_lr_agreement"] = float((lr.predict(X[held]) == gem.labels_[held]).mean())
    sizes = np.bincount(km.labels_, minlength=24)
    results["kmeans_largest_share"] = float(sizes.max() / sizes.sum())
    results["gem_largest_share"] = float(np.bincount(gem.labels_, minlength=24).max() / len(texts))

    # agreement against the granularity of the teacher (GEM K, teacher vectors, q=100%, seed 0)
    results["by_k"] = {}
    for k in (8, 16, 24, 32, 48):
        g = GEM(n_clusters=k, random_state=0).fit(X)
        _, rep = distill_labels(texts, g.labels_, teacher_scores(g, X, g.labels_, "gis"), holdout=0.2,
                                geometry=geometry(g.mean_directions_))
        results["by_k"][k] = rep["agreement"]
        print(f"  K={k}: {rep['agreement']:.3f}", flush=True)

    # throughput on the same 1,000 documents (teacher: embed + predict_proba with the potentials)
    probe = texts[:1000]
    t = time.perf_counter()
    U, _ = embedder.encode(probe)
    gem.predict_proba(U)
    results["teacher_docs_s"] = len(probe) / (time.perf_counter() - t)
    big = probe * 50
    for name, model in (("student_docs_s", best), ("plain_docs_s", plain)):
        t = time.perf_counter()
        model.predict(big)
        results[name] = len(big) / (time.perf_counter() - t)
    bin_path = workdir / "student.bin"
    results["bin_bytes"] = best.save(bin_path)["bytes"]
    results["plain_bin_bytes"] = plain.save(workdir / "plain.bin")["bytes"]
    t = time.perf_counter()
    q = best.quantize(workdir / "student.ftz")  # default cutoff
    results["quantize_s"] = time.perf_counter() - t
    results["ftz_bytes"] = q.path.stat().st_size
    results["ftz_agreement"] = evaluate(q, [texts[i] for i in best_held], [str(k) for k in gem.labels_[best_held]])["agreement"]
    return results, bin_path, q.path


def write_pypi_shards(pypi: Path, folder: Path, per_shard: int = 50_000) -> int:
    """Package summaries -> gzip JSONL shards {id, text}; empty summaries are kept (they become
    rejects, as they would in a real crawl)."""
    csv.field_size_limit(1 << 24)
    n, shard, fh = 0, 0, None
    with open(pypi, encoding="utf-8", newline="") as src:
        reader = csv.reader(src, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        name_col, text_col = header.index("name"), header.index("summary")
        for row in reader:
            if n % per_shard == 0:
                if fh:
                    fh.close()
                fh = gzip.open(folder / f"pypi-{shard:03d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
                shard += 1
            text = row[text_col] if len(row) > text_col else ""
            fh.write(json.dumps({"id": row[name_col], "text": text}, ensure_ascii=False) + "\n")
            n += 1
    if fh:
        fh.close()
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pypi", type=Path, default=Path("/work/.library/env/packages/pypi.tsv"))
    ap.add_argument("--sample-docs", type=int, default=11_500, help="sample corpus documents for the teacher")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label.md")
    args = ap.parse_args(argv)
    from gem.label import label_corpus

    lines: list[str] = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    with tempfile.TemporaryDirectory(prefix="gem-bench-label-") as tmp:
        tmp = Path(tmp)
        r, bin_path, ftz_path = teacher_and_student(args.sample_docs, tmp, log)
        ratio = r["student_docs_s"] / r["teacher_docs_s"]
        log(f"\n## Student vs teacher (sample corpus, {r['n_docs']} docs, K=24, 20% held out)\n")
        log("Mean +- sd over 3 seeds (held-out split and fastText seed). plain: from scratch, character n-grams "
            "3-6, dim 64, 25 epochs. vectors: from teacher word vectors (dim K, 10 epochs, lr 0.1).\n")
        log("| labels | student | top-q by GIS | train docs | held-out top-1 agreement | macro-F1 | train s |")
        log("|---|---|---|---|---|---|---|")
        for key, runs in r.items():
            if not isinstance(runs, list):
                continue
            name, recipe, q = key.split("_")
            ag = np.array([x["agreement"] for x in runs])
            f1 = np.array([x["macro_f1"] for x in runs])
            log(f"| {'GEM' if name == 'gem' else 'k-means (raw vectors)'} | {recipe} | {float(q[1:]):.0%} | "
                f"{runs[0]['n_train']} | {ag.mean():.1%} +- {ag.std():.1%} | {f1.mean():.3f} | "
                f"{np.mean([x['seconds'] for x in runs]):.0f} |")
        wv = r["gem_vectors_q1.0"][0]["word_vectors"]
        log(f"\nTeacher word vectors (GEM, seed 0): {wv['n_words']:,} words ({wv['n_training_words']:,} from the "
            f"training pool, the rest the encoder's own whole words), dim {wv['dim']}; relative residual of the "
            f"training documents' mean vectors vs their teacher embeddings {wv['residual_static']:.2f} (static word "
            f"embeddings) -> {wv['residual_fitted']:.2f} (ridge-fitted). The first vectors run embeds the vocabulary "
            f"with the teacher's encoder ({r['gem_vectors_q0.5'][0]['seconds']:.0f} s in all); later runs find the "
            f"words in the cache and spend {wv['seconds']:.0f} s on the vectors (vocabulary, ridge fit).")
        log(f"Largest cluster share: GEM {r['gem_largest_share']:.1%}, k-means {r['kmeans_largest_share']:.1%}.")
        log(f"References on the same rows (not fastText students): linear SVM on word + char TF-IDF "
            f"{r['svm_agreement']:.1%} (text only); logistic regression on the teacher's own embeddings "
            f"{r['embedding_lr_agreement']:.1%} (no text model can see these).")
        log("GEM student (vectors, q=100%, seed 0) agreement by student confidence: " + ", ".join(
            f"[{b['low']:.1f},{b['high']:.1f}] {b['share']:.0%} of docs at {b['agreement']:.0%}"
            for b in r["gem_vectors_q1.0"][0]["by_conf"] if b["agreement"] is not None))
        log("\nAgreement against the teacher's granularity (GEM K, vectors student, q=100%, seed 0):\n")
        log("| K | " + " | ".join(str(k) for k in r["by_k"]) + " |")
        log("|---|" + "---|" * len(r["by_k"]))
        log("| held-out top-1 agreement | " + " | ".join(f"{v:.1%}" for v in r["by_k"].values()) + " |")
        log(f"\n| | docs/s |\n|---|---|\n| teacher: MiniLM embed + GEM predict | {r['teacher_docs_s']:,.0f} |\n"
            f"| student (vectors): normalise + fastText predict | {r['student_docs_s']:,.0f} |\n"
            f"| student (plain) | {r['plain_docs_s']:,.0f} |\n| ratio (vectors student / teacher) | {ratio:,.0f}x |")
        log(f"\nModel size: vectors student .bin {r['bin_bytes'] / 1e6:.1f} MB (plain student "
            f"{r['plain_bin_bytes'] / 1e6:.1f} MB); quantised .ftz {r['ftz_bytes'] / 1e6:.1f} MB "
            f"(quantise {r['quantize_s']:.0f} s; agreement {r['ftz_agreement']:.1%} vs "
            f"{r['gem_vectors_q1.0'][0]['agreement']:.1%}).")

        if not args.pypi.exists():
            log(f"\n{args.pypi} not found: scale run skipped")
        else:
            shards = tmp / "shards"
            shards.mkdir()
            t = time.perf_counter()
            n = write_pypi_shards(args.pypi, shards)
            log(f"\n## Scale: {n:,} PyPI package summaries, {len(list(shards.iterdir()))} gzip JSONL shards "
                f"(written in {time.perf_counter() - t:.0f} s)\n")
            log("| engine | workers | model | wall s | docs/s | labelled | rejected | peak RSS (tree) |")
            log("|---|---|---|---|---|---|---|---|")
            outs = {}
            for engine, model in (("local", ftz_path), ("ray", ftz_path), ("local", bin_path)):
                out = tmp / f"out-{engine}-{model.suffix[1:]}"
                with TreeRSS() as mem:
                    t = time.perf_counter()
                    s = label_corpus(model, str(shards / "*.jsonl.gz"), out, engine=engine, workers=args.workers)
                    wall = time.perf_counter() - t
                outs[(engine, model.suffix)] = out
                log(f"| {engine} | {args.workers} | {model.suffix} | {wall:.1f} | {s['n_docs'] / wall:,.0f} | "
                    f"{s['n_docs']:,} | {s['n_rejected']:,} | {mem.peak / 2**30:.2f} GiB |")
            import pandas as pd

            a = pd.concat(pd.read_parquet(p) for p in sorted(outs[("local", ".ftz")].glob("*.parquet")))
            b = pd.concat(pd.read_parquet(p) for p in sorted(outs[("ray", ".ftz")].glob("*.parquet")))
            log(f"\nlocal and ray outputs identical: {a.reset_index(drop=True).equals(b.reset_index(drop=True))}")
            shares = pd.Series(a["topic_id"]).value_counts(normalize=True)
            log(f"topic shares on PyPI (out of domain for a sample-corpus teacher): largest {shares.iloc[0]:.1%}, "
                f"smallest {shares.iloc[-1]:.2%} over {len(shares)} topics")
    header = [
        "# Labelling benchmark (benchmarks/bench_label.py)", "",
        f"Machine: {platform.machine()} {os.cpu_count()}-core CPU dev box, shared with other jobs (numbers are "
        f"lower bounds); Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from gem.store import write_text_atomic

    write_text_atomic(args.out, "\n".join(header + lines) + "\n")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
