"""The matrix-multiply kernel behind the engine's big torch products (GEM fits and their seeding).

torch's CPU float32 ``mm`` calls MKL, which on AMD CPUs runs its AVX2 code even where the CPU has
AVX-512. oneDNN, which torch also bundles (``torch.ops.mkldnn``), picks its kernels by the CPU's
instruction sets. On a 2-core AMD EPYC with AVX-512 (2026-11-30), oneDNN computed the fit's two
products 1.7-2.7x faster than ``mm`` at N = 11,500-200,000, K = 24-256, and still 1.3-1.8x faster
when limited to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``); see ``benchmarks/bench_fit.py --gemm``.

So :func:`linear` sends CPU float32 products to oneDNN when this torch has it and its result
agrees with ``mm`` on a probe, and everything else (float64, CUDA) to ``mm``. The choice is made
once per process, at the first product; ``GEM_CPU_GEMM=mm`` forces ``mm``, and :func:`using`
switches for a block (benchmarks compare the two in one process).
"""
from __future__ import annotations

import contextlib
import os

__all__ = ["BACKENDS", "GEMM_ENV", "cpu_backend", "linear", "using"]

BACKENDS = ("onednn", "mm")
GEMM_ENV = "GEM_CPU_GEMM"
_CHOICE: list[str] = []  # the CPU float32 backend, decided at the first product


def _onednn_works() -> bool:
    """Whether oneDNN's float32 linear exists here and agrees with ``mm`` to float32 round-off."""
    import torch

    try:
        if not torch.backends.mkldnn.is_available():
            return False
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(64, 48, generator=gen)
        b = torch.randn(24, 48, generator=gen)
        got = torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        return bool(got.shape == (64, 24) and torch.allclose(got, a @ b.t(), rtol=1e-4, atol=1e-4))
    except Exception:  # an op missing from this build, or failing on this CPU: use mm
        return False


def cpu_backend() -> str:
    """"onednn" or "mm": the kernel of CPU float32 products in this process."""
    if not _CHOICE:
        forced = os.environ.get(GEMM_ENV, "").strip().lower()
        if forced and forced not in BACKENDS:
            raise ValueError(f"${GEMM_ENV} must be one of {BACKENDS}, got {forced!r}")
        _CHOICE.append("mm" if forced == "mm" or not _onednn_works() else "onednn")
    return _CHOICE[0]


@contextlib.contextmanager
def using(backend: str):
    """Run the block's CPU float32 products on ``backend`` ("onednn" or "mm")."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "onednn" and not _onednn_works():
        raise ValueError("oneDNN's float32 linear is not available in this torch")
    before = cpu_backend()
    _CHOICE[0] = backend
    try:
        yield
    finally:
        _CHOICE[0] = before


def linear(a, b, out=None):
    """``a @ b.T`` for torch tensors (a: M x k, b: N x k; either may be a transposed view), into
    ``out`` (M x N, contiguous) when given."""
    import torch

    if a.device.type == "cpu" and a.dtype == torch.float32 and cpu_backend() == "onednn":
        c = torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
        return c if out is None else out.copy_(c)
    return torch.mm(a, b.t(), out=out)
