"""Checks for the exercises of the chapter "Structural similarity across scales"."""
from __future__ import annotations

import numpy as np

from . import CheckResult, close_to, register


@register("similarity.ex1")
def check_knn_overlap(answer, *, X, Y, ks):
    """Mutual-kNN overlap at each k, computed by hand.

    The expected profile ranks neighbours in float64, as a hand computation with NumPy does
    (``knn_overlap`` itself ranks in float32). Where two neighbours of a stimulus are closer
    than float32 rounding, the two rankings may swap them at the k-th place, which moves the
    mean overlap by 1 / (k n_samples) per stimulus; the check allows such near-ties at up
    to 1 % of the stimuli (0.01 / k), far less than any mistake changes the profile.
    """
    from ..neighbors import nearest_neighbors
    from ..similarity import knn_overlap
    ks = np.asarray(ks)
    k_max = int(ks.max())
    gx, gy = nearest_neighbors(X, k_max, exact=True), nearest_neighbors(Y, k_max, exact=True)
    expected = knn_overlap(gx, gy, ks)
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected an array of {ks.size} overlaps, got "
                                  f"{type(answer).__name__}.")
    near_ties = 0.01 / ks
    if a.shape == expected.shape:
        if np.allclose(a, expected * ks, rtol=0, atol=1e-9 + near_ties * ks):
            return CheckResult(False, "these are counts of shared neighbours: divide by k to get "
                                      "the fraction.")
        jac = knn_overlap(gx, gy, ks, kind="jaccard")
        if np.allclose(a, jac, rtol=0, atol=1e-9) and not np.allclose(a, expected, rtol=0,
                                                                       atol=near_ties):
            return CheckResult(False, "this is the Jaccard index |A∩B|/|A∪B|; the mutual-kNN "
                                      "overlap divides by k.")
    return close_to(answer, expected, rtol=0, atol=1e-9 + near_ties, what="overlap profile",
                    hint="Did you leave each stimulus out of its own neighbours?")


@register("similarity.ex2")
def check_linear_cka(answer, *, X, Y):
    """Linear CKA from feature-space products."""
    from ..similarity import linear_cka
    expected = linear_cka(X, Y)
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    raw = np.sum((X.T @ Y) ** 2) / np.sqrt(np.sum((X.T @ X) ** 2) * np.sum((Y.T @ Y) ** 2))
    if np.ndim(answer) == 0 and not np.isclose(expected, raw, rtol=1e-3):
        try:
            if np.isclose(float(answer), raw, rtol=1e-6):
                return CheckResult(False, "close, but the columns were not centred: subtract each "
                                          "feature's mean over stimuli first.")
            if np.isclose(float(answer) ** 2, expected, rtol=1e-6):
                return CheckResult(False, "this is the square root of CKA: the numerator is the "
                                          "squared Frobenius norm ||Y^T X||_F^2.")
        except (TypeError, ValueError):
            pass
    return close_to(answer, expected, rtol=1e-6, what="linear CKA")


@register("similarity.ex3")
def check_calibrated(answer, *, X, Y, k):
    """Mutual-kNN at k minus its permutation null (whose mean is k / (n - 1))."""
    from ..similarity import knn_overlap
    n = np.shape(X)[0]
    score = knn_overlap(X, Y, int(k))
    chance = k / (n - 1)
    expected = score - chance
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected one number, got {type(answer).__name__}.")
    if abs(a - score) < 1e-9 and chance > 0.01:
        return CheckResult(False, "this is the raw score: subtract the mean of the null distribution.")
    if abs(a - score / chance) < 1e-6 * max(1.0, abs(score / chance)):
        return CheckResult(False, "this is the ratio score / null; the exercise asks for the "
                                  "difference.")
    # a permutation null has sampling error: allow a few standard errors of its mean
    return close_to(a, expected, atol=0.02, rtol=0.0, what="calibrated score",
                    hint=f"the raw score is {score:.3f} and the null mean should be near "
                         f"k/(n-1) = {chance:.3f}.")
