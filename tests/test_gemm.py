"""gem.gemm: the fit's float32 products on oneDNN, the same results as torch.mm."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from gem import GEM, gemm
from gem.model import _Data
from tests.test_model import assert_monotone, planted


def test_pinned_torch_on_x86_runs_products_on_onednn():
    # the CPU wheel of torch bundles oneDNN: if this fails, fits silently lost their fast kernel
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("oneDNN's float32 linear is checked on x86 (the project's machines)")
    assert gemm.cpu_backend() == "onednn"


@pytest.mark.parametrize("backend", gemm.BACKENDS)
def test_linear_is_a_times_b_transposed(backend):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(300, 40, generator=gen)
    b = torch.randn(7, 40, generator=gen)
    g = torch.rand(300, 7, generator=gen)
    ref = a.double() @ b.double().t()
    with gemm.using(backend):
        assert torch.allclose(gemm.linear(a, b).double(), ref, rtol=1e-5, atol=1e-4)
        out = torch.full((300, 7), float("nan"))
        gemm.linear(a, b, out=out)
        assert torch.allclose(out.double(), ref, rtol=1e-5, atol=1e-4)
        # transposed views, as the M-step passes them: (X^T) G = (G^T X)^T
        r = gemm.linear(a.t().contiguous(), g.t()).t()
        assert torch.allclose(r.double(), g.double().t() @ a.double(), rtol=1e-5, atol=1e-4)
        # float64 always runs on mm, exactly
        assert torch.equal(gemm.linear(a.double(), b.double()), a.double() @ b.double().t())


def test_using_switches_for_a_block_and_restores():
    before = gemm.cpu_backend()
    with gemm.using("mm"):
        assert gemm.cpu_backend() == "mm"
    assert gemm.cpu_backend() == before
    with pytest.raises(ValueError, match="backend must be one of"):
        with gemm.using("blas"):
            pass


def _backend_in_fresh_interpreter(value):
    env = dict(os.environ, **{gemm.GEMM_ENV: value})
    return subprocess.run([sys.executable, "-c", "from gem import gemm; print(gemm.cpu_backend())"],
                          capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_env_forces_mm_and_refuses_unknown_values():
    forced = _backend_in_fresh_interpreter("mm")
    assert forced.returncode == 0 and forced.stdout.strip() == "mm"
    bad = _backend_in_fresh_interpreter("mkl")
    assert bad.returncode != 0 and "GEM_CPU_GEMM must be one of" in bad.stderr


def test_transposed_copy_only_where_onednn_uses_it():
    X = np.random.default_rng(0).standard_normal((50, 8))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    w = np.full(50, 1 / 50)
    with gemm.using("mm"):
        assert _Data(X.astype(np.float32), w, 3).xt is None
    assert _Data(X, w, 3).xt is None  # float64: mm
    if gemm.cpu_backend() == "onednn":
        xt = _Data(X.astype(np.float32), w, 3).xt
        assert xt.shape == (8, 50) and xt.is_contiguous()


@pytest.mark.parametrize("weighted", [False, True])
def test_float32_fit_is_the_same_on_both_kernels(weighted):
    # overlapping clusters: a fit of many M-steps, in float32, weighted and not
    X, y = planted(8, 64, 250, 40.0, seed=5)
    sw = np.random.default_rng(2).gamma(2.0, 50.0, size=X.shape[0]) if weighted else None
    # one start for both (the class means, perturbed): round-off in k-means++ may pick another seed
    start = np.stack([X[y == j].mean(axis=0) for j in range(8)])
    start += np.random.default_rng(4).normal(scale=0.05, size=start.shape)
    fits = {}
    for backend in gemm.BACKENDS:
        with gemm.using(backend):
            fits[backend] = GEM(n_clusters=8, precision="float32", tol=1e-8, init=start).fit(X, sample_weight=sw)
    one, mm = fits["onednn"], fits["mm"]
    assert one.n_iter_auto_ + one.n_iter_ >= 5
    assert_monotone(one.objective_history_, rel=1e-7)  # float32 round-off of F: ~1e-8 relative
    assert adjusted_rand_score(one.labels_, mm.labels_) > 0.99
    assert abs(one.objective_ - mm.objective_) <= 1e-6 * abs(mm.objective_)
    assert abs(one.balance_ - mm.balance_) <= 1e-4 * mm.balance_
    assert adjusted_rand_score(one.labels_, y) > 0.9


def test_float32_fit_is_reproducible():
    # the app keys runs by their settings: the same fit twice must give the same answer
    X, _ = planted(6, 48, 300, 30.0, seed=7)
    a, b = (GEM(n_clusters=6, precision="float32", random_state=1).fit(X) for _ in range(2))
    assert a.objective_ == b.objective_ and np.array_equal(a.labels_, b.labels_)
    assert a.labels_changed_ == b.labels_changed_


def test_row_blocks_give_the_same_fit(monkeypatch):
    # large corpora take the logits block by block into a reused buffer; small ones in one product
    X, _ = planted(8, 64, 250, 40.0, seed=6)
    one = GEM(n_clusters=8, precision="float32", random_state=0).fit(X)
    import gem.model as gm

    monkeypatch.setattr(gm, "_GEMM_BLOCK", 1 << 12)  # 512 rows per block at K = 8: four blocks
    blocks = GEM(n_clusters=8, precision="float32", random_state=0).fit(X)
    # the Hessian's products are blocked too: the same fit up to float32 round-off (~1e-8 of F)
    assert blocks.objective_ == pytest.approx(one.objective_, rel=1e-7)
    assert np.mean(blocks.labels_ == one.labels_) >= 0.999
    assert np.allclose(blocks.predict_proba(X), one.predict_proba(X), atol=1e-6)
