#!/usr/bin/env python3
"""Collect benchmarks/results/*.md into BENCHMARKS.md (run after the bench_*.py scripts).

Each bench_*.py writes its own table (with the machine that produced it) to
benchmarks/results/<name>.md; this script only concatenates them in a fixed order.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["embed", "fit", "fit_peers", "profile", "fit_gemm", "fit_gemm_avx2", "fit_passes", "floor", "refit", "churn", "collapse", "app", "app_browser", "gis", "search", "topics", "label", "fuzz", "ingest", "mixlab"]
SCRIPTS = {
    "embed": "bench_embed.py", "fit": "bench_fit.py", "fit_peers": "bench_fit.py --peers",
    "profile": "bench_profile.py --serial", "fit_passes": "bench_fit.py --passes", "fit_gemm": "bench_fit.py --gemm",
    "fit_gemm_avx2": "bench_fit.py --gemm", "collapse": "bench_collapse.py",
    "app": "bench_app.py", "refit": "bench_refit.py", "churn": "bench_churn.py", "floor": "bench_floor.py --n 100000 --k 256", "gis": "bench_gis.py", "label": "bench_label.py",
}
ENV = {"fit_gemm_avx2": "ONEDNN_MAX_CPU_ISA=AVX2 "}  # environment a script's run needs

HEADER = """# Benchmarks

Every figure here is produced by a script in `benchmarks/` (`make bench` runs them all, then this
collector). Speed targets are stated as ratios against a baseline measured in the same run, since
absolute timings move with the machine and its load. Each section names the machine that produced
it; "2-core CPU dev box" is the project's standard machine (2 cores, 24 GiB, no GPU).
"""


def main() -> int:
    results = ROOT / "benchmarks" / "results"
    names = [n for n in ORDER if (results / f"{n}.md").exists()]
    names += sorted(p.stem for p in results.glob("*.md") if p.stem not in ORDER)
    parts = [HEADER]
    for name in names:
        body = (results / f"{name}.md").read_text(encoding="utf-8").strip()
        # demote the result file's own headings by one level under this document's title
        body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
        script = SCRIPTS.get(name, f"bench_{name}.py")
        parts.append(f"{body}\n\n_Reproduce: `{ENV.get(name, '')}.venv/bin/python benchmarks/{script}`._\n")
    from gem.store import write_text_atomic

    write_text_atomic(ROOT / "BENCHMARKS.md", "\n".join(parts))
    print(f"BENCHMARKS.md: {len(names)} sections ({', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
