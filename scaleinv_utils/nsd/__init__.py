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

The code lives in submodules, re-exported here (``su.nsd.prepare``):
:mod:`~.layout` (bucket, file names, terms, :class:`NSDSpec`), :mod:`~.trials`
(trial -> image, selection), :mod:`~.readers` (betas, images, label files),
:mod:`~.atlases` (ROIs, networks, native -> fsaverage), :mod:`~.captions`
(COCO captions) and :mod:`~.pipeline` (download, prepare, verify, info, smoke).
The byte-level HDF5 chunk-index reader belongs to the download layer,
:mod:`scaleinv_utils.remote.hdf5`.
"""
from . import atlases, captions, layout, pipeline, readers, trials
from .atlases import (ATLASES, NETWORK_AREAS, NETWORKS, atlases_of, native_to_fsaverage,
                      network_labels)
from .captions import (COCO_CAPTIONS_SOURCES, COCO_ENV, COCO_MIRROR_PATH, default_caption_sources,
                       load_coco_captions)
from .layout import (AGREE_ENV, BASE_URL_ENV, BETA_VERSION, FSAVERAGE_ATLASES, N_FSAVERAGE,
                     N_FSAVERAGE5, NATIVE_SURFACE_ROIS, NSD_BASE_URL, NSD_TERMS, ROIS, SPACES,
                     SUBJECT_SESSIONS, TRIALS_PER_SESSION, NSDSpec, SpecMismatch, TermsNotAccepted,
                     check_terms, nsd_file)
from .pipeline import download, info, prepare, smoke, verify
from .readers import (MAX_GAP, read_images, read_surface_betas, read_volume_betas,
                      surface_read_bytes)
from .trials import select_trials, trials_from_expdesign, trials_from_responses

# private names the tests reach through ``nsd.`` (not part of the public interface)
from .captions import _fetch_source  # noqa: F401
from .pipeline import _plan  # noqa: F401
from .readers import _load_labels  # noqa: F401

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
