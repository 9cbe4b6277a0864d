"""No subnormal floats in the fit's products: Intel CPUs pay microcode assists for subnormal operands
and results (the Hessian's G^T G at 200k x 256 ran 1.8x slower with exp(-80) softmax tails), AMD far
less, so a fit that is fast on one CPU can crawl on the other. The softmax floor (gem.model._CLAMP)
keeps every entry of gamma, and every product of two entries or of an entry with a coordinate of X,
a normal float. Checked on a peaked fit (well-separated planted clusters, large kappa), where the
old floor left tails far below the float32 range of normal products."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gem.model as model


def _planted(n=3000, k=32, d=48, kappa=400.0, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(k, d))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    X = mu[rng.integers(0, k, n)] + rng.normal(size=(n, d)) / np.sqrt(kappa)
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_gamma_and_its_products_hold_no_subnormal_floats(monkeypatch, precision):
    X = _planted()
    seen = {"G": 0, "tails": [], "products": 0}
    real_hessian, real_m_step = model._hessian, model._m_step

    def count(G):
        tiny = torch.finfo(G.dtype).tiny
        positive = G[G > 0]
        seen["G"] += int((positive < tiny).sum())
        low = float(positive.min())
        seen["tails"].append(low)
        # the smallest product of two entries (G^T G) and of an entry and a coordinate of X (G^T X)
        x_low = float(np.abs(X[X != 0]).min())
        two = torch.tensor(low, dtype=G.dtype) * torch.tensor(low, dtype=G.dtype)
        with_x = torch.tensor(low, dtype=G.dtype) * torch.tensor(x_low, dtype=G.dtype)
        seen["products"] += int(0 < abs(float(two)) < tiny) + int(float(two) == 0) + int(0 < abs(float(with_x)) < tiny)

    def hessian(data, G, pi):
        count(G)
        return real_hessian(data, G, pi)

    def m_step(data, G, *args, **kw):
        count(G)
        return real_m_step(data, G, *args, **kw)

    monkeypatch.setattr(model, "_hessian", hessian)
    monkeypatch.setattr(model, "_m_step", m_step)
    gem = model.GEM(n_clusters=32, balance=5000.0, precision=precision, random_state=0).fit(X)
    assert seen["tails"], "the fit took no E-step with a Hessian"
    assert seen["G"] == 0 and seen["products"] == 0, seen
    # the floor is below round-off: the fit still finds the planted structure and stays monotone
    h = np.asarray(gem.objective_history_)
    assert np.all(np.diff(h) >= -1e-6 * np.abs(h).max())
    # and the floor was reached (the check above is not vacuous): some tails sit at exp(-clamp) / K
    floor = np.exp(-model._CLAMP[np.float32 if precision == "float32" else np.float64])
    assert min(seen["tails"]) <= 1.01 * floor


def test_the_old_floor_made_subnormal_products():
    """The check above fails with exp(-80) tails: their square underflows float32."""
    low = torch.tensor(np.exp(-80.0) / 32, dtype=torch.float32)
    assert float(low * low) < torch.finfo(torch.float32).tiny
