"""Baselines with GEM's surface (``fit(X)``, ``labels_``, ``mean_directions_``, ``weights_``,
``predict``, ``to_state``/``from_state``), and the ``make_estimator`` factory.

- ``EuclideanKMeans``: scikit-learn ``KMeans`` on the vectors as given (raw, pre-normalisation
  pooled vectors: what practitioners run); ``normalize=True`` runs it on unit rows.
- ``SphericalKMeans``: greedy k-means++ seeding + spherical Lloyd (cosine) iterations.
- ``FaissSphericalKMeans``: faiss's spherical k-means (``faiss.Kmeans(spherical=True)``, niter 25,
  trained on at most 256 rows per centroid): what practitioners who cluster embeddings reach for.
- the plain vMF mixture is ``GEM(prior="learned")``.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from .arrays import unit_rows
from .model import (GEM, not_fitted_error, pick_dtype, sample_weights, spherical_kmeans_init, torch_threads,
                    validate_X)

__all__ = ["EuclideanKMeans", "SphericalKMeans", "FaissSphericalKMeans", "make_estimator", "METHODS",
           "uses_raw_vectors"]

METHODS = ("gem", "kmeans", "kmeans-unit", "spherical-kmeans", "faiss-spherical", "vmf")


def uses_raw_vectors(method: str) -> bool:
    """Only Euclidean k-means ("kmeans") is fed the raw, un-normalised vectors."""
    return method == "kmeans"


def _shares(labels, k, sample_weight):
    w = sample_weights(sample_weight, labels.shape[0])
    return np.bincount(labels, weights=w, minlength=k)


def _check_k(k, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1 or k > n:
        raise ValueError(f"n_clusters must be an integer in [1, {n}] (number of rows), got {k!r}")


def _directions(centers: np.ndarray) -> np.ndarray:
    """Centroids scaled to unit length (a zero centroid stays zero)."""
    norms = np.linalg.norm(centers, axis=1, keepdims=True)
    return centers / np.where(norms > 0, norms, 1.0)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """Hard assignments as one-hot rows (k-means has no soft assignment)."""
    out = np.zeros((labels.size, k))
    out[np.arange(labels.size), labels] = 1.0
    return out


class EuclideanKMeans(ClusterMixin, BaseEstimator):
    """scikit-learn KMeans (Lloyd, greedy k-means++) on raw vectors, or on unit rows with
    ``normalize=True``. ``mean_directions_`` are the normalised centroids.

    Parameters
    ----------
    n_clusters : int
    normalize : bool, default False
        run on L2-normalised rows (all-zero rows refused) instead of the vectors as given.
    n_init, max_iter, tol, random_state : passed to ``sklearn.cluster.KMeans``

    Attributes
    ----------
    cluster_centers_ : ndarray (K, d), float64
        centroids, in the space k-means ran in (unit rows with ``normalize=True``).
    mean_directions_ : ndarray (K, d), float64
        centroids scaled to unit length (a zero centroid stays zero).
    labels_ : ndarray (N,), int64
        cluster of each training row.
    weights_ : ndarray (K,), float64
        (sample-weighted) share of the training rows in each cluster; sums to 1.
    inertia_ : float
        (weighted) sum of squared distances of the rows to their centroid.
    n_iter_ : int
        Lloyd iterations of the kept run.
    n_features_in_ : int
        d, the number of features seen in ``fit``.
    fit_time_ : float
        seconds the fit took (not kept by :meth:`from_state`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import adjusted_rand_score
    >>> from gem.baselines import EuclideanKMeans
    >>> rng = np.random.default_rng(0)
    >>> truth = np.repeat([0, 1, 2], 20)
    >>> X = np.eye(3, 5)[truth] + 0.2 * rng.normal(size=(60, 5))  # three planted directions
    >>> model = EuclideanKMeans(n_clusters=3).fit(X)
    >>> adjusted_rand_score(truth, model.labels_), model.weights_.round(2)
    (1.0, array([0.33, 0.33, 0.33]))
    """

    def __init__(self, n_clusters=24, normalize=False, n_init=1, max_iter=300, tol=1e-4, random_state=0):
        self.n_clusters = n_clusters
        self.normalize = normalize
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _prep(self, X, n_features=None):
        X = validate_X(X, n_features=n_features, estimator=self)
        if self.normalize:
            return unit_rows(X, np.float32 if X.dtype == np.float32 else np.float64, copy=False)
        return X

    def fit(self, X, y=None, sample_weight=None):
        from sklearn.cluster import KMeans

        t0 = time.perf_counter()
        X = self._prep(X)
        k = self.n_clusters
        _check_k(k, X.shape[0])
        km = KMeans(n_clusters=k, n_init=self.n_init, max_iter=self.max_iter, tol=self.tol,
                    random_state=self.random_state)
        km.fit(X, sample_weight=sample_weight)
        self.cluster_centers_ = km.cluster_centers_.astype(np.float64)
        self.mean_directions_ = _directions(self.cluster_centers_)
        self.labels_ = km.labels_.astype(np.int64)
        self.weights_ = _shares(self.labels_, k, sample_weight)
        self.inertia_ = float(km.inertia_)
        self.n_iter_ = int(km.n_iter_)
        self.n_features_in_ = X.shape[1]
        self.fit_time_ = time.perf_counter() - t0
        return self

    def predict(self, X):
        if not hasattr(self, "cluster_centers_"):
            raise not_fitted_error(self)
        C = self.cluster_centers_
        X = self._prep(X, C.shape[1])
        # argmin ||x - c||^2 = argmax (x.c - ||c||^2 / 2)
        return np.argmax(X @ C.T - 0.5 * np.sum(C * C, axis=1), axis=1).astype(np.int64)

    def predict_proba(self, X):
        """Hard assignments as one-hot rows (k-means has no soft assignment)."""
        return _one_hot(self.predict(X), self.cluster_centers_.shape[0])

    def to_state(self):
        if not hasattr(self, "cluster_centers_"):
            raise not_fitted_error(self)
        meta = {"class": "EuclideanKMeans", "params": _json_params(self), "inertia_": self.inertia_,
                "n_iter_": self.n_iter_, "n_features_in_": self.n_features_in_}
        arrays = {"cluster_centers": self.cluster_centers_, "weights": self.weights_, "labels": self.labels_}
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        m = cls(**meta["params"])
        m.cluster_centers_ = np.asarray(arrays["cluster_centers"], dtype=np.float64)
        m.mean_directions_ = _directions(m.cluster_centers_)
        m.weights_ = np.asarray(arrays["weights"], dtype=np.float64)
        m.labels_ = np.asarray(arrays["labels"], dtype=np.int64)
        m.inertia_, m.n_iter_, m.n_features_in_ = meta["inertia_"], meta["n_iter_"], meta["n_features_in_"]
        return m


class _NearestDirection:
    """predict / predict_proba of a spherical k-means: the mean direction of largest cosine."""

    def predict(self, X):
        if not hasattr(self, "mean_directions_"):
            raise not_fitted_error(self)
        X = validate_X(X, n_features=self.mean_directions_.shape[1], estimator=self)
        return np.argmax(unit_rows(X, np.float64, copy=False) @ self.mean_directions_.T, axis=1).astype(np.int64)

    def predict_proba(self, X):
        """Hard assignments as one-hot rows (k-means has no soft assignment)."""
        return _one_hot(self.predict(X), self.mean_directions_.shape[0])


class SphericalKMeans(_NearestDirection, ClusterMixin, BaseEstimator):
    """k-means with cosine similarity on unit rows: greedy k-means++ seeding, then Lloyd steps
    (assign to the most similar mean direction, mean direction = normalised resultant) until the
    labels stop changing or ``max_iter``. Rows are L2-normalised (all-zero rows refused).

    Parameters
    ----------
    n_clusters : int
    init : "k-means++", "random" or an array (K, d) of mean directions (an array is used as
        given: no Lloyd steps)
    max_iter : int, the most Lloyd steps
    random_state : int, Generator or None

    Attributes
    ----------
    mean_directions_ : ndarray (K, d), float64
        unit mean direction of each cluster.
    concentrations_ : ndarray (K,), float64
        vMF concentration of each cluster, from the mean cosine of its rows to its direction.
    labels_ : ndarray (N,), int64
        cluster of each training row (the most similar mean direction).
    weights_ : ndarray (K,), float64
        (sample-weighted) share of the training rows in each cluster; sums to 1.
    n_iter_ : int
        Lloyd steps taken.
    n_features_in_ : int
        d, the number of features seen in ``fit``.
    fit_time_ : float
        seconds the fit took (not kept by :meth:`from_state`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import adjusted_rand_score
    >>> from gem.baselines import SphericalKMeans
    >>> rng = np.random.default_rng(0)
    >>> truth = np.repeat([0, 1, 2], 20)
    >>> X = np.eye(3, 5)[truth] + 0.2 * rng.normal(size=(60, 5))  # three planted directions
    >>> model = SphericalKMeans(n_clusters=3).fit(X)
    >>> adjusted_rand_score(truth, model.labels_), model.weights_.round(2)
    (1.0, array([0.33, 0.33, 0.33]))
    """

    def __init__(self, n_clusters=24, init="k-means++", max_iter=100, random_state=0):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X, y=None, sample_weight=None):
        t0 = time.perf_counter()
        X = validate_X(X)
        k = self.n_clusters
        _check_k(k, X.shape[0])
        dtype = pick_dtype("auto", X.shape[0] * X.shape[1] * k)
        Xu = unit_rows(X, dtype, copy=False)
        w = sample_weights(sample_weight, Xu.shape[0])
        rng = np.random.default_rng(self.random_state)
        with torch_threads(X.shape[0] * X.shape[1] * k):
            mu, kappa, labels, n_iter = spherical_kmeans_init(Xu, k, w, rng, self.init, n_lloyd=int(self.max_iter),
                                                              return_n_iter=True)
        self.mean_directions_ = mu
        self.concentrations_ = kappa
        self.labels_ = labels.astype(np.int64)
        self.weights_ = _shares(self.labels_, k, sample_weight)
        self.n_iter_ = int(n_iter)
        self.n_features_in_ = X.shape[1]
        self.fit_time_ = time.perf_counter() - t0
        return self

    def to_state(self):
        if not hasattr(self, "mean_directions_"):
            raise not_fitted_error(self)
        meta = {"class": "SphericalKMeans", "params": _json_params(self), "n_features_in_": self.n_features_in_}
        if hasattr(self, "n_iter_"):
            meta["n_iter_"] = self.n_iter_
        arrays = {"mean_directions": self.mean_directions_, "concentrations": self.concentrations_,
                  "weights": self.weights_, "labels": self.labels_}
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        m = cls(**meta["params"])
        m.mean_directions_ = np.asarray(arrays["mean_directions"], dtype=np.float64)
        m.concentrations_ = np.asarray(arrays["concentrations"], dtype=np.float64)
        m.weights_ = np.asarray(arrays["weights"], dtype=np.float64)
        m.labels_ = np.asarray(arrays["labels"], dtype=np.int64)
        m.n_features_in_ = meta["n_features_in_"]
        if "n_iter_" in meta:  # states saved before n_iter_ was recorded lack it
            m.n_iter_ = int(meta["n_iter_"])
        return m


class FaissSphericalKMeans(_NearestDirection, ClusterMixin, BaseEstimator):
    """faiss's spherical k-means (``faiss.Kmeans(d, K, spherical=True)``: random rows as the start,
    ``niter`` Lloyd steps with centroids renormalised to unit length after each, empty clusters
    split), trained on a random subsample of at most ``max_points_per_centroid`` rows per cluster
    (faiss's default, 256), then every row assigned to its most similar centroid. Rows are
    L2-normalised and handed to faiss as float32 (all-zero rows refused). Needs ``faiss-cpu``
    (imported at the first fit).

    Parameters
    ----------
    n_clusters : int
    niter : int, default 25
        Lloyd steps (faiss runs exactly this many).
    max_points_per_centroid : int, default 256
        faiss trains on at most ``n_clusters * max_points_per_centroid`` rows drawn at random.
    random_state : int or None, default 0
        faiss's ``seed`` (None: faiss's default seed).

    Attributes
    ----------
    mean_directions_ : ndarray (K, d), float64
        unit centroid of each cluster.
    labels_ : ndarray (N,), int64
        cluster of each training row (the most similar centroid, over all rows).
    weights_ : ndarray (K,), float64
        (sample-weighted) share of the training rows in each cluster; sums to 1.
    objective_ : float
        faiss's objective at its last step (the summed cosine of its training rows to their centroid).
    n_iter_ : int
        Lloyd steps taken (``niter``).
    n_features_in_ : int
        d, the number of features seen in ``fit``.
    fit_time_ : float
        seconds the fit took (not kept by :meth:`from_state`).

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.metrics import adjusted_rand_score
    >>> from gem.baselines import FaissSphericalKMeans
    >>> rng = np.random.default_rng(0)
    >>> truth = np.repeat([0, 1, 2], 20)
    >>> X = np.eye(3, 5)[truth] + 0.2 * rng.normal(size=(60, 5))  # three planted directions
    >>> model = FaissSphericalKMeans(n_clusters=3).fit(X)
    >>> adjusted_rand_score(truth, model.labels_), model.weights_.round(2)
    (1.0, array([0.33, 0.33, 0.33]))
    """

    def __init__(self, n_clusters=24, niter=25, max_points_per_centroid=256, random_state=0):
        self.n_clusters = n_clusters
        self.niter = niter
        self.max_points_per_centroid = max_points_per_centroid
        self.random_state = random_state

    def _seed(self) -> int | None:
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(2**31 - 1))
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        return int(rs)

    def fit(self, X, y=None, sample_weight=None):
        import faiss  # lazy: a heavy optional import

        t0 = time.perf_counter()
        X = validate_X(X)
        k = self.n_clusters
        _check_k(k, X.shape[0])
        Xu = unit_rows(X, np.float32, copy=False)
        kw = {"spherical": True, "niter": int(self.niter), "max_points_per_centroid": int(self.max_points_per_centroid),
              "verbose": False}
        seed = self._seed()
        if seed is not None:
            kw["seed"] = seed
        km = faiss.Kmeans(Xu.shape[1], int(k), **kw)
        w = None if sample_weight is None else (sample_weights(sample_weight, Xu.shape[0]) * Xu.shape[0]).astype(np.float32)
        km.train(Xu, weights=w)
        self.mean_directions_ = _directions(np.asarray(km.centroids, dtype=np.float64))
        self.labels_ = _nearest(Xu, self.mean_directions_.astype(np.float32))
        self.weights_ = _shares(self.labels_, k, sample_weight)
        self.objective_ = float(km.obj[-1]) if km.obj is not None and len(km.obj) else float("nan")
        self.n_iter_ = int(self.niter)
        self.n_features_in_ = X.shape[1]
        self.fit_time_ = time.perf_counter() - t0
        return self

    def to_state(self):
        if not hasattr(self, "mean_directions_"):
            raise not_fitted_error(self)
        meta = {"class": "FaissSphericalKMeans", "params": _json_params(self), "objective_": self.objective_,
                "n_iter_": self.n_iter_, "n_features_in_": self.n_features_in_}
        arrays = {"mean_directions": self.mean_directions_, "weights": self.weights_, "labels": self.labels_}
        return meta, arrays

    @classmethod
    def from_state(cls, meta, arrays):
        m = cls(**meta["params"])
        m.mean_directions_ = np.asarray(arrays["mean_directions"], dtype=np.float64)
        m.weights_ = np.asarray(arrays["weights"], dtype=np.float64)
        m.labels_ = np.asarray(arrays["labels"], dtype=np.int64)
        m.objective_, m.n_iter_, m.n_features_in_ = meta["objective_"], meta["n_iter_"], meta["n_features_in_"]
        return m


def _nearest(Xu: np.ndarray, mu: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    """Index of each unit row's most similar unit direction (chunked: N x K never whole)."""
    out = np.empty(Xu.shape[0], dtype=np.int64)
    for s in range(0, Xu.shape[0], chunk):
        out[s:s + chunk] = np.argmax(Xu[s:s + chunk] @ mu.T, axis=1)
    return out


def _json_params(est):
    params = est.get_params()
    if not isinstance(params.get("init", "k-means++"), str):
        params["init"] = "k-means++"
    if isinstance(params.get("random_state"), np.random.Generator):
        params["random_state"] = None
    return params


ESTIMATOR_CLASSES = {"GEM": GEM, "EuclideanKMeans": EuclideanKMeans, "SphericalKMeans": SphericalKMeans,
                     "FaissSphericalKMeans": FaissSphericalKMeans}


def make_estimator(method: str, n_clusters: int = 24, **kw):
    """An unfitted estimator for ``method`` in METHODS. Keyword arguments go to its constructor
    (``random_state``, ``balance`` for "gem", ...); an argument the method does not take is an error."""
    if method == "gem":
        cls, fixed = GEM, {}
    elif method == "vmf":
        cls, fixed = GEM, {"prior": "learned", "balance": 0.0}
    elif method == "kmeans":
        cls, fixed = EuclideanKMeans, {"normalize": False}
    elif method == "kmeans-unit":
        cls, fixed = EuclideanKMeans, {"normalize": True}
    elif method == "spherical-kmeans":
        cls, fixed = SphericalKMeans, {}
    elif method == "faiss-spherical":
        cls, fixed = FaissSphericalKMeans, {}
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    allowed = set(cls().get_params())
    bad = set(kw) - allowed
    if bad:
        raise ValueError(f"method {method!r} does not take {sorted(bad)}; it takes {sorted(allowed)}")
    return cls(n_clusters=n_clusters, **{**kw, **fixed})


def estimator_from_state(meta: dict, arrays: dict):
    """Rebuild a fitted estimator from ``to_state()`` output (JSON meta + arrays)."""
    cls = ESTIMATOR_CLASSES.get(meta.get("class"))
    if cls is None:
        raise ValueError(f"unknown estimator class {meta.get('class')!r} in saved state")
    return cls.from_state(meta, arrays)


def compare_methods(X_unit, X_raw=None, n_clusters: int = 24, references: dict | None = None,
                    methods=("kmeans", "kmeans-unit", "spherical-kmeans", "vmf", "gem"),
                    random_state=0, estimator_kw: dict | None = None) -> list[dict]:
    """Fit each method (``kmeans`` on ``X_raw`` when given, the rest on ``X_unit``) and report
    balance (``gem.metrics.balance_report``), agreement (NMI/ARI) with each reference labelling
    in ``references`` ({name: labels}) and fit time. ``estimator_kw``: {method: extra kwargs},
    e.g. {"gem": {"balance": 5000.0}}; a key "label" renames the row."""
    from .metrics import agreement, balance_report

    references = references or {}
    estimator_kw = estimator_kw or {}
    rows = []
    for method in methods:
        kw = dict(estimator_kw.get(method, {}))
        label = kw.pop("label", method)
        method_name = kw.pop("method", method)
        est = make_estimator(method_name, n_clusters, random_state=random_state, **kw)
        X = X_raw if (uses_raw_vectors(method_name) and X_raw is not None) else X_unit
        t0 = time.perf_counter()
        est.fit(X)
        seconds = time.perf_counter() - t0
        row = {"method": label, **balance_report(est.labels_, n_clusters), "fit_seconds": seconds}
        if hasattr(est, "balance_"):
            row["balance"] = est.balance_
        for ref_name, ref in references.items():
            agr = agreement(est.labels_, ref)
            row[f"nmi_{ref_name}"] = agr["nmi"]
            row[f"ari_{ref_name}"] = agr["ari"]
        rows.append(row)
    return rows
