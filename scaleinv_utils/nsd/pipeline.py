"""The pipeline: plan, download, prepare (in named steps), verify, info and smoke.

:func:`prepare` builds a subset in these steps, each a function below:

1. reuse a complete subset of the same spec, or refuse one of another spec;
2. :func:`download` the small files :func:`_plan` lists (whole files, cached);
3. select trials: the shared1000 test images and the drawn training images;
4. per subject, select the ROI's voxels and label them (:mod:`.atlases`);
5. read betas, only those voxels, session by session (z-scored per session);
6. drop invalid voxels (NaN betas, or all of a session's betas exactly 0);
7. ncsnr: NSD's file, or computed from the subset's trials; average repeats;
8. stimuli: the images, their COCO ids, crop boxes and captions;
9. write the subset with its manifest (files, hashes, bytes fetched).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._validation import check_random_state
from ..config import data_dir
from ..data import StimulusSet, SubsetError, VoxelInfo, verify_subset, write_subset
from ..remote import (DownloadError, HTTPClient, RangeFile, download_file, repair_file,
                      verify_file)
from ..reliability import average_repeats, compute_ncsnr, zscore_per_session
from .atlases import _roi_voxels, atlases_of
from .captions import _fetch_source, default_caption_sources, load_coco_captions
from .layout import (AGREE_ENV, BASE_URL_ENV, BETA_VERSION, N_FSAVERAGE, N_FSAVERAGE5,
                     NATIVE_SURFACE_ROIS, ROIS, SPACES, NSDSpec, SpecMismatch, _base_url,
                     _spec_differences, check_terms, nsd_file)
from .readers import (MAX_GAP, _load_labels, read_images, read_surface_betas,
                      read_volume_betas, surface_read_bytes)
from .trials import select_trials, trials_from_expdesign, trials_from_responses

__all__ = ["download", "prepare", "verify", "info", "smoke"]


# ---------------------------------------------------------------------------
# plan and download

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


def _fetch(rel, client, base_url, cache):
    """One whole small file of the bucket, into the cache (a no-op when cached and verified)."""
    return download_file(_base_url(base_url) + rel, Path(cache) / rel, client=client,
                         desc=rel.rsplit("/", 1)[-1])


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
    check_terms(agree_terms)
    cache = Path(cache) if cache else data_dir("nsd")
    client = client or HTTPClient(progress=progress)
    return {rel: _fetch(rel, client, base_url, cache) for rel in _plan(spec)}


# ---------------------------------------------------------------------------
# prepare

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
    check_terms(agree_terms)
    target = (Path(out_dir) if out_dir else data_dir("subsets")) / spec.name
    if not overwrite and _reuse_existing(target, spec):
        return target
    b = _start(spec, base_url, cache, client, progress, max_gap)
    captions = list(captions or default_caption_sources(b.base))
    stim = _stimulus_table(b.paths)
    shared_ids, trials, ids = _select_trials(spec, b.paths)
    row_of = {int(i): r for r, i in enumerate(ids)}
    subjects = {}
    for s, t in trials.items():
        sel, vox, affine, vol_shape = _roi_voxels(spec, s, b.paths)
        if spec.space == "fsaverage":
            _warn_fsaverage_reads(b, s, sel, t)
        trial_betas, trial_ids, trial_session, zero_any = _read_betas(
            b, s, t, sel, vol_shape, n_voxels=len(vox))
        trial_betas, vox, usable = _drop_invalid_voxels(b, s, trial_betas, vox, zero_any)
        ncsnr = _ncsnr(b, s, sel, usable, trial_betas, trial_ids)
        subjects[f"subj{s:02d}"] = _subject_arrays(t, row_of, trial_betas, trial_ids,
                                                   trial_session, vox, affine, ncsnr)
    stimuli = _stimuli(b, stim, ids, shared_ids, captions)
    written = _write(b, target, subjects, stimuli, captions)
    b.kept.clear()  # the subset holds what they were kept for
    return written


class _Trials(NamedTuple):
    """One subject's trials (in acquisition order) and which of them a subset keeps."""

    nsd_id: np.ndarray     # (n_trials,) 0-based 73k id of each trial
    session: np.ndarray    # (n_trials,) 1-based session of each trial
    keep: np.ndarray       # (n_trials,) bool
    train_ids: np.ndarray  # 73k ids of the training images
    test_ids: np.ndarray   # 73k ids of the shared1000 test images


@dataclass
class _Build:
    """What the steps of one :func:`prepare` run share, and what they measure."""

    spec: NSDSpec
    client: HTTPClient
    base: str
    cache: Path
    paths: dict
    kept: _KeptReads
    max_gap: int
    progress: bool
    bytes_by: dict = field(default_factory=dict)       # part -> bytes received
    dropped: dict = field(default_factory=dict)        # subject -> voxels with NaN betas
    dropped_zero: dict = field(default_factory=dict)   # subject -> voxels with all-zero betas


def _reuse_existing(target, spec):
    """Step: True if a complete subset of this very spec is at target (nothing to do).

    False when there is none or it is incomplete or corrupt (it is rebuilt).

    Raises
    ------
    SpecMismatch
        When the subset there was built with other parameters.
    """
    if not target.exists():
        return False
    try:
        manifest = verify_subset(target, checksum=True)
    except SubsetError:
        return False  # incomplete or corrupt: rebuild
    there = manifest.get("nsd", {})
    if there.get("spec_hash") == spec.spec_hash():
        return True
    old = dict(there.get("spec") or {})
    old.pop("name", None)
    diff = _spec_differences(old, spec.record()) if old else ["no spec recorded"]
    raise SpecMismatch(f"A subset named {spec.name!r} exists at {target} but was built "
                       f"with other parameters ({'; '.join(diff)}); pass overwrite=True "
                       "(--force) to rebuild it, or another name (--name).")


def _start(spec, base_url, cache, client, progress, max_gap):
    """Step: the client, cache and kept reads of a run, and its small files downloaded."""
    client = client or HTTPClient(progress=progress)
    cache = Path(cache) if cache else data_dir("nsd")
    base = _base_url(base_url)
    kept = _KeptReads(cache)
    paths = download(spec, agree_terms=True, base_url=base, cache=cache, client=client)
    return _Build(spec=spec, client=client, base=base, cache=cache, paths=paths, kept=kept,
                  max_gap=MAX_GAP if max_gap is None else max_gap, progress=progress)


def _stimulus_table(paths):
    """NSD's image metadata (nsd_stim_info_merged.csv), indexed and sorted by 73k id."""
    import pandas as pd

    stim = pd.read_csv(paths[nsd_file("stim_info")])
    return stim.set_index("nsdId", drop=False).sort_index()


def _subject_trials(spec, subject, paths, shared):
    """(nsd_id, session) of each of a subject's trials, from expdesign or responses.tsv."""
    nsd_id, session, _ = trials_from_expdesign(paths[nsd_file("expdesign")], subject,
                                               spec.trials_per_session)
    if spec.trials == "responses":
        nsd_id, session = trials_from_responses(paths[nsd_file("responses", subject)])
    return nsd_id, session


def _select_trials(spec, paths):
    """Step: each subject's kept trials.

    Returns
    -------
    shared_ids : ndarray of shape (1000,)
        0-based 73k ids of the shared1000 images.
    trials : dict of int to _Trials
    ids : ndarray
        Every image of the subset, sorted (the stimulus rows).
    """
    _, _, shared_ids = trials_from_expdesign(paths[nsd_file("expdesign")], spec.subjects[0])
    trials, all_ids = {}, []
    for s in spec.subjects:
        nsd_id, session = _subject_trials(spec, s, paths, shared_ids)
        keep, train_ids, test_ids = select_trials(
            nsd_id, session, shared_ids, spec.sessions_of(s), spec.n_train, spec.test,
            random_state=spec.random_state)
        if not keep.any():
            raise ValueError(f"subj{s:02d}: no trial matches the selection {asdict(spec)}.")
        trials[s] = _Trials(nsd_id, session, keep, train_ids, test_ids)
        all_ids.append(np.concatenate([train_ids, test_ids]))
    return shared_ids, trials, np.unique(np.concatenate(all_ids))


def _warn_fsaverage_reads(b, s, sel, t):
    """The full fsaverage surface reads most of every beta file: say how much, and fsaverage5's."""
    spec = b.spec
    n_sess = len(np.unique(t.session[t.keep]))
    est = surface_read_bytes(sel, n_sess, spec.trials_per_session, max_gap=b.max_gap)
    est5 = surface_read_bytes({h: v[v < N_FSAVERAGE5] for h, v in sel.items()}, n_sess,
                              spec.trials_per_session, max_gap=b.max_gap)
    # stacklevel 3: the warning points at prepare's caller
    warnings.warn(f"subj{s:02d}: the full fsaverage surface reads about {est / 1e9:.1f} GB "
                  f"of betas ({n_sess} sessions; each hemisphere's file per session holds "
                  f"{N_FSAVERAGE * 4 * spec.trials_per_session / 1e6:.0f} MB and the ROI "
                  "spreads over most of it). space='fsaverage5' (--space fsaverage5) "
                  f"reads about {est5 / 1e9:.2f} GB.", stacklevel=3)


def _read_betas(b, s, t, sel, vol_shape, n_voxels):
    """Step: a subject's betas of the selected voxels in its kept trials, z-scored per session.

    Returns
    -------
    trial_betas : ndarray of shape (n_kept, n_voxels), float32
        NaN where a voxel has no data in a session.
    trial_ids : ndarray of shape (n_kept,)
        73k id of each kept trial.
    trial_session : ndarray of shape (n_kept,)
    zero_any : ndarray of shape (n_voxels,), bool
        Voxels whose betas of some session are all exactly 0.
    """
    from .._progress import tqdm

    before = b.client.bytes_received
    blocks, sess_of, img_of = [], [], []
    zero_any = np.zeros(n_voxels, dtype=bool)
    for sess in tqdm(np.unique(t.session[t.keep]), desc=f"subj{s:02d} betas",
                     disable=not b.progress):
        rows = np.flatnonzero(t.session == sess)
        B = _session_betas(b, s, sess, sel, vol_shape)
        if len(B) < len(rows):
            raise ValueError(f"subj{s:02d} session {sess}: betas hold {len(B)} trials, "
                             f"the design {len(rows)}.")
        Z, zero = _zscore_session(B[:len(rows)])
        zero_any |= zero
        k = t.keep[rows]
        blocks.append(Z[k])
        sess_of.append(np.full(int(k.sum()), sess))
        img_of.append(t.nsd_id[rows][k])
    b.bytes_by[f"subj{s:02d}_betas"] = b.client.bytes_received - before
    return np.concatenate(blocks), np.concatenate(img_of), np.concatenate(sess_of), zero_any


def _session_betas(b, s, sess, sel, vol_shape):
    """One session's betas (n_trials, n_voxels) of the selected voxels, kept between attempts."""
    client, base, max_gap = b.client, b.base, b.max_gap
    if b.spec.space == "func1pt8mm":
        rel = nsd_file("betas", s, "func1pt8mm", sess)
        return b.kept.get(rel, sel, lambda: read_volume_betas(
            client, base + rel, sel, vol_shape, max_gap=max_gap))
    parts = []
    for h in ("lh", "rh"):
        rel = nsd_file("betas", s, "fsaverage", sess, hemi=h)
        # kept.get calls the reader at once, so rel and h are this iteration's
        parts.append(b.kept.get(rel, sel[h], lambda: read_surface_betas(
            client, base + rel, sel[h], max_gap=max_gap)))
    return np.concatenate(parts, axis=1)


def _zscore_session(B):
    """Z-score one session's betas over all of its trials, as NSD does.

    NSD treats a voxel whose betas of a session are all exactly 0 (the edge of
    the imaged volume) as missing there, like a NaN; missing voxels stay NaN
    (and are dropped later).

    Parameters
    ----------
    B : ndarray of shape (n_trials, n_voxels)
        Set to NaN in place where a voxel's betas are all 0.

    Returns
    -------
    Z : ndarray of shape (n_trials, n_voxels), float32
    zero : ndarray of shape (n_voxels,), bool
        The all-zero voxels.
    """
    zero = (B == 0).all(axis=0) & np.isfinite(B).all(axis=0)
    B[:, zero] = np.nan
    finite = np.isfinite(B).all(axis=0)
    Z = np.full(B.shape, np.nan, dtype=np.float32)
    Z[:, finite] = zscore_per_session(B[:, finite], np.zeros(len(B)))
    return Z, zero


def _drop_invalid_voxels(b, s, trial_betas, vox, zero_any):
    """Step: leave out voxels without data in some selected trial, with a warning.

    A voxel without data in some selected trial (NaN: e.g. fsaverage's medial
    wall, or a vertex that lost a session; all-zero betas in a session: a
    volume edge voxel) has no response to model. The counts go to
    ``b.dropped`` and ``b.dropped_zero``.

    Returns
    -------
    trial_betas : ndarray of shape (n_kept, n_usable)
    vox : VoxelInfo of the usable voxels
    usable : ndarray of shape (n_voxels,), bool
    """
    usable = np.isfinite(trial_betas).all(axis=0)
    n_zero = int((~usable & zero_any).sum())
    key = f"subj{s:02d}"
    b.dropped[key] = int((~usable).sum()) - n_zero
    b.dropped_zero[key] = n_zero
    if usable.all():
        return trial_betas, vox, usable
    # stacklevel 3: the warning points at prepare's caller
    warnings.warn(f"{key}: {int((~usable).sum())} of {usable.size} voxels have no data "
                  f"in selected trials ({b.dropped[key]} with NaN betas, e.g. "
                  f"fsaverage's medial wall; {n_zero} with all betas of a session exactly 0, "
                  "NSD's edge voxels) and are left out of the subset.", stacklevel=3)
    vox = VoxelInfo(**{f: getattr(vox, f)[usable] for f in
                       ("roi", "network", "vertex", "hemi", "ijk")})
    return trial_betas[:, usable], vox, usable


def _ncsnr(b, s, sel, usable, trial_betas, trial_ids):
    """Step: each usable voxel's ncsnr, NSD's (from all of its trials) or the subset's own."""
    if b.spec.ncsnr != "nsd":
        return compute_ncsnr(trial_betas, trial_ids)
    if b.spec.space == "func1pt8mm":
        nc_vol, _ = _load_labels(b.paths[nsd_file("ncsnr", s, "func1pt8mm")])
        return np.asarray(nc_vol)[tuple(sel.T)][usable]
    per_hemi = [np.asarray(_load_labels(b.paths[nsd_file("ncsnr", s, "fsaverage", hemi=h)])[0])
                .ravel()[sel[h]] for h in ("lh", "rh")]
    return np.concatenate(per_hemi)[usable]


def _subject_arrays(t, row_of, trial_betas, trial_ids, trial_session, vox, affine, ncsnr):
    """Step: repeats averaged, and one subject's arrays as ``write_subset`` takes them."""
    betas, img_ids, n_trials = average_repeats(trial_betas, trial_ids)
    return dict(
        image_index=np.array([row_of[int(i)] for i in img_ids]),
        split=np.where(np.isin(img_ids, t.test_ids), "test", "train"),
        betas=betas, n_trials=n_trials, trial_betas=trial_betas,
        trial_image_index=np.array([row_of[int(i)] for i in trial_ids]),
        trial_session=trial_session, ncsnr=np.nan_to_num(ncsnr).astype(np.float32),
        voxels=vox, affine=affine)


def _stimuli(b, stim, ids, shared_ids, captions):
    """Step: the images (kept between attempts, resized if asked), COCO ids, crops and captions."""
    before = b.client.bytes_received
    images = b.kept.get(nsd_file("stimuli"), ids, lambda: read_images(
        b.client, b.base + nsd_file("stimuli"), ids, max_gap=b.max_gap))
    b.bytes_by["images"] = b.client.bytes_received - before
    if b.spec.image_size:
        from PIL import Image
        size = (b.spec.image_size, b.spec.image_size)
        images = np.stack([np.asarray(Image.fromarray(im).resize(size, Image.BICUBIC))
                           for im in images])
    meta = stim.loc[ids]
    coco_ids = meta["cocoId"].to_numpy(np.int64)
    cap_paths = [_fetch_source(src, b.client, b.cache) for src in captions]
    crop = np.array([[float(x) for x in re.findall(r"[-\d.eE]+", str(c))] for c in meta["cropBox"]])
    return StimulusSet(
        images=images, stimulus_id=ids, coco_id=coco_ids, shared=np.isin(ids, shared_ids),
        captions=load_coco_captions(cap_paths, coco_ids),
        attributes={"crop_box": crop, "coco_split": meta["cocoSplit"].astype(str).to_numpy()})


def _write(b, target, subjects, stimuli, captions):
    """Step: write the subset, its manifest recording the spec, files, hashes and bytes fetched."""
    spec, client = b.spec, b.client
    files = {}
    for rel, p in sorted(b.paths.items()):
        info = json.loads(Path(str(p) + ".meta.json").read_text())
        files[rel] = {"size": info["size"], "sha256": info["sha256"]}
    extra = {"nsd": {"base_url": b.base, "spec": asdict(spec), "spec_hash": spec.spec_hash(),
                     "captions": captions, "beta_version": BETA_VERSION,
                     "files": files, "bytes_fetched": client.bytes_received,
                     "bytes_by_part": b.bytes_by, "n_requests": client.n_requests,
                     "voxels_dropped_for_nan": b.dropped,
                     "voxels_dropped_all_zero": b.dropped_zero}}
    desc = (f"NSD {', '.join(subjects)}, {spec.roi} in {spec.space}: single-trial betas z-scored per "
            "session, repeats averaged, shared1000 = test. Images are NSD's 425 px crops "
            "(crop_box: the crop of the COCO original).")
    return write_subset(target, stimuli=stimuli, subjects=subjects, source="nsd",
                        space="fsaverage" if spec.space == "fsaverage" else spec.space,
                        roi=spec.roi, name=spec.name, description=desc, extra=extra,
                        overwrite=True)


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
