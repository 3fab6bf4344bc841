"""Real Natural Scenes Dataset subsets: choose, download, prepare, verify.

NSD (Allen et al. 2022) lies in a public bucket readable over plain HTTPS.
This module fetches only what a subset needs and writes it in the subset
format of :mod:`scaleinv_utils.data`, so ``load_subset(path)`` reads a real
subset exactly as it reads the demo world.

What is fetched, and how:

- trial -> image (73k id): ``nsddata/experiments/nsd/nsd_expdesign.mat``
  (or the subject's ``behav/responses.tsv``), whole file;
- image metadata (cocoId, cropBox, shared1000):
  ``nsddata/experiments/nsd/nsd_stim_info_merged.csv``, whole file;
- ROIs: ``nsddata/ppdata/subjAA/func1pt8mm/roi/<roi>.nii.gz`` or
  ``nsddata/freesurfer/fsaverage/label/<hemi>.<roi>.mgz`` and their ``.mgz.ctab``, whole files;
  besides the chosen ROI, every subset reads prf-visualrois (ROI names) and the atlases
  streams, Kastner2015 and HCP_MMP1, which :func:`network_labels` turns into each
  voxel's functional network ("early visual", ..., "default-mode", "other");
- spaces: ``func1pt8mm`` volume, the full ``fsaverage`` surface (163,842 vertices per
  hemisphere; ``roi="cortex"`` keeps all of them) or ``fsaverage5`` (its first 10,242);
- ncsnr, beside the betas, whole file;
- volume betas: ``nsddata_betas/ppdata/subjAA/func1pt8mm/betas_fithrf_GLMdenoise_RR/
  betas_sessionNN.hdf5`` ('betas', int16): only the ROI voxels' HDF5 chunks, by range requests;
- surface betas: ``.../fsaverage/betas_fithrf_GLMdenoise_RR/<hemi>.betas_sessionNN.mgh``:
  only the ROI's vertices, one range request per trial;
- images: ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5`` ('imgBrick'): only the needed
  images' chunks, by range requests;
- captions: COCO's ``captions_{train,val}2017.json`` (configurable; by default only those
  members of COCO's annotations zip, by range requests).

Preparation follows NSD: single-trial betas are z-scored per voxel within each
session (over all of the session's trials), ROI voxels are kept, repeats of
an image are averaged (single trials are kept too), the noise ceiling comes
from NSD's ncsnr, and the split is NSD's: the shared1000 images are the test
set, each subject's other images its training set.

Nothing is downloaded before the user agrees to NSD's terms of use
(``agree_terms=True``, ``--agree-nsd-terms`` or ``SCALEINV_NSD_AGREE=1``).
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._validation import check_random_state
from .config import data_dir

__all__ = [
    "NSD_BASE_URL", "BASE_URL_ENV", "AGREE_ENV", "COCO_CAPTIONS_SOURCES", "NSD_TERMS",
    "SUBJECT_SESSIONS", "ROIS", "NSDSpec", "TermsNotAccepted", "nsd_file", "check_terms",
    "trials_from_expdesign", "trials_from_responses", "select_trials", "read_volume_betas",
    "read_surface_betas", "read_images", "NETWORKS", "NETWORK_AREAS", "ATLASES",
    "network_labels", "atlases_of", "load_coco_captions", "download", "prepare",
    "verify", "info",
]

#: Root of NSD's public bucket (anonymous HTTPS). ``$SCALEINV_NSD_URL`` or ``base_url=`` overrides it.
NSD_BASE_URL = "https://natural-scenes-dataset.s3.amazonaws.com/"
BASE_URL_ENV = "SCALEINV_NSD_URL"
#: Set to 1 to agree to NSD's terms of use without passing ``agree_terms=True``.
AGREE_ENV = "SCALEINV_NSD_AGREE"
#: Where captions come from: COCO's 2017 caption annotations (a JSON file, or the zip that holds them).
COCO_CAPTIONS_SOURCES = ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",)
BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
TRIALS_PER_SESSION = 750
#: Scan sessions each subject completed (Allen et al. 2022).
SUBJECT_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: ROI families NSD provides; "cortex" keeps every voxel of the brain mask (volume) or every vertex.
ROIS = ("nsdgeneral", "streams", "prf-visualrois", "prf-eccrois", "floc-faces", "floc-bodies",
        "floc-places", "floc-words", "Kastner2015", "HCP_MMP1", "cortex")
SPACES = ("func1pt8mm", "fsaverage", "fsaverage5")
#: Two byte ranges closer than this are fetched in one request: a few voxels' chunks
#: (1.5 kB each in NSD) cost less than another round trip.
MAX_GAP = 4096
N_FSAVERAGE5 = 10242  # fsaverage's first 10,242 vertices are fsaverage5's
N_FSAVERAGE = 163842  # vertices per hemisphere of the full fsaverage surface

NSD_TERMS = """\
The Natural Scenes Dataset (NSD) is free to use under the NSD Terms and Conditions.
Before downloading, read them and fill in the NSD Data Access Agreement at
    https://naturalscenesdataset.org/
In short: use the data for research and education, do not try to identify the
participants, do not redistribute the raw data, and cite Allen et al. (2022),
"A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial
intelligence", Nature Neuroscience 25, 116-126. The full terms on the NSD website
are the ones that apply.

To agree, pass agree_terms=True (Python), --agree-nsd-terms (scaleinv-data), or
set the environment variable SCALEINV_NSD_AGREE=1."""


class TermsNotAccepted(PermissionError):
    """Raised before any download when NSD's terms of use were not agreed to."""


def check_terms(agree_terms=False, quiet=False):
    """Require agreement to NSD's terms; show them the first time.

    Parameters
    ----------
    agree_terms : bool
        Explicit agreement; ``$SCALEINV_NSD_AGREE=1`` counts as agreement too.
    quiet : bool
        Do not print the terms on first agreement.

    Raises
    ------
    TermsNotAccepted
        With the terms in the message, when there is no agreement.
    """
    env = os.environ.get(AGREE_ENV, "").strip().lower() in ("1", "yes", "true", "y")
    if not (agree_terms or env):
        raise TermsNotAccepted("NSD's terms of use have not been agreed to; nothing was "
                               "downloaded.\n\n" + NSD_TERMS)
    marker = data_dir("nsd") / ".terms_shown"
    if not marker.exists():
        if not quiet:
            print(NSD_TERMS + "\n(agreed; this notice is shown once per cache)\n")
        marker.write_text("agreed\n")


def _base_url(base_url=None):
    url = base_url or os.environ.get(BASE_URL_ENV) or NSD_BASE_URL
    return url if url.endswith("/") else url + "/"


# ---------------------------------------------------------------------------
# file layout (names as in the NSD data manual and NSD's own example code)

def nsd_file(kind, subject=None, space="func1pt8mm", session=None, hemi=None, roi=None,
             beta_version=BETA_VERSION):
    """Path of an NSD file inside the bucket.

    Parameters
    ----------
    kind : {"stim_info", "expdesign", "stimuli", "responses", "betas", "ncsnr", "roi", "ctab", "brainmask"}
    subject : int, 1..8
    space : {"func1pt8mm", "fsaverage"}
    session : int, 1-based
    hemi : {"lh", "rh"}
        Surface files only.
    roi : str
    beta_version : str

    Returns
    -------
    path : str

    Raises
    ------
    ValueError
        For an unknown kind or a missing argument.
    """
    space = "fsaverage" if space == "fsaverage5" else space
    s = f"subj{int(subject):02d}" if subject is not None else None
    fixed = {"stim_info": "nsddata/experiments/nsd/nsd_stim_info_merged.csv",
             "expdesign": "nsddata/experiments/nsd/nsd_expdesign.mat",
             "stimuli": "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"}
    if kind in fixed:
        return fixed[kind]
    if s is None:
        raise ValueError(f"nsd_file({kind!r}) needs subject=1..8.")
    surf = space == "fsaverage"
    if surf and kind in ("betas", "ncsnr", "roi") and hemi not in ("lh", "rh"):
        raise ValueError(f"nsd_file({kind!r}, space='fsaverage') needs hemi='lh' or 'rh', got {hemi!r}.")
    betas_dir = f"nsddata_betas/ppdata/{s}/{space}/{beta_version}"
    if kind == "responses":
        return f"nsddata/ppdata/{s}/behav/responses.tsv"
    if kind == "brainmask":
        return f"nsddata/ppdata/{s}/func1pt8mm/brainmask.nii.gz"
    if kind == "betas":
        if session is None:
            raise ValueError("nsd_file('betas') needs session=1..40.")
        return (f"{betas_dir}/{hemi}.betas_session{int(session):02d}.mgh" if surf
                else f"{betas_dir}/betas_session{int(session):02d}.hdf5")
    if kind == "ncsnr":
        return f"{betas_dir}/{hemi}.ncsnr.mgh" if surf else f"{betas_dir}/ncsnr.nii.gz"
    if kind == "roi":
        return (f"nsddata/freesurfer/fsaverage/label/{hemi}.{roi}.mgz" if surf
                else f"nsddata/ppdata/{s}/func1pt8mm/roi/{roi}.nii.gz")
    if kind == "ctab":
        return (f"nsddata/freesurfer/fsaverage/label/{roi}.mgz.ctab" if surf
                else f"nsddata/freesurfer/{s}/label/{roi}.mgz.ctab")
    raise ValueError(f"Unknown NSD file kind {kind!r}.")


@dataclass
class NSDSpec:
    """Which part of NSD a subset holds.

    Parameters
    ----------
    subjects : list of int
        NSD subjects 1..8.
    space : {"func1pt8mm", "fsaverage", "fsaverage5"}
        Volume (1.8 mm, subject space), fsaverage surface, or its first
        10,242 vertices per hemisphere (fsaverage5, the demo world's space).
    roi : str
        One of ROIS.
    n_train : int or None
        Training (non-shared) images per subject; None keeps all seen in the sessions.
    test : bool
        Include the shared1000 test images.
    sessions : list of int or None
        1-based sessions to use; None uses all of each subject's sessions.
    random_state : int or None
        Picks the training images.
    name : str or None
        Subset name; default "nsd-subj01-nsdgeneral" style.
    image_size : int or None
        Resize images to this many pixels (None keeps NSD's 425).
    ncsnr : {"nsd", "subset"}
        NSD's ncsnr file (from all of a subject's trials), or computed from the subset's trials.
    trials : {"expdesign", "responses"}
        Map trials to images with nsd_expdesign.mat or with the subject's responses.tsv.
    trials_per_session : int
        750 in NSD (12 runs of 62-63 trials); smaller in tests.
    networks : bool
        Label each voxel's functional network from the streams, Kastner2015 and
        HCP_MMP1 atlases (see :func:`network_labels`); False reads streams only.
    """

    subjects: list = field(default_factory=lambda: [1])
    space: str = "func1pt8mm"
    roi: str = "nsdgeneral"
    n_train: int | None = 1000
    test: bool = True
    sessions: list | None = None
    random_state: int | None = 0
    name: str | None = None
    image_size: int | None = None
    ncsnr: str = "nsd"
    trials: str = "expdesign"
    trials_per_session: int = TRIALS_PER_SESSION
    networks: bool = True

    def __post_init__(self):
        subs = [self.subjects] if isinstance(self.subjects, (int, np.integer)) else list(self.subjects)
        if not subs or any(int(s) not in SUBJECT_SESSIONS for s in subs):
            raise ValueError(f"subjects must be NSD subjects 1..8, got {self.subjects!r}.")
        self.subjects = sorted(int(s) for s in subs)
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}.")
        if self.roi not in ROIS:
            raise ValueError(f"roi must be one of {ROIS}, got {self.roi!r}.")
        if self.n_train is not None and int(self.n_train) < 0:
            raise ValueError(f"n_train must be >= 0 or None, got {self.n_train}.")
        if not self.test and self.n_train == 0:
            raise ValueError("The subset would hold no image: test=False and n_train=0.")
        if self.ncsnr not in ("nsd", "subset"):
            raise ValueError(f"ncsnr must be 'nsd' or 'subset', got {self.ncsnr!r}.")
        if self.trials not in ("expdesign", "responses"):
            raise ValueError(f"trials must be 'expdesign' or 'responses', got {self.trials!r}.")
        if self.sessions is not None:
            self.sessions = sorted(int(s) for s in self.sessions)
            if not self.sessions or min(self.sessions) < 1 or max(self.sessions) > 40:
                raise ValueError(f"sessions must be numbers in 1..40, got {self.sessions!r}.")
        if self.name is None:
            subs = "-".join(f"subj{s:02d}" for s in self.subjects)
            parts = ["nsd", subs, self.roi] + ([self.space] if self.space != "func1pt8mm" else [])
            if not self.test:
                parts.append("notest")
            if self.n_train is not None:
                parts.append(f"train{self.n_train}")
            self.name = "-".join(parts)

    def sessions_of(self, subject):
        """1-based sessions to use for one subject."""
        n = SUBJECT_SESSIONS[subject]
        return [s for s in (self.sessions or range(1, n + 1)) if s <= n]


# ---------------------------------------------------------------------------
# trials and selection

def trials_from_expdesign(path, subject, trials_per_session=TRIALS_PER_SESSION):
    """Map a subject's trials to 73k image ids with nsd_expdesign.mat.

    Parameters
    ----------
    path : str or Path
    subject : int
    trials_per_session : int

    Returns
    -------
    nsd_id : ndarray of shape (n_trials,)
        0-based 73k id of each trial, in acquisition order.
    session : ndarray of shape (n_trials,)
        1-based session of each trial (750 trials per session).
    shared : ndarray of shape (1000,)
        0-based 73k ids of the shared1000 images.
    """
    from scipy.io import loadmat

    mat = loadmat(path)
    master = np.asarray(mat["masterordering"]).ravel().astype(np.int64) - 1
    subjectim = np.asarray(mat["subjectim"])
    nsd_id = subjectim[subject - 1, master].astype(np.int64) - 1
    session = np.arange(len(master)) // int(trials_per_session) + 1
    shared = np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1
    return nsd_id, session, shared


def trials_from_responses(path):
    """Map a subject's trials to 73k image ids with its behavioural responses.tsv.

    Returns
    -------
    nsd_id : ndarray of shape (n_trials,)
    session : ndarray of shape (n_trials,)
    """
    import pandas as pd

    df = pd.read_csv(path, sep="\t")
    missing = {"SESSION", "73KID"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}; is it NSD's responses.tsv?")
    return df["73KID"].to_numpy(np.int64) - 1, df["SESSION"].to_numpy(np.int64)


def select_trials(nsd_id, session, shared_ids, sessions, n_train=None, test=True,
                  random_state=None):
    """Choose the trials of a subset: shared test images plus n_train training images.

    Parameters
    ----------
    nsd_id : array-like of shape (n_trials,)
    session : array-like of shape (n_trials,)
    shared_ids : array-like
        73k ids of the shared1000 images.
    sessions : list of int
    n_train : int or None
        Training images to draw (None: all seen in the sessions).
    test : bool
    random_state : int or None

    Returns
    -------
    keep : ndarray of shape (n_trials,), bool
    train_ids : ndarray
    test_ids : ndarray
    """
    rng = check_random_state(random_state)
    nsd_id, session = np.asarray(nsd_id), np.asarray(session)
    in_sess = np.isin(session, sessions)
    is_shared = np.isin(nsd_id, shared_ids)
    test_ids = np.unique(nsd_id[in_sess & is_shared]) if test else np.array([], dtype=np.int64)
    pool = np.unique(nsd_id[in_sess & ~is_shared])
    if n_train is None or n_train >= len(pool):
        train_ids = pool
    else:
        train_ids = np.sort(rng.choice(pool, size=int(n_train), replace=False))
    keep = in_sess & np.isin(nsd_id, np.concatenate([test_ids, train_ids]))
    return keep, train_ids, test_ids


# ---------------------------------------------------------------------------
# range reads

def _chunk_reader(dset):
    """Function turning a chunk's raw bytes into an array of the chunk's shape."""
    import zlib

    plist = dset.id.get_create_plist()
    ids = {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}
    deflate, shuffle = 1 in ids, 2 in ids  # H5Z_FILTER_DEFLATE, H5Z_FILTER_SHUFFLE
    if ids - {1, 2}:
        return None  # another filter: let h5py decode through the same range file
    dtype, shape = dset.dtype, dset.chunks

    def decode(raw, filter_mask=0):
        if deflate and not filter_mask & 1:
            raw = zlib.decompress(raw)
        if shuffle:
            raw = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, -1).T.tobytes()
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    return decode


def _le(b):
    return int.from_bytes(b, "little")


def _layout_btree(client, url, header_addr):
    """Address and key rank of a chunked dataset's version-1 B-tree, from its object header.

    Returns None for anything but a version-1 object header with a version-3
    chunked layout message (the layout MATLAB and HDF5's default settings
    write); callers then fall back to HDF5's own per-chunk look-ups.
    """
    head = client.get_range(url, header_addr, header_addr + 16)
    if head[0] != 1:
        return None
    n_msgs, todo, seen = _le(head[2:4]), [(header_addr + 16, _le(head[8:12]))], 0
    while todo and seen < n_msgs:
        start, size = todo.pop(0)
        data, p = client.get_range(url, start, start + size), 0
        while p + 8 <= len(data) and seen < n_msgs:
            mtype, msize = _le(data[p:p + 2]), _le(data[p + 2:p + 4])
            body, p, seen = data[p + 8:p + 8 + msize], p + 8 + msize, seen + 1
            if mtype == 0x10:  # continuation: more messages elsewhere
                todo.append((_le(body[:8]), _le(body[8:16])))
            elif mtype == 0x08:  # data layout
                if body[0] != 3 or body[1] != 2:
                    return None
                return _le(body[3:11]), body[2]
    return None


def _parse_entries(blob, n, key, ndims, first=0):
    """(chunk size, filter mask, coords) keys and child addresses of n node entries."""
    keys, children, p = [], [], 0
    for i in range(n + 1):
        k = blob[p:p + key]
        if len(k) < key:
            break
        keys.append((_le(k[:4]), _le(k[4:8]),
                     tuple(_le(k[8 + 8 * d:16 + 8 * d]) for d in range(ndims))))
        p += key
        if i < n and p + 8 <= len(blob):
            children.append(_le(blob[p:p + 8]))
            p += 8
    return keys, children


def _btree_chunk_index(client, url, btree_addr, ndims, wanted, max_gap, chunks=None,
                       grid=None, fanout=64):
    """Byte offset, size and filter mask of chunks, walking a v1 B-tree level by level.

    All nodes of one level are fetched together (coalesced, in parallel), and
    only the subtrees holding wanted chunks are visited. In a dense dataset
    (every chunk written, as NSD's betas) a chunk's entry in its leaf sits at
    its linear index minus that of the leaf's first chunk, so only the span of
    wanted entries of a leaf is read; each key read is checked against the
    chunk it should describe, and a leaf that does not match is read whole.

    Parameters
    ----------
    wanted : list of tuple
        Chunk start coordinates, with the trailing 0 of HDF5's keys.
    chunks, grid : tuple of int or None
        Chunk shape and number of chunks per axis (enable partial leaf reads).

    Returns
    -------
    index : dict of tuple to (offset, size, filter_mask), or None if the tree is not as expected
    """
    key = 8 + 8 * ndims
    entry = key + 8
    nbytes = lambda n: 24 + n * entry + key  # noqa: E731

    def lin(c):
        return int(np.ravel_multi_index(tuple(x // ch for x, ch in zip(c[:-1], chunks)), grid))

    level, out = [(btree_addr, sorted(set(wanted)), None, None)], {}
    while level:
        ranges, plans = [], []
        for addr, want, depth, lo in level:
            if depth == 0 and chunks is not None:
                e = [lin(c) - lin(lo) for c in want]
                if min(e) >= 0 and max(e) < fanout:
                    ranges.append((addr + 24 + min(e) * entry, (max(e) - min(e) + 1) * entry))
                    plans.append(("span", addr, want, min(e), max(e)))
                    continue
            ranges.append((addr, nbytes(fanout)))
            plans.append(("node", addr, want, None, None))
        blobs = client.read_ranges(url, ranges, max_gap=max_gap)
        nxt, redo = [], []
        for (kind, addr, want, e0, e1), blob in zip(plans, blobs):
            if kind == "span":
                keys, children = _parse_entries(blob, e1 - e0 + 1, key, ndims)
                found = {k[2]: (ch, k[0], k[1]) for k, ch in zip(keys, children)}
                if all(c in found for c in want):
                    out.update(found)
                else:
                    redo.append((addr, want, None, None))  # not dense here: read the node
                continue
            if blob[:4] != b"TREE" or blob[4] != 1:
                return None
            depth, n = blob[5], _le(blob[6:8])
            if n > fanout:
                blob = client.get_range(url, addr, addr + nbytes(n))
            keys, children = _parse_entries(blob[24:], n, key, ndims)
            if depth == 0:
                for i in range(n):
                    out[keys[i][2]] = (children[i], keys[i][0], keys[i][1])
                continue
            for i in range(n):
                lo, hi = keys[i][2], keys[i + 1][2]
                sel = [c for c in want if lo <= c < hi or (i == n - 1 and c == hi)]
                if sel:
                    nxt.append((children[i], sel, depth - 1, lo))
        level = nxt + redo
    return out


def _read_chunks(client, url, d, chunk_starts, max_gap=MAX_GAP):
    """Read whole chunks of an open HDF5 dataset by their start coordinates.

    The chunk index is looked up through ``d`` (opened on a RangeFile, so only
    the index nodes on the way are fetched); the chunks' bytes are then
    fetched with coalesced range requests.

    Returns
    -------
    chunks : dict of tuple to ndarray of the chunk's shape
    """
    starts = list(chunk_starts)
    if d.chunks is None:  # contiguous: every "chunk" is one row of the first axis
        base, row = d.id.get_offset(), int(np.prod(d.shape[1:])) * d.dtype.itemsize
        blobs = client.read_ranges(url, [(base + c[0] * row, row) for c in starts], max_gap=max_gap)
        return {c: np.frombuffer(b, d.dtype).reshape((1,) + d.shape[1:])
                for c, b in zip(starts, blobs)}
    decode = _chunk_reader(d)
    if decode is None:
        return {c: d[tuple(slice(s, s + n) for s, n in zip(c, d.chunks))] for c in starts}
    index = None
    try:
        # the link's address, not h5o.get_info: that sums the index size by walking all of it
        layout = _layout_btree(client, url, d.file.id.links.get_info(d.name.encode()).u)
        if layout is not None and layout[1] == d.ndim + 1:
            grid = tuple(-(-n // c) for n, c in zip(d.shape, d.chunks))
            index = _btree_chunk_index(client, url, layout[0], layout[1],
                                       [tuple(int(x) for x in c) + (0,) for c in starts], max_gap,
                                       chunks=d.chunks, grid=grid)
    except (AttributeError, ValueError, IndexError, TypeError, KeyError):
        index = None  # an HDF5 build without link addresses, or an unexpected layout
    infos = []
    for c in starts:
        c = tuple(int(x) for x in c)
        if index is not None and c + (0,) in index:
            infos.append(index[c + (0,)])
        else:
            i = d.id.get_chunk_info_by_coord(c)
            infos.append((i.byte_offset, i.size, i.filter_mask))
    blobs = client.read_ranges(url, [(o, n) for o, n, _ in infos], max_gap=max_gap)
    return {c: decode(b, m) for c, b, (_, _, m) in zip(starts, blobs, infos)}


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
    from .download import RangeFile

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
        got = _read_chunks(client, url, d, keys, max_gap=max_gap)
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
    from .download import RangeFile

    nsd_ids = np.asarray(nsd_ids, dtype=np.int64)
    with RangeFile(url, client, block_size=1024) as rf, h5py.File(rf, "r") as f:
        d = f[dataset]
        shape, c0 = d.shape, (d.chunks or (1,))[0]
        keys = sorted({(int(i // c0 * c0), 0, 0, 0) for i in nsd_ids})
        got = _read_chunks(client, url, d, keys, max_gap=max_gap)
    out = np.empty((len(nsd_ids),) + tuple(shape[1:]), dtype=np.uint8)
    for n, i in enumerate(nsd_ids):
        out[n] = got[(int(i // c0 * c0), 0, 0, 0)][i % c0]
    return out


# ---------------------------------------------------------------------------
# whole small files

def _fetch(rel, client, base_url, cache):
    from .download import download_file
    return download_file(_base_url(base_url) + rel, Path(cache) / rel, client=client,
                         desc=rel.rsplit("/", 1)[-1])


def _fetch_source(src, client, cache):
    """A caption source: a local path, or a URL fetched into the cache.

    From a remote zip (COCO's 241 MB annotations archive) only the
    ``captions_*.json`` members are read, by range requests through the
    zip's central directory, and cached as JSON files.
    """
    from .download import RangeFile, download_file
    if re.match(r"^https?://", str(src)):
        name = str(src).rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".zip"):
            folder = Path(cache) / "coco" / name[:-4]
            done = folder / ".complete"
            if not done.exists():
                folder.mkdir(parents=True, exist_ok=True)
                with RangeFile(src, client, block_size=1 << 20) as rf, zipfile.ZipFile(rf) as z:
                    for member in z.namelist():
                        if re.search(r"captions_\w+\.json$", member):
                            tmp = folder / (Path(member).name + ".part")
                            tmp.write_bytes(z.read(member))  # zipfile checks the member's CRC
                            os.replace(tmp, folder / Path(member).name)
                done.write_text("ok\n")
            return folder
        return download_file(src, Path(cache) / "coco" / name, client=client, desc=name)
    path = Path(os.path.expanduser(str(src)))
    if not path.is_file():
        raise FileNotFoundError(f"caption source {src} is neither a URL nor an existing file.")
    return path


def load_coco_captions(paths, coco_ids, n_captions=5):
    """Captions of COCO images from COCO caption annotation files.

    Parameters
    ----------
    paths : list of str or Path
        ``captions_*.json`` files, zips holding them, or folders of them.
    coco_ids : array-like of shape (n_images,)
    n_captions : int

    Returns
    -------
    captions : list of list of str, n_images x n_captions
        The first n_captions by annotation id; an image with fewer repeats
        its last caption (COCO has at least 5 per image).

    Raises
    ------
    KeyError
        If an image has no caption in the files.
    """
    anns = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.glob("captions_*.json")):
                anns += json.loads(f.read_text())["annotations"]
        elif p.suffix == ".zip":
            with zipfile.ZipFile(p) as z:
                for member in z.namelist():
                    if re.search(r"captions_\w+\.json$", member):
                        anns += json.loads(z.read(member))["annotations"]
        else:
            anns += json.loads(p.read_text())["annotations"]
    by_image = {}
    for a in sorted(anns, key=lambda a: a["id"]):
        by_image.setdefault(int(a["image_id"]), []).append(a["caption"].strip())
    out = []
    for cid in np.asarray(coco_ids).tolist():
        caps = by_image.get(int(cid))
        if not caps:
            raise KeyError(f"No COCO caption for cocoId {cid} in {[str(p) for p in paths]}.")
        caps = caps[:n_captions]
        out.append(caps + [caps[-1]] * (n_captions - len(caps)))
    return out


def _read_ctab(path):
    labels = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
            labels[int(parts[0])] = parts[1]
    return labels


def _load_labels(path):
    import nibabel as nib
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


# ---------------------------------------------------------------------------
# functional networks

#: The book's functional networks (the demo world's names), plus "other".
NETWORKS = ("early visual", "mid-level", "category", "attention", "language", "default-mode",
            "other")
#: Atlases NSD ships (fsaverage: ``label/{lh,rh}.<atlas>.mgz``; volume: ``roi/<atlas>.nii.gz``),
#: with ``<atlas>.mgz.ctab`` naming their labels, read to assign networks.
ATLASES = ("streams", "Kastner2015", "HCP_MMP1")
_ATLAS_ARG = {"streams": "streams", "Kastner2015": "kastner", "HCP_MMP1": "hcp"}

#: Atlas area -> network, per atlas. streams: NSD's own visual streams (Allen et al. 2022);
#: Kastner2015: Wang et al. (2015) probabilistic visual topography (V1v ... FEF);
#: HCP_MMP1: Glasser et al. (2016) areas (names without the "L_"/"_ROI" decorations).
#: Areas not listed here map to "other".
NETWORK_AREAS = {
    "streams": {
        "early visual": ("early",),
        "mid-level": ("midventral", "midlateral", "midparietal"),
        "category": ("ventral", "lateral"),
        # NSD's parietal stream runs along the intraparietal sulcus, the core of the
        # dorsal attention network (IPS0-5 in Kastner2015)
        "attention": ("parietal",),
    },
    "kastner": {
        "early visual": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d"),
        "mid-level": ("hV4", "VO1", "VO2", "PHC1", "PHC2", "TO1", "TO2", "LO1", "LO2", "V3a",
                      "V3A", "V3b", "V3B"),
        "attention": ("IPS0", "IPS1", "IPS2", "IPS3", "IPS4", "IPS5", "SPL1", "FEF"),
    },
    "hcp": {
        "early visual": ("V1", "V2", "V3"),
        "mid-level": ("V4", "V3A", "V3B", "V3CD", "V6", "V6A", "V7", "V8", "LO1", "LO2", "LO3",
                      "MT", "MST", "V4t", "FST", "PIT", "VMV1", "VMV2", "VMV3"),
        "category": ("FFC", "VVC", "PHA1", "PHA2", "PHA3"),
        # dorsal attention network: intraparietal areas and frontal eye fields
        "attention": ("IPS1", "LIPd", "LIPv", "VIP", "MIP", "AIP", "7PC", "7AL", "7PL", "FEF",
                      "PEF", "6a"),
        # perisylvian language areas (Broca's 44/45, 47l, 55b, superior temporal sulcus)
        "language": ("44", "45", "47l", "55b", "SFL", "STSda", "STSdp", "STSva", "STSvp",
                     "TPOJ1", "STV", "PSL", "A5", "STGa"),
        # posterior cingulate / precuneus, medial prefrontal, angular gyrus
        "default-mode": ("PCV", "7m", "31pd", "31pv", "31a", "d23ab", "v23ab", "POS1", "RSC",
                         "10r", "10v", "p32", "a24", "s32", "PGi", "PGs"),
    },
}


def _clean_area(name):
    """HCP_MMP1 area names appear as "V1", "L_V1_ROI" or "lh.V1": keep the area's own name."""
    name = str(name)
    name = re.sub(r"^(?:[LR]_|[lr]h[._])", "", name)
    return re.sub(r"_ROI$", "", name)


def network_labels(streams=None, kastner=None, hcp=None):
    """Functional network of each voxel from the names of its atlas labels.

    Each atlas maps its areas to the book's networks (``NETWORK_AREAS``):

    ====================  ================================  =============================
    network               Kastner2015 / streams             HCP_MMP1 (Glasser 2016)
    ====================  ================================  =============================
    early visual          V1v-V3d / early                   V1, V2, V3
    mid-level             hV4, VO, PHC, TO, LO, V3A/B /     V4, V3A-CD, V6-V8, LO1-3, MT,
                          midventral, midlateral,           MST, V4t, FST, PIT, VMV1-3
                          midparietal
    category              - / ventral, lateral              FFC, VVC, PHA1-3
    attention             IPS0-5, SPL1, FEF / parietal      IPS1, LIPd/v, VIP, MIP, AIP,
                                                            7PC, 7AL, 7PL, FEF, PEF, 6a
    language              -                                 44, 45, 47l, 55b, SFL, STSd*,
                                                            STSv*, TPOJ1, STV, PSL, A5, STGa
    default-mode          -                                 PCV, 7m, 31pd/pv/a, d23ab,
                                                            v23ab, POS1, RSC, 10r, 10v,
                                                            p32, a24, s32, PGi, PGs
    ====================  ================================  =============================

    Where atlases disagree, Kastner2015 wins over streams and streams over
    HCP_MMP1: the visual atlases are the finer maps of visual cortex (and
    streams was drawn on NSD's own data), while HCP_MMP1 covers all of
    cortex and supplies the language, attention and default-mode areas
    outside visual cortex. A voxel that no atlas assigns is "other".

    Parameters
    ----------
    streams, kastner, hcp : array-like of str, shape (n_voxels,), or None
        Each voxel's label name in NSD's streams, Kastner2015 and HCP_MMP1
        atlases ("" or None where the atlas has no label); at least one.

    Returns
    -------
    network : ndarray of shape (n_voxels,), object
        One of ``NETWORKS`` per voxel.

    Raises
    ------
    ValueError
        If no atlas is given or their lengths differ.

    Examples
    --------
    >>> network_labels(kastner=["V1v", "", "IPS2"], hcp=["V1", "L_44_ROI", "PCV"]).tolist()
    ['early visual', 'language', 'attention']
    """
    given = {k: v for k, v in (("hcp", hcp), ("streams", streams), ("kastner", kastner))
             if v is not None}
    if not given:
        raise ValueError("network_labels needs at least one atlas's labels (streams, kastner, hcp).")
    lengths = {k: len(v) for k, v in given.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"atlas label arrays differ in length: {lengths}.")
    n = next(iter(lengths.values()))
    out = np.full(n, "other", dtype=object)
    # lowest precedence first, so that later atlases overwrite earlier ones
    for atlas, labels in given.items():
        table = {(_clean_area(a) if atlas == "hcp" else a): net
                 for net, areas in NETWORK_AREAS[atlas].items() for a in areas}
        labels = np.asarray(["" if x is None else str(x) for x in labels], dtype=object)
        u, inv = np.unique(labels, return_inverse=True)
        mapped = np.array([table.get(_clean_area(x) if atlas == "hcp" else x) for x in u],
                          dtype=object)[inv.ravel()]
        hit = mapped != None  # noqa: E711 (elementwise on an object array)
        out[hit] = mapped[hit]
    return out


def atlases_of(spec):
    """Atlases a subset reads for its network labels: ATLASES, or streams alone.

    Parameters
    ----------
    spec : NSDSpec

    Returns
    -------
    atlases : tuple of str
    """
    return ATLASES if getattr(spec, "networks", True) else ("streams",)


# ---------------------------------------------------------------------------
# the pipeline

def _plan(spec):
    """Small NSD files a subset needs (whole-file downloads), per subject."""
    files = [nsd_file("stim_info"), nsd_file("expdesign")]
    space = spec.space
    hemis = ("lh", "rh") if space != "func1pt8mm" else (None,)
    for s in spec.subjects:
        if spec.trials == "responses":
            files.append(nsd_file("responses", s))
        for h in hemis:
            if spec.ncsnr == "nsd":
                files.append(nsd_file("ncsnr", s, space, hemi=h))
            for r in sorted({spec.roi, "prf-visualrois", *atlases_of(spec)} - {"cortex"}):
                files.append(nsd_file("roi", s, space, hemi=h, roi=r))
        for r in sorted({spec.roi, "prf-visualrois", *atlases_of(spec)} - {"cortex", "nsdgeneral"}):
            files.append(nsd_file("ctab", s, space, roi=r))
        if spec.roi == "cortex" and space == "func1pt8mm":
            files.append(nsd_file("brainmask", s))
    return list(dict.fromkeys(files))


def download(spec, *, agree_terms=False, base_url=None, cache=None, client=None, progress=True):
    """Download the small NSD files a subset needs into the cache (a no-op when cached).

    Betas and images are not downloaded whole: :func:`prepare` reads the
    needed parts of them by range requests.

    Parameters
    ----------
    spec : NSDSpec
    agree_terms : bool
    base_url : str or None
    cache : str, Path or None
        Default ``data_dir("nsd")``.
    client : HTTPClient or None
    progress : bool

    Returns
    -------
    paths : dict of str to Path
        Bucket path -> cached file.
    """
    from .download import HTTPClient

    check_terms(agree_terms)
    cache = Path(cache) if cache else data_dir("nsd")
    client = client or HTTPClient(progress=progress)
    return {rel: _fetch(rel, client, base_url, cache) for rel in _plan(spec)}


def _label_names(values, table, unlabelled=""):
    """Names of integer labels (0 or less: unlabelled), looked up once per distinct value."""
    values = np.asarray(values).astype(np.int64).ravel()
    u, inv = np.unique(values, return_inverse=True)
    named = np.array([table.get(int(x), str(int(x))) if x > 0 else unlabelled for x in u],
                     dtype=object)
    return named[inv.ravel()] if len(u) else np.array([], dtype=object)


def _roi_voxels(spec, subject, paths):
    """Voxel selection and labels of one subject: (selector, VoxelInfo, affine, vol_shape).

    The selector is the ROI's (i, j, k) indices in the volume, or a dict hemi ->
    vertex indices on the surface. Every voxel is labelled with its ROI
    (prf-visualrois area where it has one) and its functional network, from
    the atlases of :func:`atlases_of` through :func:`network_labels`.
    """
    from .data import VoxelInfo

    space = spec.space
    volume = space == "func1pt8mm"

    def lab(name, hemi=None):
        data, aff = _load_labels(paths[nsd_file("roi", subject, space, hemi=hemi, roi=name)])
        data = np.asarray(data)
        return (data.reshape(data.shape[:3]) if volume else data.reshape(-1)), aff

    def names(name):
        if name == "nsdgeneral":
            return {1: "nsdgeneral"}
        return _read_ctab(paths[nsd_file("ctab", subject, space, roi=name)])

    atlases = atlases_of(spec)
    tables = {a: names(a) for a in atlases + ("prf-visualrois",)}
    roi_table = names(spec.roi) if spec.roi != "cortex" else {}

    def labels_at(where, hemi, roi_values):
        """(roi names, network names) of the selected voxels of one volume or hemisphere."""
        prf = _label_names(lab("prf-visualrois", hemi)[0][where], tables["prf-visualrois"])
        if spec.roi in ("cortex", "nsdgeneral"):
            own = np.full(len(prf), spec.roi, dtype=object)
        else:
            own = _label_names(roi_values, roi_table, spec.roi)
        roi = np.where(prf != "", prf, own)
        found = {a: _label_names(lab(a, hemi)[0][where], tables[a]) for a in atlases}
        return roi, network_labels(**{_ATLAS_ARG[a]: v for a, v in found.items()})

    if volume:
        if spec.roi == "cortex":
            mask_img, aff = _load_labels(paths[nsd_file("brainmask", subject)])
            mask = np.asarray(mask_img).reshape(np.asarray(mask_img).shape[:3]) > 0
            roi_vol = None
        else:
            roi_vol, aff = lab(spec.roi)
            mask = roi_vol > 0
        ijk = np.argwhere(mask)
        where = tuple(ijk.T)
        roi, net = labels_at(where, None, None if roi_vol is None else roi_vol[where])
        vox = VoxelInfo(roi=roi, network=net, vertex=np.full(len(ijk), -1),
                        hemi=np.array([""] * len(ijk), dtype=object), ijk=ijk)
        return ijk, vox, aff, mask.shape

    sel, rois, nets, verts, hemis = {}, [], [], [], []
    for h in ("lh", "rh"):
        n_all = len(lab(atlases[0], h)[0])
        if space == "fsaverage" and n_all != N_FSAVERAGE:
            # a truncated or foreign label file would silently shift every vertex
            raise ValueError(f"{nsd_file('roi', subject, space, hemi=h, roi=atlases[0])} has "
                             f"{n_all} vertices; fsaverage has {N_FSAVERAGE} per hemisphere.")
        n = n_all if space == "fsaverage" else N_FSAVERAGE5
        roi_v = np.ones(n, dtype=int) if spec.roi == "cortex" else lab(spec.roi, h)[0][:n]
        v = np.flatnonzero(roi_v > 0)
        roi, net = labels_at(v, h, roi_v[v])
        sel[h] = v
        rois.append(roi)
        nets.append(net)
        verts.append(v)
        hemis += [h] * len(v)
    verts = np.concatenate(verts)
    vox = VoxelInfo(roi=np.concatenate(rois).astype(object),
                    network=np.concatenate(nets).astype(object), vertex=verts,
                    hemi=np.array(hemis, dtype=object), ijk=np.full((len(verts), 3), -1))
    return sel, vox, None, None


def _subject_trials(spec, subject, paths, shared):
    nsd_id, session, _ = trials_from_expdesign(paths[nsd_file("expdesign")], subject,
                                               spec.trials_per_session)
    if spec.trials == "responses":
        nsd_id, session = trials_from_responses(paths[nsd_file("responses", subject)])
    return nsd_id, session


def prepare(spec, *, agree_terms=False, base_url=None, cache=None, out_dir=None,
            overwrite=False, captions=None, client=None, progress=True, max_gap=None):
    """Build a real NSD subset end to end and write it in the subset format.

    Re-running with a complete subset in place is a no-op. Voxels with a NaN
    beta in any selected trial (on fsaverage, the medial wall has no data) are
    left out with a warning; the count per subject is in the manifest under
    ``manifest["nsd"]["voxels_dropped_for_nan"]``.

    Parameters
    ----------
    spec : NSDSpec
    agree_terms : bool
        Agreement to NSD's terms (or ``$SCALEINV_NSD_AGREE=1``).
    base_url : str or None
        NSD bucket root (default NSD_BASE_URL or ``$SCALEINV_NSD_URL``).
    cache : str, Path or None
        Download cache (default ``data_dir("nsd")``).
    out_dir : str, Path or None
        Where the subset directory goes (default ``data_dir("subsets")``).
    overwrite : bool
    captions : list of str or None
        COCO caption sources (URLs or paths; JSON or zip). Default COCO_CAPTIONS_SOURCES.
    client : HTTPClient or None
    progress : bool
    max_gap : int or None
        Largest gap (bytes) between two ranges fetched in one request
        (default MAX_GAP): larger means fewer requests but more wasted bytes.

    Returns
    -------
    path : pathlib.Path
        The subset directory; ``load_subset(path)`` loads it.
    """
    import pandas as pd
    from ._progress import tqdm

    from .data import StimulusSet, SubsetError, VoxelInfo, verify_subset, write_subset
    from .download import HTTPClient
    from .reliability import average_repeats, compute_ncsnr, zscore_per_session

    check_terms(agree_terms)
    max_gap = MAX_GAP if max_gap is None else max_gap
    out = Path(out_dir) if out_dir else data_dir("subsets")
    target = out / spec.name
    if target.exists() and not overwrite:
        try:
            verify_subset(target, checksum=False)
            return target
        except SubsetError:
            pass  # incomplete or corrupt: rebuild
    client = client or HTTPClient(progress=progress)
    cache = Path(cache) if cache else data_dir("nsd")
    base = _base_url(base_url)
    paths = download(spec, agree_terms=True, base_url=base, cache=cache, client=client)

    stim = pd.read_csv(paths[nsd_file("stim_info")])
    stim = stim.set_index("nsdId", drop=False).sort_index()
    _, _, shared_ids = trials_from_expdesign(paths[nsd_file("expdesign")], spec.subjects[0])

    per_subject, all_ids = {}, []
    for s in spec.subjects:
        nsd_id, session = _subject_trials(spec, s, paths, shared_ids)
        keep, train_ids, test_ids = select_trials(
            nsd_id, session, shared_ids, spec.sessions_of(s), spec.n_train, spec.test,
            random_state=spec.random_state)
        if not keep.any():
            raise ValueError(f"subj{s:02d}: no trial matches the selection {asdict(spec)}.")
        per_subject[s] = (nsd_id, session, keep, train_ids, test_ids)
        all_ids.append(np.concatenate([train_ids, test_ids]))
    ids = np.unique(np.concatenate(all_ids))
    row_of = {int(i): r for r, i in enumerate(ids)}

    subjects, bytes_by, dropped = {}, {}, {}
    for s, (nsd_id, session, keep, train_ids, test_ids) in per_subject.items():
        sel, vox, affine, vol_shape = _roi_voxels(spec, s, paths)
        before = client.bytes_received
        blocks, sess_of, img_of = [], [], []
        for sess in tqdm(np.unique(session[keep]), desc=f"subj{s:02d} betas", disable=not progress):
            rows = np.flatnonzero(session == sess)
            if spec.space == "func1pt8mm":
                B = read_volume_betas(client, base + nsd_file("betas", s, "func1pt8mm", sess),
                                      sel, vol_shape, max_gap=max_gap)
            else:
                B = np.concatenate([read_surface_betas(
                    client, base + nsd_file("betas", s, "fsaverage", sess, hemi=h), sel[h],
                    max_gap=max_gap) for h in ("lh", "rh")], axis=1)
            if len(B) < len(rows):
                raise ValueError(f"subj{s:02d} session {sess}: betas hold {len(B)} trials, "
                                 f"the design {len(rows)}.")
            # z-score over all of the session's trials, as NSD does, then keep the selected ones;
            # voxels with NaN betas stay NaN here and are dropped below
            B = B[:len(rows)]
            finite = np.isfinite(B).all(axis=0)
            Z = np.full(B.shape, np.nan, dtype=np.float32)
            Z[:, finite] = zscore_per_session(B[:, finite], np.zeros(len(rows)))
            k = keep[rows]
            blocks.append(Z[k])
            sess_of.append(np.full(int(k.sum()), sess))
            img_of.append(nsd_id[rows][k])
        bytes_by[f"subj{s:02d}_betas"] = client.bytes_received - before
        trial_betas = np.concatenate(blocks)
        trial_ids = np.concatenate(img_of)
        # A voxel without data in some selected trial (NaN: e.g. fsaverage's medial wall, or a
        # vertex that lost a session) has no response to model: drop it, and say so.
        usable = np.isfinite(trial_betas).all(axis=0)
        dropped[f"subj{s:02d}"] = int((~usable).sum())
        if not usable.all():
            warnings.warn(f"subj{s:02d}: {dropped[f'subj{s:02d}']} of {usable.size} voxels have "
                          "NaN betas in selected trials (on fsaverage, the medial wall) and are "
                          "left out of the subset.", stacklevel=2)
            trial_betas = trial_betas[:, usable]
            vox = VoxelInfo(**{f: getattr(vox, f)[usable] for f in
                               ("roi", "network", "vertex", "hemi", "ijk")})
        betas, img_ids, n_trials = average_repeats(trial_betas, trial_ids)
        if spec.ncsnr == "nsd":
            if spec.space == "func1pt8mm":
                nc_vol, _ = _load_labels(paths[nsd_file("ncsnr", s, "func1pt8mm")])
                ncsnr = np.asarray(nc_vol)[tuple(sel.T)][usable]
            else:
                ncsnr = np.concatenate([
                    np.asarray(_load_labels(paths[nsd_file("ncsnr", s, "fsaverage", hemi=h)])[0]
                               ).ravel()[sel[h]] for h in ("lh", "rh")])[usable]
        else:
            ncsnr = compute_ncsnr(trial_betas, trial_ids)
        subjects[f"subj{s:02d}"] = dict(
            image_index=np.array([row_of[int(i)] for i in img_ids]),
            split=np.where(np.isin(img_ids, test_ids), "test", "train"),
            betas=betas, n_trials=n_trials, trial_betas=trial_betas,
            trial_image_index=np.array([row_of[int(i)] for i in trial_ids]),
            trial_session=np.concatenate(sess_of), ncsnr=np.nan_to_num(ncsnr).astype(np.float32),
            voxels=vox, affine=affine)

    before = client.bytes_received
    images = read_images(client, base + nsd_file("stimuli"), ids, max_gap=max_gap)
    bytes_by["images"] = client.bytes_received - before
    if spec.image_size:
        from PIL import Image
        images = np.stack([np.asarray(Image.fromarray(im).resize(
            (spec.image_size, spec.image_size), Image.BICUBIC)) for im in images])
    meta = stim.loc[ids]
    coco_ids = meta["cocoId"].to_numpy(np.int64)
    cap_paths = [_fetch_source(src, client, cache) for src in (captions or COCO_CAPTIONS_SOURCES)]
    crop = np.array([[float(x) for x in re.findall(r"[-\d.eE]+", str(c))] for c in meta["cropBox"]])
    stimuli = StimulusSet(
        images=images, stimulus_id=ids, coco_id=coco_ids, shared=np.isin(ids, shared_ids),
        captions=load_coco_captions(cap_paths, coco_ids),
        attributes={"crop_box": crop, "coco_split": meta["cocoSplit"].astype(str).to_numpy()})
    extra = {"nsd": {"base_url": base, "spec": asdict(spec), "beta_version": BETA_VERSION,
                     "files": sorted(paths), "bytes_fetched": client.bytes_received,
                     "bytes_by_part": bytes_by, "n_requests": client.n_requests,
                     "voxels_dropped_for_nan": dropped}}
    desc = (f"NSD {', '.join(subjects)}, {spec.roi} in {spec.space}: single-trial betas z-scored per "
            "session, repeats averaged, shared1000 = test. Images are NSD's 425 px crops "
            "(crop_box: the crop of the COCO original).")
    return write_subset(target, stimuli=stimuli, subjects=subjects, source="nsd",
                        space="fsaverage" if spec.space == "fsaverage" else spec.space,
                        roi=spec.roi, name=spec.name, description=desc, extra=extra,
                        overwrite=True)


def verify(cache=None, checksum=True, subsets=True):
    """Re-check every cached NSD file and every prepared NSD subset.

    Parameters
    ----------
    cache : str, Path or None
    checksum : bool
    subsets : bool
        Also check the subsets under ``data_dir("subsets")``.

    Returns
    -------
    problems : dict of str to str
        Path -> what is wrong; empty when everything is intact.
    """
    from .data import SubsetError, verify_subset
    from .download import verify_file

    cache = Path(cache) if cache else data_dir("nsd")
    problems = {}
    for meta in sorted(cache.rglob("*.meta.json")):
        f = meta.with_name(meta.name[:-len(".meta.json")])
        p = verify_file(f, checksum=checksum)
        if p:
            problems[str(f)] = p
    for part in sorted(cache.rglob("*.part")):
        problems[str(part)] = "interrupted download (resumed by the next download)"
    if subsets:
        for m in sorted(data_dir("subsets").glob("*/manifest.json")):
            try:
                manifest = json.loads(m.read_text())
                if manifest.get("source") == "nsd":
                    verify_subset(m.parent, checksum=checksum)
            except (SubsetError, json.JSONDecodeError) as exc:
                problems[str(m.parent)] = str(exc)
    return problems


def info(cache=None):
    """What is where: bucket, cache, terms, cached files, prepared subsets.

    Returns
    -------
    text : str
    """
    cache = Path(cache) if cache else data_dir("nsd")
    files = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith((".meta.json",))
             and not p.name.startswith(".")]
    size = sum(p.stat().st_size for p in files)
    agreed = (cache / ".terms_shown").exists() or os.environ.get(AGREE_ENV, "") not in ("", "0")
    subsets = sorted(m.parent.name for m in data_dir("subsets").glob("*/manifest.json"))
    return "\n".join([
        f"NSD bucket:  {_base_url()}  (set ${BASE_URL_ENV} to change)",
        f"cache:       {cache}  (set $SCALEINV_DATA to move)",
        f"cached:      {len(files)} files, {size / 1e6:.1f} MB",
        f"NSD terms:   {'agreed' if agreed else 'not yet agreed (see scaleinv-data download --help)'}",
        f"subsets:     {', '.join(subsets) or '(none)'}",
        f"ROIs:        {', '.join(ROIS)};  spaces: {', '.join(SPACES)}",
    ])
