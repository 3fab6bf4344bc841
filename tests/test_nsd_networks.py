"""Functional-network labels of real NSD subsets, from the atlases NSD ships on fsaverage.

The expected networks here are written out by hand for the fixture's atlas
names, independently of ``nsd.NETWORK_AREAS``, so a change to the mapping
shows up as a failing test.
"""
import numpy as np
import pytest

from nsd_fixtures import HCP, KASTNER, NSDServer, PRF, STREAMS, make_nsd_tree
from scaleinv_utils import load_subset, nsd
from scaleinv_utils.remote import HTTPClient

EXPECTED = {
    "streams": {"early": "early visual", "midventral": "mid-level", "midlateral": "mid-level",
                "midparietal": "mid-level", "ventral": "category", "lateral": "category",
                "parietal": "attention"},
    "Kastner2015": {**{a: "early visual" for a in ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d")},
                    **{a: "mid-level" for a in ("hV4", "VO1", "VO2", "PHC1", "PHC2", "TO2",
                                                "TO1", "LO2", "LO1", "V3b", "V3a")},
                    **{a: "attention" for a in ("IPS0", "IPS1", "IPS2", "IPS3", "IPS4", "IPS5",
                                                "SPL1", "FEF")}},
    "HCP_MMP1": {"V1": "early visual", "44": "language", "45": "language", "STSdp": "language",
                 "TPOJ1": "language", "PCV": "default-mode", "7m": "default-mode",
                 "p32": "default-mode", "FEF": "attention", "IPS1": "attention",
                 "FFC": "category", "MT": "mid-level"},  # A1 (auditory): "other"
}
NAMES = {"streams": STREAMS, "Kastner2015": KASTNER, "HCP_MMP1": HCP}


def expected_networks(labels, atlases=("HCP_MMP1", "streams", "Kastner2015")):
    """Network of each voxel from the fixture's integer labels; later atlases take precedence."""
    n = len(next(iter(labels.values())))
    out = np.full(n, "other", dtype=object)
    for atlas in atlases:
        for i, v in enumerate(np.asarray(labels[atlas]).ravel()):
            if v > 0 and NAMES[atlas][v] in EXPECTED[atlas]:
                out[i] = EXPECTED[atlas][NAMES[atlas][v]]
    return out


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEINV_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def prepare(srv, **kw):
    spec = nsd.NSDSpec(**{"subjects": [1], "n_train": 3, **kw})
    return nsd.prepare(spec, agree_terms=True, base_url=srv.url, progress=False,
                       client=HTTPClient(progress=False, backoff=0.001),
                       captions=[srv.url + "coco/captions_train2017.json"])


def test_network_labels_mapping_and_precedence():
    got = nsd.network_labels(
        streams=["early", "", "lateral", "", "", "parietal", None, ""],
        kastner=["", "hV4", "", "IPS3", "", "", "", ""],
        hcp=["PCV", "V1", "STSdp", "44", "L_10r_ROI", "A1", "rh.FEF", "R_TPOJ1_ROI"])
    assert got.tolist() == ["early visual", "mid-level", "category", "attention",
                            "default-mode", "attention", "attention", "language"]
    assert nsd.network_labels(hcp=["A1", "", "unknown area"]).tolist() == ["other"] * 3
    assert set(nsd.NETWORKS) == {"early visual", "mid-level", "category", "attention",
                                 "language", "default-mode", "other"}
    for atlas in nsd.NETWORK_AREAS.values():
        assert set(atlas) <= set(nsd.NETWORKS)
    with pytest.raises(ValueError, match="at least one atlas"):
        nsd.network_labels()
    with pytest.raises(ValueError, match="differ in length"):
        nsd.network_labels(streams=["early"], hcp=["V1", "V2"])


def test_network_names_match_the_demo_world():
    # chapters select voxels by network name: real subsets must use the demo world's names
    from scaleinv_utils import demo
    src = open(demo.__file__).read()
    for net in set(nsd.NETWORKS) - {"other"}:
        assert f'"{net}"' in src


def test_atlas_files_follow_nsd_layout():
    assert nsd.nsd_file("roi", 1, "fsaverage", hemi="lh", roi="HCP_MMP1") == (
        "nsddata/freesurfer/fsaverage/label/lh.HCP_MMP1.mgz")
    assert nsd.nsd_file("ctab", 1, "fsaverage", roi="Kastner2015") == (
        "nsddata/freesurfer/fsaverage/label/Kastner2015.mgz.ctab")
    assert nsd.nsd_file("roi", 3, roi="Kastner2015") == (
        "nsddata/ppdata/subj03/func1pt8mm/roi/Kastner2015.nii.gz")
    spec = nsd.NSDSpec(space="fsaverage5")
    plan = nsd._plan(spec)
    for h in ("lh", "rh"):
        for atlas in nsd.ATLASES:
            assert f"nsddata/freesurfer/fsaverage/label/{h}.{atlas}.mgz" in plan
    assert "nsddata/freesurfer/fsaverage/label/HCP_MMP1.mgz.ctab" in plan
    assert not any("HCP_MMP1" in f for f in nsd._plan(nsd.NSDSpec(networks=False)))


def test_surface_subset_networks_land_on_the_right_vertices(tmp_path, env):
    root = tmp_path / "surf"
    truth = make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8,
                          n_shared=3, n_images=30, surface=True, n_vertices=10300,
                          roi_fraction=0.3)
    with NSDServer(root) as srv:
        roi_path = prepare(srv, space="fsaverage5", trials_per_session=12)
        cortex_path = prepare(srv, space="fsaverage5", roi="cortex", trials_per_session=12)
    lab = truth["subjects"][1]["labels"]
    for path in (roi_path, cortex_path):
        vox = load_subset(path).subject(1).voxels
        for h in ("lh", "rh"):
            on = vox.hemi == h
            v = vox.vertex[on]
            want = expected_networks({a: lab[h][a][v] for a in NAMES})
            np.testing.assert_array_equal(vox.network[on], want)
            prf = lab[h]["prf-visualrois"][v]
            np.testing.assert_array_equal(vox.roi[on][prf > 0], np.array(PRF, object)[prf[prf > 0]])
    # over the whole cortex, every network appears; outside the ROI, HCP_MMP1 alone decides
    nets = load_subset(cortex_path).subject(1).voxels.network
    assert set(nets) == set(nsd.NETWORKS)


def test_volume_subset_networks_and_streams_only_option(tmp_path, env):
    root = tmp_path / "vol"
    truth = make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8,
                          n_shared=3, n_images=30, vol_shape=(8, 9, 7))
    lab = truth["subjects"][1]["labels"]
    with NSDServer(root) as srv:
        path = prepare(srv, roi="cortex", trials_per_session=12)
        srv.requests.clear()
        only = prepare(srv, roi="cortex", trials_per_session=12, networks=False, name="streams")
        assert not any("Kastner2015" in r[1] or "HCP_MMP1" in r[1] for r in srv.requests)
    vox = load_subset(path).subject(1).voxels
    at = tuple(vox.ijk.T)
    np.testing.assert_array_equal(vox.network, expected_networks({a: lab[a][at] for a in NAMES}))
    assert {"language", "default-mode", "attention"} <= set(vox.network)
    vox = load_subset(only).subject(1).voxels
    np.testing.assert_array_equal(vox.network, expected_networks({"streams": lab["streams"][at]},
                                                                 atlases=("streams",)))


def test_an_atlas_as_the_roi(tmp_path, env):
    # roi="Kastner2015": its labelled vertices only, named by the atlas (prf-visualrois first)
    root = tmp_path / "surf"
    truth = make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8,
                          n_shared=3, n_images=30, surface=True, n_vertices=10300)
    with NSDServer(root) as srv:
        path = prepare(srv, space="fsaverage5", roi="Kastner2015", trials_per_session=12)
    vox = load_subset(path).subject(1).voxels
    lab = truth["subjects"][1]["labels"]["lh"]
    on = vox.hemi == "lh"
    v = vox.vertex[on]
    np.testing.assert_array_equal(v, np.flatnonzero(lab["Kastner2015"][:nsd.N_FSAVERAGE5] > 0))
    prf = lab["prf-visualrois"][v]
    want = np.where(prf > 0, np.array(PRF, object)[prf],
                    np.array(KASTNER, object)[lab["Kastner2015"][v]])
    np.testing.assert_array_equal(vox.roi[on], want)


def test_cli_network_flag_reaches_the_spec():
    from scaleinv_utils.cli import _specs, build_parser

    with_networks = _specs(build_parser().parse_args(["prepare", "--roi", "HCP_MMP1"]))[0]
    without = _specs(build_parser().parse_args(["prepare", "--no-networks"]))[0]
    assert with_networks.networks and with_networks.roi == "HCP_MMP1"
    assert not without.networks
