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


# --------------------------------------------------------------------------- noise controls
from scaleinv_utils.reliability import (add_matched_noise, pooled_ncsnr, split_half_average,
                                        subsample_trials)


def _trials_to_rows(trials):
    """(n_trials, n, p) simulated trials -> trial_betas (n_trials * n, p) and their image ids."""
    n_t, n, p = trials.shape
    return trials.reshape(n_t * n, p), np.tile(np.arange(n), n_t)


def test_add_matched_noise_gives_back_the_ncsnr_asked_for():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(20000, 4)) * np.array([0.1, 1.0, 5.0, 50.0])  # any feature scale
    target = np.array([0.3, 0.8, 1.5, 3.0])
    trials = add_matched_noise(F, target, 3, random_state=1, return_trials=True)
    assert trials.shape == (3, 20000, 4)
    np.testing.assert_allclose(compute_ncsnr(*_trials_to_rows(trials)), target, rtol=0.05)
    # One value for every feature.
    trials = add_matched_noise(F, 0.5, 3, random_state=2, return_trials=True)
    np.testing.assert_allclose(compute_ncsnr(*_trials_to_rows(trials)), 0.5, rtol=0.05)


def test_add_matched_noise_average_has_noise_variance_over_n():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(20000, 3)) * 2.0
    avg = add_matched_noise(F, 0.5, 4, random_state=0)
    # noise sd per trial = sd / ncsnr = 4; the mean of 4 trials has variance 16 / 4 = 4.
    np.testing.assert_allclose((avg - F).var(axis=0), 4.0 * F.var(axis=0, ddof=1) / 4.0, rtol=0.05)
    np.testing.assert_array_equal(add_matched_noise(F, np.inf, 3, random_state=0), F)
    np.testing.assert_array_equal(add_matched_noise(F, 0.5, 2, random_state=7),
                                  add_matched_noise(F, 0.5, 2, random_state=7))


def test_add_matched_noise_errors():
    F = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="ncsnr must be positive"):
        add_matched_noise(F, 0.0)
    with pytest.raises(ValueError, match="ncsnr must be positive"):
        add_matched_noise(F, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match=r"one value per feature \(n_features=3\)"):
        add_matched_noise(F, np.ones(5))
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        add_matched_noise(F, 1.0, 0)


def _labelled_trials(counts):
    """One trial per row whose only feature is the trial's own index (to trace which trials were used)."""
    image = np.repeat(np.arange(len(counts)), counts)
    return np.arange(image.size, dtype=float)[:, None], image


def test_subsample_trials_averages_n_of_each_images_trials():
    B, img = _labelled_trials([3, 3, 1, 2])
    one, ids = subsample_trials(B, img, 1, random_state=0)
    assert list(ids) == [0, 1, 2, 3]
    for row, i in enumerate(ids):
        assert one[row, 0] in B[img == i, 0]  # one of its own trials
    two, ids = subsample_trials(B, img, 2, random_state=0)
    assert list(ids) == [0, 1, 3]  # image 2 has a single trial
    three, ids = subsample_trials(B, img, 3, random_state=0)
    np.testing.assert_allclose(three[:, 0], [B[img == i, 0].mean() for i in ids])
    # Different seeds choose different trials somewhere.
    picks = {tuple(subsample_trials(B, img, 1, random_state=s)[0][:, 0]) for s in range(10)}
    assert len(picks) > 1
    with pytest.raises(ValueError, match="no image has 4 or more trials"):
        subsample_trials(B, img, 4)
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        subsample_trials(B, img, 0)


def test_split_half_average_uses_disjoint_equal_halves():
    B, img = _labelled_trials([3, 4, 1, 2])
    a, b, ids, m = split_half_average(B, img, random_state=0)
    assert list(ids) == [0, 1, 3] and list(m) == [1, 2, 1]
    for row, i in enumerate(ids):
        own = B[img == i, 0]
        if m[row] == 1:  # the halves are two different single trials of this image
            assert a[row, 0] in own and b[row, 0] in own and a[row, 0] != b[row, 0]
    # Image 1 has four trials 3..6: the halves are two disjoint pairs, together all four.
    assert a[1, 0] + b[1, 0] == pytest.approx(own_mean := B[img == 1, 0].mean() * 2)
    assert a[1, 0] != b[1, 0] or own_mean == 2 * a[1, 0]
    with pytest.raises(ValueError, match="no image has 2 or more trials"):
        split_half_average(np.ones((3, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match="same n_samples"):
        split_half_average(np.ones((3, 2)), [0, 1])


def test_pooled_ncsnr_is_total_signal_over_total_noise():
    assert pooled_ncsnr(np.full(7, 0.8)) == pytest.approx(0.8)
    # Voxels with c = 1 (signal 1/2, noise 1/2) and c = 0 (noise 1): sqrt(0.5 / 1.5).
    assert pooled_ncsnr(np.array([1.0, 0.0])) == pytest.approx(np.sqrt(1 / 3))
    # Simulated voxels: the pooled estimate recovers the pooled planted SNR.
    snr = np.array([0.3, 0.6, 1.0, 1.5])
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(5000, 4))
    img = np.repeat(np.arange(5000), 3)
    trials = signal[img] + rng.normal(size=(img.size, 4)) / snr
    trials = (trials - trials.mean(0)) / trials.std(0)
    assert pooled_ncsnr(compute_ncsnr(trials, img)) == pytest.approx(pooled_ncsnr(snr), rel=0.03)
    with pytest.raises(ValueError, match="non-negative"):
        pooled_ncsnr(np.array([-0.1, 1.0]))
    with pytest.raises(ValueError, match="no signal to match"):
        pooled_ncsnr(np.zeros(3))
