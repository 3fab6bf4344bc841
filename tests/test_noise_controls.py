"""Noise controls of claim A2 and the profile comparison of claim A3 (issue 17)."""
import numpy as np
import pytest

from scaleinv_utils.dimension import (compare_id_profiles, id_profile, id_profile_bootstrap,
                                      profile_distance)
from scaleinv_utils.reliability import add_matched_noise
from scaleinv_utils.similarity import knn_chance, neighborhood_reliability


def _trials(signal, noise_sd, n_repeats, seed):
    rng = np.random.default_rng(seed)
    image = np.repeat(np.arange(signal.shape[0]), n_repeats)
    return signal[image] + noise_sd * rng.normal(size=(image.size, signal.shape[1])), image


# --------------------------------------------------------------------------- split-half neighbours

def test_noise_free_halves_have_identical_neighbourhoods():
    signal = np.random.default_rng(0).normal(size=(200, 6))
    trials, image = _trials(signal, 0.0, 3, seed=1)
    rel = neighborhood_reliability(trials, image, [1, 5, 20], n_splits=2, random_state=0)
    np.testing.assert_allclose(rel.overlap, 1.0)
    np.testing.assert_allclose(rel.normalized, 1.0)
    assert rel.n_images == 200 and set(rel.n_per_half) == {1}


def test_pure_noise_halves_agree_at_chance():
    n, ks = 400, np.array([5, 20, 50])
    trials, image = _trials(np.zeros((n, 30)), 1.0, 2, seed=2)
    rel = neighborhood_reliability(trials, image, ks, n_splits=4, random_state=0)
    np.testing.assert_allclose(rel.chance, knn_chance(ks, n))
    # Per stimulus the overlap count is about hypergeometric: sd of the mean fraction
    # ~ sqrt(chance / (k n_stimuli n_splits)); allow 5 of them.
    tol = 5 * np.sqrt(rel.chance / (ks * n * 4))
    assert np.all(np.abs(rel.overlap - rel.chance) < tol)
    assert np.all(np.abs(rel.normalized) < 0.02)


def test_more_noise_less_reliable_neighbourhoods():
    signal = np.random.default_rng(3).normal(size=(300, 5))
    values = [neighborhood_reliability(*_trials(signal, sd, 2, seed=4), [10], n_splits=2,
                                       random_state=0).normalized[0] for sd in (0.1, 0.5, 2.0)]
    assert values[0] > values[1] > values[2]


def test_neighborhood_reliability_errors():
    with pytest.raises(ValueError, match="n_splits must be at least 1"):
        neighborhood_reliability(np.ones((4, 2)), [0, 0, 1, 1], [1], n_splits=0)
    trials, image = _trials(np.random.default_rng(0).normal(size=(10, 3)), 1.0, 2, seed=0)
    with pytest.raises(ValueError, match="k"):
        neighborhood_reliability(trials, image, [10])


# --------------------------------------------------------------------------- profiles

KS = np.array([5, 8, 13, 20, 32, 50])


def _brain_like(n=800, seed=0):
    """A 4-D curved manifold embedded in 60-D."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, 4))
    feats = np.column_stack([z, np.sin(3 * z), z[:, :2] ** 2])
    return feats @ rng.normal(size=(feats.shape[1], 60))


def test_paired_bootstrap_profile_matches_id_profile():
    X = _brain_like()
    Y = X + 0.3 * np.random.default_rng(1).normal(size=X.shape)
    boot = id_profile_bootstrap({"x": X, "y": Y}, KS, n_bootstrap=30, random_state=0)
    np.testing.assert_allclose(boot["x"], id_profile(X, KS, estimators=("gride",)).ids["gride"],
                               rtol=1e-10)
    np.testing.assert_allclose(boot["y"], id_profile(Y, KS, estimators=("gride",)).ids["gride"],
                               rtol=1e-10)
    assert boot.samples.shape == (30, 2, KS.size)
    # Paired: a copy of X gets the very same resampled profiles.
    twin = id_profile_bootstrap({"x": X, "copy": X.copy()}, KS, n_bootstrap=20, random_state=0)
    np.testing.assert_array_equal(twin.samples[:, 0], twin.samples[:, 1])


def test_profile_distance_analytic_cases():
    ref = 30.0 * KS.astype(float) ** -0.3
    # Twice the level, same shape: Pearson 1, shape 0, level log 2.
    assert profile_distance(2 * ref, ref, KS, "pearson") == pytest.approx(1.0)
    assert profile_distance(2 * ref, ref, KS, "shape") == pytest.approx(0.0, abs=1e-12)
    assert profile_distance(2 * ref, ref, KS, "level") == pytest.approx(np.log(2))
    assert profile_distance(2 * ref, ref, KS, "rmse") == pytest.approx(np.log(2))
    assert profile_distance(2 * ref, ref, KS, "slope_corr") == pytest.approx(1.0)
    assert profile_distance(ref, ref, KS, "rmse") == 0.0
    # A shifted profile falls less steeply on log axes: Pearson still 1, shape > 0.
    shifted = ref + 20.0
    assert profile_distance(shifted, ref, KS, "pearson") == pytest.approx(1.0)
    assert profile_distance(shifted, ref, KS, "shape") > 0.1
    # Decomposition, vectorised over profiles.
    P = np.stack([2 * ref, shifted, ref * KS ** 0.1])
    rmse, level, shape = (profile_distance(P, ref, KS, m) for m in ("rmse", "level", "shape"))
    np.testing.assert_allclose(rmse ** 2, level ** 2 + shape ** 2)
    assert rmse.shape == (3,)


def test_distance_separates_profiles_that_pearson_cannot():
    # The brain-like data with more and more isotropic noise: every profile falls with
    # scale, so Pearson's correlation with the clean profile saturates, the distance grows.
    X = _brain_like(seed=2)
    rng = np.random.default_rng(3)
    reps = {f"noise {s}": X + s * X.std() * rng.normal(size=X.shape) for s in (0.05, 0.2, 0.5)}
    cmp = compare_id_profiles(reps, X, KS, n_bootstrap=50, random_state=0)
    assert np.all(cmp.values["pearson"] > 0.9)
    pearson_spread = np.ptp(cmp.values["pearson"])
    rmse = cmp.values["rmse"]
    assert np.all(np.diff(rmse) > 0) and np.ptp(rmse) > 5 * pearson_spread
    # Intervals: the noisiest representation is further from the reference than the cleanest.
    assert cmp.low["rmse"][2] > cmp.high["rmse"][0]
    assert np.all(cmp.low["rmse"] <= rmse) and np.all(rmse <= cmp.high["rmse"])
    frame = cmp.to_frame()
    assert list(frame.index) == list(reps) and "rmse_low" in frame.columns


def test_identical_representation_is_at_distance_zero():
    X = _brain_like(n=400, seed=4)
    cmp = compare_id_profiles({"same": X}, X, KS[:4], measures=("rmse", "level"), n_bootstrap=10,
                              random_state=0)
    assert cmp.values["rmse"][0] == 0.0 and cmp.high["rmse"][0] == 0.0


def test_matched_noise_brings_a_clean_profile_to_the_noisy_one():
    # Known answer: the brain = signal + noise at ncsnr 0.8 averaged over 3 trials; the
    # signal with matched noise has (nearly) the brain's profile, the clean signal does not.
    X = _brain_like(seed=5)
    brain = add_matched_noise(X, 0.8, 3, random_state=0)
    matched = add_matched_noise(X, 0.8, 3, random_state=1)
    cmp = compare_id_profiles({"clean": X, "matched": matched}, brain, KS, measures=("rmse",),
                              n_bootstrap=30, random_state=0)
    assert cmp.values["rmse"][1] < 0.2 * cmp.values["rmse"][0]


def test_profile_comparison_errors():
    ref = np.array([3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="measure must be one of"):
        profile_distance(ref, ref, [1, 2, 3], "cosine")
    with pytest.raises(ValueError, match="share one scale grid"):
        profile_distance(ref[:2], ref, [1, 2, 3])
    with pytest.raises(ValueError, match="positive and finite"):
        profile_distance(np.array([1.0, 0.0, 1.0]), ref, [1, 2, 3])
    with pytest.raises(ValueError, match="strictly increasing"):
        profile_distance(ref, ref, [3, 2, 1])
    X = _brain_like(n=100)
    with pytest.raises(ValueError, match="n_bootstrap must be at least 1"):
        compare_id_profiles({"a": X}, X, [5, 10], n_bootstrap=0)
    with pytest.raises(ValueError, match="may not be named 'reference'"):
        compare_id_profiles({"reference": X}, X, [5, 10])
    with pytest.raises(ValueError, match="measures must be among"):
        compare_id_profiles({"a": X}, X, [5, 10], measures=("nope",))
    with pytest.raises(ValueError, match="need the 100-th neighbour"):
        id_profile_bootstrap({"a": X}, [5, 50])
    with pytest.raises(ValueError, match="same n_samples"):
        id_profile_bootstrap({"a": X, "b": X[:50]}, [5, 10])
