import numpy as np
import pytest

from scaleinv_utils.reliability import (average_repeats, compute_ncsnr, noise_ceiling,
                                        zscore_per_session)


def simulate(n_images=3000, n_repeats=3, noise_sd=(0.5, 1.0, 2.0, 4.0), seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_images, len(noise_sd)))
    trial_image = np.repeat(np.arange(n_images), n_repeats)
    noise = rng.normal(size=(len(trial_image), len(noise_sd))) * np.asarray(noise_sd)
    return signal, signal[trial_image] + noise, trial_image


def test_ncsnr_recovers_planted_snr():
    noise_sd = np.array([0.5, 1.0, 2.0, 4.0])
    _, trials, trial_image = simulate(noise_sd=noise_sd)
    ncsnr = compute_ncsnr(trials, trial_image)
    np.testing.assert_allclose(ncsnr, 1.0 / noise_sd, rtol=0.1)


def test_noise_ceiling_matches_simulation():
    # The ceiling is the variance of the averaged response that the true signal explains.
    noise_sd = np.array([0.5, 1.0, 2.0, 4.0])
    signal, trials, trial_image = simulate(noise_sd=noise_sd, seed=1)
    betas, ids, n = average_repeats(trials, trial_image)
    empirical = 100 * np.array([np.corrcoef(signal[ids, v], betas[:, v])[0, 1] ** 2
                                for v in range(len(noise_sd))])
    predicted = noise_ceiling(compute_ncsnr(trials, trial_image), n)
    np.testing.assert_allclose(predicted, empirical, atol=4.0)
    theory = 100 / (1 + noise_sd**2 / 3)
    np.testing.assert_allclose(predicted, theory, atol=4.0)


def test_noise_ceiling_formula_values():
    assert noise_ceiling(np.array([1.0]), 1)[0] == pytest.approx(50.0)
    assert noise_ceiling(np.array([1.0]), 3)[0] == pytest.approx(75.0)
    # Mixture of 1 and 3 trials: mean(1/n) = 2/3.
    assert noise_ceiling(np.array([1.0]), [1, 3])[0] == pytest.approx(100 / (1 + 2 / 3))
    assert noise_ceiling(np.array([0.0]), 3)[0] == 0.0


def test_zscore_per_session_standardises_each_session():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(60, 5)) * 3 + 10
    session = np.repeat([0, 1, 2], 20)
    Z = zscore_per_session(B, session)
    for s in range(3):
        np.testing.assert_allclose(Z[session == s].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(Z[session == s].std(0), 1, atol=1e-5)


def test_average_repeats_matches_loop():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(12, 3))
    img = np.array([5, 2, 5, 2, 9, 5, 9, 2, 9, 1, 1, 1])
    means, ids, n = average_repeats(B, img)
    assert list(ids) == [1, 2, 5, 9] and list(n) == [3, 3, 3, 3]
    for row, i in enumerate(ids):
        np.testing.assert_allclose(means[row], B[img == i].mean(0), rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 trials"):
        compute_ncsnr(np.ones((4, 2)), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        noise_ceiling(np.array([-1.0]))
    with pytest.raises(ValueError, match="n_trials must be finite and >= 1"):
        noise_ceiling(np.array([1.0]), 0)
    with pytest.raises(ValueError, match="at least 2"):
        zscore_per_session(np.ones((3, 2)), [0, 0, 1])
    with pytest.raises(ValueError, match="same n_samples"):
        average_repeats(np.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_ncsnr(np.full((4, 2), np.nan), [0, 0, 1, 1])


def test_noise_ceiling_rejects_empty_or_nan_trial_counts():
    with pytest.raises(ValueError, match="empty"):
        noise_ceiling(np.array([1.0]), np.array([], dtype=int))
    with pytest.raises(ValueError, match="finite"):
        noise_ceiling(np.array([1.0]), np.nan)
