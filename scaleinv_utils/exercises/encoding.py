"""Checks for the chapter "Encoding models of visual cortex"."""
import numpy as np

from . import CheckResult, close_to, register


@register("encoding.ex1")
def _noise_ceiling(answer, ncsnr, n_trials):
    """NC in percent from ncsnr and the number of trials averaged."""
    ncsnr = np.asarray(ncsnr, dtype=float)
    s2 = ncsnr ** 2
    expected = 100 * s2 / (s2 + 1.0 / n_trials)
    a = np.asarray(answer, dtype=float) if not isinstance(answer, str) else None
    if a is not None and a.shape == expected.shape:
        if np.allclose(a, expected / 100, rtol=1e-3):
            return CheckResult(False, "you computed a fraction; the NSD convention is percent (x 100).")
        if np.allclose(a, 100 * s2 / (s2 + 1.0), rtol=1e-3):
            return CheckResult(False, "that is the ceiling of a single trial: the noise variance "
                                      f"of an average of n={n_trials} trials is 1/n of a trial's.")
    return close_to(answer, expected, rtol=1e-3, what="noise ceiling (%)",
                    hint="NC = 100 * ncsnr^2 / (ncsnr^2 + 1/n).")


@register("encoding.ex2")
def _normalised(answer, r2, noise_ceiling):
    """Fraction of explainable variance explained: R^2 / (NC / 100)."""
    r2 = np.asarray(r2, dtype=float)
    nc = np.asarray(noise_ceiling, dtype=float)
    expected = r2 / (nc / 100)
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected an array of shape {expected.shape}, got {type(answer).__name__}.")
    if a.shape == expected.shape:
        if np.allclose(a, r2 / nc, rtol=1e-3):
            return CheckResult(False, "the noise ceiling is in percent: divide it by 100 first.")
        if np.allclose(a, r2 / np.sqrt(nc / 100), rtol=1e-3):
            return CheckResult(False, "R^2 is a variance fraction, like NC: divide by NC/100 itself, "
                                      "not its square root (the square root is for Pearson r).")
    return close_to(a, expected, rtol=1e-3, what="normalised R^2")


@register("encoding.ex3")
def _ridge(answer, X, y, alpha):
    """Closed-form ridge weights (no intercept): (X^T X + alpha I)^-1 X^T y."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    expected = np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ y)
    try:
        a = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected an array of weights, got {type(answer).__name__}.")
    if a.shape == expected.shape:
        ols = np.linalg.lstsq(X, y, rcond=None)[0]
        if alpha > 0 and np.allclose(a, ols, rtol=1e-4):
            return CheckResult(False, "these are the least-squares weights: add alpha to the "
                                      "diagonal of X^T X.")
    return close_to(a, expected, rtol=1e-4, atol=1e-10, what="ridge weights",
                    hint="Solve (X^T X + alpha I) w = X^T y with np.linalg.solve.")


@register("encoding.ex4")
def _best_layer_share(answer, best_layer, network, layer, which):
    """Share of a network's voxels whose best layer is a given layer."""
    best_layer = np.asarray(best_layer)
    network = np.asarray(network)
    sel = network == which
    if not sel.any():
        return CheckResult(False, f"no voxel belongs to network {which!r}.")
    expected = float(np.mean(best_layer[sel] == layer))
    try:
        a = float(answer)
    except (TypeError, ValueError):
        return CheckResult(False, f"expected a number between 0 and 1, got {type(answer).__name__}.")
    if np.isclose(a, 100 * expected, atol=0.5) and expected > 0.02:
        return CheckResult(False, "give a fraction between 0 and 1, not a percentage.")
    if np.isclose(a, float(np.mean(best_layer == layer)), atol=1e-9) and not np.isclose(a, expected):
        return CheckResult(False, f"that is the share over all voxels; keep only the {which!r} voxels.")
    return close_to(a, expected, rtol=0, atol=1e-3, what="share of voxels")
