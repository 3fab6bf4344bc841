"""The package's one set of statistics against scipy, closed forms and their invariances."""
import numpy as np
import pytest
from scipy import stats as sps

from scaleinv_utils import stats as st

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as hs  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

FAST = settings(max_examples=40, deadline=None)


def _finite_vectors(min_size=4, max_size=30):
    """Pairs of equal-length vectors on a grid of 0.5 (ties happen; no values lost to rounding)."""
    elems = hs.integers(-2000, 2000).map(lambda i: i / 2.0)
    return hs.integers(min_size, max_size).flatmap(
        lambda n: hs.tuples(hnp.arrays(np.float64, n, elements=elems),
                            hnp.arrays(np.float64, n, elements=elems)))


def _spread(v):
    return np.ptp(v) > 1e-3 * max(1.0, np.abs(v).max())


# --------------------------------------------------------------------------- correlations
def test_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.5 * x + rng.normal(size=50)
    assert st.pearson(x, y) == pytest.approx(sps.pearsonr(x, y)[0], abs=1e-12)
    assert st.spearman(x, y) == pytest.approx(sps.spearmanr(x, y)[0], abs=1e-12)
    yt = np.round(y)  # ties: average ranks
    assert st.spearman(x, yt) == pytest.approx(sps.spearmanr(x, yt)[0], abs=1e-12)
    assert isinstance(st.pearson(x, y), float)


def test_pearson_per_column_and_broadcast():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    Y = X + rng.normal(size=(40, 5))
    ref = [sps.pearsonr(X[:, j], Y[:, j])[0] for j in range(5)]
    np.testing.assert_allclose(st.pearson(X, Y), ref, atol=1e-12)
    ref_s = [sps.spearmanr(X[:, j], Y[:, j])[0] for j in range(5)]
    np.testing.assert_allclose(st.spearman(X, Y), ref_s, atol=1e-12)
    # x against every row of Y along the last axis
    x = X[:, 0]
    rows = Y.T
    np.testing.assert_allclose(st.pearson(x, rows, axis=-1),
                               [sps.pearsonr(x, r)[0] for r in rows], atol=1e-12)
    np.testing.assert_allclose(st.spearman(x, rows, axis=-1),
                               [sps.spearmanr(x, r)[0] for r in rows], atol=1e-12)


def test_pearson_constant_and_bad_input():
    x = np.arange(5.0)
    assert np.isnan(st.pearson(x, np.full(5, 3.0)))
    assert np.isnan(st.pearson(x, np.full(5, 0.1) * 3))  # constant up to rounding
    with pytest.raises(ValueError, match="y is constant"):
        st.pearson(x, np.full(5, 3.0), constant="raise")
    with pytest.raises(ValueError, match="at least 2 observations"):
        st.pearson([1.0], [2.0])
    with pytest.raises(ValueError, match="broadcastable"):
        st.pearson(np.ones(3), np.ones(4))
    with pytest.raises(TypeError, match="dtype"):
        st.pearson(np.array(["a", "b", "c"]), x[:3])
    with pytest.raises(ValueError, match="NaN"):
        st.spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])



def test_pearson_bootstrap_and_permuted_equal_a_loop_of_pearson():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 7))
    y = 0.5 * x + rng.normal(size=(40, 7))
    y[:, 3] = 2.5                                  # a constant column: NaN, like pearson
    rows = rng.integers(0, 40, size=(25, 40))
    loop = np.array([st.pearson(x[b], y[b], axis=0) for b in rows])
    np.testing.assert_allclose(st.pearson_bootstrap(x, y, rows), loop, atol=1e-12, equal_nan=True)
    perms = np.array([rng.permutation(40) for _ in range(25)])
    loop = np.array([st.pearson(x, y[s], axis=0) for s in perms])
    got = st.pearson_permuted(x, y, perms, chunk_size=4)
    np.testing.assert_allclose(got, loop, atol=1e-12, equal_nan=True)
    assert np.isnan(got[:, 3]).all()
    # the identity resample is the plain correlation
    ident = np.arange(40)[None]
    np.testing.assert_allclose(st.pearson_bootstrap(x, y, ident)[0], st.pearson(x, y), atol=1e-12,
                               equal_nan=True)
    np.testing.assert_allclose(st.pearson_bootstrap(x[:, 0], y[:, 0], rows)[:, 0],
                               [st.pearson(x[b, 0], y[b, 0]) for b in rows], atol=1e-12)


def test_pearson_resampled_bad_input():
    x = np.zeros((10, 2)) + np.arange(10)[:, None]
    with pytest.raises(ValueError, match="rows must be an integer array of shape"):
        st.pearson_bootstrap(x, x, np.zeros((3, 9), int))
    with pytest.raises(ValueError, match=r"row indices in \[0, 9\]"):
        st.pearson_bootstrap(x, x, np.full((3, 10), 10))
    with pytest.raises(ValueError, match="one permutation of range"):
        st.pearson_permuted(x, x, np.zeros((2, 10), int))
    with pytest.raises(ValueError, match="same shape"):
        st.pearson_permuted(x, x[:, :1], np.arange(10)[None])

@FAST
@given(_finite_vectors())
def test_correlations_bounded_and_symmetric(xy):
    x, y = xy
    for f in (st.pearson, st.spearman):
        r = f(x, y)
        if np.isnan(r):
            continue
        assert -1.0 <= r <= 1.0
        assert f(y, x) == pytest.approx(r, abs=1e-12)
        assert f(x, -y) == pytest.approx(-r, abs=1e-12)


@FAST
@given(_finite_vectors(), hs.floats(0.01, 100), hs.floats(-100, 100))
def test_spearman_invariant_under_monotone_maps(xy, a, b):
    x, y = xy
    if not (_spread(x) and _spread(y)):
        return
    r = st.spearman(x, y)
    # strictly increasing maps keep the order, so the ranks and rho are unchanged
    assert st.spearman(np.exp(x / 1e3), a * y + b) == pytest.approx(r, abs=1e-9)
    assert st.spearman(np.arctan(x), y ** 3) == pytest.approx(r, abs=1e-9)
    assert st.pearson(a * x + b, y) == pytest.approx(st.pearson(x, y), abs=1e-9)


# --------------------------------------------------------------------------- partial correlation
def test_partial_correlation_one_covariate_closed_form():
    rng = np.random.default_rng(2)
    z = rng.normal(size=200)
    x = z + rng.normal(size=200)
    y = -z + 0.3 * x + rng.normal(size=200)
    rxy, rxz, ryz = sps.pearsonr(x, y)[0], sps.pearsonr(x, z)[0], sps.pearsonr(y, z)[0]
    closed = (rxy - rxz * ryz) / np.sqrt((1 - rxz ** 2) * (1 - ryz ** 2))
    assert st.partial_correlation(x, y, z) == pytest.approx(closed, abs=1e-12)
    assert st.partial_correlation(x, y, z[:, None]) == pytest.approx(closed, abs=1e-12)
    # Spearman: the same formula on ranks
    R = [sps.rankdata(v) for v in (x, y, z)]
    sxy, sxz, syz = (sps.pearsonr(R[0], R[1])[0], sps.pearsonr(R[0], R[2])[0],
                     sps.pearsonr(R[1], R[2])[0])
    closed_s = (sxy - sxz * syz) / np.sqrt((1 - sxz ** 2) * (1 - syz ** 2))
    assert st.partial_correlation(x, y, z, method="spearman") == pytest.approx(closed_s, abs=1e-12)


def test_partial_correlation_two_covariates_ols_residuals():
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(100, 2))
    x = Z @ [1.0, -2.0] + rng.normal(size=100) + 5
    y = Z @ [0.5, 1.0] + 0.5 * x + rng.normal(size=100)
    # independent route: residuals from the normal equations
    D = np.column_stack([np.ones(100), Z])
    H = D @ np.linalg.solve(D.T @ D, D.T)
    rx, ry = x - H @ x, y - H @ y
    ref = rx @ ry / np.sqrt((rx @ rx) * (ry @ ry))
    assert st.partial_correlation(x, y, Z) == pytest.approx(ref, abs=1e-10)
    # a covariate that explains both completely removes a spurious correlation
    x2 = Z[:, 0] + 0.01 * rng.normal(size=100)
    y2 = Z[:, 0] + 0.01 * rng.normal(size=100)
    assert st.pearson(x2, y2) > 0.99
    assert abs(st.partial_correlation(x2, y2, Z[:, 0])) < 0.3


def test_partial_correlation_errors():
    x = np.arange(6.0)
    with pytest.raises(ValueError, match="method must be"):
        st.partial_correlation(x, x, x, method="kendall")
    with pytest.raises(ValueError, match="at least 5 samples"):
        st.partial_correlation(x[:4], x[:4], np.ones((4, 2)))
    with pytest.raises(ValueError, match="same n_samples"):
        st.partial_correlation(x, x, x[:5])


# --------------------------------------------------------------------------- permutation p-values
def test_permutation_pvalue_rule():
    null = np.array([0.5, 1.0, 2.0, 3.0])
    assert st.permutation_pvalue(2.0, null) == pytest.approx(3 / 5)  # tie counts
    assert st.permutation_pvalue(2.0, null, "less") == pytest.approx(4 / 5)
    assert st.permutation_pvalue(10.0, null) == pytest.approx(1 / 5)  # never 0
    assert st.permutation_pvalue(-2.5, null, "two-sided") == pytest.approx(2 / 5)
    # broadcast: one p per test, permutations on axis 0
    null2 = np.arange(12.0).reshape(4, 3)  # columns 0,3,6,9 / 1,4,7,10 / 2,5,8,11
    np.testing.assert_allclose(st.permutation_pvalue([3.0, 4.5, 20.0], null2), [4 / 5, 3 / 5, 1 / 5])
    np.testing.assert_allclose(st.permutation_pvalue(4.0, null2), [3 / 5, 4 / 5, 4 / 5])
    # NaN permutations are dropped; NaN observed gives NaN
    assert st.permutation_pvalue(1.0, [np.nan, 2.0, 0.0]) == pytest.approx(2 / 3)
    assert np.isnan(st.permutation_pvalue(np.nan, null))
    with pytest.raises(ValueError, match="alternative must be"):
        st.permutation_pvalue(1.0, null, "both")
    with pytest.raises(ValueError, match="at least one permutation"):
        st.permutation_pvalue(1.0, [])
    with pytest.raises(ValueError, match="does not broadcast"):
        st.permutation_pvalue(np.ones(2), np.ones((5, 3)))


def test_permutation_pvalue_matches_scipy_permutation_test():
    rng = np.random.default_rng(4)
    x = rng.normal(size=12)
    y = 0.4 * x + rng.normal(size=12)
    obs = st.pearson(x, y)
    perms = np.argsort(rng.random((3000, 12)), axis=1)
    null = st.pearson(x, y[perms], axis=-1)
    p = st.permutation_pvalue(obs, null, "two-sided")
    ref = sps.permutation_test((y,), lambda v, axis: sps.pearsonr(x, v, axis=axis)[0],
                               permutation_type="pairings", vectorized=True, n_resamples=3000, alternative="two-sided", random_state=0).pvalue
    assert p == pytest.approx(ref, abs=0.03)  # two Monte Carlo estimates of the same p


def test_permutation_pvalue_uniform_under_null():
    """Under H0 the rule gives p <= a with probability <= a (exactness)."""
    rng = np.random.default_rng(5)
    draws = rng.normal(size=(19, 4000))  # 19 nulls per test
    obs = rng.normal(size=4000)  # exchangeable with them under H0
    ps = st.permutation_pvalue(obs, draws)
    # p takes the values 1/20 ... 20/20, each with probability 1/20
    counts = np.bincount(np.round(ps * 20).astype(int), minlength=21)[1:]
    assert counts.min() > 0
    assert sps.chisquare(counts).pvalue > 0.001
    assert np.mean(ps <= 0.05) == pytest.approx(0.05, abs=3 * np.sqrt(0.05 * 0.95 / 4000))


# --------------------------------------------------------------------------- intervals and bootstrap
def test_percentile_interval():
    s = np.arange(101.0)
    lo, hi = st.percentile_interval(s, 0.9)
    assert (lo, hi) == (pytest.approx(5.0), pytest.approx(95.0))
    S = np.column_stack([s, 2 * s, np.full(101, np.nan)])
    lo, hi = st.percentile_interval(S, 0.9)
    np.testing.assert_allclose(lo[:2], [5.0, 10.0])
    assert np.isnan(lo[2]) and np.isnan(hi[2])
    lo, hi = st.percentile_interval(np.r_[s, np.nan], 0.9)  # NaN dropped
    assert lo == pytest.approx(5.0)
    with pytest.raises(ValueError, match="level must lie"):
        st.percentile_interval(s, 95)


def test_bootstrap_mean_interval_and_joint_rows():
    rng = np.random.default_rng(6)
    x = rng.normal(2.0, 1.0, size=400)
    res = st.bootstrap(np.mean, x, n_resamples=2000, random_state=0)
    assert res.estimate == pytest.approx(x.mean())
    se = x.std(ddof=1) / np.sqrt(400)
    assert res.low == pytest.approx(x.mean() - 1.96 * se, abs=0.4 * se)
    assert res.high == pytest.approx(x.mean() + 1.96 * se, abs=0.4 * se)
    assert res.samples.shape == (2000,)
    # rows resampled jointly: y = x exactly stays perfectly correlated in every resample
    res2 = st.bootstrap(st.pearson, x, 3 * x + 1, n_resamples=50, random_state=1)
    np.testing.assert_allclose(res2.samples, 1.0)
    # vectorized evaluation gives the same resamples
    a = st.bootstrap(np.mean, x, n_resamples=100, random_state=2)
    b = st.bootstrap(lambda v: v.mean(axis=1), x, n_resamples=100, random_state=2, vectorized=True)
    np.testing.assert_allclose(a.samples, b.samples)
    assert "CI" in str(a)
    with pytest.raises(ValueError, match="same n_samples"):
        st.bootstrap(st.pearson, x, x[:10])
    with pytest.raises(ValueError, match="n_resamples"):
        st.bootstrap(np.mean, x, n_resamples=0)


# --------------------------------------------------------------------------- FDR
def test_fdr_bh_matches_scipy():
    rng = np.random.default_rng(7)
    p = np.concatenate([rng.uniform(size=80), rng.uniform(0, 1e-3, size=20)])
    np.testing.assert_allclose(st.fdr_bh(p), sps.false_discovery_control(p), atol=1e-14)
    P = rng.uniform(size=(3, 50)) ** 2
    np.testing.assert_allclose(st.fdr_bh(P, axis=1), sps.false_discovery_control(P, axis=1),
                               atol=1e-14)
    np.testing.assert_allclose(st.fdr_bh(P.T, axis=0), sps.false_discovery_control(P.T, axis=0),
                               atol=1e-14)
    q = st.fdr_bh(np.r_[p[:10], np.nan])
    np.testing.assert_allclose(q[:10], sps.false_discovery_control(p[:10]), atol=1e-14)
    assert np.isnan(q[10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.fdr_bh([0.1, 1.2])


@FAST
@given(hnp.arrays(np.float64, hs.integers(1, 40), elements=hs.floats(0, 1)))
def test_fdr_bh_properties(p):
    q = st.fdr_bh(p)
    assert q.shape == p.shape
    assert np.all(q >= p - 1e-15) and np.all(q <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-15)  # monotone in p


# --------------------------------------------------------------------------- covariance-matched null
def test_gaussian_surrogate_keeps_mean_and_covariance_exactly():
    rng = np.random.default_rng(8)
    X = rng.exponential(size=(60, 5)) @ rng.normal(size=(5, 8)) + 3.0  # rank 5 in 8-D, not Gaussian
    D = st.gaussian_surrogate(X, 3, random_state=0)
    assert D.shape == (3, 60, 8)
    for Z in D:
        np.testing.assert_allclose(Z.mean(axis=0), X.mean(axis=0), atol=1e-10)
        np.testing.assert_allclose(np.cov(Z.T), np.cov(X.T), atol=1e-9)
    assert not np.allclose(D[0], D[1])
    np.testing.assert_array_equal(st.gaussian_surrogate(X, 2, random_state=1),
                                  st.gaussian_surrogate(X, 2, random_state=1))
    # the points of a draw look Gaussian: no skew left from the exponential source
    big = st.gaussian_surrogate(rng.exponential(size=(2000, 1)), 1, random_state=0)[0, :, 0]
    assert abs(sps.skew(big)) < 0.2
    with pytest.raises(ValueError, match="n_draws must be at least 1"):
        st.gaussian_surrogate(X, 0)


def test_calibrate_summary():
    c = st.calibrate(2.0, [0.0, 1.0, 2.0, np.nan], alternative="greater")
    assert c.null_mean == pytest.approx(1.0) and c.null_sd == pytest.approx(1.0)
    assert c.calibrated == pytest.approx(1.0) and c.z == pytest.approx(1.0)
    assert c.p_value == pytest.approx(2 / 4)
    assert "calibrated +1" in str(c)
    with pytest.raises(ValueError, match="1-D array of null scores"):
        st.calibrate(1.0, [])


# --------------------------------------------------------------------------- verdicts
def test_verdict_three_outcomes_and_errors():
    from scaleinv_utils.stats import verdict
    assert verdict(0.3, 0.1, 0.5, 0.01).verdict == "supports"
    assert verdict(0.3, 0.1, 0.5, 0.2).verdict == "inconclusive"  # p disagrees
    assert verdict(-0.3, -0.5, -0.1).verdict == "contradicts"
    assert verdict(0.1, -0.1, 0.3).verdict == "inconclusive"
    assert verdict(-0.3, -0.5, -0.1, direction="less").verdict == "supports"
    assert verdict(-0.3, -0.5, -0.1, direction="less").code == 1
    assert verdict(0.3, 0.1, 0.5, direction="less").code == -1
    assert verdict(0.1, -0.1, 0.3).code == 0
    v = verdict(2.0, 1.5, 2.5, 0.001, null_value=1.0, claim="ratio above 1")
    assert v.verdict == "supports" and str(v).startswith("ratio above 1: supports (estimate 2")
    with pytest.raises(ValueError, match="low <= high"):
        verdict(0, 1, -1)
    with pytest.raises(ValueError, match="direction must be"):
        verdict(0, -1, 1, direction="up")
    with pytest.raises(ValueError, match="finite"):
        verdict(np.nan, -1, 1)
    with pytest.raises(ValueError, match=r"pvalue must lie in \[0, 1\]"):
        verdict(0, -1, 1, 1.5)


def test_verdict_asks_the_same_evidence_of_both_directions():
    """A two-sided p-value must pass alpha for a contradiction as for support (A1's ID CV,
    mid-level, printed 'contradicts' at q 0.084); a one-sided p tests the claimed direction
    only, so there the interval alone decides against the claim, and the verdict says so."""
    from scaleinv_utils.stats import verdict
    assert verdict(-0.3, -0.5, -0.1, 0.08).verdict == "inconclusive"      # two-sided, q > alpha
    assert verdict(-0.3, -0.5, -0.1, 0.01).verdict == "contradicts"
    assert verdict(0.37, 0.03, 0.65, 0.084, direction="less").verdict == "inconclusive"
    assert verdict(0.3, 0.1, 0.5, 0.2).verdict == verdict(-0.3, -0.5, -0.1, 0.2).verdict
    # one-sided in the claimed direction: p is ~1 when the estimate is opposite
    one = verdict(-0.3, -0.5, -0.1, 1.0, sided="one-sided", p_label="q")
    assert one.verdict == "contradicts" and "q = 1 (one-sided, greater)" in str(one)
    assert verdict(0.3, 0.1, 0.5, 0.2, sided="one-sided").verdict == "inconclusive"
    assert verdict(0.3, 0.1, 0.5, 0.01, sided="one-sided").verdict == "supports"
    assert "one-sided" not in str(verdict(0.3, 0.1, 0.5, 0.01))
    with pytest.raises(ValueError, match="sided must be 'two-sided' or 'one-sided'"):
        verdict(0.3, 0.1, 0.5, 0.01, sided="greater")


def test_verdict_names_a_corrected_p_value_q():
    # a BH q-value printed as "p" reads as the raw p-value in the table beside it
    from scaleinv_utils.stats import verdict
    assert ", p = 0.01;" in str(verdict(0.3, 0.1, 0.5, 0.01))
    assert ", q = 0.016;" in str(verdict(0.3, 0.1, 0.5, 0.016, p_label="q"))
    assert "p =" not in str(verdict(0.3, 0.1, 0.5, 0.016, p_label="q"))
    with pytest.raises(ValueError, match="p_label must be 'p' or 'q'"):
        verdict(0.3, 0.1, 0.5, 0.01, p_label="fdr")


def test_across_models_verdict_labels_an_override_as_q():
    import pandas as pd

    from scaleinv_utils.alignment import across_models
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    table = pd.DataFrame({"model": [f"m{i}" for i in range(12)], "subject": 1, "x": x,
                          "y": x + 0.3 * rng.normal(size=12)})
    res = across_models(table, "x", "y", covariates=(), n_permutations=99, n_bootstrap=99,
                        random_state=0)
    assert ", p = " in str(res.verdict())
    assert ", q = 0.02;" in str(res.verdict(pvalue=0.02))


def test_verdict_prints_an_interval_whose_ends_differ():
    """[1.078, 1.085] printed to 3 digits read [1.08, 1.08] (chapter 7's B2 line)."""
    v = st.verdict(1.0813, 1.078, 1.085, 0.005, null_value=1.0)
    assert "estimate 1.081, interval [1.078, 1.085]" in str(v)
    assert "estimate 0.61, interval [0.5, 0.7]" in str(st.verdict(0.61, 0.5, 0.7, 0.01))
    # large slopes print whole, not as -2.23e+04
    assert "interval [-22347, 1550]" in str(st.verdict(-105.0, -22347.2, 1550.4, 0.9))
    # equal numbers stay equal; the search stops at max_digits
    assert st._distinct_numbers([0.5, 0.5, 0.7]) == ["0.5", "0.5", "0.7"]
    assert st._distinct_numbers([1.0, 1.0 + 1e-12]) == ["1", "1"]
