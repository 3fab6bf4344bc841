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
