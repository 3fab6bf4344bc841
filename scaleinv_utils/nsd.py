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
    "NSD_BASE_URL", "BASE_URL_ENV", "AGREE_ENV", "COCO_CAPTIONS_SOURCES", "COCO_MIRROR_PATH",
    "COCO_ENV", "default_caption_sources", "SpecMismatch", "NSD_TERMS",
    "SUBJECT_SESSIONS", "ROIS", "NSDSpec", "TermsNotAccepted", "nsd_file", "check_terms",
    "trials_from_expdesign", "trials_from_responses", "select_trials", "read_volume_betas",
    "read_surface_betas", "read_images", "surface_read_bytes", "NETWORKS", "NETWORK_AREAS",
    "ATLASES",
    "network_labels", "atlases_of", "native_to_fsaverage", "FSAVERAGE_ATLASES",
    "NATIVE_SURFACE_ROIS", "load_coco_captions", "download", "prepare",
    "verify", "info", "smoke",
]

#: Root of NSD's public bucket (anonymous HTTPS). ``$SCALEINV_NSD_URL`` or ``base_url=`` overrides it.
NSD_BASE_URL = "https://natural-scenes-dataset.s3.amazonaws.com/"
BASE_URL_ENV = "SCALEINV_NSD_URL"
#: Set to 1 to agree to NSD's terms of use without passing ``agree_terms=True``.
AGREE_ENV = "SCALEINV_NSD_AGREE"
#: Where captions come from: COCO's 2017 caption annotations (a JSON file, or the zip that holds them).
COCO_CAPTIONS_SOURCES = ("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",)
#: Where a mirror of the bucket (any base URL but NSD's own) keeps COCO's annotations zip.
COCO_MIRROR_PATH = "coco/annotations_trainval2017.zip"
#: Environment variable naming caption sources (comma-separated URLs or paths).
COCO_ENV = "SCALEINV_COCO_URL"
BETA_VERSION = "betas_fithrf_GLMdenoise_RR"
TRIALS_PER_SESSION = 750
#: Scan sessions each subject completed (Allen et al. 2022).
SUBJECT_SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
#: ROI families NSD provides; "cortex" keeps every voxel of the brain mask (volume) or every vertex.
ROIS = ("nsdgeneral", "streams", "prf-visualrois", "prf-eccrois", "floc-faces", "floc-bodies",
        "floc-places", "floc-words", "Kastner2015", "HCP_MMP1", "cortex")
SPACES = ("func1pt8mm", "fsaverage", "fsaverage5")
#: What NSD publishes on fsaverage itself (``nsddata/freesurfer/fsaverage/label/``): its atlases.
FSAVERAGE_ATLASES = ("Kastner2015", "HCP_MMP1", "nsdgeneral", "streams", "visualsulc",
                     "corticalsulc", "gVTC", "hVTC", "gEVC", "fVTC")
#: Hand-drawn ROIs: on fsaverage they exist only on each subject's native surface
#: (``nsddata/freesurfer/subjAA/label/``), mapped through white-to-fsaverage.
NATIVE_SURFACE_ROIS = ("prf-visualrois", "prf-eccrois", "floc-faces", "floc-bodies",
                       "floc-places", "floc-words")
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
    kind : {"stim_info", "expdesign", "stimuli", "responses", "betas", "ncsnr", "roi", "ctab", "brainmask", "transform"}
        On the surface, ``"roi"`` is the atlas on fsaverage for the atlases NSD
        publishes there (FSAVERAGE_ATLASES) and the subject's native-surface
        label file for the hand-drawn ROIs (NATIVE_SURFACE_ROIS), which
        ``"transform"`` (``{hemi}.white-to-fsaverage.mgz``) maps to fsaverage.
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
    if (surf and kind in ("betas", "ncsnr", "roi") or kind == "transform") and hemi not in ("lh", "rh"):
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
    if kind == "transform":
        return f"nsddata/ppdata/{s}/transforms/{hemi}.white-to-fsaverage.mgz"
    on_fsaverage = surf and roi not in NATIVE_SURFACE_ROIS
    if kind == "roi":
        if not surf:
            return f"nsddata/ppdata/{s}/func1pt8mm/roi/{roi}.nii.gz"
        return f"nsddata/freesurfer/{'fsaverage' if on_fsaverage else s}/label/{hemi}.{roi}.mgz"
    if kind == "ctab":
        return f"nsddata/freesurfer/{'fsaverage' if on_fsaverage else s}/label/{roi}.mgz.ctab"
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
            # every other choice that changes the data is in the name when not the default
            # (trials_per_session, a test setting, only in the spec hash)
            if self.sessions is not None:
                parts.append("sess" + _ranges_text(self.sessions))
            if self.random_state != 0:
                parts.append(f"seed{self.random_state}")
            if self.image_size:
                parts.append(f"px{self.image_size}")
            if self.trials != "expdesign":
                parts.append(self.trials)
            if self.ncsnr != "nsd":
                parts.append(f"ncsnr{self.ncsnr}")
            if not self.networks:
                parts.append("streamsonly")
            self.name = "-".join(parts)

    def record(self):
        """Every parameter that decides the subset's content (all but ``name``), as a dict."""
        d = asdict(self)
        d.pop("name")
        return d

    def spec_hash(self):
        """SHA-256 of :meth:`record` (canonical JSON): equal hashes, equal subsets."""
        import hashlib
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()

    def sessions_of(self, subject):
        """1-based sessions to use for one subject."""
        n = SUBJECT_SESSIONS[subject]
        return [s for s in (self.sessions or range(1, n + 1)) if s <= n]


def _ranges_text(numbers):
    """[1, 2, 3, 5] -> "1-3,5"."""
    out, run = [], []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


class SpecMismatch(ValueError):
    """A subset of that name exists but was built from another spec."""


def _spec_differences(old, new):
    """Names and values of the parameters where two spec records differ."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '(absent)')!r} there, {new.get(k, '(absent)')!r} asked"
            for k in keys if old.get(k) != new.get(k)]


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
    # a chunk never written has no bytes in the file (byte_offset None): it holds the fill value
    present = [k for k, (o, _, _) in enumerate(infos) if o is not None]
    blobs = client.read_ranges(url, [infos[k][:2] for k in present], max_gap=max_gap)
    out = {starts[k]: decode(b, infos[k][2]) for k, b in zip(present, blobs)}
    fill = d.fillvalue if d.fillvalue is not None else 0
    for k in set(range(len(starts))) - set(present):
        out[starts[k]] = np.full(d.chunks, fill, dtype=d.dtype)
    return out


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
    from .download import RangeFile

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
        got = _read_chunks(client, url, d, keys, max_gap=max_gap)
    out = np.empty((len(nsd_ids),) + tuple(shape[1:]), dtype=np.uint8)
    for n, i in enumerate(nsd_ids):
        c0 = int(i // chunks[0] * chunks[0])
        for a, b, c in inner:
            block = got[(c0, a, b, c)][int(i) - c0]
            h, w, z = (min(ch, sz - st) for ch, sz, st in zip(chunks[1:], shape[1:], (a, b, c)))
            out[n, a:a + h, b:b + w, c:c + z] = block[:h, :w, :z]
    return out


# ---------------------------------------------------------------------------
# whole small files

def _fetch(rel, client, base_url, cache):
    from .download import download_file
    return download_file(_base_url(base_url) + rel, Path(cache) / rel, client=client,
                         desc=rel.rsplit("/", 1)[-1])


def default_caption_sources(base_url=None):
    """Caption sources used when none are given.

    ``$SCALEINV_COCO_URL`` (comma-separated) when set; else, for a base URL
    other than NSD's own bucket (a mirror, a local copy), the annotations zip
    inside it at COCO_MIRROR_PATH; else COCO's own site (COCO_CAPTIONS_SOURCES).

    Parameters
    ----------
    base_url : str or None

    Returns
    -------
    sources : list of str
    """
    env = os.environ.get(COCO_ENV, "").strip()
    if env:
        return [x.strip() for x in env.split(",") if x.strip()]
    base = _base_url(base_url)
    if base != NSD_BASE_URL:
        return [base + COCO_MIRROR_PATH]
    return list(COCO_CAPTIONS_SOURCES)


def _fetch_source(src, client, cache):
    """A caption source: a local path, or a URL fetched into the cache.

    From a remote zip (COCO's 241 MB annotations archive) only the
    ``captions_*.json`` members are read, by range requests through the
    zip's central directory, and cached as JSON files.
    """
    from .download import DownloadError, RangeFile, download_file
    if re.match(r"^https?://", str(src)):
        name = str(src).rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".zip"):
            folder = Path(cache) / "coco" / name[:-4]
            done = folder / ".complete"
            if not done.exists():
                folder.mkdir(parents=True, exist_ok=True)
                try:
                    with RangeFile(src, client, block_size=1 << 20) as rf, zipfile.ZipFile(rf) as z:
                        _extract_captions(z, folder)
                except DownloadError as exc:
                    if "ignored a Range request" not in str(exc):
                        raise
                    # the host refuses ranges: fetch the whole zip once, then read it locally
                    whole = download_file(src, Path(cache) / "coco" / name, client=client, desc=name)
                    with zipfile.ZipFile(whole) as z:
                        _extract_captions(z, folder)
                done.write_text("ok\n")
            return folder
        return download_file(src, Path(cache) / "coco" / name, client=client, desc=name)
    path = Path(os.path.expanduser(str(src)))
    if not path.is_file():
        raise FileNotFoundError(f"caption source {src} is neither a URL nor an existing file.")
    return path


def _extract_captions(z, folder):
    """Write a zip's ``captions_*.json`` members into folder (zipfile checks each CRC)."""
    found = False
    for member in z.namelist():
        if re.search(r"captions_\w+\.json$", member):
            tmp = folder / (Path(member).name + ".part")
            tmp.write_bytes(z.read(member))
            json.loads(tmp.read_text())  # a member that does not parse is not kept
            os.replace(tmp, folder / Path(member).name)
            found = True
    if not found:
        raise ValueError(f"the zip holds no captions_*.json member (members: {z.namelist()[:5]}...).")


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
            raise KeyError(f"No COCO caption for cocoId {cid} in {[str(p) for p in paths]}: "
                           "the caption files are not COCO 2017's, or nsd_stim_info_merged.csv is "
                           "damaged (run `scaleinv-data verify --repair`).")
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
    try:
        img = nib.load(str(path))
        return np.asarray(img.dataobj), img.affine
    except Exception as exc:  # gzip, header or size errors all mean one thing: a damaged file
        raise ValueError(f"cached file {path} cannot be read ({type(exc).__name__}: {exc}); "
                         "run `scaleinv-data verify --repair` to fetch it again.") from exc


def native_to_fsaverage(values, transform, what="labels"):
    """Map per-vertex values of a subject's native surface to fsaverage.

    NSD's ``{hemi}.white-to-fsaverage.mgz`` holds, for each of fsaverage's
    163,842 vertices, the 1-based index of the nearest native vertex
    (nsdcode's transform_data.py: ``fsavg = native[idx - 1]``).

    Parameters
    ----------
    values : array-like of shape (n_native,)
    transform : array-like of shape (n_fsaverage,) (any trailing singleton axes)
        1-based native vertex indices.
    what : str
        Named in errors.

    Returns
    -------
    mapped : ndarray of shape (n_fsaverage,)

    Raises
    ------
    ValueError
        If an index lies outside 1..n_native (a transform of another subject or surface).
    """
    values = np.asarray(values).reshape(-1)
    idx = np.rint(np.asarray(transform, dtype=np.float64).reshape(-1)).astype(np.int64)
    if idx.size and (idx.min() < 1 or idx.max() > len(values)):
        raise ValueError(f"{what}: the white-to-fsaverage transform points at native vertices "
                         f"{idx.min()}..{idx.max()} (1-based), the native surface has "
                         f"{len(values)}; the transform is not of this subject's surface.")
    return values[idx - 1]


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
    labels = {spec.roi, "prf-visualrois", *atlases_of(spec)} - {"cortex"}
    if spec.roi == "cortex" and space == "func1pt8mm":
        labels.add("nsdgeneral")  # its values >= 0 mark cortex
    for s in spec.subjects:
        if spec.trials == "responses":
            files.append(nsd_file("responses", s))
        for h in hemis:
            if spec.ncsnr == "nsd":
                files.append(nsd_file("ncsnr", s, space, hemi=h))
            for r in sorted(labels):
                files.append(nsd_file("roi", s, space, hemi=h, roi=r))
            if h is not None and labels & set(NATIVE_SURFACE_ROIS):
                files.append(nsd_file("transform", s, hemi=h))
        for r in sorted(labels - {"nsdgeneral"}):
            files.append(nsd_file("ctab", s, space, roi=r))
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

    transforms = {}

    def lab(name, hemi=None):
        data, aff = _load_labels(paths[nsd_file("roi", subject, space, hemi=hemi, roi=name)])
        data = np.asarray(data)
        if volume:
            return data.reshape(data.shape[:3]), aff
        data = data.reshape(-1)
        if name in NATIVE_SURFACE_ROIS:  # the subject's native surface -> fsaverage
            if hemi not in transforms:
                transforms[hemi] = _load_labels(paths[nsd_file("transform", subject, hemi=hemi)])[0]
            what = nsd_file("roi", subject, space, hemi=hemi, roi=name)
            data = native_to_fsaverage(data, transforms[hemi], what=what)
            need = N_FSAVERAGE if space == "fsaverage" else N_FSAVERAGE5
            if len(data) < need or (space == "fsaverage" and len(data) != need):
                raise ValueError(f"{nsd_file('transform', subject, hemi=hemi)} maps {len(data)} "
                                 f"vertices; fsaverage has {N_FSAVERAGE} per hemisphere.")
        return data, aff

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
            # NSD's ROI volumes mark cortex with values >= 0 (-1: not cortex); its brainmask is
            # deliberately liberal (white matter, CSF)
            general, aff = lab("nsdgeneral")
            mask = general >= 0
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

    Re-running with a complete subset in place is a no-op. Voxels without data
    in any selected trial are left out with a warning: a NaN beta (on
    fsaverage, the medial wall) or, as NSD treats them, all of a session's
    betas exactly 0 (voxels at the edge of the imaged volume). The counts per
    subject are in the manifest under ``manifest["nsd"]["voxels_dropped_for_nan"]``
    and ``["voxels_dropped_all_zero"]``. The full fsaverage surface reads most
    of every 491 MB beta file (about 39 GB per subject for 40 sessions): a
    warning says how much, and ``space="fsaverage5"`` reads far less.

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
        COCO caption sources (URLs or paths; JSON or zip). Default
        :func:`default_caption_sources` (which honours ``base_url``).
    client : HTTPClient or None
    progress : bool
    max_gap : int or None
        Largest gap (bytes) between two ranges fetched in one request
        (default MAX_GAP): larger means fewer requests but more wasted bytes.

    Returns
    -------
    path : pathlib.Path
        The subset directory; ``load_subset(path)`` loads it.

    Raises
    ------
    SpecMismatch
        When a subset of that name exists but was built with other parameters
        (the message names them); ``overwrite=True`` rebuilds it.
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
            manifest = verify_subset(target, checksum=True)
        except SubsetError:
            manifest = None  # incomplete or corrupt: rebuild
        if manifest is not None:
            there = manifest.get("nsd", {})
            if there.get("spec_hash") == spec.spec_hash():
                return target
            old = dict(there.get("spec") or {})
            old.pop("name", None)
            diff = _spec_differences(old, spec.record()) if old else ["no spec recorded"]
            raise SpecMismatch(f"A subset named {spec.name!r} exists at {target} but was built "
                               f"with other parameters ({'; '.join(diff)}); pass overwrite=True "
                               "(--force) to rebuild it, or another name (--name).")
    client = client or HTTPClient(progress=progress)
    cache = Path(cache) if cache else data_dir("nsd")
    base = _base_url(base_url)
    captions = list(captions or default_caption_sources(base))
    kept = _KeptReads(cache)
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

    subjects, bytes_by, dropped, dropped_zero = {}, {}, {}, {}
    for s, (nsd_id, session, keep, train_ids, test_ids) in per_subject.items():
        sel, vox, affine, vol_shape = _roi_voxels(spec, s, paths)
        if spec.space == "fsaverage":
            n_sess = len(np.unique(session[keep]))
            est = surface_read_bytes(sel, n_sess, spec.trials_per_session, max_gap=max_gap)
            est5 = surface_read_bytes({h: v[v < N_FSAVERAGE5] for h, v in sel.items()}, n_sess,
                                      spec.trials_per_session, max_gap=max_gap)
            warnings.warn(f"subj{s:02d}: the full fsaverage surface reads about {est / 1e9:.1f} GB "
                          f"of betas ({n_sess} sessions; each hemisphere's file per session holds "
                          f"{N_FSAVERAGE * 4 * spec.trials_per_session / 1e6:.0f} MB and the ROI "
                          "spreads over most of it). space='fsaverage5' (--space fsaverage5) "
                          f"reads about {est5 / 1e9:.2f} GB.", stacklevel=2)
        before = client.bytes_received
        blocks, sess_of, img_of = [], [], []
        zero_any = np.zeros(len(vox), dtype=bool)
        for sess in tqdm(np.unique(session[keep]), desc=f"subj{s:02d} betas", disable=not progress):
            rows = np.flatnonzero(session == sess)
            if spec.space == "func1pt8mm":
                rel = nsd_file("betas", s, "func1pt8mm", sess)
                B = kept.get(rel, sel, lambda: read_volume_betas(
                    client, base + rel, sel, vol_shape, max_gap=max_gap))
            else:
                B = np.concatenate([kept.get(rel, sel[h], lambda rel=rel, h=h: read_surface_betas(
                    client, base + rel, sel[h], max_gap=max_gap))
                    for h, rel in ((h, nsd_file("betas", s, "fsaverage", sess, hemi=h))
                                   for h in ("lh", "rh"))], axis=1)
            if len(B) < len(rows):
                raise ValueError(f"subj{s:02d} session {sess}: betas hold {len(B)} trials, "
                                 f"the design {len(rows)}.")
            # z-score over all of the session's trials, as NSD does, then keep the selected ones;
            # voxels with NaN betas stay NaN here and are dropped below
            B = B[:len(rows)]
            # NSD: a voxel whose betas of a session are all exactly 0 has no data there (the
            # edge of the imaged volume): missing, like a NaN
            zero = (B == 0).all(axis=0) & np.isfinite(B).all(axis=0)
            zero_any |= zero
            B[:, zero] = np.nan
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
        # vertex that lost a session; all-zero betas in a session: a volume edge voxel) has no
        # response to model: drop it, and say so.
        usable = np.isfinite(trial_betas).all(axis=0)
        n_zero = int((~usable & zero_any).sum())
        dropped[f"subj{s:02d}"] = int((~usable).sum()) - n_zero
        dropped_zero[f"subj{s:02d}"] = n_zero
        if not usable.all():
            warnings.warn(f"subj{s:02d}: {int((~usable).sum())} of {usable.size} voxels have no data "
                          f"in selected trials ({dropped[f'subj{s:02d}']} with NaN betas, e.g. "
                          f"fsaverage's medial wall; {n_zero} with all betas of a session exactly 0, "
                          "NSD's edge voxels) and are left out of the subset.", stacklevel=2)
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
    images = kept.get(nsd_file("stimuli"), ids, lambda: read_images(
        client, base + nsd_file("stimuli"), ids, max_gap=max_gap))
    bytes_by["images"] = client.bytes_received - before
    if spec.image_size:
        from PIL import Image
        images = np.stack([np.asarray(Image.fromarray(im).resize(
            (spec.image_size, spec.image_size), Image.BICUBIC)) for im in images])
    meta = stim.loc[ids]
    coco_ids = meta["cocoId"].to_numpy(np.int64)
    cap_paths = [_fetch_source(src, client, cache) for src in captions]
    crop = np.array([[float(x) for x in re.findall(r"[-\d.eE]+", str(c))] for c in meta["cropBox"]])
    stimuli = StimulusSet(
        images=images, stimulus_id=ids, coco_id=coco_ids, shared=np.isin(ids, shared_ids),
        captions=load_coco_captions(cap_paths, coco_ids),
        attributes={"crop_box": crop, "coco_split": meta["cocoSplit"].astype(str).to_numpy()})
    files = {}
    for rel, p in sorted(paths.items()):
        info = json.loads(Path(str(p) + ".meta.json").read_text())
        files[rel] = {"size": info["size"], "sha256": info["sha256"]}
    extra = {"nsd": {"base_url": base, "spec": asdict(spec), "spec_hash": spec.spec_hash(),
                     "captions": captions, "beta_version": BETA_VERSION,
                     "files": files, "bytes_fetched": client.bytes_received,
                     "bytes_by_part": bytes_by, "n_requests": client.n_requests,
                     "voxels_dropped_for_nan": dropped,
                     "voxels_dropped_all_zero": dropped_zero}}
    desc = (f"NSD {', '.join(subjects)}, {spec.roi} in {spec.space}: single-trial betas z-scored per "
            "session, repeats averaged, shared1000 = test. Images are NSD's 425 px crops "
            "(crop_box: the crop of the COCO original).")
    written = write_subset(target, stimuli=stimuli, subjects=subjects, source="nsd",
                           space="fsaverage" if spec.space == "fsaverage" else spec.space,
                           roi=spec.roi, name=spec.name, description=desc, extra=extra,
                           overwrite=True)
    kept.clear()  # the subset holds what they were kept for
    return written


class _KeptReads:
    """Range reads kept in the cache until the subset that needs them is written.

    A failed ``prepare`` (a lost connection while reading the images, say)
    would otherwise read every beta again on the next run. Each read is
    stored as ``<cache>/kept/<bucket path>.<selection hash>.npy`` with its
    SHA-256 beside it, keyed by the bucket path and the exact selection (the
    voxel or image indices); a kept read that does not verify is read again.
    """

    def __init__(self, cache):
        self.root = Path(cache) / "kept"
        self.made = []

    def _path(self, rel, selection):
        import hashlib
        h = hashlib.sha256(np.ascontiguousarray(np.asarray(selection, dtype=np.int64)).tobytes())
        return self.root / f"{rel}.{h.hexdigest()[:20]}.npy"

    def get(self, rel, selection, read):
        import hashlib
        path = self._path(rel, selection)
        self.made.append(path)
        digest = path.with_name(path.name + ".sha256")
        if path.is_file() and digest.is_file():
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() == digest.read_text().strip():
                import io
                return np.load(io.BytesIO(raw), allow_pickle=False)
        arr = read()
        path.parent.mkdir(parents=True, exist_ok=True)
        import io
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        digest.write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "\n")
        os.replace(tmp, path)
        return arr

    def clear(self):
        for p in self.made:
            p.unlink(missing_ok=True)
            p.with_name(p.name + ".sha256").unlink(missing_ok=True)


def verify(cache=None, checksum=True, subsets=True, repair=False, client=None, progress=False):
    """Re-check every cached NSD file and every prepared NSD subset; optionally repair.

    Parameters
    ----------
    cache : str, Path or None
    checksum : bool
    subsets : bool
        Also check the subsets under ``data_dir("subsets")``.
    repair : bool
        Fetch every damaged cached file again from the URL recorded beside
        it, discard leftover partial downloads that cannot be resumed, and
        rebuild every damaged NSD subset from the spec, base URL and caption
        sources in its manifest (which exist only because NSD's terms were
        agreed to when it was built).
    client : HTTPClient or None
    progress : bool

    Returns
    -------
    problems : dict of str to str
        Path -> what is wrong; empty when everything is intact. With
        ``repair=True``, what is still wrong after repairing.
    """
    from .data import SubsetError, verify_subset
    from .download import DownloadError, HTTPClient, repair_file, verify_file

    cache = Path(cache) if cache else data_dir("nsd")
    if repair and client is None:
        client = HTTPClient(progress=progress)
    problems = {}
    for meta in sorted(cache.rglob("*.meta.json")):
        f = meta.with_name(meta.name[:-len(".meta.json")])
        p = verify_file(f, checksum=checksum)
        if p and repair:
            try:
                repair_file(f, client=client)
                p = verify_file(f, checksum=checksum)
            except DownloadError as exc:
                p = f"{p}; repair failed: {exc}"
        if p:
            problems[str(f)] = p
    for part in sorted(cache.rglob("*.part")):
        resumable = part.with_name(part.name + ".json").is_file()
        if repair and not resumable:
            part.unlink(missing_ok=True)
            continue
        problems[str(part)] = ("interrupted download (resumed by the next download)" if resumable
                               else "partial download of unknown origin (discarded by the next "
                                    "download or by verify --repair)")
    if subsets:
        for m in sorted(data_dir("subsets").glob("*/manifest.json")):
            try:
                manifest = json.loads(m.read_text())
            except json.JSONDecodeError as exc:
                problems[str(m.parent)] = f"manifest.json is not valid JSON ({exc})"
                continue
            if manifest.get("source") != "nsd":
                continue
            try:
                verify_subset(m.parent, checksum=checksum)
            except SubsetError as exc:
                if not repair:
                    problems[str(m.parent)] = str(exc)
                    continue
                try:
                    _rebuild(manifest, m.parent, cache, client)
                except Exception as exc2:  # noqa: BLE001 (reported, not raised: verify lists all)
                    problems[str(m.parent)] = f"{exc}; rebuild failed: {exc2}"
    return problems


def _rebuild(manifest, path, cache, client):
    """Rebuild a subset from its manifest's spec (overwriting it)."""
    there = manifest.get("nsd", {})
    if not there.get("spec"):
        raise ValueError("its manifest records no spec to rebuild from")
    spec = NSDSpec(**there["spec"])
    spec.name = path.name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same warnings were shown when it was built
        return prepare(spec, agree_terms=True, base_url=there.get("base_url"), cache=cache,
                       out_dir=path.parent, overwrite=True, captions=there.get("captions"),
                       client=client, progress=False)


def smoke(*, agree_terms=False, base_url=None, subject=1, session=1, n_voxels=6, n_images=2,
          random_state=0, client=None):
    """Check this package's readers on the real bucket against h5py's own slicing.

    Reads a few voxels of one session's volume betas and a few images of
    ``nsd_stimuli.hdf5`` twice, through the chunk-index range reader used by
    :func:`prepare` and through ``h5py`` slicing of the same remote file
    (both by range requests: a few MB in all), and compares them. It also
    reports what the fixtures here could only assume: the files' HDF5
    chunk shapes and filters, and the Content-Encoding, ETag and
    Accept-Ranges the server announces.

    Parameters
    ----------
    agree_terms : bool
    base_url : str or None
    subject, session : int
    n_voxels, n_images : int
    random_state : int or None
        Picks the voxels and images.
    client : HTTPClient or None

    Returns
    -------
    report : list of (str, bool, str)
        (check, passed, detail) per check.
    """
    import h5py

    from .download import HTTPClient, RangeFile

    check_terms(agree_terms)
    rng = check_random_state(random_state)
    client = client or HTTPClient(progress=False)
    base = _base_url(base_url)
    report = []
    for kind, rel in (("betas", nsd_file("betas", subject, "func1pt8mm", session)),
                      ("stimuli", nsd_file("stimuli"))):
        resp = client.session.head(base + rel, timeout=client.timeout, allow_redirects=True)
        client.n_requests += 1
        h = resp.headers
        enc = h.get("Content-Encoding")
        report.append((f"{kind} headers", resp.status_code == 200 and enc in (None, "identity")
                       and h.get("Accept-Ranges") == "bytes",
                       f"HTTP {resp.status_code}, Content-Encoding {enc!r}, Accept-Ranges "
                       f"{h.get('Accept-Ranges')!r}, ETag {h.get('ETag')!r}, "
                       f"Content-Length {h.get('Content-Length')}"))
    url = base + nsd_file("betas", subject, "func1pt8mm", session)
    with RangeFile(url, client, block_size=1 << 14) as rf, h5py.File(rf, "r") as f:
        d = f["betas"]
        plist = d.id.get_create_plist()
        filters = [plist.get_filter(i)[3].decode() for i in range(plist.get_nfilters())]
        report.append(("betas layout", d.dtype == np.int16 and d.chunks is not None
                       and d.chunks[0] == d.shape[0] and tuple(d.chunks[1:]) == (1, 1, 1),
                       f"shape {d.shape}, dtype {d.dtype}, chunks {d.chunks}, filters {filters}"))
        vol = tuple(d.shape[1:][::-1])  # MATLAB order: h5py sees (trials, k, j, i)
        ijk = np.stack([rng.integers(n // 4, 3 * n // 4 + 1, n_voxels) for n in vol], axis=1)
        direct = np.stack([d[:, k, j, i] for i, j, k in ijk], axis=1).astype(np.float32) / 300.0
    mine = read_volume_betas(client, url, ijk, vol)
    report.append(("betas values", np.array_equal(mine, direct),
                   f"{n_voxels} voxels x {mine.shape[0]} trials, chunk-index reader vs h5py"))
    url = base + nsd_file("stimuli")
    with RangeFile(url, client, block_size=1 << 16) as rf, h5py.File(rf, "r") as f:
        d = f["imgBrick"]
        report.append(("imgBrick layout", d.dtype == np.uint8 and d.ndim == 4 and d.shape[-1] == 3,
                       f"shape {d.shape}, dtype {d.dtype}, chunks {d.chunks}"))
        ids = np.sort(rng.choice(d.shape[0], n_images, replace=False))
        direct = np.stack([d[int(i)] for i in ids])
    mine = read_images(client, url, ids)
    report.append(("imgBrick values", np.array_equal(mine, direct),
                   f"images {ids.tolist()}, chunk reader vs h5py"))
    report.append(("bytes", True, f"{client.bytes_received / 1e6:.1f} MB in "
                                  f"{client.n_requests} requests"))
    return report


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
