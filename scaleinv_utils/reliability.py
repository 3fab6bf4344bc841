"""Preparing single-trial responses the NSD way, and the noise ceiling.

NSD's betas are z-scored within each scan session, the repeats of each image
are averaged, and each voxel's reliability is summarised by its noise-ceiling
signal-to-noise ratio (ncsnr, Allen et al. 2022). The noise ceiling of a
voxel follows from it:

    NC = 100 * ncsnr**2 / (ncsnr**2 + 1 / n)

with n the number of trials averaged: the percentage of the variance of the
averaged response that any model could explain.

Noise controls (chapter 6, claim A2): :func:`subsample_trials` averages fewer
trials per image (1 vs 3), :func:`split_half_average` gives two independent
halves of the trials (for the split-half neighbourhood reliability of
:func:`scaleinv_utils.similarity.neighborhood_reliability`), and
:func:`add_matched_noise` gives a noise-free representation (a model's
features) the measurement noise of the brain, at a given ncsnr.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array, check_consistent_samples, check_random_state

__all__ = ["zscore_per_session", "average_repeats", "compute_ncsnr", "noise_ceiling",
           "add_matched_noise", "pooled_ncsnr", "subsample_trials", "split_half_average"]


def zscore_per_session(trial_betas, session):
    """Z-score each voxel within each session.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials, n_voxels)
    session : array-like of shape (n_trials,)
        Session label of each trial.

    Returns
    -------
    zscored : ndarray of shape (n_trials, n_voxels), float32

    Raises
    ------
    ValueError
        If a session has fewer than 2 trials or shapes mismatch.
    """
    B = check_array(trial_betas, "trial_betas", dtype=np.float64)
    session = np.asarray(session)
    check_consistent_samples(trial_betas=B, session=session)
    out = np.empty_like(B, dtype=np.float32)
    for s in np.unique(session):
        rows = session == s
        if rows.sum() < 2:
            raise ValueError(f"session {s!r} has {rows.sum()} trial; z-scoring needs at least 2.")
        block = B[rows]
        sd = block.std(axis=0)
        sd[sd == 0] = 1.0  # a constant voxel stays at 0 rather than becoming NaN
        out[rows] = (block - block.mean(axis=0)) / sd
    return out


def average_repeats(trial_betas, trial_image):
    """Average the trials of each image.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials, n_voxels)
    trial_image : array-like of shape (n_trials,)
        Image id of each trial.

    Returns
    -------
    betas : ndarray of shape (n_images, n_voxels), float32
        One row per unique image id, in increasing id order.
    image_ids : ndarray of shape (n_images,)
    n_trials : ndarray of shape (n_images,)
        Number of trials averaged per image.
    """
    B = check_array(trial_betas, "trial_betas", dtype=np.float64)
    trial_image = np.asarray(trial_image)
    if trial_image.ndim != 1:
        raise ValueError(f"trial_image must be 1-D of shape (n_trials,), one image label per trial; "
                         f"got shape {trial_image.shape} (for an (n, 1) column use "
                         f"trial_image.ravel()).")
    check_consistent_samples(trial_betas=B, trial_image=trial_image)
    image_ids, inverse, counts = np.unique(trial_image, return_inverse=True, return_counts=True)
    sums = np.zeros((len(image_ids), B.shape[1]))
    np.add.at(sums, inverse, B)
    return (sums / counts[:, None]).astype(np.float32), image_ids, counts


def compute_ncsnr(trial_betas, trial_image):
    """Noise-ceiling SNR per voxel from repeated trials (NSD's definition).

    The noise variance is the mean, over images seen at least twice, of the
    variance across that image's repeats (ddof=1). The signal variance is the
    total trial variance minus the noise variance (floored at 0); for betas
    z-scored per session the total variance is 1, as in NSD.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials, n_voxels)
    trial_image : array-like of shape (n_trials,)

    Returns
    -------
    ncsnr : ndarray of shape (n_voxels,)

    Raises
    ------
    ValueError
        If trial_image is not 1-D, lengths differ, or no image was shown more than once.
    """
    B = check_array(trial_betas, "trial_betas", dtype=np.float64)
    trial_image = np.asarray(trial_image)
    if trial_image.ndim != 1:
        raise ValueError(f"trial_image must be 1-D of shape (n_trials,), one image label per trial; "
                         f"got shape {trial_image.shape} (for an (n, 1) column use "
                         f"trial_image.ravel()).")
    check_consistent_samples(trial_betas=B, trial_image=trial_image)
    image_ids, inverse, counts = np.unique(trial_image, return_inverse=True, return_counts=True)
    repeated = counts >= 2
    if not repeated.any():
        raise ValueError("compute_ncsnr needs images with at least 2 trials; every image has 1.")
    keep = repeated[inverse]
    Bk, inv = B[keep], inverse[keep]
    sums = np.zeros((len(image_ids), B.shape[1]))
    np.add.at(sums, inv, Bk)
    means = sums / np.maximum(counts, 1)[:, None]
    sq = np.zeros_like(sums)
    np.add.at(sq, inv, (Bk - means[inv]) ** 2)
    var_per_image = sq[repeated] / (counts[repeated, None] - 1)
    noise_var = var_per_image.mean(axis=0)
    total_var = B.var(axis=0, ddof=1)
    signal_sd = np.sqrt(np.clip(total_var - noise_var, 0, None))
    noise_sd = np.sqrt(noise_var)
    with np.errstate(divide="ignore", invalid="ignore"):
        ncsnr = np.where(noise_sd > 0, signal_sd / noise_sd, 0.0)
    return ncsnr


def noise_ceiling(ncsnr, n_trials=3):
    """Noise ceiling in percent of explainable variance (Allen et al. 2022).

    Parameters
    ----------
    ncsnr : array-like of shape (n_voxels,)
    n_trials : int or array-like of shape (n_images,)
        Trials averaged per image. With an array (images averaged over
        different numbers of trials), 1/n is replaced by the mean of 1/n_i,
        NSD's formula for a mixture.

    Returns
    -------
    nc : ndarray of shape (n_voxels,)
        Percent (0-100).

    Raises
    ------
    ValueError
        If ncsnr is negative or n_trials < 1.
    """
    ncsnr = check_array(ncsnr, "ncsnr", ndim=1)
    if np.any(ncsnr < 0):
        raise ValueError("ncsnr must be non-negative.")
    n = np.atleast_1d(np.asarray(n_trials, dtype=float))
    if n.size == 0:
        raise ValueError("n_trials is empty: no images to compute a noise ceiling for.")
    if not np.all(np.isfinite(n)) or np.any(n < 1):
        raise ValueError(f"n_trials must be finite and >= 1, got min {np.nanmin(n) if np.isfinite(n).any() else n[0]}.")
    inv_n = float(np.mean(1.0 / n))
    s2 = ncsnr ** 2
    return 100.0 * s2 / (s2 + inv_n)


# ---------------------------------------------------------------------------
# noise controls

def add_matched_noise(features, ncsnr, n_trials=1, *, random_state=None, return_trials=False):
    """Give noise-free features the measurement noise of a voxel with a given ncsnr.

    Each of ``n_trials`` simulated trials is ``features + noise``, with
    independent Gaussian noise of standard deviation ``sd_j / ncsnr_j`` for
    feature j (``sd_j`` its standard deviation over samples, ddof=1), so that
    :func:`compute_ncsnr` on the trials returns ``ncsnr`` (up to sampling
    error): the ratio of signal to single-trial noise of a feature is the one
    asked for, whatever the feature's own scale. The trials are then averaged,
    as NSD's betas are.

    Parameters
    ----------
    features : array-like of shape (n_samples, n_features)
        The noise-free representation (e.g. a model layer on the images).
    ncsnr : float or array-like of shape (n_features,)
        Target noise-ceiling SNR (signal sd / single-trial noise sd), one for
        all features or one per feature; ``numpy.inf`` adds no noise. To match
        a brain network, pass e.g. the median of its voxels' ncsnr.
    n_trials : int
        Trials averaged (NSD: up to 3).
    random_state : int, numpy Generator or None
    return_trials : bool
        Return the single trials instead of their average.

    Returns
    -------
    noisy : ndarray of shape (n_samples, n_features)
        The average of the trials, or with ``return_trials`` an ndarray of
        shape (n_trials, n_samples, n_features).

    Raises
    ------
    ValueError
        If ncsnr is not positive (0 would be pure noise of infinite size) or
        has the wrong length, or n_trials < 1.
    """
    F = check_array(features, "features", min_samples=2)
    n_trials = int(n_trials)
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}.")
    snr = np.asarray(ncsnr, dtype=float)
    if snr.ndim > 1 or (snr.ndim == 1 and snr.size != F.shape[1]):
        raise ValueError(f"ncsnr must be a scalar or have one value per feature "
                         f"(n_features={F.shape[1]}), got shape {snr.shape}; to match a brain "
                         "network, pass e.g. np.median of its voxels' ncsnr.")
    if np.any(np.isnan(snr)) or np.any(snr <= 0):
        raise ValueError(f"ncsnr must be positive (numpy.inf for no noise), got minimum "
                         f"{np.nanmin(snr) if not np.all(np.isnan(snr)) else np.nan}.")
    rng = check_random_state(random_state)
    noise_sd = F.std(axis=0, ddof=1) / snr  # inf -> 0
    noise = rng.standard_normal((n_trials,) + F.shape) * noise_sd
    if return_trials:
        return F[None] + noise
    return F + noise.mean(axis=0)  # exactly F where there is no noise


def pooled_ncsnr(ncsnr):
    """One ncsnr for a set of voxels: total signal variance over total noise variance, square-rooted.

    For betas z-scored per voxel a voxel with ncsnr c has signal variance
    c^2 / (1 + c^2) and noise variance 1 / (1 + c^2), so the pooled value is
    ``sqrt(sum(c^2 / (1 + c^2)) / sum(1 / (1 + c^2)))``. Unlike an average of
    per-voxel noise levels ``1 / c^2``, which the noisy estimates of low-SNR
    voxels inflate (1 / c^2 is convex in c), it weighs each voxel by the
    variance it contributes: use it to give a model's features the noise of
    a whole network (:func:`add_matched_noise`).

    Parameters
    ----------
    ncsnr : array-like of shape (n_voxels,)
        Non-negative.

    Returns
    -------
    pooled : float

    Raises
    ------
    ValueError
        If ncsnr is negative or empty, or every voxel has ncsnr 0.
    """
    c = check_array(ncsnr, "ncsnr", ndim=1)
    if np.any(c < 0):
        raise ValueError(f"ncsnr must be non-negative, found minimum {c.min():.3g}.")
    c2 = c ** 2
    signal = np.sum(c2 / (1 + c2))
    if signal == 0:
        raise ValueError("every voxel has ncsnr 0: there is no signal to match.")
    return float(np.sqrt(signal / np.sum(1 / (1 + c2))))


def _trials_by_image(trial_image, min_trials, rng, name="trial_image"):
    """Image ids with at least ``min_trials`` trials and, per image, its trial indices shuffled."""
    trial_image = np.asarray(trial_image)
    if trial_image.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one image id per trial), got shape {trial_image.shape}.")
    order = rng.permutation(trial_image.size)
    shuffled = trial_image[order]
    sort = np.argsort(shuffled, kind="stable")
    ids, start, counts = np.unique(shuffled[sort], return_index=True, return_counts=True)
    keep = counts >= min_trials
    if not keep.any():
        raise ValueError(f"no image has {min_trials} or more trials (the most any image has is "
                         f"{counts.max() if counts.size else 0}).")
    groups = [order[sort[s:s + c]] for s, c in zip(start[keep], counts[keep])]
    return ids[keep], groups


def subsample_trials(trial_betas, trial_image, n_trials, *, random_state=None):
    """Average ``n_trials`` randomly chosen trials of every image.

    Comparing an analysis on 1-trial and on 3-trial averages shows what
    measurement noise does to it: the noise variance falls as 1 / n_trials,
    the signal stays.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials_total, n_voxels)
    trial_image : array-like of shape (n_trials_total,)
        Image id of each trial.
    n_trials : int
        Trials per image to average; images with fewer trials are left out.
    random_state : int, numpy Generator or None
        Which trials are chosen.

    Returns
    -------
    betas : ndarray of shape (n_images, n_voxels)
        One row per image id kept, in increasing id order.
    image_ids : ndarray of shape (n_images,)

    Raises
    ------
    ValueError
        If n_trials < 1, shapes mismatch, or no image has n_trials trials.
    """
    B = check_array(trial_betas, "trial_betas", dtype=None)  # float32 NSD trials stay float32
    trial_image = np.asarray(trial_image)
    check_consistent_samples(trial_betas=B, trial_image=trial_image)
    n_trials = int(n_trials)
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}.")
    ids, groups = _trials_by_image(trial_image, n_trials, check_random_state(random_state))
    chosen = np.stack([g[:n_trials] for g in groups])  # (n_images, n_trials)
    return B[chosen].mean(axis=1), ids


def split_half_average(trial_betas, trial_image, *, random_state=None):
    """Two independent halves of every image's trials, each averaged.

    Each image's trials are shuffled; the first ``m = n // 2`` go to half A,
    the next ``m`` to half B (with an odd count the last trial is left out,
    so both halves carry the same noise). Images with a single trial are
    left out. What the two halves share is the stimulus-driven signal; their
    noise is independent.

    Parameters
    ----------
    trial_betas : array-like of shape (n_trials_total, n_voxels)
    trial_image : array-like of shape (n_trials_total,)
    random_state : int, numpy Generator or None
        The split.

    Returns
    -------
    half_a, half_b : ndarray of shape (n_images, n_voxels)
    image_ids : ndarray of shape (n_images,)
        In increasing id order.
    n_per_half : ndarray of shape (n_images,)
        Trials averaged in each half.

    Raises
    ------
    ValueError
        If shapes mismatch or no image has two trials.
    """
    B = check_array(trial_betas, "trial_betas", dtype=None)  # float32 NSD trials stay float32
    trial_image = np.asarray(trial_image)
    check_consistent_samples(trial_betas=B, trial_image=trial_image)
    ids, groups = _trials_by_image(trial_image, 2, check_random_state(random_state))
    m = np.array([len(g) // 2 for g in groups])
    half_a = np.stack([B[g[:h]].mean(axis=0) for g, h in zip(groups, m)])
    half_b = np.stack([B[g[h:2 * h]].mean(axis=0) for g, h in zip(groups, m)])
    return half_a, half_b, ids, m
