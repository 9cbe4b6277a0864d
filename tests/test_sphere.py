"""vMF maths against mpmath (|error| < 1e-8 in log space) and closed forms."""
import mpmath
import numpy as np
import pytest

from gem.sphere import log_iv, log_vmf_normalizer, mean_resultant_length, planted_cone, sample_vmf, solve_kappa

mpmath.mp.dps = 40
ORDERS = [0.0, 0.5, 1.0, 2.5, 11.0, 24.5, 25.0, 31.0, 191.0, 700.0, 2047.0]
KAPPAS = [1e-6, 1e-3, 0.1, 1.0, 7.0, 30.0, 150.0, 900.0, 5e3, 3e4, 2e5, 1e6]


@pytest.mark.parametrize("nu", ORDERS)
def test_log_iv_matches_mpmath(nu):
    x = np.array(KAPPAS)
    got = log_iv(nu, x)
    ref = np.array([float(mpmath.log(mpmath.besseli(nu, k, maxterms=10**6))) for k in KAPPAS])
    # also where I_nu under/overflows float64 (nu = 2047, x = 1e-6: log I ~ -3e4)
    assert np.max(np.abs(got - ref)) < 1e-8


@pytest.mark.parametrize("d", [2, 3, 64, 384, 4096])
def test_mean_resultant_length_matches_mpmath(d):
    k = np.array(KAPPAS)
    got = mean_resultant_length(k, d)
    ref = np.array([float(mpmath.besseli(d / 2, kk, maxterms=10**6) / mpmath.besseli(d / 2 - 1, kk, maxterms=10**6)) for kk in KAPPAS])
    assert np.max(np.abs(np.log(got) - np.log(ref))) < 1e-8
    assert np.all(np.diff(got) > 0) and np.all(got < 1)


def test_log_normalizer_closed_form_d3():
    k = np.array([1e-4, 0.01, 1.0, 10.0, 200.0, 600.0])
    ref = np.log(k) - np.log(4 * np.pi) - (k + np.log1p(-np.exp(-2 * k)) - np.log(2))  # log sinh
    assert np.max(np.abs(log_vmf_normalizer(k, 3) - ref)) < 1e-9
    # kappa = 0: the uniform density 1 / area(S^2)
    assert abs(log_vmf_normalizer(0.0, 3) - (-np.log(4 * np.pi))) < 1e-12


@pytest.mark.parametrize("d", [3, 16, 384, 4096])
def test_solve_kappa_inverts_A(d):
    kappas = np.array([1e-3, 0.7, 5.0, 60.0, 900.0, 4000.0, 9000.0])
    got = solve_kappa(mean_resultant_length(kappas, d), d, kappa_max=1e4)
    assert np.max(np.abs(got - kappas) / kappas) < 1e-6
    edge = solve_kappa([0.0, 1.0, mean_resultant_length(2e4, d)], d, kappa_max=1e4)
    assert edge[0] <= 1e-9 and edge[1] == 1e4 and edge[2] == 1e4


@pytest.mark.parametrize("d,kappa", [(3, 5.0), (64, 200.0), (384, 900.0)])
def test_wood_sampler_moments(d, kappa):
    rng = np.random.default_rng(0)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    x = sample_vmf(mu, kappa, 4000, random_state=1)
    assert x.shape == (4000, d)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-9)
    cos = x @ mu
    # E[mu.x] = A_d(kappa); 5 standard errors
    assert abs(cos.mean() - mean_resultant_length(kappa, d)) < 5 * cos.std() / np.sqrt(len(cos))
    # the component orthogonal to mu has no preferred direction
    resid = x.mean(axis=0) - cos.mean() * mu
    assert np.linalg.norm(resid) < 5 * np.sqrt((1 - cos.mean() ** 2) / len(cos))


def test_planted_cone_is_anisotropic():
    raw, unit, y = planted_cone([200, 100, 50], d=16, cone_cosine=0.8, random_state=0)
    assert raw.shape == unit.shape == (350, 16) and np.bincount(y).tolist() == [200, 100, 50]
    assert (unit @ unit.mean(0)).mean() > 0.5
    assert np.std(np.linalg.norm(raw, axis=1)) > 0.1


def test_bad_inputs():
    with pytest.raises(ValueError):
        log_iv(-1.0, [1.0])
    with pytest.raises(ValueError):
        log_iv(1.0, [0.0])
    with pytest.raises(ValueError):
        log_vmf_normalizer(1.0, 1)
