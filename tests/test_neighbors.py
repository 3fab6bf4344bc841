import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.neighbors import NearestNeighbors

from scaleinv_utils._validation import check_array, check_random_state, check_scale
from scaleinv_utils.neighbors import count_duplicates, nearest_neighbors, scale_grid


def test_matches_sklearn():
    X = np.random.default_rng(0).normal(size=(400, 30))
    graph = nearest_neighbors(X, 25, block_size=97)
    dist, idx = NearestNeighbors(n_neighbors=26).fit(X).kneighbors(X)
    np.testing.assert_allclose(graph.distances, dist[:, 1:], rtol=1e-10)
    np.testing.assert_array_equal(graph.indices, idx[:, 1:])


def test_slicing_is_the_smaller_query():
    X = np.random.default_rng(1).normal(size=(200, 5))
    big, small = nearest_neighbors(X, 40), nearest_neighbors(X, 7)
    np.testing.assert_array_equal(big.at(7)[0], small.indices)
    with pytest.raises(ValueError, match="between 1 and k_max=40"):
        big.at(41)


def test_large_offset_does_not_change_neighbours():
    X = np.random.default_rng(2).normal(size=(300, 10))
    a, b = nearest_neighbors(X, 10), nearest_neighbors(X + 1e4, 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-8)


def test_errors():
    with pytest.raises(ValueError, match="k_max=10 must be smaller than n_samples=10"):
        nearest_neighbors(np.ones((10, 2)), 10)
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbors(np.array([[0.0, np.nan], [1, 2], [3, 4]]), 1)
    with pytest.raises(ValueError, match="must be 2-D"):
        nearest_neighbors(np.ones(10), 2)
    with pytest.raises(TypeError, match="k_max must be an integer"):
        nearest_neighbors(np.ones((10, 2)), 2.5)


def test_scale_grid_and_duplicates():
    ks = scale_grid(1000, n_scales=20)
    assert ks[0] == 5 and ks[-1] == 250 and np.all(np.diff(ks) > 0)
    with pytest.raises(ValueError, match="smaller than n_samples"):
        scale_grid(100, k_max=100)
    X = np.vstack([np.eye(3), np.eye(3)[:2]])
    assert count_duplicates(X) == 2


def test_validation_helpers():
    with pytest.raises(TypeError, match="numeric"):
        check_array(np.array(["a", "b"]))
    with pytest.raises(ValueError, match="at least 5 samples"):
        check_array(np.ones((3, 2)), min_samples=5)
    with pytest.raises(ValueError, match="k=0 must be at least 1"):
        check_scale(0, 10)
    assert check_random_state(3).integers(100) == np.random.default_rng(3).integers(100)
    with pytest.raises(TypeError, match="random_state"):
        check_random_state("seed")


def test_many_candidates_path_matches_sklearn():
    # k_max large relative to n_samples takes the Gram-block path with exact refinement.
    X = np.random.default_rng(4).normal(size=(300, 8))
    graph = nearest_neighbors(X, 150)
    dist, idx = NearestNeighbors(n_neighbors=151).fit(X).kneighbors(X)
    np.testing.assert_allclose(graph.distances, dist[:, 1:], rtol=1e-9, atol=1e-9)
    assert (graph.indices == idx[:, 1:]).mean() > 0.999  # ties may swap


def test_inexact_mode_ranks_like_exact_on_continuous_data():
    X = np.random.default_rng(5).normal(size=(500, 20))
    exact, fast = nearest_neighbors(X, 60), nearest_neighbors(X, 60, exact=False)
    np.testing.assert_allclose(fast.distances, exact.distances, rtol=1e-4)
    assert (fast.indices == exact.indices).mean() > 0.999


def test_tight_clusters_far_apart_keep_their_neighbours():
    # Distances ~1e-3 of the norms: float32 |x|^2 + |y|^2 - 2 x.y would pick wrong neighbours.
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=1000, size=(20, 50))
    X = centres[rng.integers(20, size=2000)] + rng.normal(size=(2000, 50))
    graph = nearest_neighbors(X, 10)
    dist, idx = NearestNeighbors(n_neighbors=11, algorithm="brute").fit(X).kneighbors(X)
    np.testing.assert_allclose(graph.distances, dist[:, 1:], rtol=1e-9)


def test_scale_grid_validation():
    with pytest.raises(ValueError, match="n_scales=0"):
        scale_grid(100, n_scales=0)
    with pytest.raises(ValueError, match="too few"):
        scale_grid(5)


def test_distances_blurred_by_float64_rounding_are_recomputed():
    # Neighbours ~1e-6 of the norms apart: the float64 product |x|^2 + |y|^2 - 2 x.y
    # keeps only ~4 digits of d^2; the graph must still give them to 1e-9.
    rng = np.random.default_rng(1)
    centres = rng.normal(scale=1000, size=(5, 20))
    X = centres[np.repeat(np.arange(5), 40)] + 1e-2 * rng.normal(size=(200, 20))
    graph = nearest_neighbors(X, 10)
    # From differences (scikit-learn's brute force uses the product and blurs them too).
    full = cdist(X, X)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(graph.distances, np.sort(full, axis=1)[:, :10], rtol=1e-9)
    np.testing.assert_allclose(np.take_along_axis(full, graph.indices, axis=1), graph.distances,
                               rtol=1e-9)
    # Without the recomputation the same product is off by far more than that.
    Xc = X - X.mean(axis=0)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    gram_d2 = sq[:, None] + sq[graph.indices] - 2 * np.einsum("ik,ijk->ij", Xc, Xc[graph.indices])
    assert np.max(np.abs(np.sqrt(np.maximum(gram_d2, 0)) / graph.distances - 1)) > 1e-6


@pytest.mark.parametrize("spread", [1e-4, 1e-5, 1e-6])
def test_clusters_far_tighter_than_float64_rounding_keep_exact_neighbours(spread):
    # At spread 1e-5 the product's rounding (~1e-7 of |x|^2 ~ 2e7) exceeds every squared
    # distance inside a cluster: ranking by it alone picks neighbours at random.
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=1000, size=(5, 20))
    X = centres[np.repeat(np.arange(5), 40)] + spread * rng.normal(size=(200, 20))
    graph = nearest_neighbors(X, 10)
    full = cdist(X, X)
    np.fill_diagonal(full, np.inf)
    truth = np.argsort(full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(np.sort(graph.indices, axis=1), np.sort(truth, axis=1))
    np.testing.assert_allclose(graph.distances, np.take_along_axis(full, truth, axis=1), rtol=1e-8)


def test_duplicates_have_distance_zero_and_the_rest_stays_exact():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6))
    X[1], X[2] = X[0], X[0]
    graph = nearest_neighbors(X, 5)
    assert set(graph.indices[0, :2]) == {1, 2} and np.all(graph.distances[0, :2] == 0)
    full = cdist(X, X)
    np.fill_diagonal(full, np.inf)
    np.testing.assert_allclose(graph.distances, np.sort(full, axis=1)[:, :5], rtol=1e-10, atol=1e-12)


def test_cuda_device_is_refused_clearly_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        graph = nearest_neighbors(np.random.default_rng(0).normal(size=(300, 8)), 20, device="cuda")
        ref = nearest_neighbors(np.random.default_rng(0).normal(size=(300, 8)), 20)
        np.testing.assert_array_equal(graph.indices, ref.indices)
    else:
        with pytest.raises((RuntimeError, AssertionError)):
            nearest_neighbors(np.ones((10, 2)) + np.arange(10)[:, None], 2, device="cuda")


# --------------------------------------------------------------------------- float32-first
def _reference(X, k):
    """k nearest neighbours from float64 differences, ties broken by the smaller index."""
    n = len(X)
    diff = X[:, None, :] - X[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    np.fill_diagonal(d2, np.inf)
    order = np.lexsort((np.broadcast_to(np.arange(n), d2.shape), d2), axis=-1)[:, :k]
    return order, np.sqrt(np.take_along_axis(d2, order, axis=1))


def _tight_clusters(spread, seed=2, n_clusters=5, per=40, dim=20):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1000, size=(n_clusters, dim))
    return centres[np.repeat(np.arange(n_clusters), per)] + spread * rng.normal(size=(n_clusters * per, dim))


def _duplicates():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 6))
    X[1] = X[2] = X[0]
    X[50:60] = X[40:50]
    return X


def _grid():
    g = np.arange(6.0)
    return np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)  # exact ties


CASES = {
    "gaussian": (lambda: np.random.default_rng(0).normal(size=(400, 30)), 25),
    "offset 1e4": (lambda: np.random.default_rng(2).normal(size=(300, 10)) + 1e4, 10),
    "clusters 1e-2": (lambda: _tight_clusters(1e-2), 10),
    "clusters 1e-5": (lambda: _tight_clusters(1e-5), 10),
    "clusters 1, k past a cluster": (lambda: _tight_clusters(1.0, per=20), 30),
    "duplicates": (_duplicates, 5),
    "integer grid (ties)": (_grid, 26),
}


@pytest.mark.parametrize("search", ["float64", "float32-first"])
@pytest.mark.parametrize("case", list(CASES))
def test_both_exact_searches_equal_the_float64_reference(case, search, device):
    X, k = CASES[case][0](), CASES[case][1]
    graph = nearest_neighbors(X, k, device=device, block_size=128, search=search)
    idx, dist = _reference(X, k)
    np.testing.assert_array_equal(graph.indices, idx)  # ties by index: CPU and CUDA agree
    np.testing.assert_allclose(graph.distances, dist, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["gaussian", "clusters 1e-5", "duplicates", "integer grid (ties)"])
def test_float32_first_search_equals_the_float64_search_it_replaces(case):
    from scaleinv_utils.neighbors import _exact_float64_rows

    X, k = CASES[case][0](), CASES[case][1]
    Xc = X - X.mean(axis=0)
    idx64, d2_64 = _exact_float64_rows(X, Xc, np.arange(len(X)), k, "cpu")
    graph = nearest_neighbors(X, k, search="float32-first")
    np.testing.assert_allclose(graph.distances, np.sqrt(d2_64), rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(graph.indices, idx64)


def _count_fallback(monkeypatch):
    from scaleinv_utils import neighbors as nb

    seen = []
    original = nb._exact_float64_rows

    def counting(X, Xc, rows, *args, **kwargs):
        seen.append(len(rows))
        return original(X, Xc, rows, *args, **kwargs)

    monkeypatch.setattr(nb, "_exact_float64_rows", counting)
    return seen


def test_certificate_passes_ordinary_rows_and_sends_tight_clusters_to_float64(monkeypatch):
    seen = _count_fallback(monkeypatch)
    nearest_neighbors(CASES["gaussian"][0](), 25, search="float32-first")
    assert seen == []  # every row certified from float32
    X = _tight_clusters(1e-5)
    nearest_neighbors(X, 10, search="float32-first")
    assert sum(seen) == len(X)  # float32 rounding (~2 in rank) >> distances (~1e-9): all fail
    # and float32 alone does get these rows wrong
    fast = nearest_neighbors(X, 10, exact=False)
    assert not np.array_equal(np.sort(fast.indices, 1), np.sort(_reference(X, 10)[0], 1))


def test_a_certificate_without_the_rounding_bound_would_accept_wrong_rows(monkeypatch):
    # The bound is what makes the search exact: with it set to zero, rows whose float32
    # ranking missed a neighbour are certified and come back wrong.
    from scaleinv_utils import neighbors as nb

    X = _tight_clusters(1e-2, per=60)
    k = 40
    truth = _reference(X, k)[0]
    assert np.array_equal(nearest_neighbors(X, k, search="float32-first").indices, truth)
    monkeypatch.setattr(nb, "_unit_roundoff_float32", lambda device: 0.0)
    assert not np.array_equal(nearest_neighbors(X, k, search="float32-first").indices, truth)


def test_auto_search_is_float64_on_the_cpu_and_float32_first_on_a_gpu(monkeypatch, device):
    # On a CPU, re-measuring float32 candidates costs more than float64 products save
    # (0.39 s vs 13.7 s at 2,400 x 512, k = 500); on a GPU float64 is 32-64x slower.
    from scaleinv_utils import neighbors as nb

    used = []
    original = nb._exact_float32_first
    monkeypatch.setattr(nb, "_exact_float32_first",
                        lambda *a, **kw: used.append(1) or original(*a, **kw))
    X = CASES["gaussian"][0]()
    nearest_neighbors(X, 10, device=device)
    assert bool(used) == (device != "cpu")
    with pytest.raises(ValueError, match="search must be one of .* got 'float16'"):
        nearest_neighbors(X, 10, search="float16")


def test_tf32_matmul_widens_the_certificate():
    import torch

    from scaleinv_utils.neighbors import _unit_roundoff_float32

    assert _unit_roundoff_float32("cpu") == 2.0 ** -24
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert _unit_roundoff_float32("cuda") == 2.0 ** -11
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_bfloat16_tensors_are_accepted():
    import torch

    X = torch.as_tensor(np.random.default_rng(6).normal(size=(200, 8)), dtype=torch.bfloat16)
    graph = nearest_neighbors(X, 5)
    ref = _reference(X.float().numpy().astype(np.float64), 5)
    np.testing.assert_array_equal(graph.indices, ref[0])
    np.testing.assert_allclose(graph.distances, ref[1], rtol=1e-12)


def test_inexact_mode_on_the_device_matches_the_cpu(device):
    X = np.random.default_rng(7).normal(size=(300, 16))
    a, b = nearest_neighbors(X, 20, exact=False), nearest_neighbors(X, 20, exact=False, device=device)
    assert (a.indices == b.indices).mean() > 0.999
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5)
