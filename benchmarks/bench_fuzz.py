#!/usr/bin/env python3
"""Fuzz `gem ingest` at scale: the property of tests/test_fuzz_ingest.py on thousands of generated
examples (JSONL, JSONL.gz, CSV, Parquet files with random valid and broken records), printing what
was generated and what the loader did with it. Any failure stops the run with hypothesis's
minimal failing example.

Usage: .venv/bin/python benchmarks/bench_fuzz.py [--examples N] [--seed S]
Writes benchmarks/results/fuzz.md (collected into BENCHMARKS.md by benchmarks/collect.py).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hypothesis import HealthCheck, given, seed, settings

    from test_fuzz_ingest import check_ingest, corpus_files

    stats: Counter = Counter()

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(corpus_files())
    def run(specs):
        check_ingest(specs, stats)

    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    rows = [(k, v) for k, v in sorted(stats.items())]
    lines = [
        "# Ingest fuzzing",
        "",
        f"`gem ingest` (through `gem.cli.main`, then `gem.corpus.load_corpus`) on {stats['examples']:,} generated "
        f"examples (hypothesis, seed {args.seed}) in {seconds:.0f} s on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}): no exception escaped, every exit "
        "code was the predicted 0 or 2, accepted + rejected = records for every example, every reject at its "
        "expected file and line / row. Files: what was generated (`files broken`: a whole-file problem, which "
        "exits 2, as does a file with no accepted record); records, accepted, rejected and reject reasons: "
        "summed over the examples that exited 0.",
        "",
        "| count | value |",
        "|---|---:|",
        *[f"| {k} | {v:,} |" for k, v in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "benchmarks" / "results" / "fuzz.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
