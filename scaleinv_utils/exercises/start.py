"""Checks for chapter 0, "Start here"."""
import numpy as np

from . import CheckResult, close_to, register


@register("start.ex1")
def _most_reliable_network(answer, subject):
    nc = subject.noise_ceiling()
    networks = np.unique(subject.voxels.network)
    medians = {n: float(np.median(nc[subject.voxels.network == n])) for n in networks}
    best = max(medians, key=medians.get)
    if not isinstance(answer, str):
        return CheckResult(False, f"answer with the network's name (a string such as {networks[0]!r}).")
    if answer == best:
        return CheckResult(True, f"{best!r} has the highest median noise ceiling ({medians[best]:.1f}%).")
    if answer not in medians:
        return CheckResult(False, f"{answer!r} is not a network of this subset; networks: {list(networks)}.")
    return CheckResult(False, f"{answer!r} has a median noise ceiling of {medians[answer]:.1f}%, "
                              f"another network is higher. Did you take the median per network?")


@register("start.ex2")
def _default_mode_correlation(answer, subset, subject):
    test = subject.test
    n_objects = subset.stimuli.attributes["n_objects"][subject.image_index[test]]
    dmn = subject.betas[test][:, subject.voxels.network == "default-mode"].mean(axis=1)
    expected = np.corrcoef(n_objects, dmn)[0, 1]
    result = close_to(answer, expected, rtol=0, atol=0.02, what="correlation",
                      hint="Use the test images only, and average the default-mode voxels first.")
    if (not result.correct and np.ndim(answer) == 0
            and np.sign(float(answer)) != np.sign(expected)):
        result.message += " Its sign is wrong too."
    return result
