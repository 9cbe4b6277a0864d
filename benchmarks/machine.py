"""What machine a benchmark ran on, for its results header (every bench_*.py imports it; the
scripts run with benchmarks/ first on sys.path)."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni")  # what picks the CPU's fast kernels


def cpu_flags() -> str:
    """The flags of ``ISA_FLAGS`` this CPU has (``gem.embed.cpu_flags``, from /proc/cpuinfo), e.g.
    "avx2 avx512f"; "" where they cannot be read."""
    from gem.embed import cpu_flags as all_flags

    have = all_flags()
    return " ".join(f for f in ISA_FLAGS if f in have)


def cpu_line() -> str:
    """"<model>, <flags>": the CPU as a results header names it."""
    flags = cpu_flags()
    return f"{cpu_model()} ({flags})" if flags else cpu_model()
