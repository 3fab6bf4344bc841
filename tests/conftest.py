import os

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
