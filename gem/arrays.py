"""Array checks and row normalisation: the one home of what every module needs of a matrix.

- :func:`as_matrix`: X as a dense 2-D array of real numbers, every value finite (checks only).
- :func:`row_norms`: the Euclidean norm of each row, without an N x d temporary.
- :func:`unit_rows`: the rows scaled to norm 1; a row with NaN or inf, or all zeros (no direction),
  is a ValueError naming it.
- :func:`unit_rows_and_norms`: (unit rows, their norms), as the embedding files store them.

Error messages name the array (``name``) and the first bad row, so a caller can pass them on.
Nothing here imports another gem module.
"""
from __future__ import annotations

import numpy as np

__all__ = ["as_matrix", "row_norms", "unit_rows", "unit_rows_and_norms"]


def as_matrix(X, name: str = "X", *, dtype=None, min_rows: int = 1, min_cols: int = 1) -> np.ndarray:
    """``X`` as a 2-D array of real numbers with at least ``min_rows`` rows and ``min_cols`` columns,
    every value finite; else a ValueError naming ``name`` (and the first row with NaN or inf).

    ``dtype``: the dtype to convert to; None keeps a floating-point array's dtype and converts an
    integer one to float64 (exact). Returns ``X`` itself (or a view) when no conversion is needed."""
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(f"{name}: could not read as a 2-D numeric array ({exc})") from exc
    if X.dtype == object or not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{name}: expected an array of real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x columns), got shape {X.shape}")
    if X.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got shape {X.shape}")
    if X.shape[1] < min_cols:
        raise ValueError(f"{name}: needs at least {min_cols} columns, got shape {X.shape}")
    if dtype is not None:
        X = np.asarray(X, dtype=dtype)
    elif not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    if not np.isfinite(X).all():
        _refuse_non_finite(X, name)
    return X


def row_norms(X: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row of the 2-D array ``X``, in X's dtype (``np.einsum``: no N x d
    temporary, which ``np.linalg.norm`` makes). Squares can overflow (float32 entries above ~1e19)
    or underflow (below ~1e-19): :func:`unit_rows` handles such rows apart."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def unit_rows(X, dtype=np.float64, *, name: str = "X", copy: bool = True) -> np.ndarray:
    """The rows of the 2-D array ``X`` scaled to norm 1, as a C-contiguous array of ``dtype`` (norms
    and division in ``dtype``). A row with NaN or inf, or all zeros (it has no direction), is a
    ValueError naming ``name`` and the first such row. Rows so small or large that their squares
    under- or overflow are scaled by their largest entry first, so they come out of norm 1 too.

    ``copy=False``: when every row's norm is already 1 (``np.allclose(norms, 1, atol=1e-6)``) and X
    is C-contiguous of ``dtype``, X itself is returned (the fit's hot path: no N x d copy)."""
    Xf = np.asarray(X, dtype=dtype)
    if Xf.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x columns), got shape {Xf.shape}")
    norms = row_norms(Xf)
    if not copy and np.allclose(norms, 1.0, atol=1e-6) and Xf.flags.c_contiguous:
        return Xf
    odd = _odd_rows(norms, Xf.dtype)
    if odd.size == 0:
        return np.ascontiguousarray(Xf / norms[:, None])
    unit_odd, _ = _careful_unit(Xf[odd], odd, name)  # raises on NaN, inf or all zeros
    norms[odd] = 1.0
    out = np.ascontiguousarray(Xf / norms[:, None])
    out[odd] = unit_odd
    return out


def unit_rows_and_norms(X, dtype=np.float32, *, name: str = "X", strict: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, norms) of the 2-D array ``X``, both of ``dtype``: the norms computed in float64
    and the division done in float64, then rounded once (the raw vector is unit row x norm, as the
    embedding files store it).

    ``strict``: a row with NaN or inf, or all zeros, is a ValueError naming ``name`` and that row.
    ``strict=False`` never raises: an all-zero row stays zero with norm 0, a row with NaN keeps its
    values with norm NaN (and one with inf comes out as 0 and NaN, norm inf), for the caller to find."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows x columns), got shape {X.shape}")
    X64 = X.astype(np.float64, copy=False)
    norms = row_norms(X64)
    if not strict:
        with np.errstate(divide="ignore", invalid="ignore"):
            unit = (X / np.where(norms > 0, norms, 1.0)[:, None]).astype(dtype)
        return unit, norms.astype(dtype)
    odd = _odd_rows(norms, np.float64)
    if odd.size:
        unit_odd, norms_odd = _careful_unit(X64[odd], odd, name)  # raises on NaN, inf or all zeros
        norms[odd] = 1.0
    unit = (X64 / norms[:, None]).astype(dtype)
    if odd.size:
        unit[odd] = unit_odd
        norms[odd] = norms_odd
    return unit, norms.astype(dtype)


# ---------------------------------------------------------------------------- internals
def _odd_rows(norms: np.ndarray, dtype) -> np.ndarray:
    """Rows whose norm is not finite, or so small that their squares lost precision: O(N) on the norms."""
    tiny = np.sqrt(np.finfo(dtype).tiny) * 1e4  # squares of the row's largest entries stay normal numbers
    return np.flatnonzero(~(norms >= tiny) | ~np.isfinite(norms))


def _careful_unit(rows: np.ndarray, index: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, norms) of a few rows, in float64, each scaled by its largest entry first; a row
    with NaN or inf, or all zeros, is a ValueError (``index``: the rows' numbers in X)."""
    rows = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        _refuse(index[~finite], name, "has NaN or inf", "drop or re-embed them")
    scale = np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(rows.shape[0])
    if (scale == 0).any():
        _refuse(index[scale == 0], name, "is all zeros", "it has no direction; drop it")
    scaled = rows / scale[:, None]
    n = row_norms(scaled)
    return scaled / n[:, None], n * scale


def _refuse_non_finite(X: np.ndarray, name: str) -> None:
    _refuse(np.flatnonzero(~np.isfinite(X).all(axis=1)), name, "has NaN or inf", "drop or re-embed them")


def _refuse(bad: np.ndarray, name: str, what: str, advice: str) -> None:
    raise ValueError(f"{name}: row {int(bad[0])} {what} ({bad.size} rows in all); {advice}")
