"""The package can be published: `python -m build` makes a wheel and an sdist, both hold the
demo models' weights (the book needs no training run), `twine check` accepts them, and the
wheel's metadata carries the version the book's release tag names.

Needs `build` and `twine` (the [test] extra). Under `make test` (SCALEINV_REQUIRE_BOOK=1)
their absence is a failure, otherwise the test is skipped."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted(p.name for p in (ROOT / "scaleinv_utils" / "weights").iterdir()
                 if p.suffix in (".safetensors", ".json"))


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    missing = [m for m in ("build", "twine") if importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("SCALEINV_REQUIRE_BOOK"):
            pytest.fail(f"{missing} not installed: pip install -e '.[test]'")
        pytest.skip(f"{missing} not installed (the [test] extra)")
    out, src = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("src") / "scaleinv"
    # A copy of what the package is built from, so setuptools' build/ and *.egg-info land
    # there and not in the work tree.
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "_build", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
        ".scaleinv_cache", "notebooks", "benchmarks"))
    # --no-isolation: build with this environment's setuptools (offline; no fresh venv).
    result = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                             "--outdir", str(out), str(src)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return wheels[0], sdists[0]


@pytest.mark.slow
def test_wheel_and_sdist_hold_the_demo_weights(dists):
    wheel, sdist = dists
    assert WEIGHTS and any(w.endswith(".safetensors") for w in WEIGHTS)
    in_wheel = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()
                if "/weights/" in n or n.startswith("scaleinv_utils/weights/")}
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(n).name for n in tar.getnames() if "/scaleinv_utils/weights/" in n}
    assert set(WEIGHTS) <= in_wheel, f"wheel lacks {sorted(set(WEIGHTS) - in_wheel)}"
    assert set(WEIGHTS) <= in_sdist, f"sdist lacks {sorted(set(WEIGHTS) - in_sdist)}"
    with zipfile.ZipFile(wheel) as z:
        sizes = {Path(i.filename).name: i.file_size for i in z.infolist()}
    for name in WEIGHTS:  # the real files, not Git LFS pointers
        assert sizes[name] == (ROOT / "scaleinv_utils" / "weights" / name).stat().st_size, name


@pytest.mark.slow
def test_twine_accepts_both_and_the_version_matches_the_release_tag(dists):
    result = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout
    sys.path.insert(0, str(ROOT / "book"))
    import set_repository
    version = re.search(r"scaleinv_utils-([^-]+)-", dists[0].name).group(1)
    assert set_repository.repository()[1] == f"v{version}"
