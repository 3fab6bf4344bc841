"""Checks for the exercises of the chapter "The Natural Scenes Dataset" (topic "nsd")."""
from __future__ import annotations

import numpy as np

from . import CheckResult, close_to, register


@register("nsd.ex1")
def check_ex1(answer, ncsnr=None):
    """Noise ceilings for single trials and for averages of three: answer = (nc1, nc3)."""
    from ..reliability import noise_ceiling

    if ncsnr is None:
        return CheckResult(False, "pass the ncsnr you used: check('nsd.ex1', answer, ncsnr=ncsnr).")
    try:
        nc1, nc3 = answer
    except (TypeError, ValueError):
        return CheckResult(False, "expected a pair (nc1, nc3) of arrays, one noise ceiling per voxel.")
    expected = np.stack([noise_ceiling(ncsnr, 1), noise_ceiling(ncsnr, 3)])
    got = np.stack([np.asarray(nc1, float), np.asarray(nc3, float)]) if np.shape(nc1) == np.shape(nc3) \
        else None
    if got is None:
        return CheckResult(False, "nc1 and nc3 must have the same shape (n_voxels,).")
    if np.allclose(got, expected / 100, rtol=1e-3):
        return CheckResult(False, "these are fractions; the NSD noise ceiling is in percent (x 100).")
    if np.allclose(got[::-1], expected, rtol=1e-3):
        return CheckResult(False, "nc1 and nc3 are swapped: averaging more trials raises the ceiling.")
    return close_to(got, expected, rtol=1e-3, what="noise ceilings (n=1, n=3)",
                    hint="NC = 100 * ncsnr**2 / (ncsnr**2 + 1/n).")


@register("nsd.ex2")
def check_ex2(answer, trial_betas=None, trial_image=None):
    """ncsnr computed from single trials."""
    from ..reliability import compute_ncsnr

    if trial_betas is None or trial_image is None:
        return CheckResult(False, "pass trial_betas=... and trial_image=... to the check.")
    expected = compute_ncsnr(trial_betas, trial_image)
    a = np.asarray(answer, dtype=float)
    if a.shape != expected.shape:
        return CheckResult(False, f"expected one ncsnr per voxel, shape {expected.shape}; got {a.shape}.")
    # the most common slip: population variance (ddof=0) for the repeats
    B = np.asarray(trial_betas, float)
    ids, inv, counts = np.unique(trial_image, return_inverse=True, return_counts=True)
    if not np.allclose(a, expected, rtol=0.02, atol=1e-3):
        rep = counts[inv] >= 2
        var0 = np.mean([B[inv == g].var(axis=0) for g in np.flatnonzero(counts >= 2)], axis=0)
        total = B[rep].var(axis=0, ddof=1) if rep.any() else B.var(axis=0, ddof=1)
        alt = np.sqrt(np.clip(total - var0, 0, None) / var0)
        if np.allclose(a, alt, rtol=0.05):
            return CheckResult(False, "close, but the noise variance of each image's repeats needs "
                                      "ddof=1 (np.var(..., ddof=1)).")
    return close_to(a, expected, rtol=0.02, atol=1e-3, what="ncsnr",
                    hint="noise var = mean over images of the var of its repeats (ddof=1); "
                         "signal sd = sqrt(max(total var - noise var, 0)); ncsnr = signal sd / noise sd.")


@register("nsd.ex3")
def check_ex3(answer, ncsnr=None, target=None):
    """Trials needed to reach a target noise ceiling."""
    if ncsnr is None or target is None:
        return CheckResult(False, "pass ncsnr=... and target=... to the check.")
    exact = (target / (100.0 - target)) / ncsnr ** 2
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected a number of trials, got {type(answer).__name__}.")
    if abs(a - exact) <= 1e-6 * max(1, exact) or a == np.ceil(exact - 1e-9):
        return CheckResult(True, f"n = {exact:.3g} trials ({int(np.ceil(exact - 1e-9))} in whole trials).")
    if abs(a - 1 / exact) < 1e-6:
        return CheckResult(False, "you found 1/n; invert it.")
    return CheckResult(False, f"expected about {exact:.3g} trials, got {a:.3g}. Solve "
                              "NC = 100 s^2 / (s^2 + 1/n) for n.")
