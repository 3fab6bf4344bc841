"""Maps of per-voxel values on the cortex, and curves over scale.

Every analysis of the book ends with one number per voxel (an encoding score,
a best layer, a network label) or one curve over scale. This module draws them:

- :func:`plot_surface` puts continuous per-voxel values on the fsaverage5
  surface (the demo world's space) or on full fsaverage (real NSD surface
  subsets), over sulcal depth, with ROI outlines;
- :func:`plot_surface_labels` draws categorical maps (networks, ROIs, best
  layer) with a legend;
- :func:`plot_volume` draws per-voxel values of a func1pt8mm (volume) subset;
- :func:`plot_profile` draws curves over scale with confidence bands;
- :func:`model_colors` gives each model one colour for every figure, and
  :func:`signed_cmap` a diverging map whose smallest values stay visible.

Each function returns the matplotlib Figure and accepts ``axes`` to draw into
an existing figure. Vertices that carry no voxel are left transparent (NaN),
so the sulcal-depth background shows through.
"""
from __future__ import annotations

import numpy as np

from ._validation import check_array

__all__ = ["plot_surface", "plot_surface_labels", "plot_volume", "plot_profile",
           "surface_maps", "model_colors", "signed_cmap", "rounded", "MODEL_COLORS"]

_HEMIS = {"lh": "left", "rh": "right"}
_N_VERTICES = {"fsaverage5": 10242, "fsaverage": 163842}


# --------------------------------------------------------------------------- helpers
def _check_voxels(voxels, n_voxels, name="values"):
    for attr in ("vertex", "hemi"):
        if not hasattr(voxels, attr):
            raise TypeError(
                f"voxels must be a VoxelInfo (with .vertex and .hemi), got {type(voxels).__name__}.")
    vertex = np.asarray(voxels.vertex)
    hemi = np.asarray(voxels.hemi).astype(str)
    if vertex.shape != (n_voxels,) or hemi.shape != (n_voxels,):
        raise ValueError(
            f"{name} has {n_voxels} voxels but voxels describes {vertex.shape[0]}; "
            "pass the VoxelInfo of the same subject.")
    return vertex, hemi


def _infer_space(vertex, space):
    if space is None:
        space = "fsaverage5" if (vertex.size == 0 or vertex.max() < _N_VERTICES["fsaverage5"]) \
            else "fsaverage"
    if space not in _N_VERTICES:
        raise ValueError(f"space must be 'fsaverage5' or 'fsaverage', got {space!r}.")
    n = _N_VERTICES[space]
    if vertex.size and (vertex.min() < 0 or vertex.max() >= n):
        raise ValueError(
            f"voxel vertices must lie in [0, {n}) for space={space!r}, found "
            f"[{vertex.min()}, {vertex.max()}]; volume voxels (vertex -1) need plot_volume, "
            "full-fsaverage vertices need space='fsaverage'.")
    return space


def surface_maps(values, voxels, space=None, fill=np.nan):
    """Scatter per-voxel values onto the vertices of each hemisphere.

    Parameters
    ----------
    values : array-like of shape (n_voxels,)
    voxels : VoxelInfo
        Uses ``voxels.vertex`` (index within hemisphere) and ``voxels.hemi``
        ("lh"/"rh").
    space : {"fsaverage5", "fsaverage"} or None
        None infers fsaverage5 when every vertex index is below 10,242.
    fill : float
        Value of vertices without a voxel.

    Returns
    -------
    maps : dict
        ``{"left": ndarray of shape (n_vertices,), "right": ...}``. Vertices
        covered by several voxels get their mean.

    Raises
    ------
    ValueError
        If ``values`` and ``voxels`` disagree in length or a vertex is out of range.
    """
    values = check_array(values, "values", ndim=1, allow_nan=True)
    vertex, hemi = _check_voxels(voxels, values.shape[0])
    space = _infer_space(vertex, space)
    n = _N_VERTICES[space]
    maps = {}
    for short, long in _HEMIS.items():
        rows = (hemi == short) & np.isfinite(values)
        sums = np.zeros(n)
        counts = np.zeros(n)
        np.add.at(sums, vertex[rows], values[rows])
        np.add.at(counts, vertex[rows], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            maps[long] = np.where(counts > 0, sums / counts, fill)
    return maps


def _label_maps(labels, voxels, space):
    """Integer-coded vertex maps (0 = no voxel) and the ordered label names."""
    labels = np.asarray(labels).astype(str)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got an array of shape {labels.shape}.")
    vertex, hemi = _check_voxels(voxels, labels.shape[0], name="labels")
    space = _infer_space(vertex, space)
    names = [n for n in dict.fromkeys(labels) if n not in ("", "nan", "None")]
    code = {name: i + 1 for i, name in enumerate(names)}
    codes = np.array([code.get(lab, 0) for lab in labels])
    maps = {}
    for short, long in _HEMIS.items():
        m = np.zeros(_N_VERTICES[space], dtype=int)
        rows = (hemi == short) & (codes > 0)
        m[vertex[rows]] = codes[rows]
        maps[long] = m
    return maps, names, space


def _surface(space, mesh):
    from nilearn import datasets

    meshes = datasets.load_fsaverage(space)
    if mesh not in meshes or mesh == "description":
        raise ValueError(
            f"mesh must be one of 'inflated', 'pial', 'white_matter', 'sphere', 'flat', got {mesh!r}.")
    sulc = datasets.load_fsaverage_data(mesh=space, mesh_type=mesh, data_type="sulcal")
    return meshes[mesh].parts, sulc.data.parts


def _panels(hemi, view):
    if hemi == "both":
        hemis = ["left", "right"]
    elif hemi in ("left", "right", "lh", "rh"):
        hemis = [_HEMIS.get(hemi, hemi)]
    else:
        raise ValueError(f"hemi must be 'both', 'left' or 'right', got {hemi!r}.")
    views = [view] if isinstance(view, str) else list(view)
    return [(h, v) for v in views for h in hemis], len(views), len(hemis)


def _figure_axes(panels, n_rows, n_cols, axes, size=3.2):
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(n_rows, n_cols, subplot_kw={"projection": "3d"},
                                 figsize=(size * n_cols, size * n_rows * 0.85), squeeze=False)
        axes = list(axes.ravel())
    else:
        axes = list(np.ravel(np.asarray(axes, dtype=object)))
        if len(axes) != len(panels):
            raise ValueError(
                f"axes must hold one 3-D axes per panel ({len(panels)} for these hemi/view), "
                f"got {len(axes)}.")
        if any(getattr(ax, "name", "") != "3d" for ax in axes):
            raise ValueError("axes must be 3-D axes: subplot_kw={'projection': '3d'}.")
        fig = axes[0].figure
    return fig, axes


def _outline(plotting, mesh, roi_map, hemi, view, ax, fig, color):
    """Draw the outline of each region; regions too scattered to outline are skipped."""
    for level in np.unique(roi_map[roi_map > 0]):
        try:
            plotting.plot_surf_contours(
                surf_mesh=mesh, roi_map=np.where(roi_map == level, level, 0), levels=[int(level)],
                colors=[color], hemi=hemi, view=view, axes=ax, figure=fig)
        except ValueError:
            # nilearn refuses regions whose vertices do not form a connected patch
            continue


def _add_colorbar(fig, axes, cmap, vmin, vmax, label):
    import matplotlib as mpl

    norm = mpl.colors.Normalize(vmin=vmin, vmax=vmax)
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    cbar = fig.colorbar(sm, ax=axes, shrink=0.6, pad=0.02)
    if label:
        cbar.set_label(label)
    return cbar


# --------------------------------------------------------------------------- surfaces
def plot_surface(values, voxels, *, hemi="both", view="lateral", cmap="cold_hot", vmin=None,
                 vmax=None, threshold=None, symmetric=None, title=None, axes=None,
                 roi_outlines=True, mesh="inflated", space=None, colorbar=True,
                 cbar_label=None, outline_color="k"):
    """Per-voxel values on the cortical surface.

    Parameters
    ----------
    values : array-like of shape (n_voxels,)
        One value per voxel (NaN voxels are left out).
    voxels : VoxelInfo
        The subject's voxel table (``subj.voxels``).
    hemi : {"both", "left", "right"}
    view : str or list of str
        nilearn view ("lateral", "medial", "posterior", "ventral", ...); a list
        gives one row of panels per view.
    cmap : str or Colormap
    vmin, vmax : float or None
        Colour limits; None uses the data range (symmetric about 0 when the
        values change sign, unless ``symmetric=False``).
    threshold : float or None
        Hide vertices with ``|value| < threshold``.
    symmetric : bool or None
        Force a colour range symmetric about zero; None decides from the data.
    title : str or None
    axes : sequence of 3-D matplotlib Axes or None
        One per panel (hemispheres x views); None makes a new figure.
    roi_outlines : bool or array-like of shape (n_voxels,)
        True outlines ``voxels.roi``; an array gives other labels to outline.
    mesh : {"inflated", "pial", "white_matter", "sphere", "flat"}
    space : {"fsaverage5", "fsaverage"} or None
        None infers it from the vertex indices. Full fsaverage needs nilearn
        to download the mesh once (on Colab); fsaverage5 is bundled.
    colorbar : bool
        One colour bar for the whole figure.
    cbar_label : str or None
    outline_color : str

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If ``values`` and ``voxels`` disagree, or for an unknown hemi, mesh or space.
    """
    from nilearn import plotting

    values = check_array(values, "values", ndim=1, allow_nan=True)
    vertex, _ = _check_voxels(voxels, values.shape[0])
    space = _infer_space(vertex, space)
    panels, n_rows, n_cols = _panels(hemi, view)
    maps = surface_maps(values, voxels, space=space)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if symmetric is None:
        symmetric = (vmin is None or vmax is None) and lo < 0 < hi
    if symmetric:
        bound = max(abs(lo), abs(hi)) if (vmin is None and vmax is None) else \
            max(abs(vmin or 0), abs(vmax or 0))
        vmin, vmax = -bound, bound
    vmin = lo if vmin is None else vmin
    vmax = hi if vmax is None else vmax
    if vmax <= vmin:
        vmax = vmin + 1e-9
    outline_maps = None
    if roi_outlines is not False and roi_outlines is not None:
        rois = voxels.roi if roi_outlines is True else roi_outlines
        outline_maps, _, _ = _label_maps(rois, voxels, space)

    meshes, sulc = _surface(space, mesh)
    fig, axes = _figure_axes(panels, n_rows, n_cols, axes)
    for ax, (h, v) in zip(axes, panels):
        plotting.plot_surf_stat_map(
            surf_mesh=meshes[h], stat_map=maps[h], bg_map=sulc[h], hemi=h, view=v,
            cmap=cmap, vmin=vmin, vmax=vmax, threshold=threshold, colorbar=False,
            symmetric_cbar=bool(symmetric), axes=ax, figure=fig)
        if outline_maps is not None:
            _outline(plotting, meshes[h], outline_maps[h], h, v, ax, fig, outline_color)
        ax.set_title(f"{h} {v}", fontsize=9)
    if colorbar:
        _add_colorbar(fig, axes, cmap, vmin, vmax, cbar_label)
    if title:
        fig.suptitle(title)
    return fig


def plot_surface_labels(labels, voxels, *, hemi="both", view="lateral", cmap="tab10",
                        title=None, axes=None, mesh="inflated", space=None, legend=True,
                        order=None):
    """Categorical per-voxel labels (networks, ROIs, best layer) on the surface.

    Parameters
    ----------
    labels : array-like of shape (n_voxels,)
        One label per voxel (strings or integers); "" marks an unlabelled voxel.
    voxels : VoxelInfo
    hemi : {"both", "left", "right"}
    view : str or list of str
    cmap : str or Colormap
        Qualitative colour map; label i gets colour i.
    title : str or None
    axes : sequence of 3-D Axes or None
    mesh : str
    space : {"fsaverage5", "fsaverage"} or None
    legend : bool
        A legend mapping colours to labels.
    order : list or None
        Order of the labels in the legend and colour map (default: first
        appearance). Labels not listed are left out.

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    import matplotlib as mpl
    from matplotlib.patches import Patch
    from nilearn import plotting

    labels = np.asarray(labels)
    if order is not None:
        order = [str(o) for o in order]
        labels = np.where(np.isin(labels.astype(str), order), labels.astype(str), "")
    maps, names, space = _label_maps(labels, voxels, space)
    if order is not None:
        # recode so that colour i follows the requested order
        present = [o for o in order if o in names]
        remap = np.array([0] + [present.index(n) + 1 for n in names])
        maps = {h: remap[m] for h, m in maps.items()}
        names = present
    k = max(len(names), 1)
    base = mpl.colormaps[cmap] if isinstance(cmap, str) else cmap
    colors = [base(i % base.N) if base.N < 256 else base(i / max(k - 1, 1)) for i in range(k)]
    listed = mpl.colors.ListedColormap(colors)
    panels, n_rows, n_cols = _panels(hemi, view)
    meshes, sulc = _surface(space, mesh)
    fig, axes = _figure_axes(panels, n_rows, n_cols, axes)
    for ax, (h, v) in zip(axes, panels):
        roi = np.where(maps[h] > 0, maps[h], np.nan).astype(float)
        plotting.plot_surf_roi(
            surf_mesh=meshes[h], roi_map=roi, bg_map=sulc[h], hemi=h, view=v, cmap=listed,
            vmin=0.5, vmax=k + 0.5, colorbar=False, axes=ax, figure=fig)
        ax.set_title(f"{h} {v}", fontsize=9)
    if legend and names:
        fig.legend(handles=[Patch(color=c, label=n) for c, n in zip(colors, names)],
                   loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- volumes
def plot_volume(values, voxels, affine, *, shape=None, bg_img=None, cmap="cold_hot",
                vmax=None, threshold=None, title=None, axes=None, display_mode="ortho",
                cut_coords=None):
    """Per-voxel values of a volume (func1pt8mm) subset as orthogonal slices.

    Parameters
    ----------
    values : array-like of shape (n_voxels,)
    voxels : VoxelInfo
        Uses ``voxels.ijk``, array of shape (n_voxels, 3).
    affine : array-like of shape (4, 4)
        Voxel-to-world matrix (``subj.affine``).
    shape : tuple of 3 int or None
        Volume shape; None uses the smallest box holding every voxel.
    bg_img : Niimg-like or None
        Background (e.g. the subject's mean EPI); None draws none, because
        func1pt8mm is the subject's native space, not MNI.
    cmap : str
    vmax, threshold : float or None
    title : str or None
    axes : matplotlib Axes or None
    display_mode : str
        nilearn display mode ("ortho", "z", "x", ...).
    cut_coords : None or sequence
        Passed to nilearn.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If a voxel has no volume index (a surface subset) or shapes disagree.
    """
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    values = check_array(values, "values", ndim=1, allow_nan=True)
    ijk = np.asarray(voxels.ijk)
    if ijk.shape != (values.shape[0], 3):
        raise ValueError(
            f"voxels.ijk must have shape ({values.shape[0]}, 3) to match values, got {ijk.shape}.")
    if np.any(ijk < 0):
        raise ValueError("voxels.ijk has -1 entries: this is a surface subset; use plot_surface.")
    affine = check_array(affine, "affine", ndim=2)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must have shape (4, 4), got {affine.shape}.")
    shape = tuple(ijk.max(axis=0) + 1) if shape is None else tuple(shape)
    if np.any(ijk >= np.array(shape)):
        raise ValueError(f"voxels.ijk exceeds the volume shape {shape}.")
    vol = np.zeros(shape, dtype=np.float32)
    ok = np.isfinite(values)
    vol[tuple(ijk[ok].T)] = values[ok]
    img = nib.Nifti1Image(vol, affine)
    if axes is None:
        fig, axes = plt.subplots(figsize=(8, 3))
    fig = axes.figure
    plotting.plot_stat_map(img, bg_img=bg_img, cmap=cmap, vmax=vmax, threshold=threshold,
                           title=title, axes=axes, figure=fig, display_mode=display_mode,
                           cut_coords=cut_coords, draw_cross=False)
    return fig


# --------------------------------------------------------------------------- curves
def plot_profile(ks, values, *, lower=None, upper=None, labels=None, ax=None, logx=True,
                 xlabel="scale k (neighbours)", ylabel=None, title=None, colors=None,
                 marker="o", linestyles=None):
    """Curves over scale, with optional confidence bands.

    Parameters
    ----------
    ks : array-like of shape (n_scales,)
        Scales (e.g. neighbourhood sizes).
    values : array-like of shape (n_scales,) or (n_curves, n_scales)
    lower, upper : array-like of the same shape as values, or None
        Band limits (e.g. a bootstrap 95% interval).
    labels : list of str or None
        One per curve; shown in a legend.
    ax : matplotlib Axes or None
    logx : bool
        Log-scaled x axis (scales are usually on a log grid).
    xlabel, ylabel, title : str or None
    colors : list or None
    marker : str
    linestyles : list of str or None
        One matplotlib line style per curve ("-", "--", ":", "-."), so that curves
        that overlap stay distinguishable.

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        If the shapes of ks, values and the bands disagree.
    """
    import matplotlib.pyplot as plt

    ks = check_array(ks, "ks", ndim=1)
    vals = np.atleast_2d(check_array(values, "values", ndim=(1, 2), allow_nan=True))
    if vals.shape[1] != ks.shape[0]:
        raise ValueError(
            f"values must have n_scales={ks.shape[0]} columns to match ks, got shape {vals.shape}.")
    bands = []
    for name, b in (("lower", lower), ("upper", upper)):
        if b is not None:
            b = np.atleast_2d(check_array(b, name, ndim=(1, 2), allow_nan=True))
            if b.shape != vals.shape:
                raise ValueError(f"{name} must have the shape of values {vals.shape}, got {b.shape}.")
        bands.append(b)
    if (bands[0] is None) != (bands[1] is None):
        raise ValueError("give both lower and upper for a band, or neither.")
    if labels is not None and len(labels) != vals.shape[0]:
        raise ValueError(f"labels must have one entry per curve ({vals.shape[0]}), got {len(labels)}.")
    if linestyles is not None and len(linestyles) != vals.shape[0]:
        raise ValueError(f"linestyles must have one entry per curve ({vals.shape[0]}), "
                         f"got {len(linestyles)}.")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    fig = ax.figure
    for i, row in enumerate(vals):
        kw = {"label": None if labels is None else labels[i], "marker": marker, "ms": 3}
        if colors is not None:
            kw["color"] = colors[i]
        if linestyles is not None:
            kw["linestyle"] = linestyles[i]
        line, = ax.plot(ks, row, **kw)
        if bands[0] is not None:
            ax.fill_between(ks, bands[0][i], bands[1][i], color=line.get_color(), alpha=0.2,
                            linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if labels is not None:
        ax.legend(frameon=False, fontsize=8)
    return fig


# --------------------------------------------------------------------------- colours

#: Fixed colours of the offline models, so a model looks the same in every figure: grey for
#: the random floor, orange for vision-only, blues darkening with training data, green for
#: the pretrained sentence encoder, red for the fused (CoCa-style) model; brown and olive for
#: the hand-made pixel and Gabor-energy features.
MODEL_COLORS = {
    "demo-random": "#8c8c8c",
    "demo-vision-only": "#ff7f0e",
    "demo-clip-small-data": "#9ecae1",
    "demo-clip-medium-data": "#4292c6",
    "demo-clip-full-data": "#08306b",
    "demo-coca": "#d62728",
    "minilm": "#2ca02c",
    # hand-made feature spaces that figures show beside the models
    "pixels": "#8c564b",
    "Gabor energy": "#bcbd22",
}


def rounded(values, decimals=3):
    """Values rounded for a printed table, without negative zeros.

    ``round`` keeps the sign of a small negative value that rounds to zero, so a table
    would print "-0.000", which reads as a measured negative; this prints "0.000".

    Parameters
    ----------
    values : float, array-like, pandas Series or DataFrame
        A DataFrame's columns other than floats (counts, intervals as text) are left as
        they are.
    decimals : int

    Returns
    -------
    rounded : same type as values (a float for a scalar)
    """
    import pandas as pd

    if not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer, got {decimals!r}.")
    if isinstance(values, pd.DataFrame):
        out = values.copy()
        floats = out.select_dtypes("floating").columns
        out[floats] = out[floats].round(decimals) + 0.0
        return out
    if isinstance(values, pd.Series):
        return values.round(decimals) + 0.0 if pd.api.types.is_float_dtype(values) else values
    if np.ndim(values) == 0:
        return float(np.round(float(values), decimals)) + 0.0
    return np.round(np.asarray(values, dtype=float), decimals) + 0.0


def model_colors(names):
    """One colour per model name, the same in every figure of the book.

    The offline models have fixed colours (:data:`MODEL_COLORS`); any other name (the
    pretrained catalogue) gets a colour of matplotlib's "tab20" from its position in
    :func:`scaleinv_utils.models.list_models` (names not in the catalogue: from a checksum of
    the name), so it does not depend on which other models a figure shows.

    Parameters
    ----------
    names : iterable of str
        Model names; "model/layer" keys use the part before the slash.

    Returns
    -------
    colors : dict
        name (as given) -> matplotlib colour.
    """
    import zlib

    import matplotlib

    from .models import list_models
    catalogue = list_models()
    palette = matplotlib.colormaps["tab20"]
    colors = {}
    for name in names:
        model = str(name).split("/", 1)[0]
        if model in MODEL_COLORS:
            colors[name] = MODEL_COLORS[model]
        else:
            slot = catalogue.index(model) if model in catalogue else zlib.crc32(model.encode())
            colors[name] = matplotlib.colors.to_hex(palette(slot % palette.N))
    return colors


def signed_cmap(name="RdBu_r", gap=0.25):
    """A diverging colour map without its pale (or dark) centre, for maps that show only
    significant values: the smallest positive value is already clearly red, the smallest
    negative one clearly blue, so none vanishes into the background.

    Parameters
    ----------
    name : str
        A diverging matplotlib colour map.
    gap : float in [0, 0.5)
        The fraction of each half next to the centre that is left out.

    Returns
    -------
    cmap : matplotlib.colors.ListedColormap
    """
    import matplotlib
    if not 0 <= gap < 0.5:
        raise ValueError(f"gap must be in [0, 0.5), got {gap!r}.")
    base = matplotlib.colormaps[name]
    half = 128
    lo = base(np.linspace(0.0, 0.5 - gap, half))
    hi = base(np.linspace(0.5 + gap, 1.0, half))
    return matplotlib.colors.ListedColormap(np.vstack([lo, hi]), name=f"{name}_signed")
