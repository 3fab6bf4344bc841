"""ROIs and functional networks: which voxels a subset keeps and how each is labelled.

Every voxel (or vertex) of a subset carries its ROI name (its prf-visualrois
area where it has one) and its functional network, assigned from NSD's
streams, Kastner2015 and HCP_MMP1 atlases by :func:`network_labels`. On
fsaverage, the hand-drawn ROIs exist only on each subject's native surface
and are mapped with :func:`native_to_fsaverage`.
"""
from __future__ import annotations

import re

import numpy as np

from ..data import VoxelInfo
from .layout import N_FSAVERAGE, N_FSAVERAGE5, NATIVE_SURFACE_ROIS, nsd_file
from .readers import _load_labels, _read_ctab

__all__ = ["NETWORKS", "ATLASES", "NETWORK_AREAS", "network_labels", "atlases_of",
           "native_to_fsaverage"]


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


def _label_names(values, table, unlabelled=""):
    """Names of integer labels (0 or less: unlabelled), looked up once per distinct value."""
    values = np.asarray(values).astype(np.int64).ravel()
    u, inv = np.unique(values, return_inverse=True)
    named = np.array([table.get(int(x), str(int(x))) if x > 0 else unlabelled for x in u],
                     dtype=object)
    return named[inv.ravel()] if len(u) else np.array([], dtype=object)


class _SubjectLabels:
    """One subject's label files in a subset's space, read from the cache.

    Parameters
    ----------
    spec : NSDSpec
    subject : int
    paths : dict of str to Path
        Bucket path -> cached file (what :func:`download` returns).
    """

    def __init__(self, spec, subject, paths):
        self.spec, self.subject, self.paths = spec, subject, paths
        self.space = spec.space
        self.atlases = atlases_of(spec)
        self._transforms = {}
        self.tables = {a: self.names(a) for a in self.atlases + ("prf-visualrois",)}
        self.roi_table = self.names(spec.roi) if spec.roi != "cortex" else {}

    def values(self, name, hemi=None):
        """(values, affine) of a label file: a 3-d volume, or one value per fsaverage vertex."""
        rel = nsd_file("roi", self.subject, self.space, hemi=hemi, roi=name)
        data, aff = _load_labels(self.paths[rel])
        data = np.asarray(data)
        if self.space == "func1pt8mm":
            return data.reshape(data.shape[:3]), aff
        data = data.reshape(-1)
        if name in NATIVE_SURFACE_ROIS:  # the subject's native surface -> fsaverage
            data = self._to_fsaverage(data, hemi, what=rel)
        return data, aff

    def _to_fsaverage(self, data, hemi, what):
        transform = nsd_file("transform", self.subject, hemi=hemi)
        if hemi not in self._transforms:
            self._transforms[hemi] = _load_labels(self.paths[transform])[0]
        data = native_to_fsaverage(data, self._transforms[hemi], what=what)
        need = N_FSAVERAGE if self.space == "fsaverage" else N_FSAVERAGE5
        if len(data) < need or (self.space == "fsaverage" and len(data) != need):
            raise ValueError(f"{transform} maps {len(data)} "
                             f"vertices; fsaverage has {N_FSAVERAGE} per hemisphere.")
        return data

    def names(self, name):
        """Label number -> name of one ROI family or atlas."""
        if name == "nsdgeneral":
            return {1: "nsdgeneral"}
        return _read_ctab(self.paths[nsd_file("ctab", self.subject, self.space, roi=name)])

    def labels_at(self, where, hemi, roi_values):
        """(roi names, network names) of the selected voxels of one volume or hemisphere."""
        spec = self.spec
        prf = _label_names(self.values("prf-visualrois", hemi)[0][where],
                           self.tables["prf-visualrois"])
        if spec.roi in ("cortex", "nsdgeneral"):
            own = np.full(len(prf), spec.roi, dtype=object)
        else:
            own = _label_names(roi_values, self.roi_table, spec.roi)
        roi = np.where(prf != "", prf, own)
        found = {a: _label_names(self.values(a, hemi)[0][where], self.tables[a])
                 for a in self.atlases}
        return roi, network_labels(**{_ATLAS_ARG[a]: v for a, v in found.items()})


def _roi_voxels(spec, subject, paths):
    """Voxel selection and labels of one subject: (selector, VoxelInfo, affine, vol_shape).

    The selector is the ROI's (i, j, k) indices in the volume, or a dict hemi ->
    vertex indices on the surface (affine and vol_shape are then None). Every
    voxel is labelled with its ROI (prf-visualrois area where it has one) and
    its functional network, from the atlases of :func:`atlases_of` through
    :func:`network_labels`.
    """
    labels = _SubjectLabels(spec, subject, paths)
    if spec.space == "func1pt8mm":
        return _volume_voxels(spec, labels)
    return _surface_voxels(spec, subject, labels)


def _volume_voxels(spec, labels):
    if spec.roi == "cortex":
        # NSD's ROI volumes mark cortex with values >= 0 (-1: not cortex); its brainmask is
        # deliberately liberal (white matter, CSF)
        general, aff = labels.values("nsdgeneral")
        mask = general >= 0
        roi_vol = None
    else:
        roi_vol, aff = labels.values(spec.roi)
        mask = roi_vol > 0
    ijk = np.argwhere(mask)
    where = tuple(ijk.T)
    roi, net = labels.labels_at(where, None, None if roi_vol is None else roi_vol[where])
    vox = VoxelInfo(roi=roi, network=net, vertex=np.full(len(ijk), -1),
                    hemi=np.array([""] * len(ijk), dtype=object), ijk=ijk)
    return ijk, vox, aff, mask.shape


def _surface_voxels(spec, subject, labels):
    space = spec.space
    sel, rois, nets, verts, hemis = {}, [], [], [], []
    for h in ("lh", "rh"):
        n_all = len(labels.values(labels.atlases[0], h)[0])
        if space == "fsaverage" and n_all != N_FSAVERAGE:
            # a truncated or foreign label file would silently shift every vertex
            raise ValueError(f"{nsd_file('roi', subject, space, hemi=h, roi=labels.atlases[0])} "
                             f"has {n_all} vertices; fsaverage has {N_FSAVERAGE} per hemisphere.")
        n = n_all if space == "fsaverage" else N_FSAVERAGE5
        roi_v = np.ones(n, dtype=int) if spec.roi == "cortex" else labels.values(spec.roi, h)[0][:n]
        v = np.flatnonzero(roi_v > 0)
        roi, net = labels.labels_at(v, h, roi_v[v])
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
