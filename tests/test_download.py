"""Downloads and range reads against a local server with injected faults (no network)."""
import hashlib
import json

import numpy as np
import pytest

from nsd_fixtures import NSDServer
from scaleinv_utils.remote import (DownloadError, HTTPClient, RangeFile, coalesce_ranges,
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
    # the drop makes progress (so it is retried); the 500 after it does not and ends the run
    srv.faults["file.bin"] = ["drop:120000", "500"]
    with pytest.raises(DownloadError, match="partial file .* is kept"):
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


# --- integrity: validators, 416, structure, encodings (issue 16, items 8-10, 12-14) -------------

def _nifti_bytes(tmp_path):
    import nibabel as nib
    vol = np.arange(4000, dtype=np.int16).reshape(10, 20, 20)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "x.nii.gz")
    return (tmp_path / "x.nii.gz").read_bytes()


def test_leftover_part_without_validator_is_not_resumed(served):
    # bytes of unknown origin (a .part with no record of which file they came from) are never
    # resumed: with a multipart ETag (no MD5) their damage could not be seen afterwards
    srv, data, cache = served
    srv.etag_style = "multipart"
    cache.mkdir()
    (cache / "file.bin.part").write_bytes(b"\0" * 1000)
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == data
    assert [r[2] for r in srv.requests] == [None]  # no Range: started over


def test_complete_part_without_metadata_is_fetched_again_not_a_416_loop(served):
    srv, data, cache = served
    cache.mkdir()
    (cache / "file.bin.part").write_bytes(data)
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == data and not no_leftovers(cache)


def test_complete_part_with_its_validator_finishes_on_416(served):
    srv, data, cache = served
    srv.faults["file.bin"] = ["drop:150000", "500"]
    with pytest.raises(DownloadError, match="is kept"):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client(retries=0))
    part = cache / "file.bin.part"
    assert json.loads((cache / "file.bin.part.json").read_text())["size"] == len(data)
    part.write_bytes(data)  # as if the last bytes had arrived just before a crash
    srv.requests.clear()
    before = srv.bytes_sent
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == data and srv.bytes_sent == before  # the 416 said: complete
    assert srv.requests[0][2] == f"bytes={len(data)}-"


def test_resume_sends_if_range_and_a_changed_file_starts_over(served, tmp_path):
    srv, data, cache = served
    srv.etag_style = "multipart"
    srv.faults["file.bin"] = ["drop:60000", "500"]
    with pytest.raises(DownloadError):
        download_file(srv.url + "file.bin", cache / "file.bin", client=client(retries=0))
    assert (cache / "file.bin.part").stat().st_size > 0
    import os
    import time
    new = bytes(reversed(data))  # same size, other bytes: a new version of the object
    time.sleep(0.01)
    (srv.root / "file.bin").write_bytes(new)
    os.utime(srv.root / "file.bin", (time.time() + 5, time.time() + 5))
    srv.requests.clear()
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    assert dest.read_bytes() == new  # not the old head glued to the new tail
    assert srv.headers[-1].get("If-Range")


def test_same_size_corruption_without_md5_is_caught_by_parsing(served, tmp_path):
    srv, _, cache = served
    srv.etag_style = "multipart"
    (srv.root / "roi.nii.gz").write_bytes(_nifti_bytes(tmp_path))
    (srv.root / "info.csv").write_text("nsdId,cocoId\n0,17\n1,18\n")
    for name, kind in (("roi.nii.gz", "NIfTI"), ("info.csv", "CSV")):
        srv.faults[name] = ["corrupt"]
        with pytest.raises(DownloadError, match=f"not a valid {kind} file"):
            download_file(srv.url + name, cache / name, client=client())
        assert not (cache / name).exists() and not no_leftovers(cache)
        assert download_file(srv.url + name, cache / name, client=client()).read_bytes() == \
            (srv.root / name).read_bytes()
        assert json.loads((cache / (name + ".meta.json")).read_text())["structure_checked"]


def test_check_file_structure_kinds(tmp_path):
    from scaleinv_utils.remote import check_file_structure
    (tmp_path / "a.ctab").write_text("0 Unknown 0 0 0 0\n1 V1v 1 2 3 0\n")
    (tmp_path / "b.ctab").write_text("garbage\n")
    (tmp_path / "c.json").write_text('{"a": 1')
    (tmp_path / "d.bin").write_bytes(b"anything")
    assert check_file_structure(tmp_path / "a.ctab") is None
    assert "colour table" in check_file_structure(tmp_path / "b.ctab")
    assert "JSON" in check_file_structure(tmp_path / "c.json")
    assert check_file_structure(tmp_path / "d.bin") is None
    good = _nifti_bytes(tmp_path)
    (tmp_path / "e.part").write_bytes(good[:-8] + bytes(8))  # damaged gzip trailer (CRC)
    assert "NIfTI" in check_file_structure(tmp_path / "e.part", name="e.nii.gz")


def test_every_request_asks_for_identity_and_keeps_stored_bytes(served, tmp_path):
    # an object whose metadata says Content-Encoding: gzip is stored gzipped: keep those bytes
    srv, _, cache = served
    raw = _nifti_bytes(tmp_path)
    (srv.root / "enc.nii.gz").write_bytes(raw)
    srv.encoded.add("enc.nii.gz")
    c = client()
    assert download_file(srv.url + "enc.nii.gz", cache / "enc.nii.gz", client=c).read_bytes() == raw
    assert c.get_range(srv.url + "enc.nii.gz", 10, 50) == raw[10:50]
    c.head(srv.url + "enc.nii.gz")
    assert srv.headers and all(h.get("Accept-Encoding") == "identity" for h in srv.headers)


def test_range_retries_count_only_attempts_without_progress(served):
    srv, data, _ = served
    c = client(retries=1)
    srv.faults["file.bin"] = ["drop:3"] * 5  # every attempt delivers a little, then breaks
    assert c.get_range(srv.url + "file.bin", 0, 4000) == data[:4000]
    srv.faults["file.bin"] = ["500", "500", "500"]  # a range that fails twice gets a second pass
    got = c.read_ranges(srv.url + "file.bin", [(0, 10), (100_000, 10)], max_gap=0, workers=1)
    assert got == [data[:10], data[100_000:100_010]]


def test_range_reads_survive_every_second_request_dropped(served):
    srv, data, _ = served
    srv.drop_every = 2
    c = client(retries=2)
    ranges = [(i * 3000, 1000) for i in range(60)]
    for _ in range(3):
        assert c.read_ranges(srv.url + "file.bin", ranges, max_gap=0, workers=4) == \
            [data[o:o + n] for o, n in ranges]


def test_refused_connection_does_not_claim_a_kept_part(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there
    with pytest.raises(DownloadError, match="nothing was kept"):
        download_file(f"http://127.0.0.1:{port}/x.csv", tmp_path / "x.csv", client=client(retries=0))
    assert not list(tmp_path.glob("x.csv*"))


def test_cached_file_with_same_size_damage_is_fetched_again(served):
    srv, data, cache = served
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    raw = bytearray(dest.read_bytes())
    raw[5] ^= 1
    dest.write_bytes(bytes(raw))
    assert download_file(srv.url + "file.bin", dest, client=client()).read_bytes() == data


def test_repair_file_refetches_from_the_recorded_url(served):
    from scaleinv_utils.remote import repair_file
    srv, data, cache = served
    dest = download_file(srv.url + "file.bin", cache / "file.bin", client=client())
    dest.write_bytes(b"x" * len(data))
    assert verify_file(dest) is not None
    repair_file(dest, client=client())
    assert verify_file(dest) is None and dest.read_bytes() == data
    (cache / "orphan.bin").write_bytes(b"?")
    with pytest.raises(DownloadError, match="no URL is recorded"):
        repair_file(cache / "orphan.bin")
