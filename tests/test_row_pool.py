"""The fit's row-block work (softmax passes, logits, labels) runs on a pool of single-threaded
workers when torch has several threads: results do not depend on which worker took which block,
and the caller's torch thread count is left as it was. The k-means++ seeding runs on one torch
thread and picks the seeds it picks on two."""
import threading

import numpy as np
import pytest
import torch

import gem.model as gm
from gem import GEM


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_workers_run_torch_on_one_thread(two_threads):
    pool = gm._row_pool(torch, 2)
    assert torch.get_num_threads() == 2
    seen = [f.result() for f in [pool.submit(lambda: (threading.current_thread().name, torch.get_num_threads()))
                                 for _ in range(8)]]
    assert all(n == 1 for _, n in seen) and all(name.startswith("gem-rows") for name, _ in seen)
    assert gm._row_pool(torch, 2) is pool  # made once


def test_blocks_come_back_in_order_and_cover_the_rows(two_threads):
    X = np.random.default_rng(0).standard_normal((5000, 8)).astype(np.float32)
    data = gm._Data(X / np.linalg.norm(X, axis=1, keepdims=True), np.full(5000, 1 / 5000), 3)
    got = gm._map_blocks(data, lambda c: (c.start, c.stop), 10_000)
    assert len(got) >= 8  # at least 4 blocks per worker
    assert got[0][0] == 0 and got[-1][1] == 5000 and all(a[1] == b[0] for a, b in zip(got, got[1:]))


def test_pass_and_fit_match_the_serial_loop(two_threads, monkeypatch):
    """The pooled blocks give bit for bit what the same blocks give one after another."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30_000, 48)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    fits = []
    for pooled in (True, False):
        if not pooled:
            monkeypatch.setattr(gm, "_map_blocks", _serial_blocks)
        m = GEM(n_clusters=16, balance=100.0, max_iter=8, random_state=0, precision="float32").fit(X)
        fits.append(m)
    a, b = fits
    assert a.objective_history_ == b.objective_history_
    assert np.array_equal(a.labels_, b.labels_) and np.array_equal(a.potentials_, b.potentials_)


def _serial_blocks(data, fn, rows):
    """gem.model._map_blocks' blocks, computed in order on this thread with one torch thread."""
    workers = data.torch.get_num_threads()
    rows = max(256, min(rows, -(-data.n // (4 * workers))))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [fn(c) for c in data.chunks(rows)]
    finally:
        torch.set_num_threads(before)



def test_kmeanspp_runs_on_one_thread_with_the_same_seeds(two_threads, monkeypatch):
    import contextlib

    rng = np.random.default_rng(3)
    X = rng.standard_normal((20_000, 32)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    w = np.full(X.shape[0], 1 / X.shape[0])
    seen = []
    step = gm._greedy_kmeanspp

    def spy(*a):
        seen.append(torch.get_num_threads())
        return step(*a)

    monkeypatch.setattr(gm, "_greedy_kmeanspp", spy)
    one = gm.greedy_kmeanspp(X, 40, w, np.random.default_rng(0))
    monkeypatch.setattr(gm, "torch_threads", lambda work: contextlib.nullcontext())
    two = gm.greedy_kmeanspp(X, 40, w, np.random.default_rng(0))
    assert seen == [1, 2] and torch.get_num_threads() == 2
    assert np.array_equal(one, two)
