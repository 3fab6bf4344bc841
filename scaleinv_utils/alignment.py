"""Does scale invariance go with brain alignment? Relations across models.

Paper A's claims A1 and A3 are statements about a *population of models*: models
with a higher scale-invariance score have a higher alignment score. With a
handful of models, the right tools are a rank correlation, an exact-style
permutation p-value and a bootstrap interval over models; this module provides
them, plus a small results table (one row per model) that can be saved and
reloaded so a chapter never recomputes what it already has.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = ["Relation", "relate", "save_table", "load_table"]


@dataclass(frozen=True)
class Relation:
    """A correlation across models with its uncertainty.

    Attributes
    ----------
    statistic : float
        Spearman's rho (or Pearson's r).
    p_value : float
        Two-sided permutation p-value, (1 + #{|null| >= |observed|}) / (1 + n_permutations).
    ci_low, ci_high : float
        Percentile bootstrap interval over models.
    n_models : int
    method : str
    """

    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    n_models: int
    method: str

    def __str__(self):
        name = "rho" if self.method == "spearman" else "r"
        return (f"{name} = {self.statistic:+.2f} (95% CI {self.ci_low:+.2f} to {self.ci_high:+.2f}), "
                f"permutation p = {self.p_value:.3g}, n = {self.n_models} models")


def _ranks(a):
    return stats.rankdata(a, axis=-1)


def _corr_rows(x, Y):
    """Pearson correlation of vector x with every row of Y."""
    xc = x - x.mean()
    Yc = Y - Y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc**2).sum() * (Yc**2).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (Yc @ xc) / denom


def relate(x, y, *, method="spearman", n_permutations=9999, n_bootstrap=2000, confidence=0.95,
           random_state=None):
    """Correlate two scores across models, with a permutation test and a bootstrap interval.

    Parameters
    ----------
    x : array-like of shape (n_models,)
        E.g. each model's dimensional-stability score.
    y : array-like of shape (n_models,)
        E.g. each model's brain-alignment score.
    method : {"spearman", "pearson"}
    n_permutations : int
        Shuffles of y for the null distribution.
    n_bootstrap : int
        Resamples of models (with replacement) for the interval.
    confidence : float
        Coverage of the interval.
    random_state : int or None

    Returns
    -------
    relation : Relation

    Raises
    ------
    ValueError
        If fewer than 4 models are given, lengths differ, values are not
        finite, or a score is constant.
    """
    if method not in ("spearman", "pearson"):
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}.")
    x = check_array(x, "x", ndim=1, min_samples=4)
    y = check_array(y, "y", ndim=1, min_samples=4)
    n = check_consistent_samples(x=x, y=y)
    for name, v in (("x", x), ("y", y)):
        if np.ptp(v) == 0:
            raise ValueError(f"{name} is constant across the {n} models; a correlation is undefined.")
    rng = check_random_state(random_state)
    tx, ty = (_ranks(x), _ranks(y)) if method == "spearman" else (x, y)
    observed = float(_corr_rows(tx, ty[None, :])[0])

    perms = np.argsort(rng.random((n_permutations, n)), axis=1)
    null = _corr_rows(tx, ty[perms])
    p_value = (1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + n_permutations)

    idx = rng.integers(0, n, size=(n_bootstrap, n))
    bx, by = x[idx], y[idx]
    if method == "spearman":
        bx, by = _ranks(bx), _ranks(by)
    bxc = bx - bx.mean(1, keepdims=True)
    byc = by - by.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (bxc * byc).sum(1) / np.sqrt((bxc**2).sum(1) * (byc**2).sum(1))
    boot = boot[np.isfinite(boot)]  # resamples that drew one model n times have no correlation
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha]) if len(boot) else (np.nan, np.nan)
    return Relation(observed, float(p_value), float(lo), float(hi), n, method)


def save_table(table, path):
    """Save a results table (pandas DataFrame, one row per model) as CSV, atomically.

    Parameters
    ----------
    table : pandas.DataFrame
    path : str or Path

    Returns
    -------
    path : pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    table.to_csv(tmp, index=True)
    tmp.replace(path)
    return path


def load_table(path):
    """Load a table written by :func:`save_table`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No results table at {path}; compute it first.")
    return pd.read_csv(path, index_col=0)
