"""A whole chapter through its "cuda" branch, without a GPU.

Chapter 3 (intrinsic dimension) is executed with the mock CUDA device of tests/tools/fake_cuda.py
installed in its kernel before the first cell, so ``su.get_device()`` says "cuda" and every
``device=DEVICE`` of the chapter (model features, the neighbour searches and local PCA of its ID
profiles) runs on "cuda" tensors that fail as CUDA does when mixed with CPU ones. Nothing in the
chapter is changed for it: the hook is a cell this test puts in front of the chapter's cells.

The mock's "cuda" autocast is kept in float32 here (``autocast_dtype=None``): CPU float16 kernels
are 10-20x slower than float32 ones, and float16 features are checked against the CPU by
tests/test_features.py and benchmarks/gpu_check.py. The chapter's recorded numbers must then
match the expectations of tests/chapter_numbers.json, as the CPU build's do.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "03_dimension.ipynb"
PREFIX = "dimension."
EXPECTED = json.loads((ROOT / "tests" / "chapter_numbers.json").read_text())

SETUP = f"""import sys
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests" / "tools")!r}]
import fake_cuda
fake_cuda.install(autocast_dtype=None)"""
REPORT = """import json, torch
print("MOCK-CUDA-REPORT", json.dumps({"device": DEVICE, "available": torch.cuda.is_available(),
      **{k: v for k, v in fake_cuda.stats().items() if k in ("fp32_gflop", "fp64_gflop", "peak_bytes")}}))"""


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """A private data directory holding the demo world: a copy of the one already built in the
    caller's data directory (the book build's), else built here (about 30 s). Nothing is written
    outside the copy."""
    from scaleinv_utils.config import data_dir
    from scaleinv_utils.demo import DEMO_VERSION, demo_subset_path

    name = f"demo-v{DEMO_VERSION}-seed0"
    private = tmp_path_factory.mktemp("mock-cuda-chapter")
    outer = data_dir("subsets", create=False) / name
    if (outer / "manifest.json").is_file():
        shutil.copytree(outer, private / "subsets" / name)
    else:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SCALEINV_DATA", str(private))
            demo_subset_path()
    return private


@pytest.mark.slow
def test_chapter_3_runs_its_cuda_branch_on_the_mock_device(demo_data, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    record = tmp_path / "numbers.jsonl"
    monkeypatch.setenv("SCALEINV_DATA", str(demo_data))
    monkeypatch.setenv("SCALEINV_RECORD", str(record))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(CHAPTER, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any error

    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    report = json.loads(text.split("MOCK-CUDA-REPORT", 1)[1])
    assert report["device"] == "cuda" and report["available"], report
    # the chapter's device work really ran on "cuda": float32 products (features, neighbour
    # ranking) and float64 ones (exact re-measure, local PCA's Gram matrices) were counted there
    assert report["fp32_gflop"] > 0 and report["fp64_gflop"] > 0 and report["peak_bytes"] > 0, report

    got = {}
    for line in record.read_text().splitlines():
        item = json.loads(line)
        got[item["key"]] = item["value"]
    keys = sorted(k for k in EXPECTED if k.startswith(PREFIX))
    assert keys and set(keys) <= set(got), (keys, sorted(got))
    for key in keys:
        spec = EXPECTED[key]
        assert np.isclose(got[key], spec["value"], rtol=spec.get("rtol", 0.05), atol=spec.get("atol", 0.0)), \
            f"{key}: {got[key]:.4g} on the mock device, expected {spec['value']:.4g}"
