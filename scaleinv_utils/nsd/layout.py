"""Where NSD keeps things: the bucket, its file names, the terms of use, and a subset's spec.

Names follow the NSD data manual and NSD's own example code. :class:`NSDSpec`
is every parameter that decides a subset's content; :func:`nsd_file` is the
bucket path of each file kind; :func:`check_terms` guards every download.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..config import data_dir

__all__ = [
    "NSD_BASE_URL", "BASE_URL_ENV", "AGREE_ENV", "BETA_VERSION", "TRIALS_PER_SESSION",
    "SUBJECT_SESSIONS", "ROIS", "SPACES", "FSAVERAGE_ATLASES", "NATIVE_SURFACE_ROIS",
    "N_FSAVERAGE5", "N_FSAVERAGE", "NSD_TERMS", "TermsNotAccepted", "check_terms", "nsd_file",
    "NSDSpec", "SpecMismatch",
]

#: Root of NSD's public bucket (anonymous HTTPS). ``$SCALEINV_NSD_URL`` or ``base_url=`` overrides it.
NSD_BASE_URL = "https://natural-scenes-dataset.s3.amazonaws.com/"
BASE_URL_ENV = "SCALEINV_NSD_URL"
#: Set to 1 to agree to NSD's terms of use without passing ``agree_terms=True``.
AGREE_ENV = "SCALEINV_NSD_AGREE"
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
    """The bucket root: base_url, else ``$SCALEINV_NSD_URL``, else NSD_BASE_URL; ending in "/"."""
    url = base_url or os.environ.get(BASE_URL_ENV) or NSD_BASE_URL
    return url if url.endswith("/") else url + "/"


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
