"""Downloads and range reads against a local server with injected faults (no network)."""
import hashlib
import json

import numpy as np
import pytest

from nsd_fixtures import NSDServer
from scaleinv_utils.download import (DownloadError, HTTPClient, RangeFile, coalesce_ranges,
                                     download_file, verify_file)


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "bucket"
    root.mkdir()
    data = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    (root / "file.bin").write_bytes(data)
    with NSDServer(root) as srv:
        yield srv, data, tmp_path / "cache"


def client(retries=4):
    return HTTPClient(retries=retries, backoff=0.001, timeout=5, progress=False)


def no_leftovers(cache):
    return [p.name for p in cache.rglob("*") if p.suffix in (".part", ".tmp")]


def test_download_is_verified_and_rerun_is_noop(served):
    srv, data, cache = served
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == data
    meta = json.loads((cache / "file.bin.meta.json").read_text())
    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["size"] == len(data)
    assert srv.bytes_sent == len(data)
    n = len(srv.requests)
    download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert len(srv.requests) == n and srv.bytes_sent == len(data)


@pytest.mark.parametrize("fault", ["drop:50000", "truncate:50000", "500"])
def test_transient_faults_resume_with_range(served, fault):
    srv, data, cache = served
    srv.faults["file.bin"] = [fault, fault]
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == data
    assert not no_leftovers(cache)
    if fault != "500":
        # resumed where the break happened instead of starting over: bytes received before
        # the break are kept (up to the last whole block the client read)
        resumed = [int(r[2][6:-1]) for r in srv.requests if r[2]]
        assert resumed and 0 < resumed[0] <= 50000 and resumed == sorted(resumed)
        assert srv.bytes_sent < 2 * len(data)


def test_404_is_a_clear_error_and_leaves_nothing(served):
    srv, _, cache = served
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(srv.url + "nope.bin", cache / "nope.bin", client=client())
    assert not list(cache.rglob("*nope*"))


def test_wrong_checksum_deletes_the_download(served):
    srv, data, cache = served
    srv.faults["file.bin"] = ["corrupt"]
    with pytest.raises(DownloadError, match="MD5"):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert not (cache / "file.bin").exists() and not no_leftovers(cache)
    with pytest.raises(DownloadError, match="SHA-256"):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client(), sha256="0" * 64)
    assert not (cache / "file.bin").exists() and not no_leftovers(cache)
    good = hashlib.sha256(data).hexdigest()
    assert download_file(srv.url + "file.bin", cache / "file.bin", client=client(),
                         sha256=good).read_bytes() == data


def test_interrupted_run_is_resumed_by_the_next(served):
    srv, data, cache = served
    srv.faults["file.bin"] = ["drop:120000"]
    with pytest.raises(DownloadError, match="partial file"):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client(retries=0))
    assert not (cache / "file.bin").exists()  # a partial file never looks complete
    kept = (cache / "file.bin.part").stat().st_size
    assert 0 < kept <= 120000
    before = srv.bytes_sent
    download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert srv.bytes_sent - before == len(data) - kept
    assert (cache / "file.bin").read_bytes() == data and not no_leftovers(cache)


def test_retries_are_bounded(served):
    srv, _, cache = served
    srv.faults["file.bin"] = ["500"] * 10
    with pytest.raises(DownloadError, match="after 3 attempts"):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client(retries=2))
    assert sum(r[1] == "file.bin" for r in srv.requests) == 3


def test_verify_file_detects_damage(served):
    srv, _, cache = served
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert verify_file(dest) is None
    raw = bytearray(dest.read_bytes())
    raw[10] ^= 1
    dest.write_bytes(bytes(raw))
    assert "SHA-256" in verify_file(dest)
    dest.write_bytes(bytes(raw[:-5]))
    assert "bytes" in verify_file(dest)
    # a damaged file is fetched again rather than trusted
    download_file(srv.url + "file.bin", dest, client=client())
    assert verify_file(dest) is None


def test_range_reads_count_bytes_and_survive_drops(served):
    srv, data, _ = served
    c = client()
    srv.faults["file.bin"] = ["drop:100"]
    assert c.get_range(srv.url + "file.bin", 1000, 5000) == data[1000:5000]
    blobs = c.read_ranges(srv.url + "file.bin", [(10, 5), (20, 5), (150_000, 10)], max_gap=100)
    assert blobs == [data[10:15], data[20:25], data[150_000:150_010]]
    gets = [r for r in srv.requests if r[0] == "GET"]
    assert len(gets) == 4  # the dropped one, its retry, and two coalesced groups
    # the client counts what reached it; bytes lost in the dropped response are the server's
    assert srv.bytes_sent - 100 <= c.bytes_received <= srv.bytes_sent


def test_coalesce_ranges():
    groups = coalesce_ranges([(100, 10), (0, 10), (15, 5), (1000, 1)], max_gap=10)
    assert groups == [(0, 20, [1, 2]), (100, 110, [0]), (1000, 1001, [3])]
    assert len(coalesce_ranges([(0, 10), (10, 10)], max_gap=0, max_request=15)) == 2


def test_rangefile_opens_hdf5_without_downloading_it(tmp_path):
    import h5py
    root = tmp_path / "b"
    root.mkdir()
    x = np.arange(200_000, dtype=np.float32).reshape(1000, 200)
    with h5py.File(root / "x.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(10, 200))
    with NSDServer(root) as srv:
        c = client()
        with RangeFile(srv.url + "x.h5", c, block_size=4096) as rf, h5py.File(rf, "r") as f:
            np.testing.assert_array_equal(f["x"][500:510], x[500:510])
        assert srv.bytes_sent < x.nbytes / 20
        with pytest.raises(DownloadError, match="404"):
            RangeFile(srv.url + "missing.h5", c)
