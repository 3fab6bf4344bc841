"""Plot helpers: what they return, where values land, and their errors."""
import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from scaleinv_utils import plotting  # noqa: E402


def _voxels(n=40, seed=0):
    rng = np.random.default_rng(seed)
    vertex = np.r_[rng.choice(10242, n // 2, replace=False), rng.choice(10242, n - n // 2, replace=False)]
    hemi = np.array(["lh"] * (n // 2) + ["rh"] * (n - n // 2))
    roi = np.array(["V1", "V2"])[np.arange(n) % 2]
    return SimpleNamespace(vertex=vertex, hemi=hemi, roi=roi, network=roi,
                           ijk=-np.ones((n, 3), int))


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_surface_maps_places_values_and_leaves_rest_nan():
    vox = _voxels()
    values = np.arange(40, dtype=float)
    maps = plotting.surface_maps(values, vox)
    assert maps["left"].shape == (10242,) and maps["right"].shape == (10242,)
    np.testing.assert_array_equal(maps["left"][vox.vertex[:20]], values[:20])
    np.testing.assert_array_equal(maps["right"][vox.vertex[20:]], values[20:])
    assert np.isnan(maps["left"]).sum() == 10242 - 20


def test_surface_maps_averages_duplicate_vertices_and_skips_nan():
    vox = SimpleNamespace(vertex=np.array([5, 5, 7]), hemi=np.array(["lh", "lh", "lh"]))
    maps = plotting.surface_maps(np.array([1.0, 3.0, np.nan]), vox)
    assert maps["left"][5] == 2.0
    assert np.isnan(maps["left"][7])


def test_plot_surface_panels():
    vox = _voxels()
    fig = plotting.plot_surface(np.linspace(-1, 1, 40), vox, view=["lateral", "posterior"],
                                title="t")
    # 4 surface panels + 1 colour bar
    assert len(fig.axes) == 5
    fig = plotting.plot_surface(np.linspace(0, 1, 40), vox, hemi="left", colorbar=False,
                                roi_outlines=False)
    assert len(fig.axes) == 1


def test_plot_surface_into_given_axes():
    vox = _voxels()
    fig, axes = plt.subplots(1, 2, subplot_kw={"projection": "3d"})
    out = plotting.plot_surface(np.ones(40), vox, axes=axes, colorbar=False)
    assert out is fig
    with pytest.raises(ValueError, match="one 3-D axes per panel"):
        plotting.plot_surface(np.ones(40), vox, axes=axes[:1])


def test_plot_surface_labels_legend():
    vox = _voxels()
    fig = plotting.plot_surface_labels(vox.roi, vox)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["V1", "V2"]
    fig = plotting.plot_surface_labels(vox.roi, vox, order=["V2"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["V2"]


def test_surface_errors():
    vox = _voxels()
    with pytest.raises(ValueError, match="voxels describes 40"):
        plotting.plot_surface(np.ones(39), vox)
    with pytest.raises(ValueError, match="hemi must be"):
        plotting.plot_surface(np.ones(40), vox, hemi="top")
    bad = SimpleNamespace(vertex=np.array([-1, 2]), hemi=np.array(["", ""]))
    with pytest.raises(ValueError, match="plot_volume"):
        plotting.surface_maps(np.ones(2), bad)
    big = SimpleNamespace(vertex=np.array([20000]), hemi=np.array(["lh"]))
    with pytest.raises(ValueError, match="space='fsaverage'"):
        plotting.surface_maps(np.ones(1), big, space="fsaverage5")
    assert plotting.surface_maps(np.ones(1), big)["left"].shape == (163842,)
    with pytest.raises(TypeError, match="VoxelInfo"):
        plotting.surface_maps(np.ones(2), object())


def test_plot_volume():
    rng = np.random.default_rng(0)
    vox = SimpleNamespace(ijk=rng.integers(0, 8, (30, 3)))
    fig = plotting.plot_volume(rng.normal(size=30), vox, np.diag([1.8, 1.8, 1.8, 1.0]))
    assert len(fig.axes) >= 3  # three orthogonal cuts (plus a colour bar)
    with pytest.raises(ValueError, match="surface subset"):
        plotting.plot_volume(np.ones(40), _voxels(), np.eye(4))


def test_plot_profile():
    ks = np.geomspace(5, 500, 6)
    vals = np.vstack([np.linspace(0, 1, 6), np.linspace(1, 0, 6)])
    fig = plotting.plot_profile(ks, vals, lower=vals - 0.1, upper=vals + 0.1, labels=["a", "b"])
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    assert ax.get_xscale() == "log"
    fig = plotting.plot_profile(ks, vals[0])
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="n_scales=6"):
        plotting.plot_profile(ks, np.ones(5))
    with pytest.raises(ValueError, match="both lower and upper"):
        plotting.plot_profile(ks, vals, lower=vals)


def test_plot_profile_draws_each_curve_in_its_own_line_style():
    ks = np.geomspace(5, 500, 6)
    vals = np.vstack([np.ones(6), np.ones(6)])   # two curves on top of each other
    fig = plotting.plot_profile(ks, vals, linestyles=["-", "--"])
    assert [line.get_linestyle() for line in fig.axes[0].lines] == ["-", "--"]
    with pytest.raises(ValueError, match="linestyles must have one entry per curve \\(2\\), got 1"):
        plotting.plot_profile(ks, vals, linestyles=["-"])


def test_model_colors_are_fixed_per_name_whatever_else_is_plotted():
    a = plotting.model_colors(["demo-random", "demo-clip-full-data/final", "clip-vit-b-32-openai"])
    b = plotting.model_colors(["clip-vit-b-32-openai", "demo-clip-full-data/block1"])
    assert a["clip-vit-b-32-openai"] == b["clip-vit-b-32-openai"]
    assert a["demo-clip-full-data/final"] == b["demo-clip-full-data/block1"] == \
        plotting.MODEL_COLORS["demo-clip-full-data"]
    assert len(set(plotting.model_colors(plotting.MODEL_COLORS).values())) == len(plotting.MODEL_COLORS)
    assert plotting.model_colors(["not-a-model"]) == plotting.model_colors(["not-a-model"])


def test_signed_cmap_keeps_small_values_visible():
    import matplotlib.colors as mcolors
    cmap = plotting.signed_cmap(gap=0.25)
    just_below, just_above = cmap(0.499), cmap(0.501)
    # Both sides of zero are saturated colours, not the pale centre of RdBu_r.
    for colour in (just_below, just_above):
        assert mcolors.rgb_to_hsv(colour[:3])[1] > 0.3
    assert just_below[2] > just_below[0] and just_above[0] > just_above[2]  # blue < 0 < red
    with pytest.raises(ValueError, match="gap must be in"):
        plotting.signed_cmap(gap=0.5)


def test_rounded_prints_no_negative_zero():
    import pandas as pd
    assert f"{plotting.rounded(-0.0004):.3f}" == "0.000"
    assert f"{plotting.rounded(-0.0006):.3f}" == "-0.001"
    assert f"{-0.0004:.3f}" == "-0.000"          # what a plain format prints
    arr = plotting.rounded(np.array([-1e-5, 0.12345, -0.2]), 2)
    assert [f"{v:.2f}" for v in arr] == ["0.00", "0.12", "-0.20"]
    table = pd.DataFrame({"r": [-1e-4, 0.5], "ci": ["[-0.1, 0.1]", "[0.4, 0.6]"], "n": [3, 4]})
    shown = plotting.rounded(table, 3)
    assert "-0.0" not in shown.to_string() and shown["ci"].tolist() == table["ci"].tolist()
    assert shown["n"].dtype == table["n"].dtype   # counts stay integers
    assert "-0.0" in table.round(3).to_string()   # pandas alone keeps the sign
    assert "-0.0" not in plotting.rounded(table["r"], 3).to_string()
    with pytest.raises(ValueError, match="decimals must be a non-negative integer, got -1"):
        plotting.rounded(0.5, -1)
