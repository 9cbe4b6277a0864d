"""Streaming ingest: wall time, docs/s and peak RSS of `gem ingest` at growing corpus sizes;
writes benchmarks/results/ingest.md.

    .venv/bin/python benchmarks/bench_ingest.py [--sizes 100000,300000,1000000]
        [--baseline-sizes 100000,300000,1000000] [--near-sizes 100000,300000] [--source FILE]

Documents are real text: the package summaries of a PyPI listing (``--source``, a TSV with a
``summary`` column; read, never copied into the repository). One JSONL file per size, records
``{"id": "p<i>", "text": <summary>}``; past the end of the listing the summaries are cycled with
`` (copy <k>)`` appended, so a cycled record is not an exact copy of its original (the listing's own
repeated summaries are, and the default ``--dedup exact`` drops them, as it would in real use).
Each run is a fresh subprocess (``gem ingest FILE -w WS``: validation, exact dedup, MiniLM token
counts, corpus.parquet); its peak RSS is the child's ``ru_maxrss``. ``--near-sizes``: also
``--dedup near`` (MinHash signatures and band keys kept per document). The baseline is the ingest of
commit 491b7c4 (it held the whole corpus in memory), run from a temporary copy of that
``gem/corpus.py`` on the same files in the same run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import cpu_model  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "491b7c4"
DEFAULT_SOURCE = "/work/.library/env/packages/pypi.tsv"

# A child that runs the baseline ingest (the old module imported as gem.old_corpus so that its
# relative imports resolve inside the installed gem package) and prints nothing.
BASELINE_CHILD = """
import importlib.util, sys
from gem.store import Workspace
spec = importlib.util.spec_from_file_location("gem.old_corpus", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["gem.old_corpus"] = mod
spec.loader.exec_module(mod)
mod.ingest([sys.argv[2]], Workspace(sys.argv[3]))
"""

# Runs one command and reports its own child's peak RSS (a fresh process per measurement, so
# RUSAGE_CHILDREN holds that command alone).
MEASURE_CHILD = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
seconds = time.perf_counter() - start
print(json.dumps({"rc": rc, "seconds": seconds, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def summaries(source: Path) -> list[str]:
    csv.field_size_limit(1 << 24)
    with open(source, encoding="utf-8", errors="replace", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [s.strip() for row in reader if (s := (row.get("summary") or "")).strip()]


def build(path: Path, texts: list[str], n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            k, j = divmod(i, len(texts))
            text = texts[j] if k == 0 else f"{texts[j]} (copy {k})"
            fh.write(json.dumps({"id": f"p{i}", "text": text}, ensure_ascii=False) + "\n")


def measure(cmd: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE_CHILD, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {result['rc']}")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated corpus sizes (documents)")
    ap.add_argument("--baseline-sizes", default="100000,300000,1000000",
                    help=f"sizes also run with the ingest of commit {BASELINE_COMMIT} ('' for none)")
    ap.add_argument("--near-sizes", default="100000,300000", help="sizes also run with --dedup near ('' for none)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each (code, size), alternating; the table shows the fastest (the box is shared)")
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="TSV with a 'summary' column (real short texts)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    baseline_sizes = [int(s) for s in args.baseline_sizes.split(",") if s]
    near_sizes = [int(s) for s in args.near_sizes.split(",") if s]
    texts = summaries(Path(args.source))
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    rows = []
    try:
        old = work / "old_corpus.py"
        old.write_text(subprocess.run(["git", "show", f"{BASELINE_COMMIT}:gem/corpus.py"], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout)
        for n in sorted(set(sizes) | set(baseline_sizes) | set(near_sizes)):
            data = work / f"docs{n}.jsonl"
            build(data, texts, n)
            mb = data.stat().st_size / 1e6
            runs = []
            if n in baseline_sizes:
                runs.append(("baseline", [sys.executable, "-c", BASELINE_CHILD, str(old), str(data), str(work / "ws-old")]))
            if n in sizes:
                runs.append(("streaming", [sys.executable, "-m", "gem", "ingest", str(data), "-w", str(work / "ws-new"),
                                           "--no-progress"]))
            if n in near_sizes:
                runs.append(("streaming, near", [sys.executable, "-m", "gem", "ingest", str(data), "-w",
                                                 str(work / "ws-new"), "--no-progress", "--dedup", "near"]))
            best: dict[str, dict] = {}
            for _ in range(max(1, args.repeat)):
                for label, cmd in runs:
                    r = measure(cmd)
                    ws = work / ("ws-old" if label == "baseline" else "ws-new")
                    report = json.loads((ws / "ingest_report.json").read_text())
                    print(f"{label:15s} {n:>9,} docs {mb:7.1f} MB: {r['seconds']:7.1f} s, {n / r['seconds']:8,.0f} docs/s, "
                          f"peak RSS {r['maxrss_kib'] / 1024:7.0f} MB ({report['n_accepted']:,} accepted, "
                          f"{report['n_rejected']:,} rejected)", flush=True)
                    shutil.rmtree(ws, ignore_errors=True)
                    row = best.setdefault(label, {"code": label, "n": n, "mb": mb, "seconds": r["seconds"], "rss_mb": 0.0,
                                                  "accepted": report["n_accepted"], "rejected": report["n_rejected"]})
                    row["seconds"] = min(row["seconds"], r["seconds"])
                    row["rss_mb"] = max(row["rss_mb"], r["maxrss_kib"] / 1024)
            rows.extend(best.values())
            data.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = table(rows, len(texts), args.repeat)
    print("\n".join(lines))
    if not args.no_write:
        from gem.store import write_text_atomic

        write_text_atomic(ROOT / "benchmarks" / "results" / "ingest.md", "\n".join(lines) + "\n")
    return 0


def table(rows: list[dict], n_texts: int, args_repeat: int) -> list[str]:
    new = {r["n"]: r for r in rows if r["code"] == "streaming"}
    old = {r["n"]: r for r in rows if r["code"] == "baseline"}
    lines = [
        "# Streaming ingest (benchmarks/bench_ingest.py)", "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} (1-minute load average "
        f"{os.getloadavg()[0]:.1f} when the table was written: other jobs slow the times, not the memory); Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}. "
        f"`gem ingest FILE -w WS` in a fresh subprocess per run (default options: exact dedup, MiniLM token "
        f"counts); {args_repeat} run(s) of each, alternating: wall time = the fastest, peak RSS = the child's "
        f"`ru_maxrss` (the largest). Documents: {n_texts:,} real PyPI package summaries, "
        "cycled with ` (copy k)` appended past the end, ids `p<i>`; the listing's own repeated summaries are "
        f"exact duplicates and are dropped (rejected column). Baseline: the ingest of commit {BASELINE_COMMIT} "
        "(whole corpus in memory), same files, same run.", "",
        "| code (dedup) | documents | JSONL MB | wall s | docs/s | peak RSS MB | accepted | rejected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["n"], r["code"])):
        code = r["code"] if "near" in r["code"] else f"{r['code']}, exact"
        lines.append(f"| {code} | {r['n']:,} | {r['mb']:.1f} | {r['seconds']:.1f} | {r['n'] / r['seconds']:,.0f} | "
                     f"{r['rss_mb']:,.0f} | {r['accepted']:,} | {r['rejected']:,} |")
    both = sorted(set(new) & set(old))
    if both:
        lines += ["", "Streaming vs baseline at the same size: " + "; ".join(
            f"{n:,}: time x{new[n]['seconds'] / old[n]['seconds']:.2f}, peak RSS x{new[n]['rss_mb'] / old[n]['rss_mb']:.2f}"
            for n in both) + "."]
    for name, runs in (("streaming, exact", new), ("baseline, exact", old),
                       ("streaming, near", {r["n"]: r for r in rows if r["code"] == "streaming, near"})):
        if len(runs) >= 2:
            a, b = min(runs), max(runs)
            per_doc = (runs[b]["rss_mb"] - runs[a]["rss_mb"]) * 1024 * 1024 / (b - a)
            lines += ["", f"Peak RSS of {name} from {a:,} to {b:,} documents: {runs[a]['rss_mb']:,.0f} -> "
                          f"{runs[b]['rss_mb']:,.0f} MB, {per_doc:,.0f} bytes per extra document."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
