"""The recorded objective never decreases, not even by round-off: at every lambda up to 1e6 and on
the float32 product path, each entry of objective_history_ (a float64 number) is >= the one before,
compared exactly. The case: a 9,490 x 128 anisotropic cone corpus with sizes 2,400 .. 60, in float32;
at lambda = 1e6 the E-step's Armijo test on the dual used to fail on round-off while the duality gap
was still 1e-5 relative, so the history fell by up to 8e-4."""
import numpy as np
import pytest

from gem import GEM
from gem.sphere import planted_cone


@pytest.fixture(scope="module")
def cone():
    k = 16
    sizes = np.round(2400 * (60 / 2400) ** (np.arange(k) / (k - 1))).astype(int)
    sizes[0] += 9490 - sizes.sum()
    _, unit, _ = planted_cone(sizes, d=128, random_state=0)
    return unit


def _float64_objective(m, X):
    """F at the fitted parameters and potentials, every step in float64 numpy."""
    X = X.astype(np.float64)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    from gem.sphere import log_vmf_normalizer

    kappa = m.concentrations_
    L = X @ (m.mean_directions_ * kappa[:, None]).T + m.log_prior_ + log_vmf_normalizer(kappa, X.shape[1])
    Z = L - m.potentials_
    top = Z.max(axis=1, keepdims=True)
    s = np.exp(Z - top).sum(axis=1, keepdims=True)
    gamma = np.exp(Z - top) / s
    pi = gamma.mean(axis=0)
    lam, u = m.balance_, m.target_
    prior = m.kappa_prior / X.shape[0]
    r0 = np.linalg.norm(X.mean(axis=0))
    P = prior * float(np.sum(log_vmf_normalizer(kappa, X.shape[1]) + kappa * r0))
    return float(np.mean(top[:, 0] + np.log(s[:, 0])) + pi @ m.potentials_ - 0.5 * lam * np.sum((pi - u) ** 2) + P)


@pytest.mark.parametrize("k", [16, 24])
@pytest.mark.parametrize("lam", [1e3, 1e5, 1e6])
def test_history_never_decreases_in_float32(cone, k, lam):
    m = GEM(n_clusters=k, balance=lam, precision="float32", random_state=0).fit(cone)
    h = np.asarray(m.objective_history_, dtype=np.float64)
    assert np.all(np.diff(h) >= 0.0), f"largest drop {-np.diff(h).min():.3g} at lambda {lam:g}"
    assert h[-1] == m.objective_
    # the recorded F is the objective of the returned state, to float32 round-off
    assert abs(_float64_objective(m, cone) - m.objective_) < 1e-7 * abs(m.objective_)


def test_plain_solver_history_never_decreases_in_float32(cone):
    m = GEM(n_clusters=16, balance=1e6, precision="float32", accelerate=False, random_state=0).fit(cone)
    assert np.all(np.diff(np.asarray(m.objective_history_)) >= 0.0)
