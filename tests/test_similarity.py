"""Similarity measures against analytic answers, rsatoolbox and their invariances."""
import numpy as np
import pytest
from scipy.stats import kstest, special_ortho_group

from scaleinv_utils import similarity as sm
from scaleinv_utils.neighbors import nearest_neighbors


def _gauss(n, p, seed):
    return np.random.default_rng(seed).normal(size=(n, p))


# ---------------------------------------------------------------------------
# RDMs and RSA

@pytest.mark.parametrize("metric", ["correlation", "sqeuclidean"])
def test_rdm_matches_rsatoolbox(metric):
    rsd = pytest.importorskip("rsatoolbox.data")
    rsr = pytest.importorskip("rsatoolbox.rdm")
    X = _gauss(40, 12, 0)
    ref = rsr.calc_rdm(rsd.Dataset(X), method="correlation" if metric == "correlation"
                       else "euclidean").get_matrices()[0]
    ours = sm.rdm(X, metric)
    if metric == "sqeuclidean":
        ours = ours / X.shape[1]  # rsatoolbox's "euclidean" is squared distance / n_features
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_rsa_matches_rsatoolbox_spearman():
    rsd = pytest.importorskip("rsatoolbox.data")
    rsr = pytest.importorskip("rsatoolbox.rdm")
    X = _gauss(30, 10, 1)
    Y = X[:, :6] + 0.8 * _gauss(30, 6, 2)
    r1 = rsr.calc_rdm(rsd.Dataset(X), method="correlation")
    r2 = rsr.calc_rdm(rsd.Dataset(Y), method="correlation")
    ref = rsr.compare(r1, r2, method="spearman")[0, 0]
    assert sm.rsa(X, Y) == pytest.approx(ref, abs=1e-10)


def test_euclidean_rdm_is_pairwise_distance():
    from scipy.spatial.distance import cdist
    X = _gauss(25, 7, 3) * 100 + 1e3  # an offset must not cost precision
    np.testing.assert_allclose(sm.rdm(X, "euclidean"), cdist(X, X), atol=1e-8)
    from scipy.spatial.distance import pdist
    np.testing.assert_allclose(sm.upper_triangle(sm.rdm(X, "euclidean")), pdist(X), atol=1e-8)


def test_rdm_errors():
    X = _gauss(10, 4, 0)
    with pytest.raises(ValueError, match="metric must be one of"):
        sm.rdm(X, "manhattan")
    X[3] = 1.0
    with pytest.raises(ValueError, match="constant rows"):
        sm.rdm(X, "correlation")
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sm.rdm(X, "euclidean")
    with pytest.raises(ValueError, match="same stimuli"):
        sm.compare_rdms(np.zeros((5, 5)), np.zeros((6, 6)))


# ---------------------------------------------------------------------------
# CKA and HSIC

def test_linear_cka_invariances():
    X = _gauss(200, 8, 4)
    Q = special_ortho_group.rvs(8, random_state=5)
    assert sm.linear_cka(X, X @ Q * 3.7 + 2.0) == pytest.approx(1.0, abs=1e-12)
    assert sm.linear_cka(X, X @ Q, unbiased=True) == pytest.approx(1.0, abs=1e-12)
    # an invertible but anisotropic map changes CKA: it is not invariant to GL(n)
    A = np.diag([10.0, 1, 1, 1, 0.1, 0.1, 0.1, 0.1]) @ Q
    assert sm.linear_cka(X, X @ A) < 0.9


def test_linear_cka_feature_space_equals_gram_form():
    X, Y = _gauss(60, 5, 6), _gauss(60, 9, 7)
    X[:, 0] += Y[:, 0]
    K, L = X @ X.T, Y @ Y.T
    for unbiased in (False, True):
        ref = sm.hsic(K, L, unbiased) / np.sqrt(sm.hsic(K, K, unbiased) * sm.hsic(L, L, unbiased))
        assert sm.linear_cka(X, Y, unbiased=unbiased) == pytest.approx(ref, rel=1e-10)


def test_biased_hsic_matches_trace_formula():
    K, L = _gauss(12, 3, 0), _gauss(12, 3, 1)
    K, L = K @ K.T, L @ L.T
    H = np.eye(12) - 1 / 12
    assert sm.hsic(K, L, unbiased=False) == pytest.approx(np.trace(K @ H @ L @ H) / 11 ** 2)


def test_unbiased_hsic_has_zero_mean_on_independent_data():
    rng = np.random.default_rng(8)
    n, reps = 20, 300
    biased, unbiased = [], []
    for _ in range(reps):
        X, Y = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
        K, L = np.exp(-sm.rdm(X, "sqeuclidean") / 2), np.exp(-sm.rdm(Y, "sqeuclidean") / 2)
        biased.append(sm.hsic(K, L, unbiased=False))
        unbiased.append(sm.hsic(K, L, unbiased=True))
    biased, unbiased = np.array(biased), np.array(unbiased)
    se = unbiased.std() / np.sqrt(reps)
    assert abs(unbiased.mean()) < 3 * se
    assert biased.mean() > 10 * biased.std() / np.sqrt(reps)  # clearly biased upwards


def test_rbf_cka_rotation_and_bandwidth():
    X = _gauss(80, 6, 9)
    Q = special_ortho_group.rvs(6, random_state=1)
    np.testing.assert_allclose(sm.rbf_cka(X, 5 * X @ Q, [0.2, 1.0, 5.0]), 1.0, atol=1e-10)
    # a wide kernel is nearly linear: RBF-CKA approaches linear CKA
    Y = np.tanh(X[:, :3]) + 0.3 * _gauss(80, 3, 10)
    assert sm.rbf_cka(Y, X, 50.0) == pytest.approx(sm.linear_cka(Y, X), abs=0.01)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        sm.rbf_cka(X, X, 0.0)


def test_cka_errors():
    with pytest.raises(ValueError, match="same stimuli"):
        sm.linear_cka(_gauss(10, 3, 0), _gauss(11, 3, 0))
    X = _gauss(10, 3, 0)
    X[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sm.linear_cka(X, _gauss(10, 3, 0))
    with pytest.raises(ValueError, match="no variance"):
        sm.linear_cka(np.ones((10, 3)), _gauss(10, 3, 0))


# ---------------------------------------------------------------------------
# neighbourhoods

def test_knn_overlap_identical_is_one():
    X = _gauss(100, 5, 11)
    ks = [1, 5, 20, 99]
    np.testing.assert_allclose(sm.knn_overlap(X, X, ks), 1.0)
    np.testing.assert_allclose(sm.knn_overlap(X, 3 * X + 1, ks, kind="jaccard"), 1.0)


def test_knn_overlap_matches_brute_force():
    X, Y = _gauss(90, 4, 12), _gauss(90, 4, 13)
    Y[:, :2] += X[:, :2]
    gx, gy = nearest_neighbors(X, 30), nearest_neighbors(Y, 30)
    ks = np.array([1, 3, 7, 30])
    per = sm.knn_overlap(gx, gy, ks, per_sample=True)
    for s, k in enumerate(ks):
        brute = [len(set(gx.indices[i, :k]) & set(gy.indices[i, :k])) / k for i in range(90)]
        np.testing.assert_allclose(per[:, s], brute)


def test_knn_overlap_chance_level():
    n = 400
    ks = np.array([10, 40, 100])
    rng = np.random.default_rng(14)
    X = rng.normal(size=(n, 6))
    gx = nearest_neighbors(X, ks.max())
    g = nearest_neighbors(rng.normal(size=(n, 6)), ks.max())
    # permuting the labels of an independent graph draws fresh independent neighbourhoods
    vals = np.array([sm.knn_overlap(gx, sm.permute_graph(g, rng.permutation(n)), ks)
                     for _ in range(30)])
    chance = sm.knn_chance(ks, n)
    np.testing.assert_allclose(chance, ks / (n - 1))
    np.testing.assert_allclose(vals.mean(0), chance, rtol=0.06)
    jac = np.array([sm.knn_overlap(gx, sm.permute_graph(g, rng.permutation(n)), ks, kind="jaccard")
                    for _ in range(30)])
    np.testing.assert_allclose(jac.mean(0), sm.knn_chance(ks, n, "jaccard"), rtol=0.06)


def test_permute_graph_equals_query_on_permuted_data():
    Y = _gauss(50, 3, 15)
    perm = np.random.default_rng(0).permutation(50)
    a = sm.permute_graph(nearest_neighbors(Y, 8), perm)
    b = nearest_neighbors(Y[perm], 8)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_mutual_knn_alignment_is_fraction_overlap():
    X, Y = _gauss(60, 3, 16), _gauss(60, 3, 17)
    assert sm.mutual_knn_alignment(X, Y, k=5) == pytest.approx(sm.knn_overlap(X, Y, 5))


def test_knn_errors():
    X = _gauss(20, 3, 0)
    with pytest.raises(ValueError, match="same stimuli"):
        sm.knn_overlap(X, _gauss(21, 3, 0), 5)
    with pytest.raises(ValueError, match="k=20 must be smaller than n_samples=20"):
        sm.knn_overlap(X, X, [5, 20])
    with pytest.raises(ValueError, match="k_max=4"):
        sm.knn_overlap(nearest_neighbors(X, 4), X, 6)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sm.knn_overlap(bad, X, 3)


# ---------------------------------------------------------------------------
# profiles, cross-scale similarity

def test_similarity_profile_shapes_and_identity():
    X = _gauss(120, 5, 18)
    prof = sm.similarity_profile(X, X @ special_ortho_group.rvs(5, random_state=2), ks=[5, 10, 29])
    np.testing.assert_array_equal(prof.ks, [5, 10, 29])
    for m in ("mutual_knn", "jaccard", "rbf_cka"):
        np.testing.assert_allclose(prof[m], 1.0, atol=1e-10)
    np.testing.assert_allclose(prof.chance["mutual_knn"], prof.ks / 119)
    with pytest.raises(ValueError, match="measures must be among"):
        sm.similarity_profile(X, X, measures=("cka2",))
    Y = _gauss(120, 3, 19)
    g = (nearest_neighbors(X, 40), nearest_neighbors(Y, 40))
    shared = sm.similarity_profile(X, Y, ks=[5, 29], graphs=g)
    fresh = sm.similarity_profile(X, Y, ks=[5, 29])
    for m in fresh.values:
        # The fresh profile ranks neighbours in float32 (exact=False); bandwidths differ ~1e-7.
        np.testing.assert_allclose(shared[m], fresh[m], rtol=1e-5)
    with pytest.raises(ValueError, match="k_max=40"):
        sm.similarity_profile(X, Y, ks=[5, 50], graphs=g)


def test_cluster_toy_global_high_local_low():
    # Far-apart clusters, positions inside each cluster unrelated between X and Y:
    # the global measure sees the clusters, small-k neighbourhoods see nothing.
    rng = np.random.default_rng(19)
    centres = 20 * rng.normal(size=(4, 6))
    labels = np.repeat(np.arange(4), 50)
    X = centres[labels] + rng.normal(size=(200, 6))
    Y = centres[labels] + rng.normal(size=(200, 6))
    assert sm.linear_cka(X, Y) > 0.9
    prof = sm.similarity_profile(X, Y, ks=[5, 49], measures=("mutual_knn",))
    # inside a cluster of 50 the chance overlap is k / 49
    np.testing.assert_allclose(prof["mutual_knn"], [5 / 49, 1.0], atol=0.04)


def test_coarse_grain_definition():
    X = _gauss(30, 4, 20)
    g = nearest_neighbors(X, 6)
    Xk = sm.coarse_grain(X, [6, 2], samples=[3, 7])
    assert Xk.shape == (2, 2, 4)
    np.testing.assert_allclose(Xk[1, 0], X[[3, *g.indices[3, :2]]].mean(0))
    np.testing.assert_allclose(Xk[0, 1], X[[7, *g.indices[7, :6]]].mean(0))


def test_cross_scale_similarity_known_cases():
    rng = np.random.default_rng(21)
    n, ks = 320, [5, 10, 20, 40, 80]
    # a smooth 1-D manifold: coarse-graining is a moving average along it and keeps neighbours
    t = np.sort(rng.uniform(size=n))
    line = np.c_[np.cos(3 * t), np.sin(3 * t)]
    # high-dimensional noise: neighbourhoods are nearly random, averaging reshuffles them
    noise = rng.normal(size=(n, 100))
    a = sm.cross_scale_similarity(line, ks, random_state=0)
    b = sm.cross_scale_similarity(noise, ks, random_state=0)
    assert a.neighborhood_similarity.shape == a.rdm_similarity.shape == (6, 6)
    np.testing.assert_array_equal(a.ks, [0, *ks])
    for r in (a, b):
        np.testing.assert_allclose(np.diag(r.neighborhood_similarity), 1.0)
        np.testing.assert_allclose(r.rdm_similarity, r.rdm_similarity.T, atol=1e-12)
        assert r.floor == pytest.approx(10 / 319)
        assert r.chance == r.null_mean and r.null_scores.shape == (10,)
        assert r.calibrated == pytest.approx(r.score - r.null_mean)
    assert a.score > 0.7
    assert a.rdm_score > 0.95
    # noise keeps many neighbourhoods: far above the floor, at its Gaussian null
    assert b.score > 5 * b.floor
    assert abs(b.calibrated) < 4 * b.null_sd + 0.01
    # the same anchors and scores for the same seed; n_null=0 leaves the raw score unchanged
    again = sm.cross_scale_similarity(noise, ks, random_state=0, n_null=0)
    assert again.score == b.score and np.isnan(again.calibrated) and again.null_scores.size == 0


def _walk(n, p, seed, block=None):
    """A Brownian path: statistically self-similar. With ``block``, the path is kept only at
    every block-th point and the excursions between are replaced by noise of the same spread:
    the same coarse structure with a break below the block scale."""
    rng = np.random.default_rng(seed)
    X = np.cumsum(rng.normal(size=(n, p)), axis=0)
    if block:
        coarse = np.repeat(X[::block], block, axis=0)[:n]
        X = coarse + rng.normal(size=(n, p)) * (X - coarse).std()
    return X


def _tree(seed, levels=8, ratio=0.6, p=20, break_below=None):
    """Binary hierarchical clusters (2**levels points); below level ``break_below`` the nested
    offsets are replaced by unnested noise of the same variance."""
    rng = np.random.default_rng(seed)
    n = 2 ** levels
    X, idx = np.zeros((n, p)), np.arange(n)
    for level in range(levels):
        if break_below is not None and level >= break_below:
            X += rng.normal(size=(n, p)) * ratio ** level
        else:
            X += rng.normal(size=(2 ** (level + 1), p))[idx // 2 ** (levels - 1 - level)] * ratio ** level
    return X


_CSS = dict(ks=[3, 6, 12, 24], probe_k=5, n_null=4)


@pytest.mark.parametrize("spectrum", ["isotropic", "anisotropic"])
def test_calibrated_cross_scale_similarity_is_zero_for_gaussian_noise(spectrum):
    # The raw score of noise is far from 0 and depends on the spectrum; calibrated, it is 0 on
    # average over seeds (the surrogates are exchangeable with Gaussian data of any covariance).
    scale = np.ones(12) if spectrum == "isotropic" else np.arange(1, 13) ** -1.0
    res = [sm.cross_scale_similarity(_gauss(96, 12, s) * scale, random_state=1000 + s, **_CSS)
           for s in range(20)]
    cal = np.array([r.calibrated for r in res])
    assert np.mean([r.score for r in res]) > 0.3
    assert abs(cal.mean()) < 2 * cal.std(ddof=1) / np.sqrt(cal.size)


def test_calibrated_cross_scale_similarity_sees_structure_beyond_the_spectrum():
    # a self-similar set (Brownian path) keeps its neighbourhoods across scales beyond its
    # Gaussian null; breaking its fine structure lowers the score
    walk = [sm.cross_scale_similarity(_walk(128, 20, s), random_state=100 + s, **_CSS) for s in range(3)]
    broken = [sm.cross_scale_similarity(_walk(128, 20, s, block=8), random_state=100 + s, **_CSS)
              for s in range(3)]
    for w, b in zip(walk, broken):
        assert w.calibrated > 0.04 and w.z > 3 and w.p_value == pytest.approx(1 / 5)
        assert b.calibrated < w.calibrated - 0.03
    # hierarchical clusters: a break below the mid level lowers the calibrated score too
    for s in range(2):
        tree = sm.cross_scale_similarity(_tree(s, levels=7), random_state=100 + s, **_CSS)
        tree_b = sm.cross_scale_similarity(_tree(s, levels=7, break_below=3), random_state=100 + s, **_CSS)
        assert tree_b.calibrated < tree.calibrated - 0.05


def test_cross_scale_similarity_errors():
    X = _gauss(50, 3, 0)
    with pytest.raises(ValueError, match="k=50 must be smaller than n_samples=50"):
        sm.cross_scale_similarity(X, [5, 50])
    with pytest.raises(ValueError, match="probe_k=20 must be smaller than n_samples=20"):
        sm.cross_scale_similarity(X, [5], n_anchors=20, probe_k=20)
    with pytest.raises(ValueError, match="n_null must be a non-negative integer, got -1"):
        sm.cross_scale_similarity(X, [5], n_null=-1)


# ---------------------------------------------------------------------------
# inference

def test_permutation_pvalues_uniform_under_null():
    rng = np.random.default_rng(22)
    pvals = []
    for i in range(60):
        X, Y = rng.normal(size=(15, 3)), rng.normal(size=(15, 2))
        res = sm.permutation_test(sm.linear_cka, X, Y, n_permutations=39, random_state=i)
        pvals.append(res.p_value)
    pvals = np.array(pvals)
    assert pvals.min() >= 1 / 40
    assert kstest(pvals, "uniform").pvalue > 0.001


def test_permutation_detects_signal_and_calibrates():
    X = _gauss(80, 4, 23)
    Y = X + 0.5 * _gauss(80, 4, 24)
    gx, gy = nearest_neighbors(X, 10), nearest_neighbors(Y, 10)
    res = sm.permutation_test(lambda a, b: sm.knn_overlap(a, b, [5, 10]), gx, gy,
                              n_permutations=50, random_state=0)
    assert res.null.shape == (50, 2)
    np.testing.assert_allclose(res.p_value, 1 / 51)
    np.testing.assert_allclose(res.null_mean, [5 / 79, 10 / 79], rtol=0.35)
    np.testing.assert_allclose(res.calibrated, res.score - res.null_mean)


def test_bootstrap_ci_covers_and_is_seeded():
    x = _gauss(200, 1, 25)[:, 0] + 3
    a = sm.bootstrap_ci(np.mean, x, n_bootstraps=300, random_state=1)
    b = sm.bootstrap_ci(np.mean, x, n_bootstraps=300, random_state=1)
    assert a.low == b.low and a.high == b.high
    assert a.low < x.mean() < a.high
    # the percentile interval of a mean is about +-1.96 standard errors
    assert a.high - a.low == pytest.approx(2 * 1.96 * x.std() / np.sqrt(200), rel=0.2)
    with pytest.raises(ValueError, match="same stimuli"):
        sm.bootstrap_ci(lambda u, v: 0.0, x, x[:10])


def test_compare_profiles():
    a = np.array([0.1, 0.2, 0.4, 0.8])
    assert sm.compare_profiles(a, 2 * a + 1) == pytest.approx(1.0)
    assert sm.compare_profiles(a, a[::-1], "spearman") == pytest.approx(-1.0)
    assert sm.compare_profiles(a, a + 0.1, "rmse") == pytest.approx(0.1)
    with pytest.raises(ValueError, match="share one scale grid"):
        sm.compare_profiles(a, a[:3])


# ---------------------------------------------------------------------------
# exercise checks

def test_exercise_checks_accept_right_and_reject_wrong_answers():
    from scaleinv_utils.exercises import check
    X, Y = _gauss(60, 4, 30), _gauss(60, 4, 31)
    Y[:, :2] += X[:, :2]
    ks = [3, 10]
    right = sm.knn_overlap(X, Y, ks)
    assert check("similarity.ex1", right, verbose=False, X=X, Y=Y, ks=ks)
    res = check("similarity.ex1", right * np.array(ks), verbose=False, X=X, Y=Y, ks=ks)
    assert not res and "divide by k" in res.message
    res = check("similarity.ex1", sm.knn_overlap(X, Y, ks, kind="jaccard"), verbose=False,
                X=X, Y=Y, ks=ks)
    assert not res and "Jaccard" in res.message
    assert not check("similarity.ex1", ..., verbose=False, X=X, Y=Y, ks=ks)

    cka = sm.linear_cka(X + 5, Y - 3)
    assert check("similarity.ex2", cka, verbose=False, X=X + 5, Y=Y - 3)
    Xs, Ys = X + 5, Y - 3
    uncentred = np.sum((Xs.T @ Ys) ** 2) / np.sqrt(np.sum((Xs.T @ Xs) ** 2) * np.sum((Ys.T @ Ys) ** 2))
    res = check("similarity.ex2", uncentred, verbose=False, X=Xs, Y=Ys)
    assert not res and "centred" in res.message
    assert not check("similarity.ex2", np.sqrt(cka), verbose=False, X=Xs, Y=Ys)

    score = sm.knn_overlap(X, Y, 10)
    assert check("similarity.ex3", score - 10 / 59 + 0.005, verbose=False, X=X, Y=Y, k=10)
    res = check("similarity.ex3", score, verbose=False, X=X, Y=Y, k=10)
    assert not res and "raw score" in res.message
    assert not check("similarity.ex3", score / (10 / 59), verbose=False, X=X, Y=Y, k=10)
