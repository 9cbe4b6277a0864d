"""gem.arrays: matrix checks and row normalisation (property tests with hypothesis)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gem.arrays import as_matrix, row_norms, unit_rows, unit_rows_and_norms

DTYPES = [np.float32, np.float64]


def _matrices(dtype, min_rows=1, max_rows=12, max_cols=24):
    """Finite matrices with no all-zero row, entries from 1e-30 to 1e30 in magnitude (float32: to 1e18,
    whose squares still fit), so rows whose squares under- or overflow are drawn too."""
    big = 1e18 if dtype == np.float32 else 1e30
    entries = st.one_of(
        st.floats(-1e3, 1e3, width=32 if dtype == np.float32 else 64, allow_subnormal=False),
        st.sampled_from([1e-30, -1e-30, 1e-12, -3e-20, big, -big, 2.5e15]),
    )
    shapes = hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max(max_rows, max_cols))
    arrays = hnp.arrays(np.float64, shapes.filter(lambda s: min_rows <= s[0] <= max_rows and s[1] <= max_cols),
                        elements=entries)
    return arrays.map(lambda a: a.astype(dtype)).filter(lambda a: (a != 0).any(axis=1).all())


def _direction_kept(X: np.ndarray, U: np.ndarray) -> bool:
    """Each output row is the input row times a positive number: cosine 1 (computed safely in float64)."""
    X64 = X.astype(np.float64)
    X64 = X64 / np.abs(X64).max(axis=1, keepdims=True)
    X64 = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
    return bool(np.all(np.einsum("ij,ij->i", X64, U.astype(np.float64)) > 1 - 1e-6))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("out", DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_unit_rows_have_norm_one_keep_direction_and_dtype(dtype, out, data):
    X = data.draw(_matrices(dtype))
    if out == np.float32 and dtype == np.float64:  # the rows must be non-zero in float32 too
        X = X / np.abs(X).max(axis=1, keepdims=True)
    U = unit_rows(X, out)
    assert U.dtype == out and U.shape == X.shape and U.flags.c_contiguous
    norms = np.linalg.norm(U.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=0, atol=1e-6)
    assert _direction_kept(X, U)
    assert U is not X  # copy=True (the default) never hands back the input


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_unit_rows_and_norms_rebuild_the_rows(dtype, data):
    X = data.draw(_matrices(dtype))
    U, n = unit_rows_and_norms(X, np.float32)
    assert U.dtype == np.float32 and n.dtype == np.float32 and n.shape == (X.shape[0],)
    np.testing.assert_allclose(np.linalg.norm(U.astype(np.float64), axis=1), 1.0, rtol=0, atol=1e-6)
    assert _direction_kept(X, U)
    with np.errstate(over="ignore"):
        expect = np.array([np.linalg.norm(r / np.abs(r).max()) * np.abs(r).max() for r in X.astype(np.float64)])
    np.testing.assert_allclose(n.astype(np.float64), expect.astype(np.float32), rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_unit_rows_copy_false_hands_back_unit_input(data):
    X = data.draw(_matrices(np.float32))
    U = unit_rows(X, np.float32)
    assert unit_rows(U, np.float32, copy=False) is U  # already unit, contiguous, same dtype: no copy
    assert unit_rows(U, np.float64, copy=False).dtype == np.float64  # another dtype: converted
    V = unit_rows(X, np.float32, copy=False)
    np.testing.assert_allclose(np.linalg.norm(V.astype(np.float64), axis=1), 1.0, rtol=0, atol=1.1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), bad=st.sampled_from([np.nan, np.inf, -np.inf, 0.0]))
def test_bad_rows_are_refused_with_the_first_row_named(dtype, data, bad):
    X = data.draw(_matrices(dtype, min_rows=2))
    rows = data.draw(st.lists(st.integers(0, X.shape[0] - 1), min_size=1, max_size=X.shape[0], unique=True))
    if bad == 0.0:
        X[rows] = 0.0
        what = "is all zeros"
    else:
        X[rows, data.draw(st.integers(0, X.shape[1] - 1))] = bad
        what = "has NaN or inf"
    message = rf"^M: row {min(rows)} {what} \({len(rows)} rows in all\)"
    for f in (lambda: unit_rows(X, dtype, name="M"), lambda: unit_rows(X, dtype, name="M", copy=False),
              lambda: unit_rows_and_norms(X, name="M")):
        with pytest.raises(ValueError, match=message):
            f()
    if bad != 0.0:
        with pytest.raises(ValueError, match=message):
            as_matrix(X, "M")
    else:
        assert as_matrix(X, "M") is X  # zeros are finite: as_matrix only checks


def test_unit_rows_and_norms_not_strict_keeps_zero_and_nan_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, 1.0]], dtype=np.float32)
    U, n = unit_rows_and_norms(X, strict=False)
    np.testing.assert_allclose(U[0], [0.6, 0.8])
    assert (U[1] == 0).all() and n[1] == 0
    assert np.isnan(U[2, 0]) and U[2, 1] == 1.0 and np.isnan(n[2])


@pytest.mark.parametrize("bad, message", [
    (np.ones(3), r"^A: expected a 2-D array \(rows x columns\), got shape \(3,\)"),
    (np.ones((0, 3)), r"^A: needs at least 1 rows, got shape \(0, 3\)"),
    (np.ones((2, 1)), r"^A: needs at least 2 columns, got shape \(2, 1\)"),
    (np.array([["a", "b"]]), r"^A: expected an array of real numbers, got dtype <U1"),
    (np.ones((2, 2), dtype=complex), r"^A: expected an array of real numbers"),
    ([[1.0, 2.0], [3.0]], r"^A: could not read as a 2-D numeric array"),
])
def test_as_matrix_refuses_what_is_not_a_matrix(bad, message):
    with pytest.raises(ValueError, match=message):
        as_matrix(bad, "A", min_cols=2)


def test_as_matrix_dtypes_and_views():
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert as_matrix(X) is X
    assert as_matrix(X, dtype=np.float64).dtype == np.float64
    ints = as_matrix(np.arange(6).reshape(2, 3))
    assert ints.dtype == np.float64 and ints[1, 2] == 5.0  # integers: exact float64
    assert as_matrix(np.ones((0, 2)), min_rows=0).shape == (0, 2)


def test_unit_rows_refuses_a_vector_and_row_norms_need_no_copy():
    with pytest.raises(ValueError, match=r"^v: expected a 2-D array"):
        unit_rows(np.ones(3), name="v")
    with pytest.raises(ValueError, match=r"^v: expected a 2-D array"):
        unit_rows_and_norms(np.ones(3), name="v")
    np.testing.assert_allclose(row_norms(np.array([[3.0, 4.0], [0.0, 0.0]])), [5.0, 0.0])
    assert unit_rows(np.ones((0, 3))).shape == (0, 3)
