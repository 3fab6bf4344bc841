"""Colab readiness: every chapter asks for a GPU runtime, and installing the package leaves
Colab's preinstalled core packages (torch, numpy, pandas, ...) as they are.

The install check resolves against PyPI; where the index cannot be reached it is skipped,
unless SCALEINV_REQUIRE_COLAB_CHECK=1 (set by `make test`) makes that a failure."""
import importlib.util
import json
import os
import socket
import sys
import urllib.parse
import zipfile
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TEXTS = sorted((ROOT / "notebooks" / "text").glob("*.md"))
GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4"}}


def _load_check():
    spec = importlib.util.spec_from_file_location("colab_install_check",
                                                  ROOT / "tests" / "tools" / "colab_install_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cic = _load_check()


# --------------------------------------------------------------------------- GPU runtime
@pytest.mark.parametrize("path", NOTEBOOKS + TEXTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_chapter_opens_a_gpu_runtime(path):
    nb = jupytext.read(path)
    for key, value in GPU_METADATA.items():
        assert nb.metadata.get(key) == value, \
            f"{path.name}: notebook metadata {key}={nb.metadata.get(key)!r}, expected {value!r}"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.stem)
def test_text_form_keeps_the_gpu_metadata_through_jupytext(path):
    # jupytext drops notebook metadata from a text form unless its filter names it; a --sync
    # that rewrote the header would then lose the runtime request.
    nb = jupytext.read(path)
    again = jupytext.reads(jupytext.writes(nb, fmt="md:myst"), fmt="md:myst")
    for key, value in GPU_METADATA.items():
        assert again.metadata.get(key) == value, \
            f"{path.name}: {key} is lost when jupytext rewrites the text form (add it to " \
            "jupytext.notebook_metadata_filter)"


# --------------------------------------------------------------------------- snapshot
def test_snapshot_is_dated_and_has_the_core_packages():
    text = cic.SNAPSHOT.read_text()
    assert "# Snapshot taken: 20" in text and "Refresh" in text and cic.MARKER in text
    versions = cic.read_snapshot()
    assert set(cic.CORE) <= set(versions), set(cic.CORE) - set(versions)
    assert versions["torch"] == "2.11.0"  # the local label +cu128 is dropped
    assert versions["scikit-learn"] == "1.6.1"


def test_read_snapshot_normalises_names_and_skips_url_lines(tmp_path):
    f = tmp_path / "freeze.txt"
    f.write_text("# comment\nScikit_Learn==1.6.1\ntorch==2.11.0+cu128\n"
                 "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz\n\n")
    assert cic.read_snapshot(f) == {"scikit-learn": "1.6.1", "torch": "2.11.0"}


def test_refresh_rewrites_source_and_freeze(tmp_path):
    snap = tmp_path / "snap.txt"
    snap.write_text(cic.SNAPSHOT.read_text())
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("numpy==9.9.9\n")
    cic.refresh(freeze, "googlecolab/backend-info@abc (2030-01-01)", snap)
    text = snap.read_text()
    assert "# Source: googlecolab/backend-info@abc (2030-01-01)" in text
    assert text.endswith(cic.MARKER + "\nnumpy==9.9.9\n")
    assert cic.read_snapshot(snap) == {"numpy": "9.9.9"}
    assert "a72407924822" not in text  # the old source line is gone


def _fake_wheel(folder, name, version, requires=()):
    """A wheel that holds only metadata: enough for pip's resolver."""
    dist = f"{name.replace('-', '_')}-{version}"
    path = Path(folder) / f"{dist}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", meta)
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.mark.slow
def test_check_sees_a_core_upgrade_and_keeps_what_colab_satisfies(tmp_path):
    # Offline: a local index with a newer pandas and a new package that needs it.
    index = tmp_path / "index"
    index.mkdir()
    _fake_wheel(index, "pandas", "3.1.1")
    _fake_wheel(index, "newpkg", "1.0", requires=["pandas>=2.3", "numpy>=1.24"])
    _fake_wheel(index, "numpy", "2.4.0")
    args = ["--no-index", "--find-links", str(index)]
    bad = cic.check(reqs=["newpkg"], pip_args=args, workdir=tmp_path)
    assert bad["core_changed"] == {"pandas": ("2.2.3", "3.1.1")}
    assert bad["new"] == {"newpkg": "1.0"}  # numpy 2.1.3 satisfies numpy>=1.24: kept
    good = cic.check(reqs=["numpy>=1.24", "pandas>=2.0"], pip_args=args, workdir=tmp_path)
    assert good["planned"] == {} and good["changed"] == {}


def _index_reachable():
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    host = urllib.parse.urlparse(url).hostname
    if host is None:
        return True  # a local index
    try:
        socket.create_connection((host, 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.network
def test_install_leaves_colab_core_packages_unchanged(tmp_path):
    if not _index_reachable():
        if os.environ.get("SCALEINV_REQUIRE_COLAB_CHECK"):
            pytest.fail("the package index is unreachable and SCALEINV_REQUIRE_COLAB_CHECK=1")
        pytest.skip("the package index is unreachable (the Colab install check needs it)")
    res = cic.check(workdir=tmp_path)
    (tmp_path / "colab_check.json").write_text(json.dumps(res, indent=1))
    assert res["core_changed"] == {}, (
        f"pip install on Colab (snapshot {cic.snapshot_source()}) would change core packages "
        f"{res['core_changed']}; resolved with Python {sys.version_info[:2]}")
    # the package's new dependencies are resolved, not missed
    assert {"himalaya", "nilearn", "open-clip-torch"} <= set(res["new"]), res["new"]
