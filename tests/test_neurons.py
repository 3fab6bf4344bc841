"""Tests of scaleinv_utils.neurons against planted answers and reference implementations."""
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

from scaleinv_utils import neurons as nn
from scaleinv_utils.exercises import check


@pytest.fixture(scope="module")
def toy():
    return nn.make_toy_neurons(n_samples=400, n_layers=3, n_heads=8, head_dim=12, n_sources=4,
                               n_voxels=300, random_state=0)


def _planted_world(n=500, k=4, n_vox=400, amp=0.4, seed=0):
    """Regressors S and voxels driven by one of them with a known sign (or by nothing)."""
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((n, k))
    source = rng.integers(k, size=n_vox)
    sign = np.where(rng.random(n_vox) < 0.5, 1.0, -1.0)
    driven = rng.random(n_vox) < 0.7
    W = np.zeros((k, n_vox))
    W[source[driven], np.flatnonzero(driven)] = amp * sign[driven]
    Y = S @ W + rng.standard_normal((n, n_vox))
    return S, Y, W


# --------------------------------------------------------------------------- AN activity
def test_an_activity_norm_and_mean_are_exact():
    H = np.random.default_rng(0).standard_normal((20, 3, 5))
    np.testing.assert_allclose(nn.an_activity(H, "norm"), np.sqrt((H ** 2).sum(axis=2)))
    np.testing.assert_allclose(nn.an_activity(H, "mean"), H.mean(axis=2))


def test_an_activity_pc1_is_the_first_principal_component_oriented_by_norm(toy):
    from sklearn.decomposition import PCA

    H = toy["head_outputs"]["layer1"]
    act = nn.an_activity(H, "pc1")
    for h in range(H.shape[1]):
        ref = PCA(1).fit_transform(H[:, h])[:, 0]
        assert abs(np.corrcoef(act[:, h], ref)[0, 1]) > 1 - 1e-8
        np.testing.assert_allclose(np.abs(act[:, h]), np.abs(ref), atol=1e-8)
        # the planted activity makes the output longer, so the orientation must follow it
        planted = toy["activity"][:, 8 + h]
        assert np.corrcoef(act[:, h], planted)[0, 1] > 0.9


def test_an_activity_errors():
    with pytest.raises(ValueError, match="3-D"):
        nn.an_activity(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="method"):
        nn.an_activity(np.zeros((10, 2, 3)), method="max")
    with pytest.raises(ValueError, match="NaN"):
        nn.an_activity(np.full((10, 2, 3), np.nan))


def test_artificial_neurons_stacks_layers_in_order(toy):
    ans = nn.artificial_neurons(toy["head_outputs"], method="norm")
    assert ans.activity.shape == (400, 24)
    assert list(ans.layers) == ["layer0", "layer1", "layer2"]
    assert ans.names[9] == "layer1/h1" and ans.layer_index[9] == 1 and ans.head[9] == 1
    np.testing.assert_allclose(ans.activity[:, 8:16],
                               nn.an_activity(toy["head_outputs"]["layer1"], "norm"))
    sub = nn.artificial_neurons(toy["head_outputs"], layers=["layer2", "layer0"])
    assert sub.layers == ["layer2", "layer0"] and sub.layer[0] == "layer2"


def test_artificial_neurons_errors():
    H = np.zeros((10, 2, 3)) + np.arange(10)[:, None, None]
    with pytest.raises(ValueError, match="not in"):
        nn.artificial_neurons({"a": H}, layers=["b"])
    with pytest.raises(ValueError, match="same n_samples"):
        nn.artificial_neurons({"a": H, "b": H[:5]})
    with pytest.raises(ValueError, match="empty"):
        nn.artificial_neurons({})


# --------------------------------------------------------------------------- atoms
def test_dictionary_learning_recovers_planted_sparse_sources(toy):
    ans = nn.artificial_neurons(toy["head_outputs"])
    atoms = nn.learn_atoms(ans.activity, 4, alpha=0.1, random_state=0)
    index, sign, corr = nn.match_components(toy["sources"], atoms.atoms)
    assert np.all(corr > 0.95), corr
    # orientation convention: ANs load positively, and the planted loadings are positive
    assert np.all(sign == 1)
    # the sparse support is the planted one: an AN uses an atom iff it uses the source
    used = np.abs(atoms.loadings[index].T) > 0.1
    planted = toy["codes"] > 0
    assert np.mean(used == planted) > 0.9
    assert atoms.explained_variance > 0.8
    assert np.allclose(np.linalg.norm(atoms.atoms, axis=0), 1)


def test_learning_in_the_span_of_the_ans_equals_learning_on_full_time_courses():
    from sklearn.decomposition import DictionaryLearning

    rng = np.random.default_rng(0)
    A = rng.standard_normal((300, 3)) @ rng.standard_normal((3, 10)) + 0.3 * rng.standard_normal((300, 10))
    atoms = nn.learn_atoms(A, 3, alpha=0.1, random_state=0)
    Z = A - A.mean(0)
    Z /= np.linalg.norm(Z, axis=0)
    direct = DictionaryLearning(3, alpha=0.1, fit_algorithm="cd", transform_algorithm="lasso_cd",
                                transform_alpha=0.1, max_iter=200).fit(Z.T)
    _, _, corr = nn.match_components(direct.components_.T, atoms.atoms)
    np.testing.assert_allclose(corr, 1, atol=1e-4)


def test_learn_atoms_is_reproducible_and_minibatch_works(toy):
    A = toy["activity"]
    a1 = nn.learn_atoms(A, 4, random_state=3)
    a2 = nn.learn_atoms(A, 4, random_state=3)
    np.testing.assert_array_equal(a1.atoms, a2.atoms)
    mb = nn.learn_atoms(A, 4, method="minibatch", max_iter=100, batch_size=8, random_state=0)
    _, _, corr = nn.match_components(toy["sources"], mb.atoms)
    assert np.all(corr > 0.9), corr


def test_learn_atoms_errors(toy):
    A = toy["activity"]
    with pytest.raises(ValueError, match="n_atoms"):
        nn.learn_atoms(A, 25)
    with pytest.raises(ValueError, match="n_atoms"):
        nn.learn_atoms(A, 0)
    with pytest.raises(ValueError, match="alpha"):
        nn.learn_atoms(A, 2, alpha=-1)
    with pytest.raises(ValueError, match="method"):
        nn.learn_atoms(A, 2, method="online")
    B = A.copy()
    B[:, 3] = 1.0
    with pytest.raises(ValueError, match="constant"):
        nn.learn_atoms(B, 2)


def test_match_components_undoes_permutation_and_sign():
    A = np.random.default_rng(1).standard_normal((50, 4))
    B = A[:, [2, 0, 3, 1]] * np.array([1, -1, -1, 1])
    index, sign, corr = nn.match_components(A, B)
    np.testing.assert_array_equal(index, [1, 3, 0, 2])
    np.testing.assert_array_equal(sign, [-1, 1, 1, -1])
    np.testing.assert_allclose(corr, 1)
    index, sign, corr = nn.match_components(A, B[:, :2])
    assert (index == -1).sum() == 2 and np.isnan(corr).sum() == 2


# --------------------------------------------------------------------------- FDR and maps
def test_fdr_bh_matches_scipy():
    p = np.random.default_rng(0).uniform(size=(3, 200)) ** 3
    q = nn.fdr_bh(p, axis=1)
    for row, qrow in zip(p, q):
        np.testing.assert_allclose(qrow, stats.false_discovery_control(row, method="bh"))
    p2 = p[0].copy()
    p2[[3, 7]] = np.nan
    q2 = nn.fdr_bh(p2)
    assert np.isnan(q2[[3, 7]]).all()
    ok = np.isfinite(p2)
    np.testing.assert_allclose(q2[ok], stats.false_discovery_control(p2[ok]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        nn.fdr_bh([0.5, 1.2])


def test_single_regressor_test_equals_linregress():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(80)
    Y = 0.3 * x[:, None] * rng.standard_normal(5) + rng.standard_normal((80, 5))
    for joint in (True, False):
        maps = nn.map_to_voxels(x[:, None], Y, joint=joint)
        for v in range(5):
            ref = stats.linregress(x, Y[:, v])
            assert maps.stat[0, v] == pytest.approx(ref.slope / ref.stderr, rel=1e-6)
            assert maps.pvalues[0, v] == pytest.approx(ref.pvalue, rel=1e-6)
            assert np.sign(maps.coef[0, v]) == np.sign(ref.slope)


@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("significance", ["parametric", "permutation"])
def test_planted_mapping_recovered_with_right_polarity(joint, significance):
    S, Y, W = _planted_world()
    train = np.arange(500) < 400
    maps = nn.map_to_voxels(S, Y, train=train, test=~train, joint=joint,
                            significance=significance, n_permutations=300, random_state=0)
    true_pos, true_neg = W > 0, W < 0
    recall = (maps.positive & true_pos).sum() / true_pos.sum()
    recall_neg = (maps.negative & true_neg).sum() / true_neg.sum()
    assert recall > 0.95 and recall_neg > 0.95
    # no BN of the wrong polarity, and few false discoveries (FDR at 5%)
    assert not (maps.positive & true_neg).any() and not (maps.negative & true_pos).any()
    false = (maps.significant & (W == 0)).sum() / max(maps.significant.sum(), 1)
    assert false < 0.1
    assert np.all(np.sign(maps.coef[W != 0]) == np.sign(W[W != 0]))
    driven = (W != 0).any(axis=0)
    r = maps.best_r_test()
    assert np.median(r[driven]) > 0.2
    assert r.shape == (400,)
    if not joint:
        # held-out R^2 of one univariate model, from scratch
        j, v = 1, int(np.flatnonzero(W[1] != 0)[0])
        xs = (S[:, j] - S[train, j].mean()) / S[train, j].std()
        pred = Y[train, v].mean() + maps.coef[j, v] * xs[~train]
        resid = ((Y[~train, v] - pred) ** 2).sum()
        total = ((Y[~train, v] - Y[~train, v].mean()) ** 2).sum()
        assert maps.r2_test[j, v] == pytest.approx(1 - resid / total, rel=1e-8)
        # the training-chosen regressor of a driven voxel is its planted source
        src = np.abs(W).argmax(axis=0)
        assert np.mean(maps.best_regressor()[driven] == src[driven]) > 0.95


def test_null_voxels_give_uniform_pvalues_and_empty_bn_sets():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 3))
    Y = rng.standard_normal((200, 1000))
    for joint in (True, False):
        maps = nn.map_to_voxels(X, Y, joint=joint)
        assert abs(np.mean(maps.pvalues < 0.05) - 0.05) < 0.015
        assert maps.significant.sum() <= 3


def test_map_to_voxels_errors():
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((30, 2)), rng.standard_normal((30, 4))
    with pytest.raises(ValueError, match="same n_samples"):
        nn.map_to_voxels(X[:20], Y)
    with pytest.raises(ValueError, match="q must"):
        nn.map_to_voxels(X, Y, q=1.5)
    with pytest.raises(ValueError, match="significance"):
        nn.map_to_voxels(X, Y, significance="bayes")
    with pytest.raises(ValueError, match="collinear"):
        nn.map_to_voxels(np.column_stack([X[:, 0], 2 * X[:, 0]]), Y)
    with pytest.raises(ValueError, match="constant"):
        nn.map_to_voxels(np.column_stack([X[:, 0], np.ones(30)]), Y)
    with pytest.raises(ValueError, match="too few training"):
        nn.map_to_voxels(X, Y, train=np.arange(30) < 3)
    with pytest.raises(ValueError, match="names"):
        nn.map_to_voxels(X, Y, names=["a"])


def test_bn_sets_at_another_level_and_map_subject():
    S, Y, W = _planted_world(n=300, n_vox=100, seed=3)
    subj = SimpleNamespace(betas=Y[::-1], image_index=np.arange(300)[::-1],
                           train=np.arange(300) < 240, test=np.arange(300) >= 240)
    maps = nn.map_subject(S, subj, joint=False)
    direct = nn.map_to_voxels(S[::-1], Y[::-1], train=subj.train, test=subj.test, joint=False)
    np.testing.assert_array_equal(maps.positive, direct.positive)
    strict_pos, strict_neg = maps.bn_sets(q=1e-6)
    assert strict_pos.sum() < maps.positive.sum() and not (strict_pos & ~maps.positive).any()
    with pytest.raises(ValueError, match="image_index"):
        nn.map_subject(S[:100], subj)


# --------------------------------------------------------------------------- overlap
def test_dice_and_jaccard_known_values():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert nn.dice(a, b) == pytest.approx(2 * 2 / 6)
    assert nn.jaccard(a, b) == pytest.approx(2 / 4)
    assert np.isnan(nn.dice(np.zeros(5, bool), np.zeros(5, bool)))
    O = nn.pairwise_overlap(np.vstack([a, b, np.zeros(5, bool)]))
    assert O[0, 1] == pytest.approx(2 / 3) and O[0, 0] == 1 and O[2, 0] == 0 and np.isnan(O[2, 2])
    with pytest.raises(ValueError, match="same shape"):
        nn.dice(a, b[:4])
    with pytest.raises(ValueError, match="same shape"):
        nn.jaccard(a[:3], b)
    with pytest.raises(ValueError, match="boolean"):
        nn.dice(np.array([0, 2, 1]), np.array([0, 1, 1]))


def test_expected_dice_matches_simulation():
    rng = np.random.default_rng(0)
    N, a, b = 500, 40, 120
    sims = []
    for _ in range(3000):
        A = np.zeros(N, bool); A[rng.choice(N, a, replace=False)] = True
        B = np.zeros(N, bool); B[rng.choice(N, b, replace=False)] = True
        sims.append(nn.dice(A, B))
    assert np.mean(sims) == pytest.approx(nn.expected_dice(a, b, N), rel=0.03)


def test_redundancy_is_at_chance_for_shuffled_maps():
    rng = np.random.default_rng(0)
    pvals = []
    for seed in range(20):
        sizes = rng.integers(20, 200, size=15)
        M = np.zeros((15, 800), bool)
        for j, s in enumerate(sizes):
            M[j, rng.choice(800, s, replace=False)] = True
        res = nn.redundancy(M, n_shuffles=60, random_state=seed)
        assert abs(res.ratio - 1) < 0.2
        pvals.append(res.pvalue)
    # at chance, the p-value is (about) uniform: few small ones
    assert np.mean(np.array(pvals) < 0.05) <= 0.2
    res = nn.redundancy(M, statistic="mean", n_shuffles=100, random_state=0)
    pair_chance = nn.expected_dice(sizes[:, None], sizes[None, :], 800)[np.triu_indices(15, 1)].mean()
    assert res.chance == pytest.approx(pair_chance, rel=0.05)
    assert abs(res.z) < 3


def test_redundancy_is_above_chance_for_shared_structure():
    rng = np.random.default_rng(1)
    base = rng.random((4, 800)) < 0.08
    M = np.repeat(base, 5, axis=0) ^ (rng.random((20, 800)) < 0.01)  # 4 groups of 5 near-copies
    for statistic in ("max", "mean"):
        res = nn.redundancy(M, statistic=statistic, n_shuffles=100, random_state=0)
        assert res.pvalue < 0.02
        # the mean pair overlap is nearly pinned by the voxels' multiplicities, which the
        # swap null keeps: its ratio stays near 1 there, the size-only null's does not
        sizes = nn.redundancy(M, statistic=statistic, null="sizes", n_shuffles=100, random_state=0)
        assert sizes.ratio > 2 and (res.ratio > 2 if statistic == "max" else res.ratio > 1)
    res = nn.redundancy(M, n_shuffles=100, random_state=0)
    assert np.all(res.partners >= 4)
    assert res.multiplicity.max() >= 5


def test_redundancy_strata_remove_shared_network_preference():
    rng = np.random.default_rng(2)
    networks = np.repeat(["a", "b", "c", "d"], 200)
    M = np.zeros((12, 800), bool)
    M[:, :200] = rng.random((12, 200)) < 0.3  # every set prefers network "a", independently
    plain = nn.redundancy(M, null="sizes", n_shuffles=100, random_state=0)
    strat = nn.redundancy(M, null="sizes", n_shuffles=100, strata=networks, random_state=0)
    assert plain.pvalue < 0.02 and plain.ratio > 2
    assert strat.pvalue > 0.05 and abs(strat.ratio - 1) < 0.1


def test_redundancy_errors():
    M = np.zeros((3, 10), bool)
    M[0, :3] = True
    with pytest.raises(ValueError, match="2 non-empty"):
        nn.redundancy(M)
    M[1, :3] = True
    with pytest.raises(ValueError, match="statistic"):
        nn.redundancy(M, statistic="median")
    with pytest.raises(ValueError, match="strata"):
        nn.redundancy(M, strata=np.zeros(4))


# --------------------------------------------------------------------------- layers, networks, modality
def test_polarity_by_layer_and_mirrored_trend():
    n_vox = 100
    layers = np.repeat(["l0", "l1", "l2", "l3"], 2)
    P = np.zeros((8, n_vox), bool)
    N = np.zeros((8, n_vox), bool)
    for j in range(8):
        d = j // 2
        P[j, :10 + 10 * d] = True            # 10, 20, 30, 40 positive BNs
        N[j, 50:50 + 40 - 10 * d] = True     # 40, 30, 20, 10 negative BNs
    table = nn.polarity_by_layer(P, N, layers)
    np.testing.assert_allclose(table["positive"], [10, 20, 30, 40])
    np.testing.assert_allclose(table["negative"], [40, 30, 20, 10])
    np.testing.assert_allclose(table["balance"], [-0.6, -0.2, 0.2, 0.6])
    trend = nn.polarity_trend(table)
    assert trend["slope_positive"] == pytest.approx(10) and trend["slope_negative"] == pytest.approx(-10)
    assert "mirrored" not in trend and trend["correlation"] == pytest.approx(-1)
    nets = np.where(np.arange(n_vox) < 50, "vis", "dmn")
    by_net = nn.polarity_by_layer(P, N, layers, networks=nets)
    dmn = by_net[by_net.network == "dmn"]
    np.testing.assert_allclose(dmn["positive"], 0)
    with pytest.raises(ValueError, match="several networks"):
        nn.polarity_trend(by_net)
    with pytest.raises(ValueError, match="both positive and negative"):
        nn.polarity_by_layer(P, P, layers)


def test_network_counts_and_modality_specificity():
    nets = np.array(["v", "v", "v", "d", "d"])
    A = np.array([[1, 1, 0, 0, 0], [0, 0, 0, 1, 0]], bool)
    B = np.array([[0, 1, 1, 1, 0]], bool)
    counts = nn.network_counts(A, nets, names=["an0", "an1"])
    assert counts.loc["an0", "v"] == 2 and counts.loc["an1", "d"] == 1
    frac = nn.network_counts(A, nets, normalise=True)
    assert frac.loc["set0", "v"] == pytest.approx(2 / 3)
    table = nn.modality_specificity(A, B, nets)
    assert table.loc["v", "image only"] == 1 and table.loc["v", "text only"] == 1
    assert table.loc["v", "both"] == 1 and table.loc["d", "both"] == 1
    assert table.loc["all", "neither"] == 1
    assert table.loc["all", "cross-modal fraction"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="networks"):
        nn.network_counts(A, nets[:3])


# --------------------------------------------------------------------------- exercises
def test_exercise_checks_accept_right_and_reject_wrong_answers(toy):
    H = toy["head_outputs"]["layer0"]
    right = np.linalg.norm(H, axis=2)
    assert check("neurons.ex1", right, verbose=False, head_outputs=H)
    assert not check("neurons.ex1", right ** 2, verbose=False, head_outputs=H)
    assert not check("neurons.ex1", right.T, verbose=False, head_outputs=H)
    assert not check("neurons.ex1", np.linalg.norm(H, axis=1), verbose=False, head_outputs=H)

    assert check("neurons.ex2", 2 * 40 * 120 / (500 * 160), verbose=False,
                 size_a=40, size_b=120, n_voxels=500)
    wrong = check("neurons.ex2", 40 * 120 / 500, verbose=False, size_a=40, size_b=120, n_voxels=500)
    assert not wrong and "intersection" in wrong.message

    S, Y, W = _planted_world(n=300, n_vox=100, seed=4)
    maps = nn.map_to_voxels(S, Y, joint=False)
    nets = np.where(np.arange(100) < 50, "default-mode", "visual")
    sel = nets == "default-mode"
    frac = maps.negative[:, sel].sum() / maps.significant[:, sel].sum()
    assert check("neurons.ex3", frac, verbose=False, maps=maps, networks=nets)
    wrong = check("neurons.ex3", 1 - frac, verbose=False, maps=maps, networks=nets)
    assert not wrong and "positive fraction" in wrong.message
    assert not check("neurons.ex3", ..., verbose=False, maps=maps, networks=nets)


# --------------------------------------------------------------------------- the four tests
def test_glm_t_test_equals_closed_form_ols_with_three_correlated_regressors():
    rng = np.random.default_rng(11)
    n = 120
    X = rng.standard_normal((n, 3)) @ np.array([[1, 0.6, 0.2], [0, 1, 0.5], [0, 0, 1]])
    Y = X @ rng.standard_normal((3, 6)) * 0.3 + rng.standard_normal((n, 6))
    maps = nn.map_to_voxels(X, Y, joint=True, significance="parametric")
    D = np.column_stack([np.ones(n), X])  # OLS with an intercept, from scratch
    beta, rss, *_ = np.linalg.lstsq(D, Y, rcond=None)
    df = n - 3 - 1
    cov = np.linalg.inv(D.T @ D)
    se = np.sqrt(np.outer(np.diag(cov), rss / df))
    t = beta / se
    np.testing.assert_allclose(maps.stat, t[1:], rtol=1e-8)
    np.testing.assert_allclose(maps.pvalues, 2 * stats.t.sf(np.abs(t[1:]), df), rtol=1e-7)


def test_marginal_tests_equal_pearsonr_and_dispatch_from_map_to_voxels():
    rng = np.random.default_rng(3)
    X, Y = rng.standard_normal((60, 2)), rng.standard_normal((60, 3))
    Y[:, 0] += 0.5 * X[:, 1]
    r = np.array([[stats.pearsonr(X[:, j], Y[:, v])[0] for v in range(3)] for j in range(2)])
    p = np.array([[stats.pearsonr(X[:, j], Y[:, v])[1] for v in range(3)] for j in range(2)])
    stat, pv = nn.correlation_t_test(r, 60)
    np.testing.assert_allclose(pv, p, rtol=1e-6)
    maps = nn.map_to_voxels(X, Y, joint=False)
    np.testing.assert_allclose(maps.pvalues, p, rtol=1e-6)
    Xs = (X - X.mean(0)) / X.std(0)
    _, pp = nn.correlation_permutation_test(Xs, Y - Y.mean(0), r, 400, random_state=0)
    assert pp[1, 0] == pytest.approx(1 / 401) and pp.min() >= 1 / 401


# --------------------------------------------------------------------------- B2: swap null
def test_curveball_keeps_margins_and_samples_all_matrices_with_them_uniformly():
    import itertools

    M = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], bool)
    samples = nn.swap_null(M, 3000, n_rounds=60, random_state=0)  # long enough to mix
    np.testing.assert_array_equal(samples.sum(axis=2), np.broadcast_to(M.sum(1), (3000, 3)))
    np.testing.assert_array_equal(samples.sum(axis=1), np.broadcast_to(M.sum(0), (3000, 3)))
    every = [np.array(c, bool).reshape(3, 3) for c in itertools.product([0, 1], repeat=9)]
    same = [A for A in every if (A.sum(1) == M.sum(1)).all() and (A.sum(0) == M.sum(0)).all()]
    keys = {A.tobytes(): i for i, A in enumerate(same)}
    counts = np.bincount([keys[S.tobytes()] for S in samples], minlength=len(same))
    assert (counts > 0).all()  # every matrix with these margins is reached
    assert stats.chisquare(counts).pvalue > 0.001  # ... equally often


def test_swap_null_within_strata_keeps_each_sets_count_per_stratum():
    rng = np.random.default_rng(0)
    M = rng.random((6, 40)) < 0.3
    strata = np.repeat(["a", "b", "c", "d"], 10)
    samples = nn.swap_null(M, 50, strata=strata, random_state=1)
    for s in "abcd":
        sel = strata == s
        np.testing.assert_array_equal(samples[:, :, sel].sum(2), np.broadcast_to(M[:, sel].sum(1), (50, 6)))
    np.testing.assert_array_equal(samples.sum(1), np.broadcast_to(M.sum(0), (50, 40)))
    assert not (samples == M).all(axis=(1, 2)).all()


def test_independent_ans_are_not_redundant_under_the_swap_null_but_are_under_the_old_one():
    p_swap, p_sizes = [], []
    for seed in range(20):
        w = nn.make_independent_an_world(n_voxels=400, random_state=seed)
        masks = nn.map_to_voxels(w["activity"], w["Y"], joint=False).significant
        p_swap.append(nn.redundancy(masks, n_shuffles=60, random_state=seed).pvalue)
        p_sizes.append(nn.redundancy(masks, null="sizes", n_shuffles=60, random_state=seed).pvalue)
    p_swap, p_sizes = np.array(p_swap), np.array(p_sizes)
    assert np.mean(p_swap < 0.05) <= 0.15 and stats.kstest(p_swap, "uniform").pvalue > 0.01
    # the size-only null calls independent ANs redundant most of the time
    assert np.mean(p_sizes < 0.05) >= 0.5


def test_planted_shared_drivers_are_detected_and_follow_the_an_correlations():
    w = nn.make_independent_an_world(n_shared=3, random_state=1)
    masks = nn.map_to_voxels(w["activity"], w["Y"], joint=False).significant
    res = nn.redundancy(masks, n_shuffles=100, random_state=0)
    assert res.pvalue < 0.02 and res.ratio > 1.5
    table, rho, p = nn.overlap_vs_correlation(res, w["activity"], n_permutations=200, random_state=0)
    assert table.loc["[0.5, 1]", "ratio"] > 3 and table.loc["[0, 0.2)", "ratio"] < 1.2
    assert rho > 0.2 and p < 0.05
    np.testing.assert_allclose(np.diag(res.pair_chance), 1)


def test_detectability_strata_are_deciles_within_networks():
    nc = np.arange(40.0)
    nets = np.repeat(["x", "y"], 20)
    s = nn.detectability_strata(nc, nets, n_bins=4)
    assert s[0] == "x|nc0" and s[19] == "x|nc3" and s[20] == "y|nc0"
    assert (np.unique(s, return_counts=True)[1] == 5).all()
    with pytest.raises(ValueError, match="networks must have shape"):
        nn.detectability_strata(nc, nets[:3])
    with pytest.raises(ValueError, match="null must be"):
        nn.redundancy(np.eye(3, dtype=bool), null="rows")


# --------------------------------------------------------------------------- B3: polarity
def _counts(case, seed, n_layers=6, per_layer=6):
    r = np.random.default_rng(seed)
    d = np.repeat(np.arange(n_layers), per_layer)
    layer = np.array([f"l{k}" for k in d])
    if case == "null":
        return r.poisson(20, d.size), r.poisson(20, d.size), layer
    if case == "one":
        return r.poisson(10 + 5 * d), r.poisson(20, d.size), layer
    return r.poisson(10 + 4 * d), r.poisson(34 - 4 * d), layer


def test_mirrored_test_is_calibrated_where_the_old_boolean_is_a_coin_flip():
    old, p = [], []
    for seed in range(40):
        pos, neg, layer = _counts("null", seed, n_layers=4)
        res = nn.mirrored_test(pos, neg, layer, n_permutations=200, n_boot=20, random_state=seed)
        old.append(res.slope_positive * res.slope_negative < 0)  # the old `mirrored`
        p.append(res.pvalue)
    assert 0.3 < np.mean(old) < 0.7
    assert np.mean(np.array(p) < 0.05) <= 0.1


def test_mirrored_test_detects_planted_mirror_and_is_not_fooled_by_one_trend():
    pos, neg, layer = _counts("mirror", 0)
    res = nn.mirrored_test(pos, neg, layer, n_permutations=300, random_state=0)
    assert res.pvalue < 0.01
    lo, hi = res.slope_positive_ci
    assert 0 < lo < 4 < hi and res.slope_negative_ci[1] < 0
    one = [nn.mirrored_test(*_counts("one", s), n_permutations=200, n_boot=10, random_state=s)
           for s in range(30)]
    assert np.mean([r.pvalue < 0.05 for r in one]) <= 0.15
    # the sign-flip null alone calls this "mirrored" almost always
    assert np.mean([r.pvalue_flip < 0.05 for r in one]) >= 0.8
    with pytest.raises(ValueError, match="at least 3 layers"):
        nn.mirrored_test(pos[:12], neg[:12], layer[:12])
    with pytest.raises(ValueError, match="null must be"):
        nn.mirrored_test(pos, neg, layer, null="coin")


def test_oriented_ans_recover_planted_network_polarity_and_null_world_finds_nothing():
    for seed in range(3):
        w = nn.make_polarity_world(random_state=seed)
        ans = nn.artificial_neurons(w["head_outputs"])
        oriented, sign, agreement = nn.orient_ans(ans.activity, nn.readout_reference(w["final"]))
        maps = nn.map_to_voxels(oriented, w["Y"], joint=False)
        table = nn.network_polarity(maps.coef, maps.significant, w["networks"], random_state=0)
        np.testing.assert_array_equal(np.sign(table["balance"]), w["network_sign"])
        assert (table["pvalue"] < 0.01).all()
        # the norm convention gives each head a coin-flip sign: polarity is lost
        raw = nn.map_to_voxels(ans.activity, w["Y"], joint=False)
        raw_table = nn.network_polarity(raw.coef, raw.significant, w["networks"], random_state=0)
        assert np.abs(raw_table["balance"]).min() < 0.9 or \
            (np.sign(raw_table["balance"]) != w["network_sign"]).any()
    null = nn.make_polarity_world(null=True, random_state=0)
    ans = nn.artificial_neurons(null["head_outputs"])
    oriented, _, _ = nn.orient_ans(ans.activity, nn.readout_reference(null["final"]))
    maps = nn.map_to_voxels(oriented, null["Y"], joint=False)
    table = nn.network_polarity(maps.coef, maps.significant, null["networks"], random_state=0)
    assert maps.significant.sum() <= 5 and not (table["pvalue"] < 0.05).any()


def test_orient_ans_flips_to_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(100)
    A = np.column_stack([ref + 0.1 * rng.standard_normal(100), -ref, rng.standard_normal(100)])
    out, sign, agree = nn.orient_ans(A, ref)
    np.testing.assert_array_equal(sign[:2], [1, -1])
    assert (np.corrcoef(out.T, ref)[-1, :2] > 0.9).all() and (agree >= 0).all()
    with pytest.raises(ValueError, match="same n_samples"):
        nn.orient_ans(A, ref[:50])


# --------------------------------------------------------------------------- B1, B4, verdicts
def _two_family_world(seed=0, n=500, n_vox=300):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 3))              # what images and captions share
    img = Z @ rng.standard_normal((3, 12)) + rng.standard_normal((n, 12))
    txt = Z @ rng.standard_normal((3, 8)) + rng.standard_normal((n, 8))
    Y = 0.3 * Z @ rng.standard_normal((3, n_vox)) + rng.standard_normal((n, n_vox))
    nets = np.repeat(["a", "b", "c"], n_vox // 3)
    return img, txt, Y, nets, rng


def test_compare_feature_sets_puts_trained_above_random_and_random_at_the_null():
    img, txt, Y, nets, rng = _two_family_world()
    train = np.arange(500) < 400
    sets = {"trained": img, "random": rng.standard_normal((500, 12))}
    table = nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets,
                                    noise_ceiling=np.full(300, 50.0), baseline="random",
                                    n_boot=100, n_shuffles=100, random_state=0)
    tr = table.loc["trained"]
    assert (tr["diff_low"] > 0).all() and (tr["p_above_baseline"] < 0.05).all()
    assert (tr["pvalue"] < 0.05).all() and (tr["ci_low"] > tr["null_high"]).all()
    assert (table.loc["random", "pvalue"] > 0.01).all()
    # noise-ceiling normalisation divides r by sqrt(NC / 100)
    raw = nn.compare_feature_sets({"trained": img}, Y, train=train, test=~train, networks=nets,
                                  n_boot=2, n_shuffles=2, random_state=0)
    np.testing.assert_allclose(tr["score"], raw.loc["trained", "score"] / np.sqrt(0.5))
    with pytest.raises(ValueError, match="baseline"):
        nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets, baseline="x")


def test_cross_modal_test_against_mismatched_captions():
    img, txt, Y, nets, rng = _two_family_world(1)
    table = nn.cross_modal_test({"image": img, "text": txt}, Y, train=np.arange(500) < 400,
                                networks=nets, n_subsamples=10, n_shuffles=10, random_state=0)
    row = table.loc["all"]
    assert row["cross-modal fraction"] > row["mismatched_high"] and row["pvalue"] <= 1 / 11 + 1e-12
    assert row["mismatched"] < 0.2 and row["ratio to chance"] >= 1
    assert row["ci_low"] <= row["cross-modal fraction"] <= row["ci_high"]
    with pytest.raises(ValueError, match="exactly 2 families"):
        nn.cross_modal_test({"image": img}, Y, train=np.arange(500) < 400, networks=nets)


def test_verdict_three_outcomes_and_errors():
    assert nn.verdict(0.3, 0.1, 0.5, 0.01).verdict == "supports"
    assert nn.verdict(0.3, 0.1, 0.5, 0.2).verdict == "inconclusive"  # p disagrees
    assert nn.verdict(-0.3, -0.5, -0.1).verdict == "contradicts"
    assert nn.verdict(0.1, -0.1, 0.3).verdict == "inconclusive"
    assert nn.verdict(-0.3, -0.5, -0.1, direction="less").verdict == "supports"
    v = nn.verdict(2.0, 1.5, 2.5, 0.001, null_value=1.0, claim="ratio above 1")
    assert str(v).startswith("ratio above 1: supports (estimate 2")
    with pytest.raises(ValueError, match="low <= high"):
        nn.verdict(0, 1, -1)
    with pytest.raises(ValueError, match="direction"):
        nn.verdict(0, -1, 1, direction="up")


def test_compare_feature_sets_against_a_seed_ensemble():
    img, txt, Y, nets, rng = _two_family_world()
    train = np.arange(500) < 400
    seeds = {f"random s{s}": np.random.default_rng(10 + s).standard_normal((500, 12)) for s in range(3)}
    sets = {"trained": img, **seeds}
    table = nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets,
                                    baseline=list(seeds), n_boot=100, n_shuffles=50, random_state=0)
    tr = table.loc["trained"]
    each = np.array([table.loc[k, "score"].to_numpy() for k in seeds])
    np.testing.assert_allclose(tr["baseline_score"], each.mean(axis=0))
    np.testing.assert_allclose(tr["baseline_min"], each.min(axis=0))
    np.testing.assert_allclose(tr["baseline_max"], each.max(axis=0))
    np.testing.assert_allclose(tr["diff"], tr["score"] - each.mean(axis=0))
    assert (tr["diff_low"] > 0).all() and (tr["p_above_baseline"] < 0.05).all()
    # a random seed against the ensemble it belongs to is not "above" it
    assert (table.loc["random s0", "p_above_baseline"] > 0.01).all()
    # resampling the seeds widens the interval against one fixed seed
    one = nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets,
                                  baseline="random s0", n_boot=100, n_shuffles=50, random_state=0)
    width_ens = (tr["diff_high"] - tr["diff_low"]).mean()
    width_one = (one.loc["trained", "diff_high"] - one.loc["trained", "diff_low"]).mean()
    assert width_ens > 0 and width_one > 0
    with pytest.raises(ValueError, match="baseline"):
        nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets, baseline=[])
    with pytest.raises(ValueError, match="baseline"):
        nn.compare_feature_sets(sets, Y, train=train, test=~train, networks=nets,
                                baseline=["random s0", "nope"])


@pytest.mark.parametrize("seed", [0, 1])
def test_fusion_test_finds_planted_fusion_and_not_its_absence(seed):
    """Positive and negative control of the B4 test (chapter 7 runs the same function)."""
    kw = dict(n_samples=400, n_voxels=240, random_state=seed)
    pos = nn.make_fusion_world(planted=True, **kw)
    neg = nn.make_fusion_world(planted=False, **kw)
    r_pos = nn.fusion_test(pos["dual"], pos["fused"], pos["Y"], mismatched=pos["mismatched"],
                           n_boot=300, n_permutations=300, random_state=seed)
    r_neg = nn.fusion_test(neg["dual"], neg["fused"], neg["Y"], mismatched=neg["mismatched"],
                           n_boot=300, n_permutations=300, random_state=seed)
    # planted: the fusion quarter is shared by the fused model's families only (1/4 of voxels)
    assert r_pos.diff > 0.15 and r_pos.diff_ci[0] > 0 and r_pos.pvalue <= 0.01
    assert nn.verdict(r_pos.diff, *r_pos.diff_ci, r_pos.pvalue).verdict == "supports"
    # not planted: the fused model shares what the dual encoder shares, the z quarter
    assert abs(r_neg.diff) < 0.05 and r_neg.diff_ci[0] <= 0 <= r_neg.diff_ci[1]
    assert nn.verdict(r_neg.diff, *r_neg.diff_ci, r_neg.pvalue).verdict == "inconclusive"
    # both worlds: each model shares about the z quarter, out of what it covers
    assert 0.15 < r_neg.dual < 0.4 and 0.15 < r_pos.dual < 0.4
    # mismatched captions break every caption-driven BN of the fusion heads
    assert r_pos.mismatched < 0.05 and r_pos.pvalue_mismatched <= 0.01
    assert r_pos.fused_ci[0] <= r_pos.fused <= r_pos.fused_ci[1]
    assert r_pos.n_ans == 24 and list(r_pos.table().index)[0] == "fused: cross-modal fraction"
    shown = r_pos.table(decimals=2)["value"]
    assert shown["ANs per family"] == 24 and isinstance(shown["ANs per family"], int)
    # one precision down the column: "0.30" beside "0.54", never 0.3 beside 0.54
    assert shown["fused - dual"] == f"{r_pos.diff:.2f}"
    assert all(len(v.split(".")[1]) == 2 for k, v in shown.items() if k != "ANs per family")


def test_fusion_test_errors():
    w = nn.make_fusion_world(n_samples=60, n_voxels=40, random_state=0)
    with pytest.raises(ValueError, match="exactly 2 AN families"):
        nn.fusion_test({"image": w["dual"]["image"]}, w["fused"], w["Y"])
    with pytest.raises(ValueError, match="n_ans"):
        nn.fusion_test(w["dual"], w["fused"], w["Y"], n_ans=99)
    with pytest.raises(ValueError, match="mismatched must have the shape"):
        nn.fusion_test(w["dual"], w["fused"], w["Y"], mismatched=w["mismatched"][:, :2])
    with pytest.raises(ValueError, match="n_voxels >= 4"):
        nn.make_fusion_world(n_voxels=2)
