"""The one-GPU check script (benchmarks/gpu_check.py) runs end to end on the mock CUDA device:
every GPU path it exercises takes "cuda" tensors without a device mismatch, and each agrees with
its CPU reference. On a machine with a GPU, run the script itself (README: "Checking a GPU")."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_mock_device(tmp_path):
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               SCALEINV_DATA=str(tmp_path / "data"), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "fake-cuda", "--quick",
         "--only", "env", "neighbors", "dimension", "similarity", "features", "encoding", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=600)
    report = json.loads(out.read_text()) if out.is_file() else {"results": []}
    failed = [r for r in report["results"] if r["status"] == "FAIL"]
    assert proc.returncode == 0 and not failed, (proc.stdout[-3000:], proc.stderr[-3000:], failed)
    checks = {r["check"].split(" [")[0].split(" ")[0] for r in report["results"]}
    assert {"environment", "neighbors", "id_profile", "knn_overlap", "linear_cka", "cross_scale_similarity",
            "features", "fit_encoding"} <= checks, checks
    env_info = next(r for r in report["results"] if r["check"] == "environment")["info"]
    assert env_info["get_device"] == "cuda" and env_info["himalaya_backend"] == "torch_cuda"
