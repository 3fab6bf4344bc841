"""GPU paths without a GPU: the mock CUDA device of tests/tools/fake_cuda.py fails exactly where
real CUDA would (a CPU tensor mixed with a CUDA one, .numpy() of a CUDA tensor), so these tests
catch device bugs on a CPU-only machine; the device-parametrised tests of neighbours, encoding
and features (the ``device`` fixture) run every path on "cpu" and on "cuda" through it."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_the_mock_device_fails_as_cuda_does(fake_cuda):
    import scaleinv_utils as su

    assert torch.cuda.is_available() and su.get_device() == "cuda"
    a = torch.ones(3, device="cuda")
    assert a.is_cuda and a.device.type == "cuda"
    with pytest.raises(RuntimeError, match="same device"):
        a + torch.ones(3)
    with pytest.raises(TypeError, match="cuda:0 device type tensor to numpy"):
        a.numpy()
    np.testing.assert_array_equal(a.cpu().numpy(), np.ones(3))
    m = torch.nn.Linear(3, 2).to("cuda")
    assert m.weight.is_cuda
    assert m(a).is_cuda


def test_the_mock_device_is_gone_after_the_test():
    import scaleinv_utils as su

    assert su.get_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_intrinsic_dimension_on_the_device_matches_the_cpu(device):
    from scaleinv_utils import dimension as dm

    rng = np.random.default_rng(1)
    X = np.sin(rng.uniform(size=(300, 3)) @ rng.normal(size=(3, 20))) + 0.01 * rng.normal(size=(300, 20))
    for fn in (dm.gride, dm.twonn, dm.mle):
        assert fn(X, 5, device=device).dimension == pytest.approx(fn(X, 5, device="cpu").dimension,
                                                                    rel=1e-10)


def test_ridge_encoding_on_the_device_matches_numpy(device):
    from scaleinv_utils import encoding as enc

    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 10))
    Y = X[:, :3] @ rng.normal(size=(3, 40)) + rng.normal(size=(150, 40))
    backend = "torch_cuda" if device == "cuda" else "numpy"
    alphas = np.logspace(-1, 3, 5)
    ref = enc.fit_encoding(X, Y, alphas=alphas, backend="numpy")
    got = enc.fit_encoding(X, Y, alphas=alphas, backend=backend)
    assert got.backend == backend
    np.testing.assert_array_equal(got.best_alphas, ref.best_alphas)
    np.testing.assert_allclose(got.coef, ref.coef, atol=1e-4)  # float32 on the GPU


def _held_on_device(fn, device):
    """fn() and the bytes it held on the device at its peak (None on the CPU): the check that a
    function given ``device="cuda"`` really computed there, without which a device path that
    silently ran on the CPU would pass every comparison with the CPU."""
    if device == "cpu":
        return fn(), None
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    return out, torch.cuda.max_memory_allocated() - base


def test_local_pca_grams_on_the_device_match_the_cpu(device):
    from scaleinv_utils import dimension as dm
    from scaleinv_utils.neighbors import nearest_neighbors

    rng = np.random.default_rng(3)
    X = np.tanh(rng.normal(size=(400, 4)) @ rng.normal(size=(4, 30))) + 0.02 * rng.normal(size=(400, 30))
    g = nearest_neighbors(X, 80)  # given, so only the Gram matrices can use the device
    for method in ("fraction", "pr"):
        ref = dm.local_pca(X, 40, method=method, graph=g, n_centers=150, random_state=0)
        got, held = _held_on_device(lambda: dm.local_pca(X, 40, method=method, graph=g, n_centers=150,
                                                         random_state=0, device=device), device)
        np.testing.assert_allclose(got.pointwise, ref.pointwise, rtol=1e-10)
        assert held is None or held >= 150 * 40 * 30 * 8  # the gathered differences were there
    ks = [10, 20, 40]
    ref = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=300, random_state=0)
    got = dm.id_profile(X, ks, ("lpca", "lpca_pr"), graph=g, lpca_centers=300, random_state=0, device=device)
    for name in ("lpca", "lpca_pr"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-10)
    np.testing.assert_array_equal(got.lpca_centers, ref.lpca_centers)


def test_knn_measures_on_the_device_match_the_cpu(device):
    from scaleinv_utils import similarity as sim

    rng = np.random.default_rng(4)
    Z = rng.normal(size=(300, 5))
    X = Z @ rng.normal(size=(5, 20)) + 0.3 * rng.normal(size=(300, 20))
    Y = Z @ rng.normal(size=(5, 12)) + 0.3 * rng.normal(size=(300, 12))
    ks = [5, 10, 40]
    ref = sim.knn_overlap(X, Y, ks, kind="jaccard")
    got, held = _held_on_device(lambda: sim.knn_overlap(X, Y, ks, kind="jaccard", device=device), device)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert held is None or held > 0
    assert sim.mutual_knn_alignment(X, Y, 10, device=device) == pytest.approx(sim.mutual_knn_alignment(X, Y, 10))
    p_ref = sim.similarity_profile(X, Y, ks, random_state=0)
    p_got = sim.similarity_profile(X, Y, ks, random_state=0, device=device)
    for m in p_ref.values:
        np.testing.assert_allclose(p_got[m], p_ref[m], rtol=1e-10)
    np.testing.assert_allclose(sim.coarse_grain(X, ks, device=device), sim.coarse_grain(X, ks), rtol=1e-12)
    c_ref = sim.cross_scale_similarity(X, [5, 20], n_anchors=150, n_null=2, random_state=0)
    c_got, held = _held_on_device(lambda: sim.cross_scale_similarity(
        X, [5, 20], n_anchors=150, n_null=2, random_state=0, device=device), device)
    np.testing.assert_allclose(c_got.neighborhood_similarity, c_ref.neighborhood_similarity, rtol=1e-12)
    np.testing.assert_allclose(c_got.null_scores, c_ref.null_scores, rtol=1e-12)
    assert held is None or held > 0


def test_neighborhood_reliability_on_the_device_matches_the_cpu(device):
    from scaleinv_utils.similarity import neighborhood_reliability

    rng = np.random.default_rng(5)
    signal = rng.normal(size=(60, 15))
    image = np.repeat(np.arange(60), 3)
    trials = signal[image] + 0.5 * rng.normal(size=(180, 15))
    ref = neighborhood_reliability(trials, image, [3, 10], n_splits=2, random_state=0)
    got = neighborhood_reliability(trials, image, [3, 10], n_splits=2, random_state=0, device=device)
    np.testing.assert_allclose(got.overlap_splits, ref.overlap_splits, rtol=1e-12)


@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_cka_on_the_device_matches_the_cpu(device, unbiased):
    from scaleinv_utils.similarity import hsic, linear_cka

    rng = np.random.default_rng(6)
    X = rng.normal(size=(80, 7)) + 5.0  # off-centre: the centring must happen on the device too
    Y = np.hstack([X[:, :3] @ rng.normal(size=(3, 4)), rng.normal(size=(80, 9))])
    ref = linear_cka(X, Y, unbiased=unbiased)
    got, held = _held_on_device(lambda: linear_cka(X, Y, unbiased=unbiased, device=device), device)
    assert got == pytest.approx(ref, rel=1e-10)
    assert held is None or held >= X.nbytes + Y.nbytes
    # and both equal the kernel form, HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
    K, L = X @ X.T, Y @ Y.T
    kernel = hsic(K, L, unbiased) / np.sqrt(hsic(K, K, unbiased) * hsic(L, L, unbiased))
    assert got == pytest.approx(kernel, rel=1e-8)


def test_scale_invariance_on_the_device_matches_the_cpu(device):
    from scaleinv_utils.alignment import local_global_dimension, scale_invariance

    rng = np.random.default_rng(7)
    X = np.tanh(rng.normal(size=(200, 3)) @ rng.normal(size=(3, 16))) + 0.05 * rng.normal(size=(200, 16))
    ref = scale_invariance(X, [5, 10, 20], n_null=2, n_anchors=100, random_state=0)
    got, held = _held_on_device(lambda: scale_invariance(X, [5, 10, 20], n_null=2, n_anchors=100,
                                                         random_state=0, device=device), device)
    for key, value in ref.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-10, err_msg=key)
    assert held is None or held > 0
    a = local_global_dimension(X, [5, 10, 20], random_state=0)
    b = local_global_dimension(X, [5, 10, 20], random_state=0, device=device)
    assert b == pytest.approx(a, rel=1e-10)


def test_alignment_table_passes_its_device_to_the_scale_measures(monkeypatch):
    from types import SimpleNamespace

    from scaleinv_utils import alignment

    seen = []

    def fake_scale_invariance(X, ks, **kwargs):
        seen.append(kwargs.get("device", "not passed"))
        out = {k: 0.0 for k in alignment._INVARIANCE_COLUMNS}
        return dict(out, ks=np.array([5, 10, 20]), id_profile=np.array([3.0, 2.0, 1.0 + len(seen)]))

    monkeypatch.setattr(alignment, "scale_invariance", fake_scale_invariance)
    monkeypatch.setattr(alignment, "brain_alignment", lambda *a, **k: {})
    subj = SimpleNamespace(voxels=SimpleNamespace(network=np.array(["early visual"] * 4)),
                           betas=np.zeros((30, 4)), image_index=np.arange(30))
    reps = {"a": np.ones((30, 3)), "b": np.ones((30, 2))}
    alignment.alignment_table(reps, subj, progress=False, device="cuda")
    assert seen == ["cuda"] * 3  # the brain's, then each representation's
    seen.clear()
    alignment.alignment_table(reps, subj, progress=False)
    assert seen == [None] * 3
