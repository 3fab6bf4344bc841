"""Preparing single-trial responses the NSD way, and the noise ceiling.

NSD's betas are z-scored within each scan session, the repeats of each image
are averaged, and each voxel's reliability is summarised by its noise-ceiling
signal-to-noise ratio (ncsnr, Allen et al. 2022). The noise ceiling of a
voxel follows from it:

    NC = 100 * ncsnr**2 / (ncsnr**2 + 1 / n)

with n the number of trials averaged: the percentage of the variance of the
averaged response that any model could explain.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array, check_consistent_samples

__all__ = ["zscore_per_session", "average_repeats", "compute_ncsnr", "noise_ceiling"]


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
