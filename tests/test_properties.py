"""Invariances the estimators promise (hypothesis property tests) and clear messages for bad input."""
import warnings

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from scaleinv_utils import dimension as dm
from scaleinv_utils import similarity as sm
from scaleinv_utils.reliability import compute_ncsnr

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as hs  # noqa: E402

FAST = settings(max_examples=8, deadline=None)
seeds = hs.integers(0, 2 ** 31 - 1)


def _data(seed, n=80, p=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)) * rng.uniform(0.3, 3.0, size=p)


# --------------------------------------------------------------------------- invariances
@FAST
@given(seeds, hs.floats(0.01, 100.0), hs.floats(-1e3, 1e3))
def test_id_invariant_under_rotation_translation_and_isotropic_scaling(seed, scale, shift):
    X = _data(seed)
    Q = special_ortho_group.rvs(X.shape[1], random_state=seed % 2 ** 32)
    Z = scale * X @ Q + shift
    for f in (lambda A: dm.gride(A, k=4).dimension, lambda A: dm.twonn(A).dimension,
              lambda A: dm.mle(A, k=8).dimension):
        assert f(Z) == pytest.approx(f(X), rel=1e-6)


@FAST
@given(seeds, hs.floats(0.01, 100.0))
def test_linear_cka_invariant_under_orthogonal_maps_and_isotropic_scaling(seed, scale):
    X = _data(seed)
    Y = X[:, :4] + _data(seed + 1)[:, :4]
    Q = special_ortho_group.rvs(X.shape[1], random_state=seed % 2 ** 32)
    ref = sm.linear_cka(X, Y)
    assert 0.0 <= ref <= 1.0 + 1e-12
    assert sm.linear_cka(scale * X @ Q, Y) == pytest.approx(ref, abs=1e-9)
    assert sm.linear_cka(X, Y / scale) == pytest.approx(ref, abs=1e-9)
    assert sm.linear_cka(Y, X) == pytest.approx(ref, abs=1e-12)


@FAST
@given(seeds, hs.lists(hs.integers(1, 60), min_size=1, max_size=4, unique=True))
def test_knn_overlap_symmetric_and_bounded(seed, ks):
    X, Y = _data(seed), _data(seed + 7)[:, :3]
    ks = sorted(ks)
    a = sm.knn_overlap(X, Y, ks)
    b = sm.knn_overlap(Y, X, ks)
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(sm.knn_overlap(X, X, ks), 1.0)


@FAST
@given(seeds, hs.sampled_from([np.sqrt, np.log1p, lambda d: d ** 3, lambda d: np.exp(d / 10)]))
def test_spearman_rsa_invariant_under_monotone_transforms_of_the_rdm(seed, f):
    X, Y = _data(seed, n=30), _data(seed + 3, n=30)
    D1, D2 = sm.rdm(X, "euclidean"), sm.rdm(Y, "euclidean")
    ref = sm.compare_rdms(D1, D2, method="spearman")
    assert sm.compare_rdms(f(D1), D2, method="spearman") == pytest.approx(ref, abs=1e-12)
    assert sm.compare_rdms(D1, f(D2), method="spearman") == pytest.approx(ref, abs=1e-12)


# --------------------------------------------------------------------------- bad input
def test_rbf_cka_small_bandwidth_warns_and_constant_input_is_named():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 5)), rng.normal(size=(50, 5))
    with pytest.warns(UserWarning, match=r"bandwidth=0.1 is too small for X.*CKA tends to 1"):
        assert sm.rbf_cka(X, Y, 0.1) > 0.99  # independent data, yet near 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.rbf_cka(X, Y, [0.5, 1.0])  # ordinary bandwidths: no warning
    with pytest.raises(ValueError, match="X has a median distance of 0"):
        sm.rbf_cka(np.ones((10, 3)), Y[:10])
    with pytest.raises(ValueError, match="Y has a median distance of 0"):
        sm.rbf_cka(X[:10], np.ones((10, 3)))


def test_knn_overlap_rejects_constant_string_and_empty_input():
    X = np.random.default_rng(1).normal(size=(20, 3))
    with pytest.raises(ValueError, match="X is constant .* nearest neighbours are undefined"):
        sm.knn_overlap(np.ones((20, 3)), X, [5])
    with pytest.raises(TypeError, match="X must be a numeric array, got dtype <U1"):
        sm.knn_overlap(np.array([["a", "b"]] * 3), X[:3], [5])
    with pytest.raises(ValueError, match="X needs at least 2 samples, got n_samples=0"):
        sm.knn_overlap(np.empty((0, 3)), np.empty((0, 3)), [5])


@pytest.mark.parametrize("f", [dm.gride, dm.twonn, dm.mle, dm.local_pca, dm.gride_scaling,
                               dm.id_profile])
def test_dimension_empty_and_string_input_name_the_data(f):
    with pytest.raises(ValueError, match="X needs at least 3 samples, got n_samples=0"):
        f(np.empty((0, 3)))
    with pytest.raises(TypeError, match="X must be a numeric array, got dtype <U1"):
        f(np.array([["a", "b"]] * 3))


def test_id_profile_default_grid_is_chosen_after_dropping_duplicates():
    X = np.repeat(np.random.default_rng(2).normal(size=(40, 3)), 3, axis=0)
    with pytest.warns(UserWarning, match="120 -> 40"):
        prof = dm.id_profile(X, estimators=("gride",))
    assert prof.n_samples == 40 and prof.n_duplicates == 80
    assert 2 * prof.ks.max() < 40


def test_local_pca_warns_near_its_k_minus_1_ceiling():
    cube = np.random.default_rng(3).uniform(size=(1000, 5))
    with pytest.warns(UserWarning, match=r"local PCA at k=5 gives 2.7.*k - 1 = 4 dimensions"):
        est = dm.local_pca(cube, k=5, random_state=0)
    assert est.dimension < 4
    with pytest.warns(UserWarning, match="local PCA at ks=5"):
        dm.id_profile(cube, ks=[5, 40], estimators=("lpca",), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dm.local_pca(cube, k=40, random_state=0).dimension > 4


def test_compute_ncsnr_rejects_column_labels():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(10), 2)
    with pytest.raises(ValueError, match=r"trial_image must be 1-D .* got shape \(20, 1\)"):
        compute_ncsnr(rng.normal(size=(20, 5)), labels[:, None])
    assert compute_ncsnr(rng.normal(size=(20, 5)), labels).shape == (5,)
