"""Readers of NSD's files: betas by range requests, images, label volumes and colour tables.

Betas and images are never downloaded whole. A volume session's HDF5 file
(``betas_sessionNN.hdf5``, 'betas', int16) is read chunk by chunk, only the
chunks of the ROI's voxels, found through the HDF5 chunk index
(:func:`scaleinv_utils.remote.read_chunks`); a surface ``.mgh`` file one
range per trial; ``nsd_stimuli.hdf5`` ('imgBrick') only the needed images' chunks. Small label files (``.nii.gz``, ``.mgz``) and their
``.ctab`` colour tables are read from the cache.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..remote import RangeFile, read_chunks
from .layout import N_FSAVERAGE, TRIALS_PER_SESSION

__all__ = ["MAX_GAP", "read_volume_betas", "read_surface_betas", "surface_read_bytes",
           "read_images"]

#: Two byte ranges closer than this are fetched in one request: a few voxels' chunks
#: (1.5 kB each in NSD) cost less than another round trip.
MAX_GAP = 4096


def _volume_order(h5_shape, vol_shape):
    """Axes of the HDF5 'betas' array: (trials, k, j, i) as MATLAB writes, or (trials, i, j, k)."""
    if tuple(h5_shape[1:]) == tuple(vol_shape)[::-1]:
        return "reversed"
    if tuple(h5_shape[1:]) == tuple(vol_shape):
        return "same"
    raise ValueError(f"betas of shape {h5_shape} do not match the ROI volume {vol_shape}.")


def read_volume_betas(client, url, ijk, vol_shape, dataset="betas", max_gap=None,
                      block_size=1024):
    """Single-trial betas of some voxels of an NSD volume HDF5 file, by range requests.

    NSD stores each session's betas chunked so that one voxel's trials form
    one chunk; only the chunks of the requested voxels are fetched, found
    through the HDF5 chunk index, and neighbouring chunks share a request.

    Parameters
    ----------
    client : HTTPClient
    url : str
    ijk : array-like of shape (n_voxels, 3)
        Voxel indices in the NIfTI (ROI file) orientation.
    vol_shape : tuple of 3 int
        Shape of the ROI volume.
    dataset : str
    max_gap : int or None
        Chunks closer than this many bytes are fetched in one request (default MAX_GAP).
    block_size : int
        Granularity of metadata reads (HDF5 index nodes are a few kB).

    Returns
    -------
    betas : ndarray of shape (n_trials, n_voxels), float32
        Percent signal change (NSD's int16 values / 300).
    """
    import h5py

    max_gap = MAX_GAP if max_gap is None else max_gap
    ijk = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
    with RangeFile(url, client, block_size=block_size) as rf, h5py.File(rf, "r") as f:
        d = f[dataset]
        shape, chunks, dtype = d.shape, d.chunks, d.dtype
        order = _volume_order(shape, vol_shape)
        coords = ijk[:, ::-1] if order == "reversed" else ijk
        n_trials = shape[0]
        if chunks is None:
            raise ValueError(f"{url}: 'betas' is not chunked; range reads per voxel need chunks.")
        starts = (coords // np.asarray(chunks[1:])) * np.asarray(chunks[1:])
        t_starts = range(0, n_trials, chunks[0])
        keys = sorted({(t,) + tuple(int(x) for x in s) for s in starts for t in t_starts})
        got = read_chunks(client, url, d, keys, max_gap=max_gap)
    out = np.empty((n_trials, len(coords)), dtype=np.float32)
    for v, (c, s) in enumerate(zip(coords, starts)):
        inner = tuple(int(x) for x in (c - s))
        for t in t_starts:
            block = got[(t,) + tuple(int(x) for x in s)]
            n = min(chunks[0], n_trials - t)
            out[t:t + n, v] = block[(slice(0, n),) + inner]
    if np.issubdtype(dtype, np.integer):
        out /= 300.0  # NSD stores int16 percent signal change x 300
    return out


_MGH_DTYPES = {0: ">u1", 1: ">i4", 3: ">f4", 4: ">i2"}


def read_surface_betas(client, url, vertices, max_gap=MAX_GAP):
    """Single-trial betas of some vertices of an NSD fsaverage .mgh file, by range requests.

    An MGH file stores, after a 284-byte header, every vertex of trial 1,
    then every vertex of trial 2, ...: the ROI's vertices of each trial are
    one (coalesced) range.

    Parameters
    ----------
    client : HTTPClient
    url : str
    vertices : array-like of shape (n_vertices,)
        Vertex indices within this hemisphere.

    Returns
    -------
    betas : ndarray of shape (n_trials, n_vertices), float32
    """
    head = client.get_range(url, 0, 284)
    dims = np.frombuffer(head[4:20], ">i4")
    mtype = int(np.frombuffer(head[20:24], ">i4")[0])
    if mtype not in _MGH_DTYPES:
        raise ValueError(f"{url}: unsupported MGH data type {mtype}.")
    dt = np.dtype(_MGH_DTYPES[mtype])
    n_vert, n_trials = int(np.prod(dims[:3])), int(dims[3])
    vertices = np.asarray(vertices, dtype=np.int64)
    if vertices.size and (vertices.min() < 0 or vertices.max() >= n_vert):
        raise ValueError(f"vertices must lie in [0, {n_vert}).")
    lo, hi = int(vertices.min()), int(vertices.max()) + 1
    # one range per trial covering the ROI's span; the coalescer merges trials when close
    ranges = [(284 + (t * n_vert + lo) * dt.itemsize, (hi - lo) * dt.itemsize) for t in range(n_trials)]
    blobs = client.read_ranges(url, ranges, max_gap=max_gap)
    out = np.stack([np.frombuffer(b, dt)[vertices - lo] for b in blobs]).astype(np.float32)
    return out


def surface_read_bytes(vertices, n_sessions, trials_per_session=TRIALS_PER_SESSION,
                       n_vertices=N_FSAVERAGE, max_gap=MAX_GAP):
    """Bytes :func:`read_surface_betas` fetches for some vertices over some sessions.

    Each trial's read spans the ROI's lowest to highest vertex; trials whose
    spans are closer than ``max_gap`` merge into one request (then the gap is
    read too).

    Parameters
    ----------
    vertices : dict of str to array-like
        Per hemisphere, the vertex indices read.
    n_sessions : int
    trials_per_session : int
    n_vertices : int
        Vertices per hemisphere in the file (fsaverage: 163,842).
    max_gap : int

    Returns
    -------
    n_bytes : int
    """
    total = 0
    for v in vertices.values():
        v = np.asarray(v)
        if not v.size:
            continue
        span = (int(v.max()) - int(v.min()) + 1) * 4
        gap = n_vertices * 4 - span
        per_trial = span + (gap if gap <= max_gap else 0)
        total += per_trial * trials_per_session * n_sessions
    return int(total)


def read_images(client, url, nsd_ids, dataset="imgBrick", max_gap=MAX_GAP):
    """Images of nsd_stimuli.hdf5, fetching only their chunks.

    Parameters
    ----------
    client : HTTPClient
    url : str
    nsd_ids : array-like of shape (n_images,)
        0-based 73k ids.

    Returns
    -------
    images : ndarray of shape (n_images, 425, 425, 3), uint8
    """
    import h5py

    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    with RangeFile(url, client, block_size=1024) as rf, h5py.File(rf, "r") as f:
        d = f[dataset]
        shape = d.shape
        if d.dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{url}: {dataset!r} has shape {shape} and dtype {d.dtype}; "
                             "expected (n_images, height, width, 3) uint8 as NSD's imgBrick.")
        if nsd_ids.size and (nsd_ids.min() < 0 or nsd_ids.max() >= shape[0]):
            raise ValueError(f"nsd_ids must lie in [0, {shape[0]}).")
        chunks = d.chunks or (1,) + tuple(shape[1:])
        # NSD's imgBrick is one chunk per image; any other chunk shape is read chunk by chunk
        # and the image assembled from the chunks that cover it
        grid = [range(0, n, c) for n, c in zip(shape[1:], chunks[1:])]
        inner = [(a, b, c) for a in grid[0] for b in grid[1] for c in grid[2]]
        keys = sorted({(int(i // chunks[0] * chunks[0]),) + t for i in nsd_ids for t in inner})
        got = read_chunks(client, url, d, keys, max_gap=max_gap)
    out = np.empty((len(nsd_ids),) + tuple(shape[1:]), dtype=np.uint8)
    for n, i in enumerate(nsd_ids):
        c0 = int(i // chunks[0] * chunks[0])
        for a, b, c in inner:
            block = got[(c0, a, b, c)][int(i) - c0]
            h, w, z = (min(ch, sz - st) for ch, sz, st in zip(chunks[1:], shape[1:], (a, b, c)))
            out[n, a:a + h, b:b + w, c:c + z] = block[:h, :w, :z]
    return out

def _read_ctab(path):
    """Label number -> name, from a FreeSurfer colour table (``<roi>.mgz.ctab``)."""
    labels = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
            labels[int(parts[0])] = parts[1]
    return labels


def _load_labels(path):
    """(data, affine) of a cached NIfTI or MGH file; a damaged file is a ValueError naming the repair."""
    import nibabel as nib
    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj), img.affine
    except Exception as exc:  # gzip, header or size errors all mean one thing: a damaged file
        raise ValueError(f"cached file {path} cannot be read ({type(exc).__name__}: {exc}); "
                         "run `scaleinv-data verify --repair` to fetch it again.") from exc
