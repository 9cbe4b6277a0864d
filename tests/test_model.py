"""GEM estimator: monotone MM, textbook EM equivalence, recovery, balance, collapse, I/O."""
import json

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import ive, logsumexp
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from gem import GEM
from gem.baselines import make_estimator
from gem.metrics import balance_report
from gem.sphere import log_vmf_normalizer, planted_cone, sample_vmf


def planted(k, d, n_per, kappa, seed, sizes=None):
    rng = np.random.default_rng(seed)
    mus = rng.standard_normal((k, d))
    mus /= np.linalg.norm(mus, axis=1, keepdims=True)
    sizes = sizes or [n_per] * k
    X = np.concatenate([sample_vmf(mus[j], kappa, sizes[j], rng) for j in range(k)])
    return X, np.repeat(np.arange(k), sizes)


def assert_monotone(values, rel=1e-9):
    v = np.asarray(values, dtype=float)
    drops = v[:-1] - v[1:]
    allowed = rel * np.maximum(1.0, np.abs(v[:-1]))
    assert np.all(drops <= allowed), f"objective decreased by {drops.max():.3g} (allowed {allowed.max():.3g})"


# overlapping clusters, so fits take many iterations
OVERLAP = planted(6, 16, 200, 25.0, seed=11)
W = np.random.default_rng(3).gamma(2.0, 50.0, size=OVERLAP[0].shape[0])
TARGET = np.array([0.3, 0.2, 0.2, 0.1, 0.1, 0.1])

CONFIGS = [
    dict(balance=0.0),
    dict(balance=3.0),
    dict(balance=50.0, random_state=1),
    dict(balance=50.0, random_state=2),
    dict(balance=5000.0),
    dict(balance="auto"),
    dict(balance=5.0, regularizer="kl"),
    dict(balance=500.0, regularizer="kl", random_state=1),
    dict(balance=20.0, concentration="tied"),
    dict(balance=20.0, sample_weight=True),
    dict(balance=200.0, target=TARGET),
    dict(balance=5.0, regularizer="kl", target=TARGET, concentration="tied", sample_weight=True),
    dict(prior="learned"),
    dict(prior="learned", concentration="tied", random_state=4),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[json.dumps(c, default=str)[:60] for c in CONFIGS])
def test_objective_monotone_every_half_step(cfg):
    cfg = dict(cfg)
    sw = W if cfg.pop("sample_weight", False) else None
    m = GEM(n_clusters=6, tol=1e-10, max_iter=60, **cfg).fit(OVERLAP[0], sample_weight=sw)
    assert len(m.objective_history_) >= 2
    assert_monotone(m.objective_history_)
    trace = m.objective_trace_
    kinds = [k for k, _ in trace]
    assert kinds[0] == "E" and kinds[-1] == "E" and "M" in kinds
    assert_monotone([f for _, f in trace])  # E-steps and M-steps separately non-decreasing
    assert np.isclose(m.weights_.sum(), 1.0) and m.labels_.shape == (OVERLAP[0].shape[0],)
    assert np.all(m.concentrations_ > 0) and np.all(m.concentrations_ <= m.kappa_max)


def textbook_vmf_em(X, mu, kappa, n_iter):
    """Plain EM for a vMF mixture (Banerjee et al. 2005), written directly from the formulas."""
    n, d = X.shape
    k = mu.shape[0]
    alpha = np.full(k, 1.0 / k)

    def a_inv(r):
        A = lambda kap: ive(d / 2, kap) / ive(d / 2 - 1, kap) - r  # noqa: E731
        return brentq(A, 1e-8, 1e4, xtol=1e-13, rtol=1e-15)

    for _ in range(n_iter):
        logp = np.log(alpha) + log_vmf_normalizer(kappa, d) + kappa * (X @ mu.T)
        resp = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
        nk = resp.sum(0)
        alpha = nk / n
        r = resp.T @ X
        rn = np.linalg.norm(r, axis=1)
        mu = r / rn[:, None]
        kappa = np.array([a_inv(rn[j] / nk[j]) for j in range(k)])
    logp = np.log(alpha) + log_vmf_normalizer(kappa, d) + kappa * (X @ mu.T)
    return mu, kappa, alpha, logsumexp(logp, axis=1).mean()


def test_learned_prior_is_textbook_vmf_em():
    X, _ = OVERLAP
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    mu0 = X[[0, 250, 450, 650, 820, 1100]]
    # kappa_prior=0: the textbook maximum-likelihood M-step (no prior on kappa)
    m = GEM(n_clusters=6, prior="learned", init=mu0, max_iter=25, tol=0.0, kappa_prior=0.0).fit(X)
    # GEM's initial kappa from an explicit init: A_d^{-1} of the members' mean cosine
    lab = np.argmax(X @ mu0.T, axis=1)
    from gem.sphere import solve_kappa

    kappa0 = solve_kappa([np.mean(X[lab == j] @ mu0[j]) for j in range(6)], 16)
    assert m.n_iter_ >= 5  # (it stops early only when F stops changing at all)
    mu, kappa, alpha, loglik = textbook_vmf_em(X, mu0, kappa0, m.n_iter_)
    assert np.max(np.abs(m.mean_directions_ - mu)) < 1e-7
    assert np.max(np.abs(m.concentrations_ / kappa - 1)) < 1e-6
    assert np.max(np.abs(np.exp(m.log_prior_) - alpha)) < 1e-8
    assert abs(m.objective_ - loglik) < 1e-8 * abs(loglik)  # F = mean log-likelihood here


@pytest.mark.parametrize("d", [64, 384])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_planted_recovery_default_settings(d, seed):
    kappa = {64: 60.0, 384: 400.0}[d]
    X, y = planted(10, d, 150, kappa, seed)
    m = GEM(n_clusters=10, random_state=seed).fit(X)
    assert adjusted_rand_score(y, m.labels_) >= 0.9


def test_balance_grows_with_lambda():
    X, _ = planted(6, 16, 0, 40.0, seed=5, sizes=[700, 350, 180, 90, 50, 30])
    init = GEM(n_clusters=6, balance=0.0).fit(X).mean_directions_
    entropies = []
    for lam in [0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e7]:
        m = GEM(n_clusters=6, balance=lam, init=init, tol=1e-10).fit(X)
        entropies.append(balance_report(m.weights_, 6)["normalized_entropy"])
    assert np.all(np.diff(entropies) >= -1e-6), entropies
    assert entropies[-1] > entropies[0] + 0.1
    assert balance_report(m.weights_, 6)["largest_share"] <= 1.05 / 6


def test_target_composition_is_reached_at_large_lambda():
    X, _ = OVERLAP
    for reg in ["quadratic", "kl"]:
        m = GEM(n_clusters=6, balance=1e6, regularizer=reg, target=TARGET).fit(X)
        assert np.allclose(np.sort(m.weights_), np.sort(TARGET), atol=0.01)


def recovered_topics(labels, y):
    count = 0
    for t in np.unique(y):
        size = np.sum(y == t)
        for c in np.unique(labels):
            members = labels == c
            inter = np.sum(y[members] == t)
            if inter > 0.5 * members.sum() and inter >= 0.5 * size:
                count += 1
                break
    return count


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_collapse_gem_auto_beats_kmeans_on_raw_vectors(seed):
    k = 16
    sizes = np.round(3000 * (70 / 3000) ** (np.arange(k) / (k - 1))).astype(int)  # 3000 .. 70
    raw, unit, y = planted_cone(sizes, d=32, random_state=seed)
    km = make_estimator("kmeans", k, random_state=seed).fit(raw)
    gem = GEM(n_clusters=k, balance="auto", random_state=seed).fit(unit)
    km_rep = balance_report(km.labels_, k)
    gem_rep = balance_report(gem.labels_, k)
    assert gem_rep["largest_share"] < km_rep["largest_share"]
    assert recovered_topics(gem.labels_, y) >= recovered_topics(km.labels_, y)
    assert 0 < gem.balance_ < 5000.0


def test_predict_matches_labels_and_proba():
    X, _ = OVERLAP
    m = GEM(n_clusters=6, balance=100.0).fit(X)
    assert np.array_equal(m.predict(X), m.labels_)
    P = m.predict_proba(X)
    assert P.shape == (X.shape[0], 6) and np.allclose(P.sum(1), 1.0)
    assert np.array_equal(P.argmax(1), m.labels_)
    assert abs(m.score(X) - m.objective_) < 1e-9 * abs(m.objective_)
    # predictions ignore row scale (rows are normalised)
    assert np.array_equal(m.predict(3.0 * X[:50]), m.labels_[:50])


def test_float32_path_agrees():
    X, y = planted(8, 64, 200, 80.0, seed=2)
    m64 = GEM(n_clusters=8, balance=100.0, precision="float64").fit(X)
    m32 = GEM(n_clusters=8, balance=100.0, precision="float32").fit(X)
    assert adjusted_rand_score(m64.labels_, m32.labels_) > 0.99
    assert abs(m64.objective_ - m32.objective_) < 1e-4 * abs(m64.objective_)


def test_warm_start_refit_on_new_lambda():
    X, _ = OVERLAP
    m = GEM(n_clusters=6, balance=10.0, warm_start=True, tol=1e-8).fit(X)
    first = m.n_iter_
    m.set_params(balance=1000.0).fit(X)
    assert m.balance_ == 1000.0 and m.n_iter_ <= max(first, 60)
    assert_monotone(m.objective_history_)
    cold = GEM(n_clusters=6, balance=1000.0, tol=1e-8).fit(X)
    assert balance_report(m.weights_, 6)["normalized_entropy"] > 0.99
    assert abs(m.objective_ - cold.objective_) < 0.05 * abs(cold.objective_)


@pytest.mark.parametrize("bad", [
    np.array([[np.nan, 1.0], [1.0, 0.0], [0.0, 1.0]]),
    np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]),
    np.ones(5),
    np.ones((2, 3, 4)),
    np.ones((2, 3)),  # K > N
    np.ones((0, 3)),
    [["a", "b"], ["c", "d"]],
])
def test_bad_input_raises_clear_value_error(bad):
    with pytest.raises(ValueError):
        GEM(n_clusters=3).fit(bad)


@pytest.mark.parametrize("params", [dict(n_clusters=0), dict(balance=-1.0), dict(balance="big"),
                                    dict(regularizer="l2"), dict(prior="dirichlet"), dict(target=[1.0, 2.0]),
                                    dict(init="farthest"), dict(n_init=0)])
def test_bad_params_raise(params):
    X, _ = OVERLAP
    with pytest.raises(ValueError):
        GEM(**{"n_clusters": 6, **params}).fit(X)


def test_predict_wrong_dimension_and_unfitted():
    X, _ = OVERLAP
    with pytest.raises(ValueError):
        GEM(n_clusters=6).predict(X)
    m = GEM(n_clusters=6).fit(X)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :8])


def test_sklearn_contract_and_state_roundtrip():
    X, _ = OVERLAP
    est = GEM(n_clusters=6, balance=42.0, target=TARGET)
    assert est.get_params()["balance"] == 42.0
    assert clone(est).get_params()["target"] is not None
    est.set_params(n_init=2)
    assert est.fit(X) is est and not hasattr(GEM(), "labels_")
    meta, arrays = est.to_state()
    meta = json.loads(json.dumps(meta))  # JSON-able
    back = GEM.from_state(meta, {k: np.array(v) for k, v in arrays.items()})
    assert np.array_equal(back.predict(X), est.labels_)
    assert back.balance_ == 42.0 and back.get_params()["n_init"] == 2


def test_kappa_prior_keeps_a_one_document_cluster_sane_and_fit_monotone():
    # a planted singleton far from everything: the MLE gives kappa_max (Rbar = 1); the MAP
    # estimate with n0 = 10 pseudo-documents stays near the typical cluster's scale
    X, _ = planted(4, 32, 400, 60.0, seed=3)
    rng = np.random.default_rng(0)
    lone = rng.standard_normal(32)
    X = np.vstack([X, lone / np.linalg.norm(lone)])
    init = np.vstack([X[[0, 400, 800, 1200]], X[-1:]])
    mle = GEM(n_clusters=5, balance=0.0, init=init, kappa_prior=0.0).fit(X)
    lone_k = mle.labels_[-1]
    assert np.sum(mle.labels_ == lone_k) == 1 and mle.concentrations_[lone_k] == mle.kappa_max
    for conc in ("per-cluster", "tied"):
        m = GEM(n_clusters=5, balance=0.0, init=init, concentration=conc).fit(X)
        assert_monotone(m.objective_history_)  # the MAP objective is monotone too
        assert_monotone([f for _, f in m.objective_trace_])
        assert abs(m.score(X) - m.objective_) < 1e-9 * abs(m.objective_)
    # the same parameters, one MAP M-step: the singleton's kappa drops far below kappa_max,
    # the 400-document clusters' barely move (400 documents vs 10 pseudo-documents)
    from gem.model import gem_solve

    one = gem_solve(X, mle.mean_directions_, mle.concentrations_, balance=0.0, max_iter=1, tol=0.0)
    assert one.concentrations[lone_k] < 0.5 * np.max(np.delete(one.concentrations, lone_k))
    assert np.allclose(np.delete(one.concentrations, lone_k), np.delete(mle.concentrations_, lone_k), rtol=0.05)


# ---------------------------------------------------------------- solver speed
SLOW = planted(8, 16, 300, 10.0, seed=7)  # heavily overlapping: the plain MM needs ~50 M-steps


@pytest.mark.parametrize("cfg", [dict(balance=0.0), dict(balance=20.0), dict(balance=5.0, regularizer="kl"),
                                 dict(prior="learned"), dict(balance=20.0, concentration="tied")])
def test_accelerated_reaches_the_plain_optimum_in_fewer_steps(cfg):
    X, _ = SLOW
    plain = GEM(n_clusters=8, tol=1e-9, max_iter=1000, accelerate=False, **cfg).fit(X)
    fast = GEM(n_clusters=8, tol=1e-9, max_iter=1000, **cfg).fit(X)
    assert plain.converged_ and fast.converged_
    assert fast.objective_ >= plain.objective_ - 1e-8 * abs(plain.objective_)
    assert fast.n_iter_ <= plain.n_iter_
    assert_monotone(fast.objective_history_)
    assert_monotone([f for _, f in fast.objective_trace_])
    if cfg.get("balance") == 0.0:  # the slow case: SQUAREM cuts the M-steps at least in half
        assert fast.n_iter_ <= 0.5 * plain.n_iter_ and fast.solver_stats_["extrapolated"] > 0
    # the accelerated fit ends on an exact E-step: predict / score agree with the fit
    assert np.array_equal(fast.predict(X), fast.labels_)
    assert abs(fast.score(X) - fast.objective_) < 1e-9 * abs(fast.objective_)


def test_plain_path_monotone_with_exact_e_steps():
    X, _ = SLOW
    for cfg in (dict(balance=20.0), dict(balance=5.0, regularizer="kl"), dict(balance="auto")):
        m = GEM(n_clusters=8, tol=1e-10, max_iter=80, accelerate=False, **cfg).fit(X)
        assert set(k for k, _ in m.objective_trace_) == {"E", "M"}  # no extrapolation
        assert_monotone(m.objective_history_)
        assert_monotone([f for _, f in m.objective_trace_])


def test_default_tol_fit_is_monotone_and_reports_label_changes():
    # the default tol lets mid-run E-steps stop at a duality gap of 0.1 tol |F|: F still never drops
    X, _ = SLOW
    m = GEM(n_clusters=8, balance=20.0).fit(X)
    assert_monotone(m.objective_history_)
    assert_monotone([f for _, f in m.objective_trace_])
    assert 0 <= m.labels_changed_ <= X.shape[0]
    assert set(m.solver_stats_) == {"newton_steps", "softmax_passes", "extrapolated", "rejected"}


def test_float32_objective_monotone_up_to_float32_roundoff():
    # float32 matrices (precision="auto" above N d K = 1e7): F sums float32 logits, so the recorded
    # history is monotone up to float32 round-off (eps32 ~ 6e-8 relative per logit), not 1e-9
    X, _ = planted(8, 64, 200, 80.0, seed=2)
    for acc in (True, False):
        m = GEM(n_clusters=8, balance=100.0, precision="float32", tol=1e-10, max_iter=60, accelerate=acc).fit(X)
        assert_monotone(m.objective_history_, rel=1.2e-7)
        assert_monotone([f for _, f in m.objective_trace_], rel=1.2e-7)


def test_precision_auto_threshold():
    from gem.model import _SMALL_PROBLEM, pick_dtype

    assert pick_dtype("auto", _SMALL_PROBLEM) == np.float64
    assert pick_dtype("auto", 11_500 * 384 * 24) == np.float32  # the sample corpus at K = 24


def test_device_parameter_cpu_auto_and_errors(monkeypatch):
    import torch

    X, _ = OVERLAP
    ref = GEM(n_clusters=6, balance=50.0).fit(X)
    m = GEM(n_clusters=6, balance=50.0, device="cpu").fit(X)
    assert np.array_equal(m.labels_, ref.labels_) and m.objective_ == ref.objective_
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = GEM(n_clusters=6, balance=50.0, device="auto").fit(X)  # no CUDA: runs on the CPU
    assert np.array_equal(auto.labels_, ref.labels_)
    with pytest.raises(ValueError, match="CUDA is not available"):
        GEM(n_clusters=6, device="cuda").fit(X)
    for bad in ("gpu", "tpu", 3):
        with pytest.raises(ValueError, match="device"):
            GEM(n_clusters=6, device=bad).fit(X)
    # a model fitted elsewhere with device="cuda" still predicts on a CPU-only machine
    meta, arrays = ref.to_state()
    meta["params"]["device"] = "cuda"
    back = GEM.from_state(meta, arrays)
    assert np.array_equal(back.predict(X), ref.labels_)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_matches_cpu():
    X, _ = planted(12, 128, 400, 150.0, seed=4)
    for cfg in (dict(balance="auto"), dict(balance=500.0, regularizer="kl"), dict(prior="learned")):
        cpu = GEM(n_clusters=12, precision="float32", **cfg).fit(X)
        gpu = GEM(n_clusters=12, precision="float32", device="cuda", **cfg).fit(X)
        assert adjusted_rand_score(cpu.labels_, gpu.labels_) > 0.99
        assert abs(cpu.objective_ - gpu.objective_) < 1e-5 * abs(cpu.objective_)
        assert_monotone(gpu.objective_history_, rel=1.2e-7)
        assert np.array_equal(gpu.predict(X), gpu.labels_)
        assert np.allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-3)
    auto = GEM(n_clusters=12, balance=50.0, device="auto").fit(X)
    assert auto.get_params()["device"] == "auto" and auto.labels_.shape == (X.shape[0],)
