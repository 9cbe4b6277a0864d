"""scikit-learn's estimator checks on GEM and the baselines, plus the contract points those checks
cannot see (their expected failures are listed below, each with its reason)."""
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from gem.baselines import EuclideanKMeans, FaissSphericalKMeans, SphericalKMeans
from gem.model import GEM

# small K and few iterations: the checks' datasets have 1 to 150 rows
ESTIMATORS = [
    GEM(n_clusters=3, max_iter=20),
    EuclideanKMeans(n_clusters=3),
    EuclideanKMeans(n_clusters=3, normalize=True),
    SphericalKMeans(n_clusters=3),
    FaissSphericalKMeans(n_clusters=3),
]

SEEDING = "k-means++ seeding draws rows, so weighted and repeated rows take different seeds (as for sklearn's KMeans)"
# GEM also counts rows, not weight, in two places, so even from the same start the fits differ:
# the kappa prior's mass a = kappa_prior / N and balance="auto"'s margin quantile
# (test_gem_sample_weight_equals_repetition below checks the equivalence where it holds)
GEM_WEIGHTS = SEEDING + "; the kappa prior (n0 / N) and balance='auto' (margin quantile) count rows"
FAISS_SEEDING = "faiss seeds with random rows (and subsamples rows), so weighted and repeated rows take different seeds"
ZERO_ROW = "rows are normalised onto the sphere: the check's int-cast data has an all-zero row, which is refused"


def expected_failed_checks(est):
    """{check name: why it does not apply} for one of ESTIMATORS."""
    seeding = GEM_WEIGHTS if isinstance(est, GEM) else FAISS_SEEDING if isinstance(est, FaissSphericalKMeans) else SEEDING
    out = {"check_sample_weight_equivalence_on_dense_data": seeding}
    if not (isinstance(est, EuclideanKMeans) and not est.normalize):
        out["check_estimators_dtypes"] = ZERO_ROW
    return out


# check_array_api_input is skipped here by scikit-learn itself (SCIPY_ARRAY_API unset in this
# process): test_array_api_dispatch_with_numpy_input runs it
@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


_ARRAY_API_CHECK = """
from sklearn.utils.estimator_checks import check_array_api_input
from gem.baselines import EuclideanKMeans, FaissSphericalKMeans, SphericalKMeans
from gem.model import GEM
for est in [{estimators}]:
    check_array_api_input(type(est).__name__, est, array_namespace="numpy", expect_only_array_outputs=False)
"""


def test_array_api_dispatch_with_numpy_input():
    """check_array_api_input, which the checks above skip: it needs SCIPY_ARRAY_API=1 set before
    scipy is imported, so it runs in a fresh interpreter (numpy input with array API dispatch on
    gives the same fits; no other array namespace is supported)."""
    import os
    import pathlib
    import subprocess
    import sys

    code = _ARRAY_API_CHECK.format(estimators=", ".join(map(repr, ESTIMATORS)))
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    root = pathlib.Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]


# ---------------------------------------------------------------- what the expected failures hide
def _planted(n=60, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:k] * 4.0
    labels = np.repeat(np.arange(k), n // k)
    return centres[labels] + rng.normal(size=(labels.size, d)), labels


@pytest.mark.parametrize("est", [GEM(n_clusters=3, max_iter=20), SphericalKMeans(n_clusters=3),
                                 FaissSphericalKMeans(n_clusters=3), EuclideanKMeans(n_clusters=3, normalize=True)],
                         ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
def test_dtypes_without_zero_rows(est, dtype):
    X, _ = _planted()
    X = (3 * X).astype(dtype)  # int-cast, still no all-zero row
    assert (np.abs(X).sum(axis=1) > 0).all()
    labels = est.fit(X).predict(X)
    assert labels.shape == (X.shape[0],) and labels.dtype == np.int64
    assert est.predict_proba(X).shape == (X.shape[0], 3)


@pytest.mark.parametrize("kw", [dict(balance=5.0), dict(balance=0.0), dict(prior="learned")])
def test_gem_sample_weight_equals_repetition(kw):
    """Integer weights (zeros included) fit like repeated (removed) rows, from the same start and
    without the kappa prior, whose mass counts rows."""
    rng = np.random.RandomState(42)
    X = rng.rand(15, 30)
    sw = rng.randint(0, 5, size=15)
    init = X[[0, 5, 9]]
    rep = GEM(n_clusters=3, init=init, kappa_prior=0.0, **kw).fit(X.repeat(sw, axis=0))
    wtd = GEM(n_clusters=3, init=init, kappa_prior=0.0, **kw).fit(X, sample_weight=sw)
    np.testing.assert_allclose(wtd.predict_proba(X), rep.predict_proba(X), atol=1e-9)
    np.testing.assert_allclose(wtd.weights_, rep.weights_, atol=1e-12)
    assert wtd.objective_ == pytest.approx(rep.objective_, rel=1e-12)


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_unfitted_raises_not_fitted_error_that_is_a_value_error(est):
    X, _ = _planted()
    for method in ("predict", "predict_proba", "to_state"):
        with pytest.raises(NotFittedError, match="not fitted yet") as info:
            getattr(est, method)(X) if method != "to_state" else est.to_state()
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_input_errors_name_the_problem(est):
    import scipy.sparse

    X, _ = _planted()
    est.fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but .* is expecting 8 features"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="Reshape your data"):
        est.predict(X[0])
    with pytest.raises(ValueError, match="sparse input is not supported"):
        est.fit(scipy.sparse.csr_matrix(X))
    with pytest.raises(ValueError, match="1 feature"):
        est.fit(X[:, :1])
    # an object array of numbers is read as numbers; a non-number is a TypeError and a ValueError
    np.testing.assert_array_equal(est.fit(X.astype(object)).predict(X), est.fit(X).predict(X))
    bad = X.astype(object)
    bad[0, 0] = {"a": 1}
    with pytest.raises(TypeError, match="could not read as numbers") as info:
        est.fit(bad)
    assert isinstance(info.value, ValueError)


def test_gem_one_cluster_auto_balance():
    """K = 1 has nothing to balance: balance='auto' fits with lambda 0 (it used to fail)."""
    X, _ = _planted()
    m = GEM(n_clusters=1).fit(X)
    assert m.balance_ == 0.0 and (m.labels_ == 0).all()
    assert m.weights_ == pytest.approx([1.0])


def test_spherical_kmeans_n_iter_round_trips():
    X, _ = _planted()
    m = SphericalKMeans(n_clusters=3).fit(X)
    assert 1 <= m.n_iter_ <= m.max_iter
    assert SphericalKMeans.from_state(*m.to_state()).n_iter_ == m.n_iter_


@pytest.mark.parametrize("cls", [GEM, EuclideanKMeans, SphericalKMeans, FaissSphericalKMeans], ids=lambda c: c.__name__)
def test_docstring_examples_run(cls):
    """The Examples section of each estimator's class docstring (its methods' docstrings are not run)."""
    import doctest

    tests = doctest.DocTestFinder(recurse=False).find(cls, cls.__name__, globs={})
    assert tests and tests[0].examples, f"{cls.__name__} has no docstring examples"
    out = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
