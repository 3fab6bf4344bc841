"""Checks for the exercises of the chapter "Intrinsic dimension across scales"."""
from __future__ import annotations

import numpy as np

from . import CheckResult, close_to, register


@register("dimension.ex1")
def check_twonn_by_hand(answer, X):
    """TwoNN by hand: d = n / sum_i log(r2_i / r1_i)."""
    from ..dimension import twonn

    expected = twonn(X, 1).dimension
    a = _as_float(answer)
    if a is None:
        return CheckResult(False, f"expected one number, got {type(answer).__name__}.")
    if np.isclose(a, 1 / expected, rtol=0.02):
        return CheckResult(False, f"you returned about 1/d ({a:.3g}); invert it: d = n / sum(log mu).")
    if np.isclose(a, expected / 2, rtol=0.02):
        return CheckResult(False, "your value is half the expected one: did you use squared "
                                  "distances? log(mu^2) = 2 log(mu).")
    return close_to(a, expected, rtol=0.02, what="TwoNN dimension",
                    hint="use r1, r2 = the distances to the 1st and 2nd neighbours, "
                         "mu = r2 / r1, d = n / sum(log(mu)).")


@register("dimension.ex2")
def check_participation_ratio(answer, eigenvalues):
    """Participation ratio (sum lambda)^2 / sum lambda^2 of a spectrum."""
    lam = np.asarray(eigenvalues, dtype=float)
    expected = lam.sum() ** 2 / np.sum(lam ** 2)
    a = _as_float(answer)
    if a is None:
        return CheckResult(False, f"expected one number, got {type(answer).__name__}.")
    if np.isclose(a, np.sum(lam ** 2) / lam.sum() ** 2, rtol=1e-3):
        return CheckResult(False, "you computed the inverse: PR = (sum lambda)^2 / sum(lambda^2).")
    if np.isclose(a, lam.sum() / np.sum(lam ** 2), rtol=1e-3):
        return CheckResult(False, "square the sum in the numerator: (sum lambda)^2, not sum lambda.")
    return close_to(a, expected, rtol=1e-3, what="participation ratio")


@register("dimension.ex3")
def check_stability_cv(answer, ids, ks):
    """Coefficient of variation of ID over log-scale (the chapter's headline stability)."""
    from ..dimension import dimensional_stability

    expected = dimensional_stability(ids, ks, method="cv")
    a = _as_float(answer)
    if a is None:
        return CheckResult(False, f"expected one number, got {type(answer).__name__}.")
    ids = np.asarray(ids, dtype=float)
    if np.isclose(a, np.std(ids) / np.mean(ids), rtol=1e-3) and not np.isclose(a, expected, rtol=1e-3):
        return CheckResult(False, "close: weight each scale by its share of the log-k axis "
                                  "(trapezoid widths of log10 k), not equally.")
    return close_to(a, expected, rtol=1e-3, what="coefficient of variation",
                    hint="CV = weighted sd / weighted mean of the IDs, weights from log10(ks).")


def _as_float(answer):
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(a) if a.size == 1 else None
