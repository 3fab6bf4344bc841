"""Robust HTTP: whole-file downloads into a cache, and byte-range reads.

Two ways to get bytes from a public bucket such as NSD's:

* :func:`download_file` fetches a whole (small) file into the cache. It resumes
  an interrupted transfer with an HTTP ``Range`` request, retries transient
  failures with exponential backoff, verifies the size (and the MD5 the server
  announces as a plain ETag, and a SHA-256 when the caller knows one), and
  writes atomically: bytes arrive in ``<name>.part``; only a verified file is
  renamed to ``<name>`` and described by ``<name>.meta.json``. A file without
  its ``.meta.json`` is never trusted, so a crash can never leave something
  that looks complete.
* :class:`RangeFile` is a read-only, seekable file object over a URL that
  fetches only the byte ranges asked for (with a small block cache), so
  ``h5py.File(RangeFile(url))`` opens a 37 GB HDF5 file by reading a few
  kilobytes of metadata. :meth:`HTTPClient.read_ranges` fetches many ranges,
  coalescing neighbours into one request.

Every request goes through one :class:`HTTPClient`, which counts the bytes it
received, so a caller can report what a subset cost.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

__all__ = ["HTTPClient", "RangeFile", "DownloadError", "download_file", "verify_file",
           "repair_file", "check_file_structure", "coalesce_ranges"]

#: Status codes worth retrying: the server or a proxy had a passing problem.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class DownloadError(RuntimeError):
    """A file could not be fetched or did not verify; nothing partial is left looking complete."""


class HTTPClient:
    """A requests session with retries, backoff and a byte counter.

    Every request asks for the stored bytes (``Accept-Encoding: identity``) and
    reads the body undecoded, so a file whose object metadata announces a
    ``Content-Encoding`` still arrives byte for byte as stored, and a byte range
    is a range of the stored file.

    Parameters
    ----------
    retries : int
        Consecutive failed attempts allowed per request after the first
        (transient errors only). An attempt that delivers new bytes before it
        fails resets the count, so a flaky connection that keeps making progress
        is not given up on.
    backoff : float
        First wait in seconds; doubled after each failure, capped at 30 s.
    timeout : float
        Seconds to wait for the server to connect or send the next bytes.
    progress : bool
        Show tqdm progress bars for whole-file downloads.
    passes : int
        :meth:`read_ranges` retries the ranges that failed, after the others
        finished, up to this many passes in all.

    Attributes
    ----------
    bytes_received : int
        Body bytes received by every request so far.
    n_requests : int
    """

    def __init__(self, retries=5, backoff=0.5, timeout=30.0, progress=True, passes=3):
        import requests

        self.session = requests.Session()
        self.session.headers["Accept-Encoding"] = "identity"
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.progress = progress
        self.passes = max(1, int(passes))
        self.bytes_received = 0
        self.n_requests = 0

    def _sleep(self, attempt):
        time.sleep(min(self.backoff * 2 ** attempt, 30.0))

    def _get(self, url, headers=None, stream=False, allow=()):
        """One GET; raises DownloadError for 4xx (never retried, except ``allow``) and returns the response."""
        self.n_requests += 1
        headers = {"Accept-Encoding": "identity", **(headers or {})}
        resp = self.session.get(url, headers=headers, stream=stream, timeout=self.timeout)
        code = resp.status_code
        if code not in allow and (code in (403, 404, 410) or (400 <= code < 500
                                                              and code not in RETRY_STATUS)):
            resp.close()
            raise DownloadError(f"GET {url} failed with HTTP {code}: the file does not "
                                "exist at that address (check the name and the base URL) or is not public.")
        return resp

    def head(self, url):
        """Size (bytes) and ETag of a remote file.

        Returns
        -------
        size : int or None
        etag : str or None
        """
        import requests

        for attempt in range(self.retries + 1):
            try:
                self.n_requests += 1
                resp = self.session.head(url, timeout=self.timeout, allow_redirects=True)
                if resp.status_code in RETRY_STATUS:
                    raise requests.HTTPError(f"HTTP {resp.status_code}")
                if resp.status_code >= 400:
                    raise DownloadError(f"HEAD {url} failed with HTTP {resp.status_code}: the file "
                                        "does not exist at that address (check the name and the "
                                        "base URL) or is not public.")
                size = resp.headers.get("Content-Length")
                return (int(size) if size is not None else None,
                        resp.headers.get("ETag", "").strip('"') or None)
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as exc:
                if attempt == self.retries:
                    raise DownloadError(f"HEAD {url} failed after {attempt + 1} attempts: "
                                        f"{_short(exc)}") from exc
                self._sleep(attempt)

    def get_range(self, url, start, end):
        """Bytes ``[start, end)`` of a remote file, retried until complete.

        Bytes received before a failure are kept; the next attempt asks for
        the rest only.

        Raises
        ------
        DownloadError
            On 4xx, when the server ignores ranges, or after ``retries + 1``
            consecutive attempts without progress.
        """
        import requests

        want = end - start
        buf = bytearray()
        failures, attempts = 0, 0
        while True:
            pos = start + len(buf)
            before = len(buf)
            attempts += 1
            try:
                resp = self._get(url, {"Range": f"bytes={pos}-{end - 1}"}, stream=True)
                with resp:
                    if resp.status_code in RETRY_STATUS:
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    if resp.status_code != 206:
                        raise DownloadError(f"{url} ignored a Range request (HTTP {resp.status_code}); "
                                            "range reads need a server that supports them.")
                    got = _content_range_start(resp)
                    if got is not None and got != pos:
                        raise DownloadError(f"{url} answered a Range request for byte {pos} with "
                                            f"bytes from {got}: the server is misbehaving.")
                    for block in _body(resp):
                        buf += block
                        self.bytes_received += len(block)
                if len(buf) >= want:
                    return bytes(buf[:want])
                raise requests.ConnectionError(f"short read: {len(buf)} of {want} bytes")
            except DownloadError:
                raise
            except _transient_errors() as exc:
                failures = 0 if len(buf) > before else failures + 1
                if failures > self.retries or attempts > 20 * (self.retries + 1):
                    raise DownloadError(f"Range {start}-{end} of {url} failed after "
                                        f"{attempts} attempts: {_short(exc)}") from exc
                self._sleep(max(failures - 1, 0))

    def read_ranges(self, url, ranges, max_gap=1 << 16, max_request=64 << 20, workers=8):
        """Fetch many byte ranges, coalescing neighbours into one request each.

        Parameters
        ----------
        url : str
        ranges : list of (int, int)
            ``(offset, size)`` pairs.
        max_gap : int
            Two ranges closer than this are fetched together (the gap's bytes
            are wasted, but a request costs more than a few kilobytes).
        max_request : int
            Largest coalesced request in bytes.
        workers : int
            Concurrent requests.

        Returns
        -------
        data : list of bytes
            One entry per input range, in input order.

        Raises
        ------
        DownloadError
            When a range still fails after ``passes`` passes.
        """
        from concurrent.futures import ThreadPoolExecutor

        groups = coalesce_ranges(ranges, max_gap=max_gap, max_request=max_request)
        out = [None] * len(ranges)

        def fetch(group):
            start, end, members = group
            try:
                blob = self.get_range(url, start, end)
            except DownloadError as exc:
                return group, exc
            for i in members:
                off, size = ranges[i]
                out[i] = blob[off - start: off - start + size]
            return group, None

        todo = groups
        for p in range(self.passes):
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                failed = [(g, e) for g, e in pool.map(fetch, todo) if e is not None]
            if not failed:
                return out
            fatal = [e for _, e in failed if not _retryable(e)]
            if fatal or p == self.passes - 1:
                raise (fatal or [failed[0][1]])[0]
            todo = [g for g, _ in failed]  # one more pass over the ranges that failed
            self._sleep(p)
        return out


def _transient_errors():
    """Exceptions of a passing network problem (requests' and urllib3's, and socket errors)."""
    import requests
    import urllib3

    return (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def _retryable(exc):
    return "failed after" in str(exc)


def _short(exc):
    """One line of an exception's message (urllib3 nests whole reprs)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


def _body(resp, block=1 << 16):
    """The response body as stored: never decoded, whatever Content-Encoding says."""
    return resp.raw.stream(block, decode_content=False)


def _content_range_start(resp):
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _content_range_total(resp):
    m = re.match(r"bytes [\d*-]+/(\d+)", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def coalesce_ranges(ranges, max_gap=1 << 16, max_request=64 << 20):
    """Group byte ranges so that near neighbours share one request.

    Parameters
    ----------
    ranges : list of (int, int)
        ``(offset, size)`` pairs, in any order.
    max_gap : int
    max_request : int

    Returns
    -------
    groups : list of (int, int, list of int)
        ``(start, end, indices of the input ranges inside)``.
    """
    order = sorted(range(len(ranges)), key=lambda i: ranges[i][0])
    groups = []
    for i in order:
        off, size = ranges[i]
        if groups:
            start, end, members = groups[-1]
            if off - end <= max_gap and max(end, off + size) - start <= max_request:
                groups[-1] = (start, max(end, off + size), members + [i])
                continue
        groups.append((off, off + size, [i]))
    return groups


class RangeFile:
    """Read-only file object over a URL, fetching only the ranges read.

    Hand it to ``h5py.File`` to read an HDF5 file without downloading it.

    Parameters
    ----------
    url : str
    client : HTTPClient
    block_size : int
        Reads are rounded to blocks of this many bytes, which are cached
        (HDF5 metadata comes in many small, nearby reads).
    size : int or None
        File size; asked with HEAD when None.
    """

    def __init__(self, url, client, block_size=1 << 15, size=None):
        self.url = url
        self.client = client
        self.block_size = int(block_size)
        self.size = size if size is not None else client.head(url)[0]
        if self.size is None:
            raise DownloadError(f"{url}: the server did not say the file's size.")
        self.pos = 0
        self._blocks = {}

    def readable(self):
        return True

    def seekable(self):
        return True

    def writable(self):
        return False

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def _block(self, b):
        if b not in self._blocks:
            start = b * self.block_size
            end = min(start + self.block_size, self.size)
            self._blocks[b] = self.client.get_range(self.url, start, end)
        return self._blocks[b]

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.size - self.pos
        n = max(0, min(n, self.size - self.pos))
        if n == 0:
            return b""
        first, last = self.pos // self.block_size, (self.pos + n - 1) // self.block_size
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if len(missing) > 1:  # one request for a run of missing blocks
            start = missing[0] * self.block_size
            end = min((missing[-1] + 1) * self.block_size, self.size)
            blob = self.client.get_range(self.url, start, end)
            for b in missing:
                o = b * self.block_size - start
                self._blocks[b] = blob[o:o + self.block_size]
        data = b"".join(self._block(b) for b in range(first, last + 1))
        o = self.pos - first * self.block_size
        self.pos += n
        return data[o:o + n]

    def readinto(self, buf):
        data = self.read(len(buf))
        buf[:len(data)] = data
        return len(data)

    def close(self):
        self._blocks.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------
# whole files

def _hash_file(path, algo):
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _meta_path(dest):
    return dest.with_name(dest.name + ".meta.json")


def _is_md5_etag(etag):
    return etag is not None and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())


def _part_paths(dest):
    part = dest.with_name(dest.name + ".part")
    return part, part.with_name(part.name + ".json")


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _drop(*paths):
    for p in paths:
        Path(p).unlink(missing_ok=True)


def download_file(url, dest, *, client=None, sha256=None, size=None, desc=None, check=True):
    """Download a whole file into ``dest``: resumable, retried, verified, atomic.

    Re-running is a no-op when ``dest`` and its ``.meta.json`` exist and the
    file still has the recorded size and SHA-256; a cached file that does not
    is fetched again.

    Bytes arrive in ``<name>.part``; beside it ``<name>.part.json`` keeps the
    *validator* of the remote file they belong to (ETag, Last-Modified, size).
    An interrupted transfer resumes only with its validator, sending it as
    ``If-Range``, so a server whose file changed sends the whole new file
    instead of a tail that does not fit; a ``.part`` without a validator is
    discarded. A finished transfer is checked for size, MD5 (when the ETag is
    one; S3 multipart ETags are not), the expected SHA-256, and its structure
    (:func:`check_file_structure`: the CSV parses, the NIfTI decompresses, ...)
    before it is renamed to ``dest``.

    Parameters
    ----------
    url : str
    dest : str or Path
    client : HTTPClient or None
    sha256 : str or None
        Expected SHA-256 hex digest, when known.
    size : int or None
        Expected size, when known (else the server's).
    desc : str or None
        Progress-bar label.
    check : bool
        Check the file's structure by its name (see :func:`check_file_structure`).

    Returns
    -------
    dest : pathlib.Path

    Raises
    ------
    DownloadError
        On HTTP 4xx, after the last retry, or when the size, a checksum or the
        structure is wrong. A partial file is kept (for the next run to resume)
        only when its validator is known.
    """
    import requests
    from .._progress import tqdm

    client = client or HTTPClient()
    dest = Path(dest)
    meta = _meta_path(dest)
    if dest.is_file() and meta.is_file():
        info = _read_json(meta) or {}
        if verify_file(dest) is None and (sha256 is None or info.get("sha256") == sha256):
            return dest
        _drop(dest, meta)  # damaged or not the file asked for: fetch it afresh
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, pmeta = _part_paths(dest)
    val = _read_json(pmeta) if pmeta.is_file() else None
    if val is None or val.get("url") != url or not (val.get("etag") or val.get("last_modified")):
        _drop(part, pmeta)  # bytes of unknown origin: never resume them
        val = None
    bar, failures, attempts = None, 0, 0
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            before = have
            attempts += 1
            try:
                headers = {}
                if have:
                    headers = {"Range": f"bytes={have}-",
                               "If-Range": val.get("etag_header") or val.get("last_modified")}
                resp = client._get(url, headers, stream=True, allow=(416,))
                with resp:
                    if resp.status_code in RETRY_STATUS:
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    if resp.status_code == 416:
                        total = _content_range_total(resp)
                        if have and total is not None and have == total == val.get("size"):
                            break  # already complete: the server has nothing past our end
                        _drop(part, pmeta)  # longer than the file, or of another version
                        val = None
                        raise requests.ConnectionError("HTTP 416 for the partial file's end; "
                                                       "starting over")
                    if resp.status_code == 206 and have:
                        etag = resp.headers.get("ETag")
                        if (_content_range_start(resp) != have
                                or (etag and val.get("etag_header") and etag != val["etag_header"])):
                            have = 0  # not the continuation of our bytes
                            _drop(part, pmeta)
                            val = None
                            raise requests.ConnectionError("the server's range did not continue "
                                                           "the partial file; starting over")
                    elif resp.status_code == 200:
                        have = 0  # the whole file: Range ignored, or If-Range said it changed
                    else:
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    if have == 0:
                        length = resp.headers.get("Content-Length")
                        val = {"url": url, "etag_header": resp.headers.get("ETag"),
                               "etag": (resp.headers.get("ETag") or "").strip('"') or None,
                               "last_modified": resp.headers.get("Last-Modified"),
                               "size": int(length) if length is not None else size}
                        _write_json(pmeta, val)
                    total = val.get("size")
                    if bar is None and client.progress:
                        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                   desc=desc or dest.name, leave=False)
                    elif bar is not None:
                        bar.n = have
                    with open(part, "ab" if have else "wb") as f:
                        for block in _body(resp, 1 << 14):
                            f.write(block)
                            client.bytes_received += len(block)
                            if bar is not None:
                                bar.update(len(block))
                got = part.stat().st_size
                if total is not None and got < total:
                    raise requests.ConnectionError(f"connection closed after {got} of {total} bytes")
                break
            except DownloadError:
                raise
            except _transient_errors() as exc:
                now = part.stat().st_size if part.exists() else 0
                failures = 0 if now > before else failures + 1
                if failures > client.retries or attempts > 20 * (client.retries + 1):
                    kept = (f"the partial file {part} ({now} bytes) is kept and the next run "
                            "resumes it" if now and pmeta.is_file() else "nothing was kept")
                    raise DownloadError(f"Downloading {url} failed after {attempts} attempts "
                                        f"({_short(exc)}); {kept}.") from exc
                client._sleep(max(failures - 1, 0))
    finally:
        if bar is not None:
            bar.close()

    got = part.stat().st_size
    etag = val.get("etag")
    expected = size if size is not None else val.get("size")
    problem = None
    if expected is not None and got != expected:
        problem = f"has {got} bytes, expected {expected}"
    elif _is_md5_etag(etag) and _hash_file(part, "md5") != etag.lower():
        problem = "does not match the MD5 the server announced (ETag)"
    digest = _hash_file(part, "sha256")
    if problem is None and sha256 is not None and digest != sha256:
        problem = f"has SHA-256 {digest}, expected {sha256}"
    if problem is None and check:
        problem = check_file_structure(part, name=dest.name)
    if problem:
        _drop(part, pmeta)
        raise DownloadError(f"{url} {problem}: the download is corrupt and was deleted; "
                            "run again to fetch it afresh.")
    os.replace(part, dest)
    _write_json(meta, {"url": url, "size": got, "sha256": digest, "etag": etag,
                       "last_modified": val.get("last_modified"),
                       "sha256_expected": sha256 is not None, "structure_checked": bool(check)})
    _drop(pmeta)
    return dest


#: File kinds :func:`check_file_structure` knows, by name ending.
STRUCTURE_KINDS = {".csv": "CSV", ".tsv": "TSV", ".mat": "MATLAB", ".hdf5": "HDF5", ".h5": "HDF5",
                   ".nii.gz": "NIfTI", ".nii": "NIfTI", ".mgz": "MGH", ".mgh": "MGH",
                   ".json": "JSON", ".ctab": "FreeSurfer colour table", ".zip": "zip"}


def check_file_structure(path, name=None):
    """Parse a file as what its name says it is.

    A file of the right size can still be wrong (S3 multipart uploads carry no
    MD5 to compare with); parsing catches most damage: a flipped byte breaks a
    gzip stream's CRC (NIfTI, MGZ), a CSV's encoding or columns, a .mat's
    header, an HDF5 superblock.

    Parameters
    ----------
    path : str or Path
    name : str or None
        The name that decides the kind (default ``path``'s own name; pass the
        final name when checking a ``.part`` file).

    Returns
    -------
    problem : str or None
        None when the file parses (or is of a kind not checked), else what is wrong.
    """
    path = Path(path)
    name = (name or path.name).lower()
    kind = next((k for k in sorted(STRUCTURE_KINDS, key=len, reverse=True) if name.endswith(k)), None)
    if kind is None:
        return None
    label = STRUCTURE_KINDS[kind]
    try:
        if kind in (".csv", ".tsv"):
            import pandas as pd
            df = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",", encoding="utf-8")
            if df.shape[0] == 0 or df.shape[1] < 2:
                raise ValueError(f"{df.shape[0]} rows and {df.shape[1]} columns")
        elif kind == ".mat":
            from scipy.io import loadmat
            loadmat(path)
        elif kind in (".hdf5", ".h5"):
            import h5py
            with h5py.File(path, "r") as f:
                f.visititems(lambda _, obj: getattr(obj, "shape", None))
        elif kind in (".nii.gz", ".nii", ".mgz", ".mgh"):
            import gzip

            import nibabel as nib
            import numpy as np
            raw = path.read_bytes()
            if kind in (".nii.gz", ".mgz"):
                raw = gzip.decompress(raw)  # the whole stream: checks its CRC and length
            img = (nib.Nifti1Image if kind.startswith(".nii") else nib.MGHImage).from_bytes(raw)
            np.asarray(img.dataobj)
        elif kind == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif kind == ".ctab":
            lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
            if not lines or any(len(ln) < 2 or not ln[0].lstrip("-").isdigit() for ln in lines):
                raise ValueError("lines must read '<index> <name> ...'")
        elif kind == ".zip":
            import zipfile
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            if bad is not None:
                raise ValueError(f"member {bad} fails its CRC")
    except Exception as exc:  # any parser's complaint means the same: not a valid file
        return f"is not a valid {label} file ({type(exc).__name__}: {_short(exc)})"
    return None


def verify_file(dest, checksum=True):
    """Re-check a cached file against its ``.meta.json``.

    Parameters
    ----------
    dest : str or Path
    checksum : bool
        Recompute the SHA-256 (else the size only).

    Returns
    -------
    problem : str or None
        None when the file is intact, else what is wrong.
    """
    dest = Path(dest)
    meta = _meta_path(dest)
    if not dest.is_file():
        return "missing"
    if not meta.is_file():
        return "no .meta.json (an unverified or interrupted download)"
    info = _read_json(meta)
    if not info or "size" not in info or "sha256" not in info:
        return "its .meta.json is unreadable"
    if dest.stat().st_size != info["size"]:
        return f"has {dest.stat().st_size} bytes, expected {info['size']}"
    if checksum and _hash_file(dest, "sha256") != info["sha256"]:
        return "SHA-256 differs from the one recorded at download"
    return None


def repair_file(dest, client=None):
    """Fetch a cached file again from the URL recorded beside it.

    Parameters
    ----------
    dest : str or Path
        A cached file (or its leftover ``.part``) with a ``.meta.json`` or
        ``.part.json`` naming its URL.
    client : HTTPClient or None

    Returns
    -------
    dest : pathlib.Path

    Raises
    ------
    DownloadError
        When no URL is recorded, or the download fails.
    """
    dest = Path(dest)
    if dest.name.endswith(".part"):
        dest = dest.with_name(dest.name[:-len(".part")])
    part, pmeta = _part_paths(dest)
    info = _read_json(_meta_path(dest)) or _read_json(pmeta) or {}
    if not info.get("url"):
        raise DownloadError(f"{dest}: no URL is recorded beside it, so it cannot be re-fetched; "
                            "delete it and run download/prepare again.")
    _drop(dest, _meta_path(dest), part, pmeta)
    return download_file(info["url"], dest, client=client)
