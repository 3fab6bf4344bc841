"""Voxelwise encoding against known answers: planted weights, theory R^2, alpha vs noise,
noise ceiling of a perfect model, scikit-learn agreement, and the error cases."""
from types import SimpleNamespace

import numpy as np
import pytest

from scaleinv_utils import encoding as enc
from scaleinv_utils.reliability import compute_ncsnr, noise_ceiling


def _planted(n=1200, p=8, v=30, sigma=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(p, v)) / np.sqrt(p)
    Y = X @ W + 2.0 + sigma * rng.normal(size=(n, v))
    return X, Y, W


def test_planted_weights_recovered_and_r2_matches_theory():
    sigma = 0.5
    X, Y, W = _planted(n=6000, sigma=sigma)
    model = enc.fit_encoding(X[:4000], Y[:4000], standardize=False)
    # with unstandardised features the coefficients are in the units of W
    assert np.max(np.abs(model.coef - W)) < 0.05
    np.testing.assert_allclose(model.intercept, 2.0, atol=0.05)
    res = enc.score_encoding(model, X[4000:], Y[4000:])
    # the population R^2 of the true model: signal variance / (signal + noise variance)
    signal = (W ** 2).sum(axis=0)  # X has identity covariance
    theory = signal / (signal + sigma ** 2)
    np.testing.assert_allclose(res.r2, theory, atol=0.03)
    np.testing.assert_allclose(res.r, np.sqrt(theory), atol=0.02)


def test_noisier_voxels_choose_larger_alphas():
    rng = np.random.default_rng(1)
    n, p, v = 300, 40, 40
    X = rng.normal(size=(n, p))
    W = rng.normal(size=(p, v)) / np.sqrt(p)
    sigma = np.r_[np.full(v // 2, 0.3), np.full(v // 2, 3.0)]
    Y = X @ W + sigma * rng.normal(size=(n, v))
    model = enc.fit_encoding(X, Y, alphas=np.logspace(-2, 5, 29), standardize=False)
    low, high = model.best_alphas[: v // 2], model.best_alphas[v // 2:]
    # Bayes-optimal ridge penalty is sigma^2 / tau^2: a 10x noise SD means ~100x alpha
    assert np.median(high) > 20 * np.median(low)


def test_agrees_with_sklearn_ridge():
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    X, Y, _ = _planted(n=120, p=10, v=6, sigma=1.0, seed=2)
    model = enc.fit_encoding(X, Y, alphas=[30.0])
    Xs = StandardScaler().fit_transform(X)
    sk = Ridge(alpha=30.0).fit(Xs, Y)
    np.testing.assert_allclose(model.coef, sk.coef_.T, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.intercept, sk.intercept_, rtol=1e-8)
    np.testing.assert_allclose(model.predict(X[:5]), sk.predict(Xs[:5]), rtol=1e-6)

    # alpha chosen per voxel: the same as a hand-written CV loop with scikit-learn
    alphas = np.logspace(-1, 4, 11)
    model = enc.fit_encoding(X, Y, alphas=alphas, cv=4)
    Xc, Yc = Xs, Y - Y.mean(axis=0)
    loss = np.zeros((alphas.size, Y.shape[1]))
    for tr, va in KFold(4).split(Xc):
        for a, alpha in enumerate(alphas):
            pred = Ridge(alpha=alpha, fit_intercept=False).fit(Xc[tr], Yc[tr]).predict(Xc[va])
            loss[a] += ((Yc[va] - pred) ** 2).mean(axis=0)
    np.testing.assert_array_equal(model.best_alphas, alphas[loss.argmin(axis=0)])


def test_scores_against_numpy():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    r = enc.pearson_per_voxel(A, B)
    np.testing.assert_allclose(r, [np.corrcoef(A[:, j], B[:, j])[0, 1] for j in range(4)])
    from sklearn.metrics import r2_score
    np.testing.assert_allclose(enc.r2_per_voxel(A, B), r2_score(A, B, multioutput="raw_values"))
    # a constant voxel has no R^2 or r
    A[:, 0] = 1.0
    assert np.isnan(enc.r2_per_voxel(A, B)[0]) and np.isnan(enc.pearson_per_voxel(A, B)[0])


def test_perfect_model_reaches_noise_ceiling():
    rng = np.random.default_rng(4)
    n_img, n_rep, v = 4000, 3, 40
    # noise ceilings from 52% to 87%: low enough to matter, high enough for tight checks
    signal_sd = np.linspace(0.6, 1.5, v)
    S = rng.normal(size=(n_img, v)) * signal_sd
    trials = np.repeat(S, n_rep, axis=0) + rng.normal(size=(n_img * n_rep, v))
    trial_image = np.repeat(np.arange(n_img), n_rep)
    avg = trials.reshape(n_img, n_rep, v).mean(axis=1)
    theory = 100 * signal_sd ** 2 / (signal_sd ** 2 + 1 / n_rep)
    # a model that predicts the signal exactly, scored against noisy averages
    exact = enc.score_encoding(None, S, avg, noise_ceiling=theory)
    # sampling SD of R^2/NC here is about 0.03 per voxel
    np.testing.assert_allclose(exact.r2_nc, 1.0, atol=0.07)
    np.testing.assert_allclose(exact.r_nc, 1.0, atol=0.035)
    assert abs(np.mean(exact.r2_nc) - 1) < 0.02
    # with the ceiling estimated from the trials (NSD's ncsnr): right on average;
    # per voxel the ceiling itself carries sampling error
    nc = noise_ceiling(compute_ncsnr(trials, trial_image), n_rep)
    np.testing.assert_allclose(nc, theory, atol=5)
    res = enc.score_encoding(None, S, avg, noise_ceiling=nc)
    assert abs(np.mean(res.r2_nc) - 1) < 0.03
    assert np.median(np.abs(res.r2_nc - 1)) < 0.03
    # a model that knows nothing scores ~0 whatever the ceiling
    null = enc.score_encoding(None, rng.permutation(S), avg, noise_ceiling=nc)
    assert abs(np.mean(null.r_nc)) < 0.05


def _subject(n_train=400, n_test=100, p=6, v=12, seed=5):
    """A stand-in for SubjectData: features per subset image, betas per subject image."""
    rng = np.random.default_rng(seed)
    n_images = n_train + n_test + 50  # images the subject never saw
    F = rng.normal(size=(n_images, p))
    image_index = rng.permutation(n_images)[: n_train + n_test]
    W = rng.normal(size=(p, v))
    noise_sd = 0.5
    betas = F[image_index] @ W + noise_sd / np.sqrt(3) * rng.normal(size=(n_train + n_test, v))
    signal_var = (W ** 2).sum(axis=0)
    ncsnr = np.sqrt(signal_var) / noise_sd
    split = np.array(["train"] * n_train + ["test"] * n_test)
    n_trials = np.full(n_train + n_test, 3)

    def nc(which="test"):
        return noise_ceiling(ncsnr, n_trials[split == which])

    subj = SimpleNamespace(betas=betas, image_index=image_index, split=split, train=split == "train",
                           test=split == "test", n_trials=n_trials, ncsnr=ncsnr, noise_ceiling=nc)
    return F, subj


def test_encoding_scores_on_a_subject():
    F, subj = _subject()
    res = enc.encoding_scores(F, subj, random_state=0)
    assert res.r2.shape == (12,) and res.model.coef.shape == (6, 12)
    # features that generated the data: about as good as the noise allows
    assert abs(np.median(res.r2_nc) - 1) < 0.1
    # the same result from features already aligned to the subject's rows
    res2 = enc.encoding_scores(F[subj.image_index], subj, aligned=True, random_state=0)
    np.testing.assert_allclose(res.r2, res2.r2)
    # shuffled features predict nothing
    rng = np.random.default_rng(0)
    bad = enc.encoding_scores(rng.permutation(F), subj)
    assert np.median(bad.r2_nc) < 0.1


def test_layerwise_best_layer():
    F, subj = _subject(v=12)
    rng = np.random.default_rng(6)
    noise = rng.normal(size=F.shape)
    layers = {"noise": noise, "half": 0.5 * F + noise, "true": F}
    res = enc.layerwise_encoding(layers, subj, min_score=0.0)
    assert res.scores.shape == (3, 12)
    assert np.all(res.best_layer == 2)
    assert set(res.best_layer_names()) == {"true"}
    assert np.all((res.preferred_depth > 1) & (res.preferred_depth <= 2))
    with pytest.raises(ValueError, match="score must be"):
        enc.layerwise_encoding(layers, subj, score="mse")


def test_banded_ridge_shrinks_useless_band():
    X, Y, _ = _planted(n=400, p=6, v=10, sigma=0.5, seed=7)
    junk = np.random.default_rng(8).normal(size=(400, 30))
    model = enc.fit_banded_encoding({"good": X[:300], "junk": junk[:300]}, Y[:300], n_iter=10,
                                    random_state=0)
    assert model.bands == ["good", "junk"]
    # band weights: the informative band is weighted far more than the junk band
    assert np.all(model.deltas[0] > model.deltas[1])
    parts = model.predict([X[300:], junk[300:]], split=True)
    assert parts.shape == (2, 100, 10)
    assert np.var(parts[1]) < 0.05 * np.var(parts[0])
    res = enc.score_encoding(model, [X[300:], junk[300:]], Y[300:])
    assert np.median(res.r2) > 0.7


def test_summarise_by_label_bootstrap():
    rng = np.random.default_rng(9)
    labels = np.repeat(["V1", "FFA"], 500)
    scores = np.r_[rng.normal(0.5, 0.1, 500), rng.normal(0.2, 0.1, 500)]
    scores[0] = np.nan
    t1 = enc.summarise_by_label(scores, labels, random_state=0)
    t2 = enc.summarise_by_label(scores, labels, random_state=0)
    assert t1.equals(t2)  # seeded
    row = t1.set_index("label").loc["V1"]
    assert row.n_voxels == 499
    # the mean's 95% interval: about +-1.96 * 0.1 / sqrt(500)
    assert row.ci_low < 0.5 < row.ci_high
    np.testing.assert_allclose(row.ci_high - row.ci_low, 2 * 1.96 * 0.1 / np.sqrt(499), rtol=0.2)
    t = enc.summarise_by_label(scores, labels, order=["FFA", "V1", "LOC"], statistic="median")
    assert list(t.label) == ["FFA", "V1", "LOC"] and t.n_voxels.iloc[2] == 0


def test_nan_voxels_left_out_with_warning():
    X, Y, _ = _planted(n=200, v=5)
    Y[3, 1] = np.nan
    with pytest.warns(UserWarning, match="1 of 5 voxels"):
        model = enc.fit_encoding(X, Y)
    assert np.all(np.isnan(model.coef[:, 1])) and np.isnan(model.best_alphas[1])
    assert np.all(np.isfinite(np.delete(model.coef, 1, axis=1)))
    pred = model.predict(X)
    assert np.all(np.isnan(pred[:, 1]))
    assert np.isnan(enc.r2_per_voxel(Y, pred)[1])


def test_errors():
    X, Y, _ = _planted(n=50, v=3)
    with pytest.raises(ValueError, match="same n_samples"):
        enc.fit_encoding(X[:40], Y)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_train contains 1 NaN"):
        enc.fit_encoding(Xn, Y)
    with pytest.raises(ValueError, match="too few samples for 5-fold"):
        enc.fit_encoding(X[:8], Y[:8])
    with pytest.raises(ValueError, match="alphas must be"):
        enc.fit_encoding(X, Y, alphas=[-1.0])
    with pytest.raises(ValueError, match="every voxel"):
        enc.fit_encoding(X, np.full_like(Y, np.nan))
    model = enc.fit_encoding(X, Y, alphas=[1.0])
    with pytest.raises(ValueError, match="n_features=3 but the model was fitted on n_features=8"):
        model.predict(X[:, :3])
    with pytest.raises(ValueError, match="same shape"):
        enc.r2_per_voxel(Y, Y[:, :2])
    with pytest.raises(ValueError, match="percent"):
        enc.normalise_by_noise_ceiling(np.ones(3), np.array([50.0, 120.0, 3.0]))
    with pytest.raises(ValueError, match="cv must be at least 2"):
        enc.fit_encoding(X, Y, cv=1)
    F, subj = _subject()
    with pytest.raises(ValueError, match="subj.image_index refers to row"):
        enc.encoding_scores(F[:100], subj)
    with pytest.raises(ValueError, match="aligned=True expects"):
        enc.encoding_scores(F, subj, aligned=True)


def test_noise_ceiling_normalisation_details():
    s = np.array([0.2, 0.2, 0.2])
    nc = np.array([40.0, 0.5, 0.0])
    out = enc.normalise_by_noise_ceiling(s, nc)
    np.testing.assert_allclose(out[0], 0.5)
    assert np.isnan(out[1]) and np.isnan(out[2])  # below min_nc=1%
    np.testing.assert_allclose(enc.normalise_by_noise_ceiling(s, nc, kind="r")[0], 0.2 / np.sqrt(0.4))


def test_backend_is_restored():
    from himalaya.backend import get_backend, set_backend

    X, Y, _ = _planted(n=60, v=2)
    set_backend("torch")
    try:
        model = enc.fit_encoding(X, Y, backend="numpy")
        assert get_backend().name == "torch"
        assert model.backend == "numpy"
    finally:
        set_backend("numpy")
    assert enc.resolve_backend("torch") == "torch"
    assert enc.resolve_backend() in ("numpy", "torch_cuda")


def test_exercise_checks_accept_right_and_reject_wrong_answers():
    from scaleinv_utils.exercises import check

    s = np.array([0.5, 1.0, 2.0])
    nc_right = 100 * s ** 2 / (s ** 2 + 1 / 3)
    assert check("encoding.ex1", nc_right, verbose=False, ncsnr=s, n_trials=3)
    assert not check("encoding.ex1", nc_right / 100, verbose=False, ncsnr=s, n_trials=3)
    assert not check("encoding.ex1", 100 * s ** 2 / (s ** 2 + 1), verbose=False, ncsnr=s, n_trials=3)
    assert not check("encoding.ex1", ..., verbose=False, ncsnr=s, n_trials=3)

    r2, nc = np.array([0.1, 0.3]), np.array([20.0, 60.0])
    assert check("encoding.ex2", r2 / (nc / 100), verbose=False, r2=r2, noise_ceiling=nc)
    res = check("encoding.ex2", r2 / nc, verbose=False, r2=r2, noise_ceiling=nc)
    assert not res and "percent" in res.message

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.normal(size=30)
    w = np.linalg.solve(X.T @ X + 5 * np.eye(4), X.T @ y)
    assert check("encoding.ex3", w, verbose=False, X=X, y=y, alpha=5.0)
    res = check("encoding.ex3", np.linalg.lstsq(X, y, rcond=None)[0], verbose=False, X=X, y=y, alpha=5.0)
    assert not res and "least-squares" in res.message

    best = np.array([0, 1, 1, 2, 1])
    net = np.array(["a", "a", "b", "b", "b"])
    kw = dict(best_layer=best, network=net, layer=1, which="a")
    assert check("encoding.ex4", 0.5, verbose=False, **kw)
    assert not check("encoding.ex4", 50, verbose=False, **kw)
    res = check("encoding.ex4", 0.6, verbose=False, **kw)
    assert not res and "all voxels" in res.message


def test_kernel_solver_matches_primal_when_features_outnumber_samples():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(60, 150))
    Y = X @ rng.normal(size=(150, 5)) / 12 + rng.normal(size=(60, 5))
    alphas = np.logspace(-1, 4, 11)
    primal = enc.fit_encoding(X, Y, alphas=alphas, solver="primal")
    kernel = enc.fit_encoding(X, Y, alphas=alphas, solver="kernel")
    auto = enc.fit_encoding(X, Y, alphas=alphas)  # n_features > n_samples: the kernel path
    np.testing.assert_array_equal(primal.best_alphas, kernel.best_alphas)
    np.testing.assert_allclose(primal.coef, kernel.coef, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(auto.coef, kernel.coef)
    with pytest.raises(ValueError, match="solver must be"):
        enc.fit_encoding(X, Y, solver="lsqr")


# --------------------------------------------------------------------------- GPU memory
def _small_problem(n=160, p=12, t=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    Y = (X[:, :4] @ rng.normal(size=(4, t)) * rng.uniform(0.05, 1, t)
         + rng.normal(size=(n, t))).astype(np.float32)
    return X, Y


ALPHAS5 = np.logspace(-1, 3, 5)


@pytest.mark.parametrize("batches", [(None, None), (50, 2)])
def test_byte_model_bounds_what_the_mock_gpu_holds(fake_cuda, batches):
    # The mock device counts every tensor marked as on the GPU (a lower bound of real use:
    # kernels' own temporaries are missed); the model must not be below it, nor far above.
    X, Y = _small_problem()
    tb, ab = batches
    fake_cuda.reset()
    enc.fit_encoding(X, Y, alphas=ALPHAS5, backend="torch_cuda", n_targets_batch=tb, n_alphas_batch=ab)
    held = fake_cuda.stats()["peak_bytes"]
    model = enc.ridge_peak_bytes(*X.shape, Y.shape[1], n_alphas=5, n_targets_batch=tb, n_alphas_batch=ab)
    assert held <= model <= 1.6 * held, (held, model)


def test_a_whole_cortex_subset_fits_a_15_gb_gpu():
    # 9,000 training images x 512 features -> 32,000 voxels (nsdgeneral of one subject), 25
    # penalties, 5 folds: all at once it needs more than a T4 has; the plan fits in 80% of it.
    shape = dict(n_samples=9000, n_features=512, n_targets=32000)
    T4 = 15 * 10**9
    assert enc.ridge_peak_bytes(*shape.values(), n_alphas=25) > T4
    plan = enc.plan_ridge_batches(**shape, n_alphas=25, budget_bytes=int(0.8 * T4))
    assert plan["n_targets_batch"] is not None and plan["peak_bytes"] <= 0.8 * T4
    assert plan["peak_bytes"] == enc.ridge_peak_bytes(*shape.values(), n_alphas=25,
                                                  n_targets_batch=plan["n_targets_batch"],
                                                  n_alphas_batch=plan["n_alphas_batch"],
                                                  Y_in_cpu=plan["Y_in_cpu"])
    # the 15,000-voxel case of the README's benchmark (about 7 GiB) runs unbatched
    plan15 = enc.plan_ridge_batches(9000, 512, 15000, n_alphas=17, budget_bytes=int(0.8 * T4))
    assert plan15["n_targets_batch"] is None and plan15["n_alphas_batch"] is None
    assert 6 * 2**30 < plan15["peak_bytes"] < 8 * 2**30
    # far more voxels than fit with Y on the device: Y stays on the host
    huge = enc.plan_ridge_batches(9000, 512, 400_000, n_alphas=25, budget_bytes=int(0.8 * T4))
    assert huge["Y_in_cpu"] and huge["peak_bytes"] <= 0.8 * T4


def test_plan_halves_alphas_then_refuses_clearly():
    roomy = enc.plan_ridge_batches(2000, 4000, 1000, n_alphas=25, budget_bytes=2 * 2**30)
    tight = enc.plan_ridge_batches(2000, 4000, 1000, n_alphas=25, budget_bytes=400 * 2**20)
    assert roomy["n_alphas_batch"] is None
    assert tight["n_alphas_batch"] is not None and tight["n_alphas_batch"] < 25
    assert tight["peak_bytes"] <= 400 * 2**20
    with pytest.raises(MemoryError, match="budget_bytes allows 0.00 GiB"):
        enc.plan_ridge_batches(9000, 512, 30000, n_alphas=25, budget_bytes=1000)


def test_auto_batches_on_a_small_gpu_give_the_unbatched_fit(fake_cuda, monkeypatch):
    from scaleinv_utils import encoding as enc

    X, Y = _small_problem(t=600)  # more voxels than the smallest batch the plan allows (256)
    ref = enc.fit_encoding(X, Y, alphas=ALPHAS5, backend="numpy")
    budget = int(0.6 * enc.ridge_peak_bytes(*X.shape, Y.shape[1], n_alphas=5))
    monkeypatch.setattr(enc, "_free_device_bytes", lambda device="cuda": int(budget / enc.MEMORY_FRACTION))
    seen = {}
    real_plan = enc.plan_ridge_batches

    def spy(*args, **kwargs):
        seen.update(real_plan(*args, **kwargs))
        return dict(seen)
    monkeypatch.setattr(enc, "plan_ridge_batches", spy)
    fake_cuda.reset()
    got = enc.fit_encoding(X, Y, alphas=ALPHAS5, backend="torch_cuda")
    assert seen["n_targets_batch"] is not None  # it did batch
    assert fake_cuda.stats()["peak_bytes"] <= budget
    np.testing.assert_array_equal(got.best_alphas, ref.best_alphas)
    np.testing.assert_allclose(got.coef, ref.coef, atol=1e-4)


@pytest.mark.parametrize("backend, dtype", [("numpy", np.float64), ("torch_cuda", np.float32)])
def test_banded_ridge_runs_in_float32_on_the_gpu(fake_cuda, monkeypatch, backend, dtype):
    from himalaya.ridge import BandedRidgeCV

    seen = {}

    class Stop(Exception):
        pass

    def spy(self, X, y=None):
        seen.update(X=X.dtype, Y=y.dtype, params=dict(self.solver_params))
        raise Stop
    monkeypatch.setattr(BandedRidgeCV, "fit", spy)
    X, Y = _small_problem()
    with pytest.raises(Stop):
        enc.fit_banded_encoding([X[:, :6].astype(np.float64), X[:, 6:].astype(np.float64)],
                            Y.astype(np.float64), backend=backend)
    assert seen["X"] == dtype and seen["Y"] == dtype
    assert "n_targets_batch" in seen["params"] and "n_alphas_batch" in seen["params"]
