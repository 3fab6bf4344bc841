"""Input validation shared by every module of the package.

One place decides what "a valid data matrix" means, so every function raises
the same kind of error with the same kind of message: the parameter's name,
what was expected and what was found.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

__all__ = [
    "check_array",
    "check_consistent_samples",
    "check_random_state",
    "check_scale",
]


def check_array(X, name="X", ndim=2, min_samples=1, min_features=1,
                allow_nan=False, dtype=np.float64, copy=False):
    """Validate an array and return it as a NumPy array.

    Parameters
    ----------
    X : array-like
        The data, usually of shape (n_samples, n_features).
    name : str
        Name used in error messages.
    ndim : int or tuple of int
        Allowed number of dimensions.
    min_samples : int
        Smallest allowed size of the first axis.
    min_features : int
        Smallest allowed size of the second axis (ignored for 1-D input).
    allow_nan : bool
        If False, NaN or infinite values raise a ValueError.
    dtype : numpy dtype or None
        Dtype to convert to; None keeps floating dtypes and casts others to float64.
    copy : bool
        Force a copy.

    Returns
    -------
    X : ndarray

    Raises
    ------
    TypeError
        If X cannot be converted to a numeric array.
    ValueError
        If X has the wrong number of dimensions, too few samples or features,
        or non-finite values while ``allow_nan=False``.
    """
    if hasattr(X, "detach"):  # torch tensor
        X = X.detach().cpu()
        if str(X.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it exactly
            X = X.float()
        X = X.numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be array-like, got {type(X).__name__}.") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
    if dtype is None:
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    arr = np.array(arr, dtype=dtype, copy=True) if copy else arr.astype(dtype, copy=False)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in allowed:
        expected = " or ".join(f"{d}-D" for d in allowed)
        raise ValueError(f"{name} must be {expected}, got an array of shape {arr.shape}.")
    if arr.shape[0] < min_samples:
        raise ValueError(
            f"{name} needs at least {min_samples} samples, got n_samples={arr.shape[0]}.")
    if arr.ndim >= 2 and arr.shape[1] < min_features:
        raise ValueError(
            f"{name} needs at least {min_features} features, got n_features={arr.shape[1]}.")
    if not allow_nan and np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        n_bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite values; remove or impute them first.")
    return arr


def check_consistent_samples(**arrays):
    """Check that every array has the same number of samples (first axis).

    Parameters
    ----------
    **arrays : array-like
        Named arrays, e.g. ``X=X, Y=Y``.

    Returns
    -------
    n_samples : int

    Raises
    ------
    ValueError
        If the first axes differ.
    """
    sizes = {name: np.shape(a)[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        found = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValueError(f"Inputs must describe the same stimuli (same n_samples): {found}.")
    return next(iter(sizes.values())) if sizes else 0


def check_random_state(random_state):
    """Turn ``random_state`` into a ``numpy.random.Generator``.

    Parameters
    ----------
    random_state : int, numpy.random.Generator or None
        Seed; a Generator is returned unchanged; None gives fresh entropy.

    Returns
    -------
    rng : numpy.random.Generator

    Raises
    ------
    TypeError
        For any other type.
    """
    if random_state is None or isinstance(random_state, (numbers.Integral, np.integer)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    raise TypeError(
        f"random_state must be an int, a numpy Generator or None, got {type(random_state).__name__}.")


def check_scale(k, n_samples, name="k", minimum=1):
    """Check a neighbourhood size against the number of samples.

    Parameters
    ----------
    k : int
        Number of neighbours.
    n_samples : int
        Number of points.
    name : str
        Name used in messages.
    minimum : int
        Smallest allowed value.

    Returns
    -------
    k : int

    Raises
    ------
    TypeError
        If k is not an integer.
    ValueError
        If k < minimum or k >= n_samples.
    """
    if not isinstance(k, (numbers.Integral, np.integer)) or isinstance(k, bool):
        raise TypeError(f"{name} must be an integer, got {type(k).__name__}.")
    k = int(k)
    if k < minimum:
        raise ValueError(f"{name}={k} must be at least {minimum}.")
    if k >= n_samples:
        raise ValueError(f"{name}={k} must be smaller than n_samples={n_samples}.")
    return k


def warn_doubtful(message):
    """Emit a UserWarning for legal but doubtful input."""
    warnings.warn(message, UserWarning, stacklevel=3)
