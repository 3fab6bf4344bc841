"""Intrinsic dimension: known answers, invariances, references (scikit-dimension, DADApy)."""
import os
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import minimize_scalar
from scipy.special import betaln

from scaleinv_utils import dimension as dm
from scaleinv_utils.exercises import check
from scaleinv_utils.neighbors import nearest_neighbors


def rotation(D, rng):
    return np.linalg.qr(rng.normal(size=(D, D)))[0]


def embed(Y, D, rng):
    """Isometric embedding of Y (n, d) in D dims: random rotation of zero-padding."""
    Z = np.zeros((Y.shape[0], D))
    Z[:, : Y.shape[1]] = Y
    return Z @ rotation(D, rng)


def cube(n, d, D, seed):
    rng = np.random.default_rng(seed)
    return embed(rng.uniform(size=(n, d)), D, rng)


def sphere(n, d, D, seed):
    """Uniform sample of the d-sphere S^d (a d-manifold in R^(d+1)) embedded in D dims."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(n, d + 1))
    return embed(Y / np.linalg.norm(Y, axis=1, keepdims=True), D, rng)


def swiss_roll(n, D, seed):
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    h = 21 * rng.uniform(size=n)
    return embed(np.column_stack([t * np.cos(t), h, t * np.sin(t)]), D, rng)


# --------------------------------------------------------------------------- known answers

@pytest.mark.parametrize("d", [2, 4])
def test_cube_recovers_dimension(d):
    X = cube(2000, d, 20, seed=d)
    prof = dm.id_profile(X, ks=[5, 10, 20], random_state=0)
    # Boundary effects bias every estimator slightly downward, more for larger d and k.
    for name in ("gride", "twonn", "mle"):
        assert_allclose(prof[name], d, rtol=0.12, err_msg=name)
    # Local PCA needs k well above d: with few neighbours, sampling spreads the eigenvalues.
    assert_allclose(dm.local_pca(X, 80, n_centers=300, random_state=0).dimension, d, atol=0.3)


@pytest.mark.parametrize("d", [2, 3])
def test_sphere_recovers_dimension(d):
    X = sphere(2000, d, 15, seed=10 + d)
    prof = dm.id_profile(X, ks=[5, 10, 20], estimators=("gride", "twonn", "mle"), random_state=0)
    for name in prof.estimators:
        assert_allclose(prof[name], d, rtol=0.1, err_msg=name)
    assert_allclose(dm.local_pca(X, 50, n_centers=300, random_state=0).dimension, d, atol=0.2)


def test_swiss_roll_is_two_dimensional():
    X = swiss_roll(2000, 10, seed=3)
    prof = dm.id_profile(X, ks=[5, 10, 20], estimators=("gride", "twonn", "mle", "lpca"),
                         random_state=0)
    for name in prof.estimators:
        assert_allclose(prof[name], 2, rtol=0.1, err_msg=name)


def test_noisy_curve_is_high_dimensional_at_small_scales_and_1d_at_large():
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 1, size=2000)
    # A gently curved line (a wide arc) in 10 dims with isotropic noise far below its length.
    curve = np.column_stack([40 * t, 3 * np.sin(np.pi * t)])
    X = embed(curve, 10, rng) + 0.05 * rng.normal(size=(2000, 10))
    prof = dm.id_profile(X, ks=[2, 20, 200, 400], estimators=("gride", "mle", "lpca_pr"),
                         lpca_centers=200, random_state=0)
    # Gride and MLE see the noise at the first neighbours, local PCA once k >> n_features.
    assert prof["gride"][0] > 5 and prof["mle"][0] > 5, prof.ids
    assert prof["lpca_pr"][1] > 3, prof.ids
    for name in prof.estimators:
        assert prof[name][-1] < 1.5, (name, prof[name])
    assert dm.dimensional_stability(prof["gride"], prof.ks, "slope") < -2


def test_participation_ratio_of_isotropic_gaussian_is_D():
    rng = np.random.default_rng(1)
    D = 30
    X = rng.normal(size=(20000, D))
    # Sampling inflates the eigenvalue spread: E[PR] ~ D / (1 + D / n).
    assert_allclose(dm.participation_ratio(X), D / (1 + D / 20000), rtol=0.01)
    assert_allclose(dm.participation_ratio(X[:, :10]), 10, rtol=0.01)
    lam = dm.eigenspectrum(X)
    assert lam.shape == (D,)
    assert_allclose(lam.sum() ** 2 / np.sum(lam ** 2), dm.participation_ratio(X))


def test_participation_ratio_uses_smaller_side_when_n_lt_D():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 400))
    lam = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2 / 49
    assert_allclose(dm.eigenspectrum(X), lam[:49], rtol=1e-8)
    assert_allclose(dm.participation_ratio(X), lam.sum() ** 2 / np.sum(lam ** 2), rtol=1e-10)


def test_planted_power_law_exponent_is_recovered():
    alpha = 1.3
    lam = np.arange(1, 201) ** -alpha
    fit = dm.powerlaw_exponent(eigenvalues=lam, fit_range=(1, 200))
    assert_allclose(fit.alpha, alpha, rtol=1e-10)
    assert fit.r2 == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(5000, 200)) * np.sqrt(lam)) @ rotation(200, rng)
    fit = dm.powerlaw_exponent(X, fit_range=(5, 60))
    assert abs(fit.alpha - alpha) < 0.08, fit
    assert fit.fit_range == (5, 60)
    assert dm.powerlaw_exponent(X).fit_range == (11, 100)


# --------------------------------------------------------------------------- invariances

def test_profile_is_invariant_to_rotation_translation_and_scaling():
    rng = np.random.default_rng(4)
    X = cube(600, 3, 12, seed=5)
    Y = 7.5 * X @ rotation(12, rng) + rng.normal(size=12) * 100
    kw = dict(ks=[4, 8, 16, 32], random_state=0, n_bootstrap=20)
    a, b = dm.id_profile(X, **kw), dm.id_profile(Y, **kw)
    for name in a.estimators:
        assert_allclose(a[name], b[name], rtol=1e-6, err_msg=name)
        assert_allclose(a.ci_low[name], b.ci_low[name], rtol=1e-6, err_msg=name)
    assert_allclose(b.radius, 7.5 * a.radius, rtol=1e-9)
    assert_allclose(dm.participation_ratio(X), dm.participation_ratio(Y), rtol=1e-8)


# --------------------------------------------------------------------------- references

def _gride_loglik(d, log_mu, n1, n2):
    """Denti et al.'s log-likelihood with (n - 1) log d, as DADApy and scikit-dimension write it."""
    mu = np.exp(log_mu)
    n = log_mu.size
    return ((n - 1) * np.log(d) + np.sum((n2 - n1 - 1) * np.log(mu ** d - 1)
                                         - ((n2 - 1) * d + 1) * log_mu - betaln(n2 - n1, n1)))


@pytest.mark.parametrize("k", [1, 3, 16])
def test_gride_maximises_its_likelihood(k):
    """Independent reference: a bounded scalar optimiser on the written-out likelihood."""
    X = cube(800, 5, 10, seed=6)
    g = nearest_neighbors(X, 2 * k)
    log_mu = np.log(g.distances[:, 2 * k - 1] / g.distances[:, k - 1])
    ref = minimize_scalar(lambda d: -_gride_loglik(d, log_mu, k, 2 * k), bounds=(0.1, 50),
                          method="bounded", options={"xatol": 1e-9}).x
    est = dm.gride(graph=g, k=k)
    assert_allclose(est.dimension, ref, rtol=1e-6)
    # stderr = 1 / sqrt(observed information): check against a numerical second derivative.
    h = 1e-4 * ref
    curv = (_gride_loglik(ref + h, log_mu, k, 2 * k) - 2 * _gride_loglik(ref, log_mu, k, 2 * k)
            + _gride_loglik(ref - h, log_mu, k, 2 * k)) / h ** 2
    # (the stderr uses n / d^2 like DADApy, the curvature (n - 1) / d^2: a 1/n difference)
    assert_allclose(est.stderr, 1 / np.sqrt(-curv), rtol=2e-3)


def test_agreement_with_scikit_dimension():
    skdim = pytest.importorskip("skdim")
    X = sphere(1200, 4, 20, seed=7)
    g = nearest_neighbors(X, 16)
    # skdim's GRIDE and TwoNN use the unbiased (n - 1) in place of n.
    assert_allclose(dm.gride(graph=g, k=4).dimension,
                    skdim.id.GRIDE(n1=4).fit(X).dimension_, rtol=1e-6)
    assert_allclose(dm.twonn(graph=g).dimension,
                    skdim.id.TwoNN(method="mle", discard_fraction=0).fit(X).dimension_, rtol=1e-6)
    for average, comb in (("mackay", "mle"), ("mean", "mean"), ("median", "median")):
        ref = skdim.id.MLE().fit(X, n_neighbors=10, comb=comb)
        ours = dm.mle(graph=g, k=10, average=average)
        assert_allclose(ours.dimension, ref.dimension_, rtol=1e-8, err_msg=average)
    assert_allclose(ours.pointwise, ref.dimension_pw_, rtol=1e-8)
    sub = X[:300]
    for method, ver in (("fraction", "ratio"), ("pr", "participation_ratio")):
        ref = skdim.id.lPCA(ver=ver, alphaRatio=0.9).fit_pw(sub, n_neighbors=20).dimension_pw_
        ours = dm.local_pca(sub, 20, fraction=0.9, method=method).pointwise
        assert_allclose(ours, ref, rtol=1e-8, err_msg=method)


def _import_dadapy():
    import importlib.util

    if importlib.util.find_spec("dadapy") is None:
        if os.environ.get("SCALEINV_REQUIRE_REFERENCES"):
            pytest.fail("dadapy is required here: install it with tests/tools/install_dadapy.sh")
        pytest.skip("dadapy is not installed (tests/tools/install_dadapy.sh installs it)")
    # dadapy 0.3.4 reads np.float_ once at import (its Cython module); NumPy 2 removed the alias.
    added = "float_" not in np.__dict__
    if added:
        np.float_ = np.float64
    try:
        import dadapy
    finally:
        if added:
            del np.float_
    return dadapy


def test_agreement_with_dadapy_gride_scaling():
    dadapy = _import_dadapy()
    X = cube(1000, 6, 30, seed=8)
    ids, errs, rs = dadapy.Data(X.copy()).return_id_scaling_gride(range_max=64)
    ours, ours_err, ks, radius = dm.gride_scaling(X, range_max=64)
    assert_allclose(ks, [1, 2, 4, 8, 16, 32])
    # DADApy bisects to 1e-7 and drops ratios above a generous outlier threshold (none here).
    assert_allclose(ours, ids, rtol=1e-5)
    assert_allclose(ours_err, errs, rtol=1e-4)
    assert_allclose(radius, rs, rtol=1e-10)


# --------------------------------------------------------------------------- profile mechanics

def test_profile_matches_single_scale_functions_and_shapes():
    X = cube(500, 3, 8, seed=9)
    ks = np.array([3, 6, 12])
    prof = dm.id_profile(X, ks=ks, lpca_centers=None, random_state=0)
    assert set(prof.estimators) == set(dm.ESTIMATORS)
    for name in prof.estimators:
        assert prof[name].shape == (3,)
    g = nearest_neighbors(X, 24)
    for s, k in enumerate(ks):
        assert_allclose(prof["gride"][s], dm.gride(graph=g, k=int(k)).dimension)
        assert_allclose(prof["twonn"][s], dm.twonn(graph=g, k=int(k)).dimension)
        assert_allclose(prof["mle"][s], dm.mle(graph=g, k=int(k)).dimension)
        assert_allclose(prof["lpca"][s], dm.local_pca(X, int(k), graph=g).dimension)
        assert_allclose(prof["lpca_pr"][s], dm.local_pca(X, int(k), method="pr").dimension)
    # The same graph passed in gives the same profile.
    again = dm.id_profile(X, ks=ks, graph=g, lpca_centers=None, random_state=0)
    assert_allclose(again["lpca"], prof["lpca"])
    assert prof.to_frame().shape == (3, 1 + len(dm.ESTIMATORS))


def test_default_grid_and_centre_subsample():
    X = cube(1100, 3, 8, seed=10)
    prof = dm.id_profile(X, estimators=("mle",), random_state=0)
    assert prof.ks[0] == 5 and prof.ks[-1] == 256 and len(prof.ks) >= 15
    ks = [5, 20, 80]
    sub = dm.id_profile(X, ks=ks, estimators=("lpca_pr",), random_state=0, lpca_centers=200)
    full = dm.id_profile(X, ks=ks, estimators=("lpca_pr",), lpca_centers=None)
    assert_allclose(sub["lpca_pr"], full["lpca_pr"], rtol=0.05)
    assert sub.lpca_centers.tolist() == [200] * 3 and full.lpca_centers.tolist() == [1100] * 3
    assert np.all(full.stderr["lpca_pr"] == 0)


def mixed_dimensions(seed, half=3000):
    # Half the points on a 2-D sheet, half in a 9-D blob: pointwise local PCA varies a lot.
    rng = np.random.default_rng(seed)
    sheet = np.hstack([rng.uniform(size=(half, 2)), np.zeros((half, 8))])
    blob = np.hstack([rng.uniform(size=(half, 9)), np.zeros((half, 1))]) + 3.0
    return np.vstack([sheet, blob]) @ rotation(10, rng)


def test_adaptive_centres_meet_their_precision_target():
    X = mixed_dimensions(0)
    ks = [10, 40]
    g = nearest_neighbors(X, 40)
    prof = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=2000, lpca_rtol=0.01,
                         random_state=0)
    exact = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=None)
    for name in ("lpca", "lpca_pr"):
        done = prof.lpca_centers >= 2000
        assert np.all((prof.stderr[name] <= 0.01 * prof[name]) | done)
        assert np.all(np.abs(prof[name] - exact[name]) <= 4 * prof.stderr[name])
    # The two populations differ by ~7 dimensions: 200 centres cannot reach 1%.
    assert np.all(prof.lpca_centers > 200)
    # A homogeneous cube reaches the target at the larger scale in the first round.
    cube_prof = dm.id_profile(cube(6000, 3, 10, seed=1), ks, ("lpca_pr",), lpca_rtol=0.01, random_state=0)
    assert cube_prof.lpca_centers[-1] == 200
    # lpca_rtol=0 takes exactly lpca_centers everywhere.
    fixed = dm.id_profile(X, ks, ("lpca_pr",), graph=g, lpca_centers=300, lpca_rtol=0, random_state=0)
    assert fixed.lpca_centers.tolist() == [300, 300]


def test_reported_standard_error_matches_the_spread_over_seeds():
    X = mixed_dimensions(1)
    g = nearest_neighbors(X, 20)
    runs = [dm.id_profile(X, [20], ("lpca_pr",), graph=g, lpca_centers=300, lpca_rtol=0, random_state=seed)
            for seed in range(60)]
    means = np.array([r["lpca_pr"][0] for r in runs])
    reported = np.mean([r.stderr["lpca_pr"][0] for r in runs])
    assert 0.75 < means.std(ddof=1) / reported < 1.33


def test_adaptive_means_are_unbiased_and_their_standard_errors_honest():
    # The default path: centres per scale chosen from a first round, then added blind.
    X = mixed_dimensions(0, half=1500)
    g = nearest_neighbors(X, 40)
    ks = [10, 40]
    exact = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=None)
    z = []
    for seed in range(40):
        p = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=1000, lpca_rtol=0.02,
                          random_state=seed)
        assert np.all(p.lpca_centers > 200)  # this population needs more than the first round
        z += [(p[name] - exact[name]) / p.stderr[name] for name in ("lpca", "lpca_pr")]
    z = np.concatenate(z)
    assert abs(z.mean()) < 0.4 and 0.6 < z.std() < 1.3 and np.mean(np.abs(z) > 2) <= 0.1


def test_centre_parameters_are_checked():
    X = cube(500, 3, 6, seed=2)
    with pytest.raises(ValueError, match="lpca_rtol"):
        dm.id_profile(X, [5], ("lpca",), lpca_centers=100, lpca_rtol=-1)
    with pytest.raises(ValueError, match="lpca_centers=0"):
        dm.id_profile(X, [5], ("lpca",), lpca_centers=0)
    with pytest.raises(ValueError, match="lpca_centers=0"):
        dm.id_profile(X, [5], ("lpca",), lpca_centers=0, lpca_rtol=0)
    one = dm.id_profile(X, [5], ("lpca",), lpca_centers=1, lpca_rtol=0, random_state=0)
    assert one.lpca_centers.tolist() == [1] and np.isnan(one.stderr["lpca"][0])


def test_bootstrap_intervals_cover_and_are_reproducible():
    X = cube(800, 4, 10, seed=11)
    a = dm.id_profile(X, ks=[5, 20], n_bootstrap=50, random_state=1)
    b = dm.id_profile(X, ks=[5, 20], n_bootstrap=50, random_state=1)
    for name in a.estimators:
        assert np.all(a.ci_low[name] <= a[name] + 1e-9) and np.all(a[name] <= a.ci_high[name] + 1e-9)
        assert_allclose(a.ci_low[name], b.ci_low[name])
    est = dm.mle(X, 10, n_bootstrap=100, random_state=0)
    assert est.ci[0] < est.dimension < est.ci[1]
    est = dm.gride(X, 4, n_bootstrap=100, random_state=0)
    # Bootstrap and Fisher intervals agree roughly for a smooth likelihood.
    assert_allclose(est.ci[1] - est.ci[0], 2 * 1.96 * est.stderr, rtol=0.35)


def test_mle_averaging_mackay_is_below_plain_mean():
    X = cube(1000, 5, 10, seed=12)
    mean = dm.mle(X, 5, average="mean").dimension
    mackay = dm.mle(X, 5).dimension
    assert mackay < mean  # the harmonic mean never exceeds the arithmetic mean
    plain = dm.mle(X, 5).pointwise
    assert plain.shape == (1000,)
    assert_allclose(dm.mle(X, 5, unbiased=True).pointwise, plain * 3 / 4)  # (k-2)/(k-1)


# --------------------------------------------------------------------------- stability

def test_dimensional_stability_scores():
    ks = np.array([5, 10, 20, 40, 80])
    assert dm.dimensional_stability(np.full(5, 3.0), ks) == 0.0
    ids = 10 - 2 * np.log10(ks)
    assert_allclose(dm.dimensional_stability(ids, ks, "slope"), -2)
    assert_allclose(dm.dimensional_stability(ids, ks, "relative_slope"), -2 / ids.mean())
    # Equal log spacing: trapezoid weights are 1/8, 1/4, 1/4, 1/4, 1/8.
    w = np.array([1, 2, 2, 2, 1]) / 8
    m = np.sum(w * ids)
    assert_allclose(dm.dimensional_stability(ids, ks), np.sqrt(np.sum(w * (ids - m) ** 2)) / m)
    assert_allclose(dm.dimensional_stability(ids, ks, "range"), np.ptp(ids) / m)
    with pytest.raises(ValueError, match="method must be one of"):
        dm.dimensional_stability(ids, ks, "bogus")
    with pytest.raises(ValueError, match="same shape"):
        dm.dimensional_stability(ids[:3], ks)
    with pytest.raises(ValueError, match="strictly increasing"):
        dm.dimensional_stability(ids, ks[::-1])


# --------------------------------------------------------------------------- validation

def test_duplicates_are_dropped_with_a_warning():
    X = cube(300, 2, 5, seed=13)
    Xd = np.vstack([X, X[:10]])
    with pytest.warns(UserWarning, match="10 duplicate rows"):
        prof = dm.id_profile(Xd, ks=[4, 8], random_state=0)
    assert prof.n_duplicates == 10 and prof.n_samples == 300
    assert_allclose(prof["gride"], dm.id_profile(X, ks=[4, 8], random_state=0)["gride"])
    with pytest.warns(UserWarning, match="duplicate"):
        dm.twonn(Xd)
    with pytest.raises(ValueError, match="distance 0"):
        dm.gride(graph=nearest_neighbors(Xd, 4), k=2)


def test_clear_errors():
    X = cube(50, 2, 4, seed=14)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dm.id_profile(bad, ks=[4])
    with pytest.raises(ValueError, match="constant"):
        dm.id_profile(np.ones((20, 3)), ks=[2])
    with pytest.raises(ValueError, match="constant"):
        dm.participation_ratio(np.ones((20, 3)))
    with pytest.raises(ValueError, match="smaller than n_samples=50"):
        dm.id_profile(X, ks=[30])  # Gride needs rank 60
    with pytest.raises(ValueError, match="must be smaller than n_samples"):
        dm.mle(X, k=50)
    with pytest.raises(ValueError, match="Unknown estimators"):
        dm.id_profile(X, ks=[4], estimators=("gride", "danco"))
    with pytest.raises(ValueError, match="at least 2"):
        dm.mle(X, k=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        dm.id_profile(X, ks=[8, 4])
    with pytest.raises(ValueError, match="k_max=4"):
        dm.gride(graph=nearest_neighbors(X, 4), k=4)
    with pytest.raises(ValueError, match="n_samples=49"):
        dm.id_profile(X[:49], ks=[4], graph=nearest_neighbors(X, 8))
    with pytest.raises(ValueError, match="fit_range"):
        dm.powerlaw_exponent(X, fit_range=(3, 40))
    with pytest.raises(ValueError, match="exactly one"):
        dm.powerlaw_exponent()
    with pytest.raises(ValueError, match="average must be"):
        dm.mle(X, 5, average="geometric")
    with pytest.raises(ValueError, match="method must be"):
        dm.local_pca(X, 5, method="kaiser")
    with pytest.raises(TypeError, match="integer"):
        dm.id_profile(X, ks=[4.5])


# --------------------------------------------------------------------------- exercises

def test_exercise_checks_accept_right_and_reject_wrong_answers():
    X = cube(400, 3, 6, seed=15)
    g = nearest_neighbors(X, 2)
    log_mu = np.log(g.distances[:, 1] / g.distances[:, 0])
    right = len(X) / log_mu.sum()
    assert check("dimension.ex1", right, verbose=False, X=X)
    assert not check("dimension.ex1", right / 2, verbose=False, X=X)
    assert "1/d" in check("dimension.ex1", 1 / right, verbose=False, X=X).message
    assert not check("dimension.ex1", ..., verbose=False, X=X)

    lam = np.array([4.0, 2.0, 1.0, 0.5])
    assert check("dimension.ex2", lam.sum() ** 2 / (lam ** 2).sum(), verbose=False, eigenvalues=lam)
    res = check("dimension.ex2", (lam ** 2).sum() / lam.sum() ** 2, verbose=False, eigenvalues=lam)
    assert not res and "inverse" in res.message

    ks = np.array([5, 10, 20, 40])
    ids = np.array([6.0, 5.0, 4.5, 4.0])
    assert check("dimension.ex3", dm.dimensional_stability(ids, ks), verbose=False, ids=ids, ks=ks)
    res = check("dimension.ex3", np.std(ids) / np.mean(ids), verbose=False, ids=ids, ks=ks)
    assert not res and "log-k" in res.message


def test_local_pca_leaves_the_blas_thread_count_as_it_found_it():
    # threadpoolctl limits are process-wide: set inside worker threads, they leaked.
    from threadpoolctl import threadpool_info

    def blas_threads():
        return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    before = blas_threads()
    X = cube(600, 4, 12, seed=3)
    for _ in range(5):
        dm.local_pca(X, 30)
        dm.id_profile(X, [5, 30], ("lpca",), random_state=0)
    assert blas_threads() == before


# --------------------------------------------------------------------------- calibrated stability
@pytest.mark.parametrize("spectrum", ["isotropic", "anisotropic"])
def test_calibrated_stability_is_zero_for_gaussian_noise(spectrum):
    # A Gaussian's ID profile changes across scales (its raw CV is far from 0), by an amount its
    # covariance fixes; against surrogates with that covariance it is 0 on average over seeds.
    scale = np.ones(8) if spectrum == "isotropic" else np.arange(1, 9) ** -1.0
    res = [dm.calibrated_stability(np.random.default_rng(s).normal(size=(120, 8)) * scale,
                                   [4, 8, 16], n_null=3, random_state=1000 + s) for s in range(20)]
    cal = np.array([r.calibrated for r in res])
    assert np.mean([r.raw for r in res]) > 0.03
    assert abs(cal.mean()) < 2 * cal.std(ddof=1) / np.sqrt(cal.size)


def test_calibrated_stability_separates_self_similar_and_broken_structure():
    rng = np.random.default_rng(5)
    ks = [4, 8, 16, 32]
    # a Brownian path is statistically self-similar: flatter ID profile than its Gaussian
    walk = dm.calibrated_stability(np.cumsum(rng.normal(size=(256, 20)), axis=0), ks, n_null=4,
                                   random_state=0)
    # a plane at coarse scales, 10-D noise at fine scales: a break, less stable than its Gaussian
    plane = np.c_[rng.uniform(size=(256, 2)) * 10, rng.normal(size=(256, 10)) * 0.3]
    broken = dm.calibrated_stability(plane, ks, n_null=4, random_state=0)
    assert walk.calibrated < -3 * walk.null_sd and walk.p_value == pytest.approx(1 / 5)
    assert broken.calibrated > 3 * broken.null_sd
    assert walk.null_ids.shape == (4, 4) and walk.raw == pytest.approx(
        dm.dimensional_stability(walk.ids, walk.ks))
    # one calibration rule: the score is stats.calibrate of the raw score against the null's scores
    from scaleinv_utils import stats
    null = np.array([dm.dimensional_stability(v, walk.ks) for v in walk.null_ids])
    expected = stats.calibrate(walk.raw, null, alternative="less")
    assert isinstance(walk.score, stats.CalibratedScore)
    np.testing.assert_array_equal(walk.null, expected.null)
    assert (walk.calibrated, walk.z, walk.p_value) == (expected.calibrated, expected.z, expected.p_value)
    with pytest.raises(ValueError, match="n_null must be at least 1, got 0"):
        dm.calibrated_stability(plane, ks, n_null=0)
    with pytest.raises(ValueError, match="method must be one of"):
        dm.calibrated_stability(plane, ks, method="iqr")
