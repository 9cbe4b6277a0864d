"""Topic churn after excluding documents: the re-fit that starts from the previous fit (the app's and
`gem fit`'s default, gem.refit) against a cold re-fit (`gem fit --cold`), on real embeddings.

For each corpus and share excluded (drawn at random, several draws), GEM(auto, K) is fitted, synced
to a fresh taxonomy, the documents are excluded (gem.flags), and the run is re-fitted both ways.
Churn is the members' Jaccard of each topic id with its old self, counted on the documents both fits
hold (so deleting documents alone does not lower it), and the topics retired / created.

    .venv/bin/python benchmarks/bench_churn.py [--k 24] [--draws 3]

Writes benchmarks/results/churn.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHARES = [0.0005, 0.01, 0.05, 0.20]


def _slice(src, root: Path, n: int | None, seed: int = 0):
    from gem.store import Workspace, write_parquet_atomic

    corpus = src.load_corpus()
    unit, norms = src.load_embeddings("final"), src.load_norms("final")
    rows = np.arange(len(corpus)) if n is None else np.sort(np.random.default_rng(seed).choice(len(corpus), n, replace=False))
    ws = Workspace(root)
    root.mkdir(parents=True)
    write_parquet_atomic(ws.corpus_path, corpus.iloc[rows].reset_index(drop=True))
    ws.save_embeddings("final", unit[rows], norms[rows], {"representation": "final", "n": len(rows), "dim": unit.shape[1]})
    return ws


def _churn(before: dict, after: dict, kept_ids: set) -> tuple[float, float, int, int]:
    jac = []
    for topic, old in before.items():
        if topic in after:
            a, b = old & kept_ids, after[topic]
            jac.append(len(a & b) / max(len(a | b), 1))
    retired = len(set(before) - set(after))
    created = len(set(after) - set(before))
    return (min(jac) if jac else 0.0), (float(np.median(jac)) if jac else 0.0), retired, created


def _markdown(frame: pd.DataFrame) -> list[str]:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return out


def main() -> int:
    from machine import cpu_line

    from gem.flags import DocFlags
    from gem.refit import fit_with_policy, topic_members
    from gem.runs import FitSettings
    from gem.store import SAMPLE_DATA_DIR, Workspace, write_text_atomic

    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=24)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "churn.md"))
    args = ap.parse_args()
    src = Workspace(SAMPLE_DATA_DIR)
    settings = FitSettings(k=args.k)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gem-churn-"))
    try:
        for label, n in (("sample slice, 1,500 docs", 1500), ("sample, 11,500 docs", None)):
            for share in SHARES:
                for draw in range(args.draws):
                    base = _slice(src, tmp / f"{n}-{share}-{draw}", n)
                    fit_with_policy(base, settings)
                    before = topic_members(base, settings.slug())
                    ids = base.load_corpus(columns=["id"])["id"].astype(str).to_numpy()
                    n_out = max(1, round(share * len(ids)))
                    out = np.random.default_rng(100 + draw).choice(ids, n_out, replace=False)
                    kept = set(ids) - set(out)
                    cold_ws = Workspace(tmp / f"{n}-{share}-{draw}-cold")
                    shutil.copytree(base.root, cold_ws.root)
                    for ws in (base, cold_ws):
                        DocFlags(ws).exclude(out.tolist(), "boilerplate", "bench")
                    x = settings.replace(exclude_flagged=True)
                    for how, ws, cold in (("warm (default)", base, False), ("cold (--cold)", cold_ws, True)):
                        t = time.perf_counter()
                        res = fit_with_policy(ws, x, cold=cold)
                        seconds = time.perf_counter() - t
                        lo, med, retired, created = _churn(before, topic_members(ws, x.slug()), kept)
                        rows.append({"corpus": label, "excluded": f"{share:.2%} ({n_out:,})", "fit": how, "draw": draw,
                                     "min J": lo, "median J": med, "retired": retired, "new": created,
                                     "s": seconds, "iters": int(res.estimator.n_iter_)})
                    print(rows[-2], rows[-1], flush=True)
                    shutil.rmtree(base.root)
                    shutil.rmtree(cold_ws.root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    frame = pd.DataFrame(rows)
    agg = frame.groupby(["corpus", "excluded", "fit"], sort=False).agg(
        **{"min J (worst draw)": ("min J", "min"), "min J (median draw)": ("min J", "median"),
           "median J": ("median J", "median"), "retired (max)": ("retired", "max"), "new (max)": ("new", "max"),
           "re-fit s (median)": ("s", "median"), "M-steps (median)": ("iters", "median")}).reset_index()
    lines = [
        "## Topic churn after exclusions (warm vs cold re-fit)", "",
        f"Machine: {cpu_line()}. `benchmarks/bench_churn.py --k {args.k} --draws {args.draws}`: GEM(auto, K = {args.k}) on",
        "the sample's MiniLM embeddings; the given share of documents excluded at random (each draw another set),",
        "then re-fitted from the previous fit (the default of the app and `gem fit`) or cold (`gem fit --cold`).",
        "J: members' Jaccard of each topic id with its old self, on the documents both fits hold; 'min J' is the",
        "topic that moved most. Retired / new: topic ids the re-fit dropped / created. Re-fit seconds include",
        "the taxonomy match (GIS, keywords).", "",
        *_markdown(agg), "",
    ]
    write_text_atomic(Path(args.out), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
