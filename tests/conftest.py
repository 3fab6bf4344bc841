import os
import sys

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch):
    """Every test writes its caches in a private data directory, never in ~/.cache."""
    if "SCALEINV_TEST_SHARED_DATA" in os.environ:
        monkeypatch.setenv("SCALEINV_DATA", os.environ["SCALEINV_TEST_SHARED_DATA"])
    else:
        monkeypatch.setenv("SCALEINV_DATA", str(tmp_path_factory.getbasetemp() / "scaleinv_data"))


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small demo world (2 subjects) with its ground truth, built once per test session."""
    from scaleinv_utils.demo import make_demo_world
    path = tmp_path_factory.mktemp("world") / "demo-small"
    path, truth = make_demo_world(path, seed=1, n_subjects=2, n_shared=120, n_train=360,
                                  return_truth=True)
    return path, truth


def _fake_cuda_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent / "tools" / "fake_cuda.py"
    spec = importlib.util.spec_from_file_location("fake_cuda", path)
    module = sys.modules.get("fake_cuda")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_cuda"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_cuda():
    """The mock CUDA device of tests/tools/fake_cuda.py, installed for one test."""
    module = _fake_cuda_module()
    with module.fake_cuda():
        yield module


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Run a test on the CPU and on "cuda": the real GPU when there is one, else the mock
    CUDA device (CPU tensors marked as CUDA that fail as CUDA does when mixed with CPU ones)."""
    import torch

    if request.param == "cpu" or torch.cuda.is_available():
        yield request.param
        return
    with _fake_cuda_module().fake_cuda():
        yield "cuda"
