"""Checks for the chapter "Artificial and biological neurons"."""
import numpy as np

from . import CheckResult, close_to, register


@register("neurons.ex1")
def _head_norm_activity(answer, head_outputs):
    """AN activity as the norm of each head's output, computed by hand."""
    from ..neurons import an_activity

    expected = an_activity(head_outputs, method="norm")
    a = np.asarray(answer, dtype=float) if not isinstance(answer, str) else None
    if a is None:
        return CheckResult(False, "answer with an array of shape (n_samples, n_heads).")
    if a.shape == expected.shape[::-1]:
        return CheckResult(False, f"expected shape {expected.shape} (stimuli x heads), got "
                                  f"{a.shape}: transpose it.")
    if a.shape == (expected.shape[0], np.shape(head_outputs)[2]):
        return CheckResult(False, "that has one column per output dimension: take the norm over "
                                  "the last axis (head_dim), not over the heads.")
    if a.shape == expected.shape and np.allclose(a, expected ** 2, rtol=1e-6):
        return CheckResult(False, "these are squared norms: take the square root.")
    return close_to(a, expected, rtol=1e-6, atol=1e-9, what="AN activity",
                    hint="Use np.linalg.norm(head_outputs, axis=2).")


@register("neurons.ex2")
def _chance_dice(answer, size_a, size_b, n_voxels):
    """Chance Dice overlap of two random voxel sets."""
    from ..neurons import expected_dice

    expected = float(expected_dice(size_a, size_b, n_voxels))
    jac = size_a * size_b / n_voxels / (size_a + size_b - size_a * size_b / n_voxels)
    result = close_to(answer, expected, rtol=0.01, what="chance Dice",
                      hint="The expected intersection of random sets is |A| |B| / N.")
    if not result.correct:
        try:
            a = float(answer)
        except (TypeError, ValueError):
            return result
        if np.isclose(a, size_a * size_b / n_voxels, rtol=0.01):
            result.message += " That is the expected intersection; Dice divides 2 x it by |A| + |B|."
        elif np.isclose(a, jac, rtol=0.01):
            result.message += " That is (about) the chance Jaccard overlap, not Dice."
    return result


@register("neurons.ex3")
def _negative_fraction(answer, maps, networks, network="default-mode"):
    """Fraction of a network's significant BNs (over all ANs) that are negatively driven."""
    sel = np.asarray(networks) == network
    if not sel.any():
        return CheckResult(False, f"no voxel is labelled {network!r}.")
    n_neg = int(maps.negative[:, sel].sum())
    n_pos = int(maps.positive[:, sel].sum())
    if n_neg + n_pos == 0:
        return CheckResult(False, f"these maps have no significant BN in {network!r}; "
                                  "nothing to compute.")
    expected = n_neg / (n_neg + n_pos)
    result = close_to(answer, expected, rtol=0, atol=0.005, what="negative fraction",
                      hint="Count (AN, voxel) pairs: negative / (positive + negative), "
                           f"within the {network!r} voxels only.")
    if not result.correct:
        try:
            a = float(answer)
        except (TypeError, ValueError):
            return result
        if np.isclose(a, 1 - expected, atol=0.005):
            result.message += " That is the positive fraction."
        elif np.isclose(a, n_neg / (maps.negative.shape[0] * sel.sum()), atol=0.005):
            result.message += " Divide by the significant pairs, not by all pairs."
    return result
