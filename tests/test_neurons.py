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
        assert res.ratio > 2 and res.pvalue < 0.02
    res = nn.redundancy(M, n_shuffles=100, random_state=0)
    assert np.all(res.partners >= 4)
    assert res.multiplicity.max() >= 5


def test_redundancy_strata_remove_shared_network_preference():
    rng = np.random.default_rng(2)
    networks = np.repeat(["a", "b", "c", "d"], 200)
    M = np.zeros((12, 800), bool)
    M[:, :200] = rng.random((12, 200)) < 0.3  # every set prefers network "a", independently
    plain = nn.redundancy(M, n_shuffles=100, random_state=0)
    strat = nn.redundancy(M, n_shuffles=100, strata=networks, random_state=0)
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
    assert trend["mirrored"] and trend["correlation"] == pytest.approx(-1)
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
