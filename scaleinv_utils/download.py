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
import time
from pathlib import Path

__all__ = ["HTTPClient", "RangeFile", "DownloadError", "download_file", "verify_file",
           "coalesce_ranges"]

#: Status codes worth retrying: the server or a proxy had a passing problem.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class DownloadError(RuntimeError):
    """A file could not be fetched or did not verify; nothing partial is left looking complete."""


class HTTPClient:
    """A requests session with retries, backoff and a byte counter.

    Parameters
    ----------
    retries : int
        Attempts per request after the first (transient errors only).
    backoff : float
        First wait in seconds; doubled after each failure, capped at 30 s.
    timeout : float
        Seconds to wait for the server to connect or send the next bytes.
    progress : bool
        Show tqdm progress bars for whole-file downloads.

    Attributes
    ----------
    bytes_received : int
        Body bytes received by every request so far.
    n_requests : int
    """

    def __init__(self, retries=5, backoff=0.5, timeout=30.0, progress=True):
        import requests

        self.session = requests.Session()
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.timeout = float(timeout)
        self.progress = progress
        self.bytes_received = 0
        self.n_requests = 0

    def _sleep(self, attempt):
        time.sleep(min(self.backoff * 2 ** attempt, 30.0))

    def _get(self, url, headers=None, stream=False):
        """One GET; raises DownloadError for 4xx (never retried) and returns the response."""
        self.n_requests += 1
        resp = self.session.get(url, headers=headers or {}, stream=stream, timeout=self.timeout)
        if resp.status_code in (403, 404, 410) or (400 <= resp.status_code < 500
                                                    and resp.status_code not in RETRY_STATUS):
            resp.close()
            raise DownloadError(f"GET {url} failed with HTTP {resp.status_code}: the file does not "
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
                    raise DownloadError(f"HEAD {url} failed with HTTP {resp.status_code}.")
                size = resp.headers.get("Content-Length")
                return (int(size) if size is not None else None,
                        resp.headers.get("ETag", "").strip('"') or None)
            except (requests.ConnectionError, requests.Timeout, requests.HTTPError) as exc:
                if attempt == self.retries:
                    raise DownloadError(f"HEAD {url} failed after {attempt + 1} attempts: {exc}") from exc
                self._sleep(attempt)

    def get_range(self, url, start, end):
        """Bytes ``[start, end)`` of a remote file, retried until complete.

        Raises
        ------
        DownloadError
            On 4xx, when the server ignores ranges, or after the last retry.
        """
        import requests

        want = end - start
        buf = bytearray()
        for attempt in range(self.retries + 1):
            pos = start + len(buf)
            try:
                resp = self._get(url, {"Range": f"bytes={pos}-{end - 1}"}, stream=True)
                with resp:
                    if resp.status_code in RETRY_STATUS:
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    if resp.status_code != 206:
                        raise DownloadError(f"{url} ignored a Range request (HTTP {resp.status_code}); "
                                            "range reads need a server that supports them.")
                    for block in resp.iter_content(1 << 16):
                        buf += block
                        self.bytes_received += len(block)
                if len(buf) >= want:
                    return bytes(buf[:want])
                raise requests.ConnectionError(f"short read: {len(buf)} of {want} bytes")
            except DownloadError:
                raise
            except (requests.RequestException, OSError) as exc:
                if attempt == self.retries:
                    raise DownloadError(f"Range {start}-{end} of {url} failed after "
                                        f"{attempt + 1} attempts: {exc}") from exc
                self._sleep(attempt)

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
        """
        from concurrent.futures import ThreadPoolExecutor

        groups = coalesce_ranges(ranges, max_gap=max_gap, max_request=max_request)
        out = [None] * len(ranges)

        def fetch(group):
            start, end, members = group
            blob = self.get_range(url, start, end)
            for i in members:
                off, size = ranges[i]
                out[i] = blob[off - start: off - start + size]

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(fetch, groups))
        return out


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


def download_file(url, dest, *, client=None, sha256=None, size=None, desc=None):
    """Download a whole file into ``dest``: resumable, retried, verified, atomic.

    Re-running is a no-op when ``dest`` and its ``.meta.json`` exist and the
    size matches.

    Parameters
    ----------
    url : str
    dest : str or Path
    client : HTTPClient or None
    sha256 : str or None
        Expected SHA-256 hex digest, when known.
    size : int or None
        Expected size, when known (else the server's Content-Length).
    desc : str or None
        Progress-bar label.

    Returns
    -------
    dest : pathlib.Path

    Raises
    ------
    DownloadError
        On HTTP 4xx, after the last retry, or when the size or a checksum is
        wrong. The partial file is removed when it cannot be trusted.
    """
    import requests
    from ._progress import tqdm

    client = client or HTTPClient()
    dest = Path(dest)
    meta = _meta_path(dest)
    if dest.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if dest.stat().st_size == info.get("size") and (sha256 is None or info.get("sha256") == sha256):
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total, etag, bar = size, None, None
    try:
        for attempt in range(client.retries + 1):
            have = part.stat().st_size if part.exists() else 0
            try:
                headers = {"Range": f"bytes={have}-"} if have else {}
                resp = client._get(url, headers, stream=True)
                with resp:
                    if resp.status_code in RETRY_STATUS:
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    if resp.status_code == 416 and total is not None and have >= total:
                        break  # already complete: the server has nothing past our end
                    if resp.status_code == 200 and have:
                        have = 0  # the server ignored Range: start over
                    elif resp.status_code not in (200, 206):
                        raise requests.HTTPError(f"HTTP {resp.status_code}")
                    etag = (resp.headers.get("ETag") or "").strip('"') or etag
                    length = resp.headers.get("Content-Length")
                    if length is not None and total is None:
                        total = have + int(length)
                    if bar is None and client.progress:
                        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                   desc=desc or dest.name, leave=False)
                    elif bar is not None:
                        bar.n = have
                    with open(part, "ab" if have else "wb") as f:
                        for block in resp.iter_content(1 << 14):
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
            except (requests.RequestException, OSError) as exc:
                if attempt == client.retries:
                    raise DownloadError(f"Downloading {url} failed after {attempt + 1} attempts "
                                        f"({exc}); the partial file {part} is kept and the next "
                                        "run resumes it.") from exc
                client._sleep(attempt)
    finally:
        if bar is not None:
            bar.close()

    got = part.stat().st_size
    problem = None
    if total is not None and got != total:
        problem = f"has {got} bytes, expected {total}"
    elif _is_md5_etag(etag) and _hash_file(part, "md5") != etag.lower():
        problem = "does not match the MD5 the server announced (ETag)"
    digest = _hash_file(part, "sha256")
    if problem is None and sha256 is not None and digest != sha256:
        problem = f"has SHA-256 {digest}, expected {sha256}"
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} {problem}: the download is corrupt and was deleted; "
                            "run again to fetch it afresh.")
    os.replace(part, dest)
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(json.dumps({"url": url, "size": got, "sha256": digest,
                               "etag": etag, "sha256_expected": sha256 is not None}))
    os.replace(tmp, meta)
    return dest


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
    info = json.loads(meta.read_text())
    if dest.stat().st_size != info["size"]:
        return f"has {dest.stat().st_size} bytes, expected {info['size']}"
    if checksum and _hash_file(dest, "sha256") != info["sha256"]:
        return "SHA-256 differs from the one recorded at download"
    return None
