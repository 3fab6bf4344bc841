"""The subset format and its one loader, shared by the demo world and real NSD.

A *subset* is a directory holding everything a chapter needs about a set of
stimuli and the responses of some subjects to them::

    <subset>/
      manifest.json   format name and version, source, space, ROI, subjects,
                      and the size and SHA-256 of every file below
      stimuli.h5      images      uint8 (n_images, height, width, 3)
                      stimulus_id int64 (n_images,)   NSD 73k id (0-based); demo: 0..n-1
                      coco_id     int64 (n_images,)   COCO id; -1 in the demo world
                      shared      bool  (n_images,)   seen by every subject (NSD shared1000)
                      captions    str   (n_images, 5)
                      attributes/ optional per-image metadata arrays (n_images, ...)
      subjXX.h5       one per subject:
                      image_index       int64   (n_subject_images,) rows of stimuli.h5
                      split             str     (n_subject_images,) "train" or "test"
                      betas             float32 (n_subject_images, n_voxels) repeats averaged
                      n_trials          int64   (n_subject_images,) trials averaged
                      trial_betas       float32 (n_trials, n_voxels) z-scored per session
                      trial_image_index int64   (n_trials,) rows of stimuli.h5
                      trial_session     int64   (n_trials,)
                      ncsnr             float32 (n_voxels,)
                      voxels/roi        str     (n_voxels,) ROI label ("V1", "FFA-1", ...)
                      voxels/network    str     (n_voxels,) functional network label
                      voxels/vertex     int64   (n_voxels,) surface vertex (-1 for volumes)
                      voxels/hemi       str     (n_voxels,) "lh" / "rh" ("" for volumes)
                      voxels/ijk        int64   (n_voxels, 3) volume indices (-1 for surfaces)
                      attrs: space, subject, affine (volumes)

``write_subset`` writes one; ``read_subset`` reads one;
:func:`scaleinv_utils.datasets.load_subset` (``su.load_subset``) finds one by
name or builds the demo world on first use with ``load_subset("demo")``.
This module imports nothing of :mod:`~scaleinv_utils.demo` (which writes
through it). The NSD tools of
:mod:`scaleinv_utils.nsd` write real subsets in exactly this format, so a
chapter switches from demo to real data by changing the name it loads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .reliability import noise_ceiling

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "SPACES", "Subset", "SubjectData", "StimulusSet",
    "VoxelInfo", "read_subset", "write_subset", "verify_subset", "SubsetError", "array_digests",
]

FORMAT_NAME = "scaleinv-subset"
FORMAT_VERSION = 1
#: Spaces a subset can live in. fsaverage5 is the demo world's; NSD offers the other two.
SPACES = ("fsaverage5", "fsaverage", "func1pt8mm")
N_CAPTIONS = 5


class SubsetError(ValueError):
    """A subset is missing, incomplete, corrupt or of another format version."""


@dataclass
class StimulusSet:
    """The stimuli of a subset.

    Attributes
    ----------
    images : ndarray of shape (n_images, height, width, 3), uint8
    stimulus_id : ndarray of shape (n_images,)
    coco_id : ndarray of shape (n_images,)
    shared : ndarray of shape (n_images,), bool
    captions : list of list of str, n_images x 5
    attributes : dict of str to ndarray
        Optional per-image metadata (the demo world's object categories, counts, ...).
    """

    images: np.ndarray
    stimulus_id: np.ndarray
    coco_id: np.ndarray
    shared: np.ndarray
    captions: list
    attributes: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.stimulus_id)


@dataclass
class VoxelInfo:
    """Where each voxel is and what it belongs to.

    Attributes
    ----------
    roi : ndarray of shape (n_voxels,), str
    network : ndarray of shape (n_voxels,), str
    vertex : ndarray of shape (n_voxels,), int
        fsaverage(5) vertex index within its hemisphere; -1 for volume voxels.
    hemi : ndarray of shape (n_voxels,), str
    ijk : ndarray of shape (n_voxels, 3), int
        Volume indices; -1 for surface voxels.
    """

    roi: np.ndarray
    network: np.ndarray
    vertex: np.ndarray
    hemi: np.ndarray
    ijk: np.ndarray

    def __len__(self):
        return len(self.roi)


class SubjectData:
    """One subject's responses in a subset.

    Repeat-averaged betas are loaded at once; single-trial betas are read from
    disk when first used (they can be large for real NSD subsets).

    Attributes
    ----------
    subject : str
    space : str
    image_index : ndarray of shape (n_subject_images,)
        Rows of the subset's stimuli seen by this subject.
    split : ndarray of shape (n_subject_images,), str
    betas : ndarray of shape (n_subject_images, n_voxels), float32
    n_trials : ndarray of shape (n_subject_images,)
    ncsnr : ndarray of shape (n_voxels,)
    voxels : VoxelInfo
    affine : ndarray of shape (4, 4) or None
    """

    def __init__(self, path, subject, space, image_index, split, betas, n_trials,
                 ncsnr, voxels, affine=None):
        self.path = Path(path)
        self.subject = subject
        self.space = space
        self.image_index = image_index
        self.split = split
        self.betas = betas
        self.n_trials = n_trials
        self.ncsnr = ncsnr
        self.voxels = voxels
        self.affine = affine
        self._trials = None
        self._trial_columns = None   # set by select_voxels: the columns of the file's trials

    def __repr__(self):
        return (f"SubjectData({self.subject!r}, space={self.space!r}, "
                f"betas={self.betas.shape}, n_train={int(self.train.sum())}, "
                f"n_test={int(self.test.sum())})")

    @property
    def n_voxels(self):
        return self.betas.shape[1]

    @property
    def train(self):
        """Boolean mask of shape (n_subject_images,): the subject's own training images."""
        return self.split == "train"

    @property
    def test(self):
        """Boolean mask of shape (n_subject_images,): the shared test images."""
        return self.split == "test"

    def _load_trials(self):
        if self._trials is None:
            import h5py
            with h5py.File(self.path, "r") as f:
                trials = f["trial_betas"][()]
                if self._trial_columns is not None:
                    trials = trials[:, self._trial_columns]
                self._trials = (trials, f["trial_image_index"][()], f["trial_session"][()])
        return self._trials

    def select_voxels(self, voxels):
        """The same subject restricted to some voxels (e.g. one network).

        Parameters
        ----------
        voxels : array-like of bool of shape (n_voxels,) or of int
            A mask or voxel indices.

        Returns
        -------
        subj : SubjectData
            Betas, ncsnr, voxel info and (when read) single trials of those voxels
            only; images, split and repeat counts are shared with this one. Every
            per-voxel analysis (an encoding model's fit, its noise ceiling) gives
            the same values for a voxel as on the whole subject.

        Raises
        ------
        ValueError
            If the mask has the wrong length or an index is out of range.
        """
        v = np.asarray(voxels)
        if v.dtype == bool:
            if v.shape != (self.n_voxels,):
                raise ValueError(f"voxels must be a boolean mask of shape ({self.n_voxels},), "
                                 f"got shape {v.shape}.")
            cols = np.flatnonzero(v)
        else:
            if v.ndim != 1 or not np.issubdtype(v.dtype, np.integer):
                raise ValueError("voxels must be a boolean mask or a 1-D array of voxel indices, "
                                 f"got dtype {v.dtype} and shape {v.shape}.")
            if v.size and (v.min() < 0 or v.max() >= self.n_voxels):
                raise ValueError(f"voxels must index [0, {self.n_voxels - 1}], got values from "
                                 f"{v.min()} to {v.max()}.")
            cols = v
        info = VoxelInfo(**{f.name: getattr(self.voxels, f.name)[cols]
                            for f in fields(VoxelInfo)})
        out = SubjectData(self.path, self.subject, self.space, self.image_index, self.split,
                          self.betas[:, cols], self.n_trials, self.ncsnr[cols], info, self.affine)
        parent = (np.arange(self.n_voxels) if self._trial_columns is None
                  else np.asarray(self._trial_columns))
        out._trial_columns = parent[cols]
        if self._trials is not None:
            out._trials = (self._trials[0][:, cols],) + self._trials[1:]
        return out

    @property
    def trial_betas(self):
        """ndarray of shape (n_trials, n_voxels): single trials, z-scored per session."""
        return self._load_trials()[0]

    @property
    def trial_image_index(self):
        """ndarray of shape (n_trials,): stimulus row of each trial."""
        return self._load_trials()[1]

    @property
    def trial_session(self):
        """ndarray of shape (n_trials,): session of each trial."""
        return self._load_trials()[2]

    def noise_ceiling(self, split="test"):
        """Noise ceiling (percent) of the repeat-averaged betas of a split.

        Parameters
        ----------
        split : {"test", "train", "all"}

        Returns
        -------
        nc : ndarray of shape (n_voxels,)
        """
        masks = {"test": self.test, "train": self.train, "all": np.ones_like(self.test)}
        if split not in masks:
            raise ValueError(f"split must be one of {sorted(masks)}, got {split!r}.")
        mask = masks[split]
        return noise_ceiling(self.ncsnr, self.n_trials[mask])


class Subset:
    """A loaded subset: stimuli, subjects and the manifest that describes them.

    Attributes
    ----------
    path : pathlib.Path
    manifest : dict
    stimuli : StimulusSet
    subjects : list of str
    """

    def __init__(self, path, manifest, stimuli):
        self.path = Path(path)
        self.manifest = manifest
        self.stimuli = stimuli
        self.subjects = list(manifest["subjects"])
        self._subject_cache = {}

    def __repr__(self):
        return (f"Subset({self.name!r}, source={self.source!r}, space={self.space!r}, "
                f"n_images={len(self.stimuli)}, subjects={self.subjects})")

    @property
    def name(self):
        return self.manifest.get("name", self.path.name)

    @property
    def source(self):
        """"demo" for the synthetic world, "nsd" for real data."""
        return self.manifest["source"]

    @property
    def space(self):
        return self.manifest["space"]

    @property
    def is_demo(self):
        return self.source == "demo"

    def subject(self, subject=None):
        """Load one subject's data (the first subject by default).

        Parameters
        ----------
        subject : str, int or None
            "subj01", 1, or None for the first.

        Returns
        -------
        data : SubjectData

        Raises
        ------
        KeyError
            If the subset has no such subject.
        """
        if subject is None:
            subject = self.subjects[0]
        if isinstance(subject, (int, np.integer)):
            subject = f"subj{int(subject):02d}"
        if subject not in self.subjects:
            raise KeyError(f"Subset {self.name!r} has no subject {subject!r}; "
                           f"it has {self.subjects}.")
        if subject not in self._subject_cache:
            self._subject_cache[subject] = _read_subject(self.path / f"{subject}.h5", subject)
        return self._subject_cache[subject]

    def describe(self):
        """A few lines saying what this subset holds and where it came from."""
        m = self.manifest
        lines = [f"subset {self.name!r} ({'SYNTHETIC demo world' if self.is_demo else 'real NSD data'})",
                 f"  images: {len(self.stimuli)} ({int(self.stimuli.shared.sum())} shared test images), "
                 f"{self.stimuli.images.shape[1]}x{self.stimuli.images.shape[2]} px",
                 f"  space: {self.space}, roi: {m.get('roi')}, subjects: {', '.join(self.subjects)}"]
        if m.get("description"):
            lines.append("  " + m["description"])
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# writing

def _sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def array_digests(path):
    """SHA-256 of every array of a subset file, over its values (not the HDF5 layout).

    Two subsets with equal digests hold bit-identical arrays even when HDF5
    laid the bytes out differently.

    Parameters
    ----------
    path : str or Path
        One ``.h5`` file of a subset.

    Returns
    -------
    digests : dict of str to str
        ``"<file>:<dataset path>"`` -> hex digest of dtype, shape and C-order bytes.
    """
    import h5py

    path = Path(path)
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            val = obj[()]
            h = hashlib.sha256()
            if obj.dtype.kind in "OS":  # strings: their UTF-8 text
                h.update(b"str" + repr(np.shape(val)).encode())
                for x in np.ravel(val):
                    h.update((x if isinstance(x, bytes) else str(x).encode()) + b"\0")
            else:
                val = np.ascontiguousarray(val)
                h.update(f"{val.dtype.str}{val.shape}".encode())
                h.update(val.tobytes())
            out[f"{path.name}:{name}"] = h.hexdigest()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _str_array(values):
    import h5py
    return np.asarray(values, dtype=object), h5py.string_dtype("utf-8")


def write_subset(path, *, stimuli, subjects, source, space, roi, name=None,
                 description="", extra=None, overwrite=False):
    """Write a subset directory atomically (a half-written subset never looks whole).

    Parameters
    ----------
    path : str or Path
        Directory to create.
    stimuli : StimulusSet
    subjects : dict of str to dict
        Per subject, a dict with keys image_index, split, betas, n_trials,
        trial_betas, trial_image_index, trial_session, ncsnr, voxels (VoxelInfo)
        and optionally affine.
    source : {"demo", "nsd"}
    space : str
        One of SPACES.
    roi : str
    name : str or None
    description : str
    extra : dict or None
        Additional manifest entries (generator parameters, NSD files used, ...).
    overwrite : bool

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        If shapes are inconsistent, space or source is unknown, or the target
        exists and overwrite is False.
    """
    import h5py

    path = Path(path)
    if source not in ("demo", "nsd"):
        raise ValueError(f"source must be 'demo' or 'nsd', got {source!r}.")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}.")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass overwrite=True to replace it.")
    n_images = len(stimuli.stimulus_id)
    if stimuli.images.shape[0] != n_images or stimuli.images.ndim != 4 or stimuli.images.shape[-1] != 3:
        raise ValueError(f"images must have shape (n_images={n_images}, height, width, 3), "
                         f"got {stimuli.images.shape}.")
    if len(stimuli.captions) != n_images or any(len(c) != N_CAPTIONS for c in stimuli.captions):
        raise ValueError(f"captions must be n_images={n_images} lists of {N_CAPTIONS} strings.")
    if stimuli.images.dtype != np.uint8:
        # A silent cast would turn float images in [0, 1] into black ones.
        raise TypeError(f"images must be uint8 (0-255), got dtype {stimuli.images.dtype}.")
    for key in ("coco_id", "shared"):
        if np.shape(getattr(stimuli, key)) != (n_images,):
            raise ValueError(f"{key} must have shape ({n_images},), got {np.shape(getattr(stimuli, key))}.")
    for key, value in (stimuli.attributes or {}).items():
        if len(value) != n_images:
            raise ValueError(f"attributes[{key!r}] has {len(value)} rows, expected n_images={n_images}.")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with h5py.File(tmp / "stimuli.h5", "w") as f:
            f.create_dataset("images", data=stimuli.images.astype(np.uint8),
                             chunks=(1,) + stimuli.images.shape[1:])
            f["stimulus_id"] = np.asarray(stimuli.stimulus_id, dtype=np.int64)
            f["coco_id"] = np.asarray(stimuli.coco_id, dtype=np.int64)
            f["shared"] = np.asarray(stimuli.shared, dtype=bool)
            caps, dt = _str_array(stimuli.captions)
            f.create_dataset("captions", data=caps, dtype=dt)
            grp = f.create_group("attributes")
            for key, value in (stimuli.attributes or {}).items():
                value = np.asarray(value)
                if value.dtype.kind in "UO":
                    value, dt = _str_array(value)
                    grp.create_dataset(key, data=value, dtype=dt)
                else:
                    grp[key] = value
        for subject, d in subjects.items():
            _write_subject(tmp / f"{subject}.h5", subject, space, d, n_images)
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.glob("*.h5"))}
        arrays = {}
        for p in sorted(tmp.glob("*.h5")):
            arrays.update(array_digests(p))
        manifest = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": name or path.name,
                    "source": source, "space": space, "roi": roi,
                    "subjects": sorted(subjects), "n_images": n_images,
                    "description": description, "files": files, "arrays": arrays,
                    **(extra or {})}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=_json_default))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a shared cache must stay readable
        old = None
        if path.exists():
            # Move the old subset aside first, so a crash never leaves neither.
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a manifest")


def _write_subject(path, subject, space, d, n_images):
    import h5py

    betas = np.asarray(d["betas"], dtype=np.float32)
    n_sub, n_vox = betas.shape
    vox = d["voxels"]
    checks = {"image_index": (n_sub,), "split": (n_sub,), "n_trials": (n_sub,),
              "ncsnr": (n_vox,)}
    for key, shape in checks.items():
        if np.shape(d[key]) != shape:
            raise ValueError(f"{subject}: {key} must have shape {shape}, got {np.shape(d[key])}.")
    for key in ("roi", "network", "vertex", "hemi", "ijk"):
        if len(getattr(vox, key)) != n_vox:
            raise ValueError(f"{subject}: voxels.{key} describes {len(getattr(vox, key))} voxels, "
                             f"betas have {n_vox}.")
    trial_betas = np.asarray(d["trial_betas"], dtype=np.float32)
    if trial_betas.ndim != 2 or trial_betas.shape[1] != n_vox:
        raise ValueError(f"{subject}: trial_betas have {trial_betas.shape[-1]} voxels, betas {n_vox}.")
    n_trials_total = trial_betas.shape[0]
    for key in ("trial_image_index", "trial_session"):
        if np.shape(d[key]) != (n_trials_total,):
            raise ValueError(f"{subject}: {key} must have shape ({n_trials_total},), got {np.shape(d[key])}.")
    for key, arr in (("betas", betas), ("trial_betas", trial_betas), ("ncsnr", d["ncsnr"])):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{subject}: {key} contains NaN or infinite values; drop or impute "
                             "those voxels before writing the subset.")
    if np.any(np.asarray(d["ncsnr"]) < 0):
        raise ValueError(f"{subject}: ncsnr must be non-negative.")
    if np.any(np.asarray(d["n_trials"]) < 1):
        raise ValueError(f"{subject}: every image needs n_trials >= 1.")
    bad_split = set(np.unique(np.asarray(d["split"], dtype=str))) - {"train", "test"}
    if bad_split:
        raise ValueError(f"{subject}: split values must be 'train' or 'test', got {sorted(bad_split)}.")
    idx = np.asarray(d["image_index"])
    trial_idx = np.asarray(d["trial_image_index"])
    for key, arr in (("image_index", idx), ("trial_image_index", trial_idx)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_images):
            raise ValueError(f"{subject}: {key} must lie in [0, {n_images}).")
    with h5py.File(path, "w") as f:
        f.attrs["subject"] = subject
        f.attrs["space"] = space
        if d.get("affine") is not None:
            f.attrs["affine"] = np.asarray(d["affine"], dtype=float)
        f["image_index"] = idx.astype(np.int64)
        split, dt = _str_array(d["split"])
        f.create_dataset("split", data=split, dtype=dt)
        f["betas"] = betas
        f["n_trials"] = np.asarray(d["n_trials"], dtype=np.int64)
        f.create_dataset("trial_betas", data=trial_betas,
                         chunks=(min(len(trial_betas), 256), n_vox))
        f["trial_image_index"] = np.asarray(d["trial_image_index"], dtype=np.int64)
        f["trial_session"] = np.asarray(d["trial_session"], dtype=np.int64)
        f["ncsnr"] = np.asarray(d["ncsnr"], dtype=np.float32)
        g = f.create_group("voxels")
        for key in ("roi", "network", "hemi"):
            arr, dt = _str_array(getattr(vox, key))
            g.create_dataset(key, data=arr, dtype=dt)
        g["vertex"] = np.asarray(vox.vertex, dtype=np.int64)
        g["ijk"] = np.asarray(vox.ijk, dtype=np.int64).reshape(n_vox, 3)


# ---------------------------------------------------------------------------
# reading

def _decode(arr):
    return np.array([a.decode() if isinstance(a, bytes) else str(a) for a in np.ravel(arr)],
                    dtype=object).reshape(np.shape(arr))


def _read_manifest(path):
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise SubsetError(f"No subset at {path}: the directory does not exist. Build one with "
                          "`scaleinv-data prepare` or load the demo world with load_subset('demo').")
    if not mpath.is_file():
        raise SubsetError(f"{path} has no manifest.json: it is not a complete subset "
                          "(an interrupted build leaves no manifest; rebuild it).")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise SubsetError(f"{mpath} is not valid JSON ({exc}); the subset is corrupt.") from exc
    if manifest.get("format") != FORMAT_NAME:
        raise SubsetError(f"{path} is not a {FORMAT_NAME} (format={manifest.get('format')!r}).")
    if manifest.get("version") != FORMAT_VERSION:
        raise SubsetError(f"{path} uses subset format version {manifest.get('version')}, "
                          f"this package reads version {FORMAT_VERSION}; rebuild the subset.")
    return manifest


def verify_subset(path, checksum=True):
    """Check that every file of a subset is present, of the right size and checksum.

    Parameters
    ----------
    path : str or Path
    checksum : bool
        Also compare SHA-256 (slower for large subsets).

    Returns
    -------
    manifest : dict

    Raises
    ------
    SubsetError
        Naming the first file that is missing, truncated or altered.
    """
    path = Path(path)
    manifest = _read_manifest(path)
    for fname, info in manifest["files"].items():
        fpath = path / fname
        if not fpath.is_file():
            raise SubsetError(f"{fpath} is missing from the subset.")
        size = fpath.stat().st_size
        if size != info["size"]:
            raise SubsetError(f"{fpath} has {size} bytes, the manifest says {info['size']}: "
                              "the file is truncated or altered; rebuild the subset.")
        if checksum and _sha256(fpath) != info["sha256"]:
            raise SubsetError(f"{fpath} does not match its SHA-256 in the manifest: corrupt file; "
                              "rebuild the subset (NSD: `scaleinv-data verify --repair`).")
    return manifest


def _read_stimuli(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            attrs = {}
            for key, ds in f.get("attributes", {}).items():
                val = ds[()]
                attrs[key] = _decode(val) if ds.dtype.kind in "OS" else val
            return StimulusSet(
                images=f["images"][()], stimulus_id=f["stimulus_id"][()],
                coco_id=f["coco_id"][()], shared=f["shared"][()].astype(bool),
                captions=[list(row) for row in _decode(f["captions"][()])],
                attributes=attrs)
    except (OSError, KeyError) as exc:
        raise SubsetError(f"Cannot read {path}: {exc}. The file is corrupt or incomplete.") from exc


def _read_subject(path, subject):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            g = f["voxels"]
            voxels = VoxelInfo(roi=_decode(g["roi"][()]), network=_decode(g["network"][()]),
                               vertex=g["vertex"][()], hemi=_decode(g["hemi"][()]),
                               ijk=g["ijk"][()])
            return SubjectData(
                path, subject, str(f.attrs["space"]), image_index=f["image_index"][()],
                split=_decode(f["split"][()]), betas=f["betas"][()], n_trials=f["n_trials"][()],
                ncsnr=f["ncsnr"][()], voxels=voxels,
                affine=f.attrs["affine"] if "affine" in f.attrs else None)
    except (OSError, KeyError) as exc:
        raise SubsetError(f"Cannot read {path}: {exc}. The file is corrupt or incomplete.") from exc


def read_subset(path, *, verify=True):
    """Read the subset directory at ``path`` (no name look-up, no demo building).

    Parameters
    ----------
    path : str or Path
    verify : bool
        Check every file's SHA-256 against the manifest (sizes are always checked).

    Returns
    -------
    subset : Subset

    Raises
    ------
    SubsetError
        If the subset is missing, incomplete, corrupt, or of another format version.
    """
    path = Path(path)
    manifest = verify_subset(path, checksum=verify)
    stimuli = _read_stimuli(path / "stimuli.h5")
    return Subset(path, manifest, stimuli)
