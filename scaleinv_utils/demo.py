"""The demo world: a synthetic stand-in for an NSD subset, generated offline.

Nothing in this module is real data. It exists so every chapter runs offline,
in seconds, with the same code that runs on real NSD. The world has two parts.

**Stimuli.** Each image is a *dead-leaves* scene (occluding discs whose radii
follow a power law, a classic scale-invariant image model) with one to four
foreground objects drawn on top. Objects vary in category (shape), colour,
texture, size and position. Five captions per image come from a small grammar,
as COCO has five human captions.

**A simulated brain.** Voxels sit on fsaverage5 vertices in patches placed at
the rough location of six functional networks. Each network has its own
generative model, driven by a different property of the stimulus:

==================  =========================================================
network             response (before noise)
==================  =========================================================
early visual        Gabor energy at one spatial scale, pooled over a
                    retinotopic Gaussian receptive field (position and size
                    set by the vertex's place on the cortex), compressed
                    by a square root (V1, V2, V3)
mid-level           texture and shape statistics: orientation/scale energy
                    pooled over image quadrants, object area and elongation (LO)
category            selectivity for one object category, scaled by its
                    apparent size (VTC)
language            the words of the captions (bag of words, STS)
attention           the number of objects and background clutter (IPS)
default-mode        *negatively* driven by stimulation (contrast energy and
                    number of objects), plus a voxel-specific semantic
                    component from the captions (PCC, mPFC)
==================  =========================================================

Each subject sees the shared test images and its own training images three
times, spread over sessions with session-specific offsets and gains; per-voxel
Gaussian noise sets each voxel's reliability. The betas are then prepared
exactly as NSD's are (:mod:`scaleinv_utils.reliability`): z-scored per session,
repeats averaged, ncsnr computed from the repeats.

What the demo world can show: that the analyses run, that estimators recover
what was planted, and how a method behaves on data with known structure. What it
cannot show: anything about real brains or real models. Its voxels respond the
way they do because this module says so.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import check_random_state
from .config import data_dir
from .data import StimulusSet, VoxelInfo, write_subset
from .reliability import average_repeats, compute_ncsnr, zscore_per_session

__all__ = [
    "DEMO_VERSION", "STIMULI_VERSION", "CATEGORIES", "COLOURS", "TEXTURES", "SIZES", "NETWORKS",
    "make_images", "make_captions", "gabor_energy", "demo_cortex", "simulate_subject",
    "make_demo_world", "demo_subset_path",
]

#: Bumped whenever the generator changes what it produces (caches and shipped
#: demo-model weights record it, so a stale cache is never silently reused).
DEMO_VERSION = 2
#: Version of the stimuli alone (images and captions). Demo-model weights depend on
#: the stimuli only, so a change of the simulated brain bumps DEMO_VERSION, not this.
STIMULI_VERSION = 1

CATEGORIES = ("ball", "box", "tent", "star", "ring", "cross", "egg", "bar")
SYNONYMS = {"ball": ("ball", "sphere"), "box": ("box", "cube"), "tent": ("tent", "triangle"),
            "star": ("star", "star"), "ring": ("ring", "donut"), "cross": ("cross", "plus"),
            "egg": ("egg", "oval"), "bar": ("bar", "stick")}
COLOURS = {"red": (215, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 210),
           "yellow": (235, 215, 40), "purple": (140, 50, 170), "orange": (240, 140, 30)}
TEXTURES = ("plain", "striped", "dotted")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "middle")
NUMBER_WORDS = ("no", "one", "two", "three", "four")

#: Network -> (ROI names by distance ring, anchor in fsaverage pial coordinates
#: of the left hemisphere (mm), radius (mm)). x is mirrored for the right hemisphere.
NETWORKS = {
    "early visual": (("V1", "V2", "V3"), (-10.0, -95.0, 2.0), 24.0),
    "mid-level": (("LO",), (-40.0, -80.0, -5.0), 16.0),
    "category": (("VTC",), (-38.0, -50.0, -18.0), 16.0),
    "language": (("STS",), (-55.0, -25.0, 5.0), 15.0),
    "attention": (("IPS",), (-30.0, -58.0, 48.0), 14.0),
    "default-mode": (("PCC", "mPFC"), None, 14.0),
}
_DMN_ANCHORS = {"PCC": (-6.0, -55.0, 30.0), "mPFC": (-6.0, 50.0, 10.0)}


# ---------------------------------------------------------------------------
# stimuli

def _shape_mask(category, u, v):
    """Inside-mask of a category's shape in object coordinates (u, v in [-1, 1])."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    if category == "ball":
        return r <= 1.0
    if category == "box":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if category == "tent":
        return (v <= 0.8) & (v >= -0.9) & (np.abs(u) <= 0.55 * (v + 0.9))
    if category == "star":
        return r <= 0.5 + 0.45 * np.cos(5 * theta) ** 2
    if category == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if category == "cross":
        return ((np.abs(u) <= 0.28) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.28) & (np.abs(u) <= 0.95))
    if category == "egg":
        return (u / 0.65) ** 2 + v ** 2 <= 1.0
    if category == "bar":
        return (np.abs(u) <= 0.98) & (np.abs(v) <= 0.26)
    raise ValueError(f"unknown category {category!r}; categories are {CATEGORIES}.")


def _dead_leaves(rng, size, n_leaves, r_min=1.0, r_max=None):
    """A dead-leaves background: discs with radius density ~ r^-3, grey-brown tones."""
    r_max = r_max or size / 3
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = rng.uniform(60, 190)
    # Inverse-CDF sampling of p(r) ~ r^-3 on [r_min, r_max]: the scale-invariant case.
    q = rng.uniform(size=n_leaves)
    radii = 1.0 / np.sqrt(1 / r_min**2 - q * (1 / r_min**2 - 1 / r_max**2))
    centres = rng.uniform(-r_max / 2, size + r_max / 2, size=(n_leaves, 2))
    grey = rng.uniform(40, 210, size=n_leaves)
    tint = rng.normal(0, 12, size=(n_leaves, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    for (cx, cy), r, g, t in zip(centres, radii, grey, tint):
        x0, x1 = int(max(cx - r, 0)), int(min(cx + r + 1, size))
        y0, y1 = int(max(cy - r, 0)), int(min(cy + r + 1, size))
        if x0 >= x1 or y0 >= y1:
            continue
        m = (xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2 <= r * r
        img[y0:y1, x0:x1][m] = g + t
    return img


def _position_word(cx, cy, size):
    dx, dy = cx / size - 0.5, cy / size - 0.5
    if max(abs(dx), abs(dy)) < 0.15:
        return "middle"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def make_images(n_images, *, image_size=64, random_state=0):
    """Draw dead-leaves scenes with foreground objects.

    Parameters
    ----------
    n_images : int
    image_size : int
        Height and width in pixels.
    random_state : int or None

    Returns
    -------
    images : ndarray of shape (n_images, image_size, image_size, 3), uint8
    objects : list of list of dict
        Per image, its objects (category, colour, texture, size, position,
        centre, radius, area fraction), largest first.
    clutter : ndarray of shape (n_images,)
        Number of background leaves, a nuisance variable the attention voxels see.
    """
    rng = check_random_state(random_state)
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n_images, size, size, 3), dtype=np.uint8)
    all_objects, clutter = [], np.empty(n_images)
    colour_names = list(COLOURS)
    for i in range(n_images):
        n_leaves = int(rng.integers(60, 260))
        clutter[i] = n_leaves
        img = _dead_leaves(rng, size, n_leaves)
        n_obj = int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))
        objects = []
        for _ in range(n_obj):
            cat = CATEGORIES[rng.integers(len(CATEGORIES))]
            colour = colour_names[rng.integers(len(colour_names))]
            texture = TEXTURES[rng.integers(len(TEXTURES))]
            size_word = SIZES[rng.integers(2)]
            radius = size * (rng.uniform(0.09, 0.13) if size_word == "small" else rng.uniform(0.18, 0.25))
            cx, cy = rng.uniform(radius, size - radius, size=2)
            angle = rng.uniform(0, np.pi) if cat in ("bar", "egg", "cross") else 0.0
            u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / radius
            v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / radius
            mask = _shape_mask(cat, u, v)
            base = np.array(COLOURS[colour], dtype=np.float32)
            if texture == "striped":
                shade = 0.55 + 0.45 * (np.sin(2 * np.pi * (u * radius) / 5.0) > 0)
            elif texture == "dotted":
                shade = 1.0 - 0.5 * ((np.sin(2 * np.pi * u * radius / 5.0) > 0.5)
                                     & (np.sin(2 * np.pi * v * radius / 5.0) > 0.5))
            else:
                shade = np.ones_like(u)
            img[mask] = (base[None, :] * shade[mask][:, None])
            objects.append({"category": cat, "colour": colour, "texture": texture, "size": size_word,
                            "position": _position_word(cx, cy, size), "centre": (float(cx), float(cy)),
                            "radius": float(radius), "area": float(mask.mean())})
        objects.sort(key=lambda o: -o["area"])
        all_objects.append(objects)
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, all_objects, clutter


def _describe(obj, rng, with_texture=True, with_size=True):
    words = []
    if with_size:
        words.append(obj["size"])
    words.append(obj["colour"])
    if with_texture and obj["texture"] != "plain":
        words.append(obj["texture"])
    words.append(SYNONYMS[obj["category"]][rng.integers(2)])
    return " ".join(words)


def _tidy(text):
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return text.replace("one other shapes", "one other shape")


def make_captions(objects, *, random_state=0):
    """Five captions per image from a small grammar, as COCO has five.

    Parameters
    ----------
    objects : list of list of dict
        As returned by :func:`make_images`.
    random_state : int or None

    Returns
    -------
    captions : list of list of str
        n_images lists of 5 captions.
    """
    rng = check_random_state(random_state)
    captions = []
    for objs in objects:
        main = objs[0]
        n = len(objs)
        others = objs[1:]
        templates = [
            lambda: f"a {_describe(main, rng)} on the {main['position']}",
            lambda: f"a photo of a {_describe(main, rng, with_size=False)}",
            lambda: (f"{NUMBER_WORDS[n]} shapes on a leafy background" if n > 1
                     else f"one {_describe(main, rng, with_texture=False)} on a leafy background"),
            lambda: (f"a {_describe(main, rng, with_size=False)} next to a {_describe(others[0], rng, with_size=False)}"
                     if others else f"a single {_describe(main, rng)} in the scene"),
            lambda: f"the {main['position']} of the picture shows a {_describe(main, rng)}",
            lambda: (f"a {_describe(main, rng)} with {NUMBER_WORDS[n - 1]} other shapes" if n > 1
                     else f"a lone {_describe(main, rng, with_size=False)} among leaves"),
            lambda: f"there is a {main['texture']} {SYNONYMS[main['category']][rng.integers(2)]} here",
            lambda: "a picture of " + " and ".join(
                f"a {_describe(o, rng, with_texture=False, with_size=False)}" for o in objs[:3]),
        ]
        picks = rng.choice(len(templates), size=5, replace=False)
        captions.append([_tidy(templates[j]()) for j in picks])
    return captions


def gabor_energy(images, *, wavelengths=(4.0, 8.0, 16.0), n_orientations=4, pool=4, batch_size=256):
    """Gabor energy of greyscale images, pooled on a coarse grid.

    Energy is the modulus of the response to a quadrature pair of Gabor filters
    (a complex Gabor), the classic model of a V1 complex cell.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3), uint8
    wavelengths : sequence of float
        Filter wavelengths in pixels (one spatial scale each); the Gaussian
        envelope's sd is half the wavelength.
    n_orientations : int
    pool : int
        Side of the square pooling window (average) applied to the energy map.
    batch_size : int

    Returns
    -------
    energy : ndarray of shape (n_images, n_scales, n_orientations, height // pool, width // pool)
        Filtered at the full size; pooling windows that would overhang the bottom or
        right edge (a side that is not a multiple of ``pool``) are left out.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape (n_images, height, width, 3), got {images.shape}.")
    n, h, w, _ = images.shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    filters = []
    for lam in wavelengths:
        sigma = lam / 2.0
        for o in range(n_orientations):
            th = np.pi * o / n_orientations
            f0x, f0y = np.cos(th) / lam, np.sin(th) / lam
            # Frequency response of a complex Gabor: a Gaussian centred on the carrier frequency.
            filters.append(np.exp(-2 * np.pi**2 * sigma**2 * ((fx - f0x) ** 2 + (fy - f0y) ** 2)))
    filters = np.stack(filters).astype(np.complex64)
    out = np.empty((n, len(wavelengths), n_orientations, h // pool, w // pool), dtype=np.float32)
    for start in range(0, n, batch_size):
        grey = images[start:start + batch_size].astype(np.float32).mean(-1) / 255.0
        grey = grey - grey.mean(axis=(1, 2), keepdims=True)
        spec = np.fft.fft2(grey)[:, None]
        energy = np.abs(np.fft.ifft2(spec * filters[None]))
        # sides that are not a multiple of the pooling window (NSD's 425 px) drop the remainder
        energy = energy[..., :h // pool * pool, :w // pool * pool]
        energy = energy.reshape(len(grey), len(filters), h // pool, pool, w // pool, pool).mean((3, 5))
        out[start:start + batch_size] = energy.reshape(len(grey), len(wavelengths), n_orientations,
                                                       h // pool, w // pool)
    return out


# ---------------------------------------------------------------------------
# cortex

@dataclass
class DemoCortex:
    """Vertices of the simulated voxels and their place in each network.

    Attributes
    ----------
    voxels : VoxelInfo
    offset : ndarray of shape (n_voxels, 3)
        Pial coordinates relative to the voxel's network anchor (mm, left-hemisphere frame).
    radius : ndarray of shape (n_voxels,)
        Radius of the voxel's network patch (mm).
    """

    voxels: VoxelInfo
    offset: np.ndarray
    radius: np.ndarray


def demo_cortex():
    """Place the demo voxels on fsaverage5 (bundled with nilearn, no download).

    Returns
    -------
    cortex : DemoCortex
    """
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    anchors = []  # (network, roi, anchor, radius)
    for net, (rois, anchor, radius) in NETWORKS.items():
        if net == "default-mode":
            anchors += [(net, roi, _DMN_ANCHORS[roi], radius) for roi in rois]
        else:
            anchors.append((net, rois, anchor, radius))
    roi, network, vertex, hemi, offset, radii = [], [], [], [], [], []
    for h, part, sign in (("lh", "left", 1.0), ("rh", "right", -1.0)):
        coords = np.asarray(pial.parts[part].coordinates, dtype=float)
        coords_lh = coords * np.array([sign, 1.0, 1.0])  # mirror the right hemisphere onto the left frame
        dists = np.stack([np.linalg.norm(coords_lh - np.array(a[2]), axis=1) for a in anchors])
        scaled = dists / np.array([a[3] for a in anchors])[:, None]
        best = scaled.argmin(axis=0)
        inside = scaled[best, np.arange(coords.shape[0])] < 1.0
        for v in np.flatnonzero(inside):
            net, rois, anchor, radius = anchors[best[v]]
            d = dists[best[v], v]
            if isinstance(rois, tuple):
                # Rings of equal area, so V1, V2 and V3 get similar voxel counts.
                name = rois[min(int(len(rois) * (d / radius) ** 2), len(rois) - 1)]
            else:
                name = rois
            roi.append(name)
            network.append(net)
            vertex.append(v)
            hemi.append(h)
            offset.append(coords_lh[v] - np.array(anchor))
            radii.append(radius)
    n = len(roi)
    voxels = VoxelInfo(roi=np.array(roi, dtype=object), network=np.array(network, dtype=object),
                       vertex=np.array(vertex, dtype=np.int64), hemi=np.array(hemi, dtype=object),
                       ijk=-np.ones((n, 3), dtype=np.int64))
    return DemoCortex(voxels=voxels, offset=np.array(offset), radius=np.array(radii))


# ---------------------------------------------------------------------------
# brain responses

def _zscore_columns(F):
    F = np.asarray(F, dtype=np.float64)
    sd = F.std(axis=0)
    sd[sd == 0] = 1.0
    return (F - F.mean(axis=0)) / sd


def stimulus_features(images, objects, captions, clutter):
    """The stimulus properties the simulated networks respond to.

    Parameters
    ----------
    images : ndarray of shape (n_images, height, width, 3)
    objects : list of list of dict
    captions : list of list of str
    clutter : ndarray of shape (n_images,)

    Returns
    -------
    features : dict of str to ndarray
        ``gabor`` (n_images, n_scales, n_orientations, gy, gx); ``category``
        (n_images, n_categories) apparent size of each category;
        ``shape`` (n_images, 4) area, elongation, number of objects, striped/dotted;
        ``words`` (n_images, n_words) word frequencies over the five captions
        with ``vocabulary``; ``n_objects``, ``clutter``, ``contrast`` (n_images,).
    """
    gab = gabor_energy(images)
    n = len(images)
    cat = np.zeros((n, len(CATEGORIES)))
    shape = np.zeros((n, 4))
    for i, objs in enumerate(objects):
        for o in objs:
            cat[i, CATEGORIES.index(o["category"])] += np.sqrt(o["area"])
        shape[i] = (sum(o["area"] for o in objs),
                    np.mean([o["category"] in ("bar", "egg", "cross") for o in objs]),
                    len(objs), np.mean([o["texture"] != "plain" for o in objs]))
    vocab = sorted({w for caps in captions for c in caps for w in c.split()})
    index = {w: j for j, w in enumerate(vocab)}
    words = np.zeros((n, len(vocab)))
    for i, caps in enumerate(captions):
        for c in caps:
            for w in c.split():
                words[i, index[w]] += 1.0 / len(caps)
    grey = images.astype(np.float32).mean(-1)
    contrast = grey.std(axis=(1, 2))
    return {"gabor": gab, "category": cat, "shape": shape, "words": words, "vocabulary": vocab,
            "n_objects": shape[:, 2].copy(), "clutter": np.asarray(clutter, float), "contrast": contrast}


_SNR_RANGE = {  # (low, high) of the log-uniform noise-ceiling SNR per network
    "early visual": (0.5, 1.6), "mid-level": (0.35, 1.2), "category": (0.3, 1.2),
    "language": (0.2, 0.8), "attention": (0.2, 0.9), "default-mode": (0.2, 0.8),
}


def simulate_subject(cortex, features, *, random_state=0):
    """Noise-free responses of one subject's voxels to every image.

    Parameters
    ----------
    cortex : DemoCortex
    features : dict
        From :func:`stimulus_features`.
    random_state : int or None
        Subject-specific tuning (receptive-field jitter, preferences, SNR).

    Returns
    -------
    signal : ndarray of shape (n_images, n_voxels)
        Each voxel's response, standardised to unit variance over images.
    snr : ndarray of shape (n_voxels,)
        Planted signal-to-noise ratio (signal sd / single-trial noise sd).
    params : dict
        Per-voxel tuning used (receptive fields, preferred scale, category, ...).
    """
    rng = check_random_state(random_state)
    vox = cortex.voxels
    n_vox = len(vox)
    gab = features["gabor"]
    n_img, n_scales, n_ori, gy, gx = gab.shape
    signal = np.zeros((n_img, n_vox))
    params = {"rf_x": np.full(n_vox, np.nan), "rf_y": np.full(n_vox, np.nan),
              "rf_size": np.full(n_vox, np.nan), "scale": -np.ones(n_vox, int),
              "category": -np.ones(n_vox, int)}

    ev = np.flatnonzero(vox.network == "early visual")
    if len(ev):
        off = cortex.offset[ev]
        ecc = np.clip(np.linalg.norm(off, axis=1) / cortex.radius[ev], 0.02, 1.0) * 0.42
        phi = np.arctan2(off[:, 2], np.abs(off[:, 0]) + 1e-6)  # dorsal vertices -> lower field
        hemi_sign = np.where(vox.hemi[ev] == "lh", 1.0, -1.0)  # left hemisphere sees the right field
        x = 0.5 + hemi_sign * ecc * np.cos(phi) + rng.normal(0, 0.02, len(ev))
        y = 0.5 + ecc * np.sin(phi) + rng.normal(0, 0.02, len(ev))
        size = 0.04 + 0.25 * ecc + rng.uniform(0, 0.02, len(ev))
        # Fovea prefers fine scales, periphery coarse ones, as in V1.
        scale = np.clip(np.round(ecc / 0.42 * (n_scales - 1) + rng.normal(0, 0.5, len(ev))), 0, n_scales - 1).astype(int)
        cy, cx = (np.arange(gy) + 0.5) / gy, (np.arange(gx) + 0.5) / gx
        rf = np.exp(-((cx[None, None, :] - x[:, None, None]) ** 2 + (cy[None, :, None] - y[:, None, None]) ** 2)
                    / (2 * size[:, None, None] ** 2))
        rf /= rf.sum(axis=(1, 2), keepdims=True)
        ori_w = 1.0 + 0.5 * rng.uniform(size=(len(ev), n_ori))
        for s in range(n_scales):
            sel = scale == s
            if not sel.any():
                continue
            E = gab[:, s].reshape(n_img, n_ori, gy * gx)  # (n_img, n_ori, n_pos)
            weights = ori_w[sel][:, :, None] * rf[sel].reshape(sel.sum(), 1, -1)  # (n_v, n_ori, n_pos)
            drive = E.reshape(n_img, -1) @ weights.reshape(sel.sum(), -1).T
            signal[:, ev[sel]] = np.sqrt(np.maximum(drive, 0))
        params["rf_x"][ev], params["rf_y"][ev], params["rf_size"][ev] = x, y, size
        params["scale"][ev] = scale

    def linear(idx, F, sparsity=1.0, positive=False):
        F = _zscore_columns(F)
        W = rng.normal(size=(F.shape[1], len(idx)))
        if positive:
            W = np.abs(W)
        if sparsity < 1.0:
            W *= rng.uniform(size=W.shape) < sparsity
        signal[:, idx] = F @ W

    mid = np.flatnonzero(vox.network == "mid-level")
    if len(mid):
        quad = gab.reshape(n_img, n_scales, n_ori, 2, gy // 2, 2, gx // 2).mean((4, 6)).reshape(n_img, -1)
        linear(mid, np.hstack([quad, features["shape"][:, [0, 1, 3]]]), sparsity=0.3, positive=True)
    cat_vox = np.flatnonzero(vox.network == "category")
    if len(cat_vox):
        pref = rng.integers(len(CATEGORIES), size=len(cat_vox))
        W = 0.15 * rng.uniform(size=(len(CATEGORIES), len(cat_vox)))
        W[pref, np.arange(len(cat_vox))] = 1.0
        signal[:, cat_vox] = features["category"] @ W
        params["category"][cat_vox] = pref
    lang = np.flatnonzero(vox.network == "language")
    if len(lang):
        linear(lang, features["words"], sparsity=0.15)
    att = np.flatnonzero(vox.network == "attention")
    if len(att):
        drivers = _zscore_columns(np.column_stack([features["n_objects"], features["clutter"]]))
        w = rng.uniform(0.5, 1.5, size=(2, len(att)))
        signal[:, att] = drivers @ w
    dmn = np.flatnonzero(vox.network == "default-mode")
    if len(dmn):
        drivers = _zscore_columns(np.column_stack([features["contrast"], features["n_objects"]]))
        w = rng.uniform(0.5, 1.5, size=(2, len(dmn)))
        # Deactivated by stimulation (the polarity analyses' target), plus a voxel-specific
        # semantic component so the patch is not one voxel copied 500 times.
        words = _zscore_columns(features["words"])
        idiosyncratic = _zscore_columns(words @ (rng.normal(size=(words.shape[1], len(dmn)))
                                                 * (rng.uniform(size=(words.shape[1], len(dmn))) < 0.1)))
        signal[:, dmn] = -_zscore_columns(drivers @ w) + 0.6 * idiosyncratic

    signal = _zscore_columns(signal)
    snr = np.empty(n_vox)
    for net, (lo, hi) in _SNR_RANGE.items():
        sel = vox.network == net
        snr[sel] = np.exp(rng.uniform(np.log(lo), np.log(hi), sel.sum()))
    return signal, snr, params


def _trials(signal_rows, snr, n_repeats, n_sessions, rng):
    """Single trials with session drifts, as a scanner would record them."""
    n_img, n_vox = signal_rows.shape
    image_of_trial = np.repeat(np.arange(n_img), n_repeats)
    order = rng.permutation(len(image_of_trial))
    image_of_trial = image_of_trial[order]
    session = np.repeat(np.arange(n_sessions), int(np.ceil(len(order) / n_sessions)))[:len(order)]
    noise = rng.normal(size=(len(order), n_vox)) / snr[None, :]
    raw = signal_rows[image_of_trial] + noise
    offsets = rng.normal(0, 0.5, size=(n_sessions, n_vox))
    gains = rng.uniform(0.7, 1.3, size=(n_sessions, n_vox))
    raw = raw * gains[session] + offsets[session]
    return raw.astype(np.float32), image_of_trial, session


def make_demo_world(path=None, *, seed=0, n_subjects=3, n_shared=200, n_train=800,
                    image_size=64, n_repeats=3, n_sessions=6, return_truth=False,
                    overwrite=False):
    """Generate the demo world and write it as a subset.

    Parameters
    ----------
    path : str or Path or None
        Where to write; None writes nothing (use with ``return_truth=True``).
    seed : int
        Everything follows from it: the same seed gives the same bytes.
    n_subjects : int
    n_shared : int
        Test images seen by every subject (NSD's shared1000).
    n_train : int
        Training images per subject, distinct across subjects.
    image_size : int
    n_repeats : int
        Trials per image.
    n_sessions : int
        Sessions the trials are spread over (z-scored separately).
    return_truth : bool
        Also return the noise-free signal, planted SNR and tuning per subject.
    overwrite : bool

    Returns
    -------
    path : Path or None
    truth : dict, only when return_truth
        ``features``, ``objects`` and, per subject, ``signal``
        (n_subject_images, n_voxels), ``snr``, ``params``.
    """
    if n_repeats < 2:
        raise ValueError(f"n_repeats={n_repeats} must be >= 2 to compute a noise ceiling.")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**31, size=3 + n_subjects)
    n_images = n_shared + n_subjects * n_train
    images, objects, clutter = make_images(n_images, image_size=image_size, random_state=int(seeds[0]))
    captions = make_captions(objects, random_state=int(seeds[1]))
    feats = stimulus_features(images, objects, captions, clutter)
    shared = np.zeros(n_images, dtype=bool)
    shared[:n_shared] = True
    main = [o[0] for o in objects]
    attributes = {
        "category": np.array([CATEGORIES.index(o["category"]) for o in main]),
        "category_name": np.array([o["category"] for o in main], dtype=object),
        "colour": np.array([o["colour"] for o in main], dtype=object),
        "texture": np.array([o["texture"] for o in main], dtype=object),
        "size": np.array([o["size"] for o in main], dtype=object),
        "position": np.array([o["position"] for o in main], dtype=object),
        "n_objects": feats["n_objects"].astype(int),
        "clutter": feats["clutter"], "contrast": feats["contrast"],
        "category_area": feats["category"],
    }
    stimuli = StimulusSet(images=images, stimulus_id=np.arange(n_images), coco_id=-np.ones(n_images, int),
                          shared=shared, captions=captions, attributes=attributes)
    cortex = demo_cortex()
    subjects, truth = {}, {"features": feats, "objects": objects, "subjects": {}}
    for s in range(n_subjects):
        name = f"subj{s + 1:02d}"
        srng = np.random.default_rng(seeds[3 + s])
        own = n_shared + s * n_train + np.arange(n_train)
        image_index = np.concatenate([np.arange(n_shared), own])
        signal_all, snr, params = simulate_subject(cortex, feats, random_state=srng)
        signal = signal_all[image_index]
        raw, trial_row, session = _trials(signal, snr, n_repeats, n_sessions, srng)
        trial_betas = zscore_per_session(raw, session)
        betas, rows, n_trials = average_repeats(trial_betas, trial_row)
        ncsnr = compute_ncsnr(trial_betas, trial_row)
        subjects[name] = dict(image_index=image_index[rows],
                              split=np.where(shared[image_index[rows]], "test", "train"),
                              betas=betas, n_trials=n_trials, trial_betas=trial_betas,
                              trial_image_index=image_index[trial_row], trial_session=session,
                              ncsnr=ncsnr, voxels=cortex.voxels)
        truth["subjects"][name] = {"signal": signal[rows], "snr": snr, "params": params}
    if path is not None:
        params = dict(seed=seed, n_subjects=n_subjects, n_shared=n_shared, n_train=n_train,
                      image_size=image_size, n_repeats=n_repeats, n_sessions=n_sessions)
        path = write_subset(
            path, stimuli=stimuli, subjects=subjects, source="demo", space="fsaverage5",
            roi="demo-networks", name="demo", overwrite=overwrite,
            description=("SYNTHETIC: dead-leaves images with objects and a simulated brain "
                         "(scaleinv_utils.demo). Not real data."),
            extra={"demo_version": DEMO_VERSION, "generator": params})
    return (path, truth) if return_truth else path


def demo_subset_path(seed=0, **kwargs):
    """Path of the cached demo world, generating it on first use (a few seconds).

    Parameters
    ----------
    seed : int
    **kwargs
        Other parameters of :func:`make_demo_world`.

    Returns
    -------
    path : pathlib.Path
    """
    tag = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    name = f"demo-v{DEMO_VERSION}-seed{seed}" + (f"-{tag}" if tag else "")
    path = data_dir("subsets") / name
    manifest = path / "manifest.json"
    if manifest.exists():
        try:
            if json.loads(manifest.read_text()).get("demo_version") == DEMO_VERSION:
                return path
        except json.JSONDecodeError:
            pass
    try:
        make_demo_world(path, seed=seed, overwrite=path.exists(), **kwargs)
    except (ValueError, OSError):
        # Another process may have finished the same build first; use it if complete.
        if not manifest.exists():
            raise
        warnings.warn(f"demo world at {path} was built by another process; using it.")
    return path
