"""Real-NSD subsets built end to end against a miniature NSD bucket on 127.0.0.1."""
import numpy as np
import pytest

from nsd_fixtures import FLOC, PRF, NSDServer, make_nsd_tree
from scaleinv_utils import load_subset, nsd
from scaleinv_utils.cli import main
from scaleinv_utils.remote import DownloadError, HTTPClient
from scaleinv_utils.reliability import zscore_per_session

TPS = 60  # trials per session in the fixture (NSD: 750)


@pytest.fixture(scope="module")
def volume_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("nsd_volume")
    return root, make_nsd_tree(root, trials_per_session=TPS)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEINV_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("SCALEINV_NSD_AGREE", raising=False)
    return tmp_path / "data"


def build(srv, root, **kw):
    spec = nsd.NSDSpec(**{"subjects": [1], "n_train": 10, "trials_per_session": TPS, **kw})
    client = HTTPClient(progress=False, backoff=0.001, timeout=5)
    path = nsd.prepare(spec, agree_terms=True, base_url=srv.url, client=client, progress=False,
                       captions=[srv.url + "coco/captions_train2017.json"])
    return path, client


def test_volume_subset_end_to_end(volume_tree, env, capsys):
    root, truth = volume_tree
    with NSDServer(root) as srv:
        path, client = build(srv, root)
        assert "Terms" in capsys.readouterr().out  # terms shown before the first download
        assert client.bytes_received <= srv.bytes_sent
    subset = load_subset(path, verify=True)
    assert subset.source == "nsd" and subset.space == "func1pt8mm"
    st, sub, t = subset.stimuli, subset.subject(1), truth["subjects"][1]

    # every shared image of the sessions is a test image; 10 training images
    assert set(st.stimulus_id[st.shared]) == set(truth["shared"])
    assert sub.test.sum() == len(truth["shared"]) and sub.train.sum() == 10
    np.testing.assert_array_equal(st.images, truth["images"][st.stimulus_id])
    np.testing.assert_array_equal(st.coco_id, truth["coco"][st.stimulus_id])
    for cid, caps in zip(st.coco_id, st.captions):
        assert caps == truth["captions"][int(cid)][:5]

    # trials: the right images, z-scored over all of their session's trials, ROI voxels only
    ijk = sub.voxels.ijk
    assert len(ijk) == t["mask"].sum() and t["mask"][tuple(ijk.T)].all()
    trial_ids = st.stimulus_id[sub.trial_image_index]
    for sess in np.unique(sub.trial_session):
        rows = np.flatnonzero(t["session"] == sess)
        z = zscore_per_session(t["raw"][sess][(slice(None),) + tuple(ijk.T)] / 300.0,
                               np.zeros(len(rows)))
        keep = np.isin(t["nsd_id"][rows], st.stimulus_id[sub.image_index])
        mine = sub.trial_session == sess
        np.testing.assert_array_equal(trial_ids[mine], t["nsd_id"][rows][keep])
        np.testing.assert_allclose(sub.trial_betas[mine], z[keep], atol=1e-5)
    assert (sub.n_trials == 3).all()
    for row, img in enumerate(sub.image_index[:5]):
        np.testing.assert_allclose(sub.betas[row], sub.trial_betas[sub.trial_image_index == img]
                                   .mean(0), atol=1e-5)
    np.testing.assert_allclose(sub.ncsnr, t["ncsnr"][tuple(ijk.T)])
    np.testing.assert_allclose(sub.affine, t["affine"])
    # networks are the book's (from streams, Kastner2015, HCP_MMP1), not atlas area names
    assert set(sub.voxels.network) <= set(nsd.NETWORKS)
    assert "early visual" in set(sub.voxels.network)
    assert "V1v" in set(sub.voxels.roi)


def test_rerun_is_a_noop(volume_tree, env):
    root, truth = volume_tree
    with NSDServer(root) as srv:
        build(srv, root)
        n_req, sent = len(srv.requests), srv.bytes_sent
        build(srv, root)
        assert (len(srv.requests), srv.bytes_sent) == (n_req, sent)


def test_volume_range_reads_fetch_only_roi_chunks(tmp_path):
    # NSD-sized chunks (750 trials of one voxel) in a small volume, ROI = 10% of it
    truth = make_nsd_tree(tmp_path, n_sessions=1, trials_per_session=750, n_subject_images=250,
                          roi_fraction=0.1)
    t = truth["subjects"][1]
    ijk = np.argwhere(t["mask"])
    rel = nsd.nsd_file("betas", 1, session=1)
    with NSDServer(tmp_path) as srv:
        client = HTTPClient(progress=False)
        B = nsd.read_volume_betas(client, srv.url + rel, ijk, t["mask"].shape)
    np.testing.assert_allclose(B, t["raw"][1][(slice(None),) + tuple(ijk.T)] / 300.0, rtol=1e-6)
    needed = len(ijk) * 750 * 2
    assert client.bytes_received == srv.bytes_sent
    assert srv.bytes_sent < 2 * needed < (tmp_path / rel).stat().st_size / 4


def test_fault_injection_ends_in_the_same_subset(volume_tree, env, tmp_path):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        clean, _ = build(srv, root, name="clean")
        ref = load_subset(clean).subject(1)
    env2 = tmp_path / "faulty"
    import os
    os.environ["SCALEINV_DATA"] = str(env2)
    with NSDServer(root) as srv:
        srv.faults["nsddata/experiments/nsd/nsd_expdesign.mat"] = ["drop:100", "500"]
        srv.faults["nsddata/experiments/nsd/nsd_stim_info_merged.csv"] = ["truncate:50"]
        srv.faults["nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/"
                   "betas_session02.hdf5"] = ["500", "drop:30"]
        srv.faults["nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"] = ["truncate:10"]
        path, _ = build(srv, root, name="clean")
    got = load_subset(path, verify=True).subject(1)
    np.testing.assert_array_equal(got.trial_betas, ref.trial_betas)
    np.testing.assert_array_equal(got.betas, ref.betas)


def test_interrupted_prepare_leaves_no_subset_and_resumes(volume_tree, env):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        srv.missing.add("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
        with pytest.raises(DownloadError, match="404"):
            build(srv, root)
        subsets = env / "subsets"
        assert not list(subsets.glob("*/manifest.json"))  # nothing that looks complete
        assert not list(subsets.glob(".*"))               # no half-written directory either
        assert nsd.verify() == {}
        small = srv.bytes_sent
        srv.missing.clear()
        srv.requests.clear()
        path, _ = build(srv, root)
        # the small files were cached by the first run and are not fetched again
        assert not any(r[1].endswith((".csv", ".mat", ".nii.gz")) and r[0] == "GET"
                       for r in srv.requests)
        assert small > 0
    assert load_subset(path).subject(1).betas.shape[0] == 30


def test_terms_must_be_agreed_before_any_request(volume_tree, env, monkeypatch):
    root, _ = volume_tree
    spec = nsd.NSDSpec(trials_per_session=TPS)
    with NSDServer(root) as srv:
        with pytest.raises(nsd.TermsNotAccepted, match="naturalscenesdataset.org"):
            nsd.prepare(spec, base_url=srv.url, progress=False)
        with pytest.raises(nsd.TermsNotAccepted):
            nsd.download(spec, base_url=srv.url, progress=False)
        assert srv.requests == []
        monkeypatch.setenv("SCALEINV_NSD_AGREE", "1")
        paths = nsd.download(spec, base_url=srv.url, progress=False)
    assert all(p.is_file() for p in paths.values())


def test_responses_tsv_gives_the_same_trials(volume_tree, env):
    root, truth = volume_tree
    t = truth["subjects"][1]
    nsd_id, session, shared = nsd.trials_from_expdesign(
        root / nsd.nsd_file("expdesign"), 1, trials_per_session=TPS)
    nsd_id2, session2 = nsd.trials_from_responses(root / nsd.nsd_file("responses", 1))
    np.testing.assert_array_equal(nsd_id, t["nsd_id"])
    np.testing.assert_array_equal(nsd_id2, nsd_id)
    np.testing.assert_array_equal(session2, session)
    np.testing.assert_array_equal(np.sort(shared), truth["shared"])


def test_select_trials():
    nsd_id = np.array([1, 2, 3, 1, 2, 3, 4, 4, 5])
    session = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3])
    keep, train, test = nsd.select_trials(nsd_id, session, [1], sessions=[1, 2], n_train=1,
                                          random_state=0)
    assert list(test) == [1] and len(train) == 1 and train[0] in (2, 3)
    assert keep.sum() == 4 and not keep[6:].any()
    keep, train, test = nsd.select_trials(nsd_id, session, [1], sessions=[1, 2, 3], test=False)
    assert len(test) == 0 and list(train) == [2, 3, 4, 5]


def test_spec_validation():
    with pytest.raises(ValueError, match="subjects must be NSD subjects 1..8"):
        nsd.NSDSpec(subjects=[9])
    with pytest.raises(ValueError, match="space must be one of"):
        nsd.NSDSpec(space="MNI")
    with pytest.raises(ValueError, match="roi must be one of"):
        nsd.NSDSpec(roi="V1")
    with pytest.raises(ValueError, match="no image"):
        nsd.NSDSpec(test=False, n_train=0)
    assert nsd.NSDSpec(subjects=2, roi="streams").name == "nsd-subj02-streams-train1000"
    with pytest.raises(ValueError, match="hemi"):
        nsd.nsd_file("betas", 1, "fsaverage", session=1)


def test_file_names_follow_nsd_layout():
    assert nsd.nsd_file("betas", 1, "func1pt8mm", session=3) == (
        "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_session03.hdf5")
    assert nsd.nsd_file("betas", 5, "fsaverage5", session=40, hemi="rh") == (
        "nsddata_betas/ppdata/subj05/fsaverage/betas_fithrf_GLMdenoise_RR/rh.betas_session40.mgh")
    assert nsd.nsd_file("roi", 2, roi="floc-faces") == "nsddata/ppdata/subj02/func1pt8mm/roi/floc-faces.nii.gz"
    assert nsd.nsd_file("stimuli") == "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"


def test_surface_fsaverage5_subset(tmp_path, env):
    root = tmp_path / "surf"
    truth = make_nsd_tree(root, trials_per_session=30, n_sessions=2, n_subject_images=20,
                          n_shared=8, n_images=60, surface=True, n_vertices=10300)
    with NSDServer(root) as srv:
        spec = nsd.NSDSpec(subjects=[1], space="fsaverage5", n_train=5, trials_per_session=30)
        path = nsd.prepare(spec, agree_terms=True, base_url=srv.url, progress=False,
                           client=HTTPClient(progress=False, backoff=0.001),
                           captions=[srv.url + "coco/captions_train2017.json"])
    subset = load_subset(path)
    sub, t = subset.subject(1), truth["subjects"][1]
    assert subset.space == "fsaverage5" and (sub.voxels.vertex < nsd.N_FSAVERAGE5).all()
    lh = sub.voxels.hemi == "lh"
    np.testing.assert_array_equal(sub.voxels.vertex[lh], np.flatnonzero(t["mask"]["lh"][:10242]))
    rows = t["session"] == 1
    z = zscore_per_session(t["raw"]["lh"][1][:, sub.voxels.vertex[lh]], np.zeros(rows.sum()))
    keep = np.isin(t["nsd_id"][rows], subset.stimuli.stimulus_id[sub.image_index])
    np.testing.assert_allclose(sub.trial_betas[sub.trial_session == 1][:, lh], z[keep], atol=1e-5)
    np.testing.assert_allclose(sub.ncsnr[lh], t["ncsnr"]["lh"][sub.voxels.vertex[lh]])


def test_vertices_without_data_are_left_out_and_counted(tmp_path, env):
    # fsaverage's medial wall has no data (NaN betas); a vertex can also lose one session.
    root = tmp_path / "surf_nan"
    wall, lost = [0, 1, 2, 3], [7]
    truth = make_nsd_tree(root, trials_per_session=30, n_sessions=2, n_subject_images=20,
                          n_shared=8, n_images=60, surface=True, n_vertices=10300,
                          roi_fraction=1.0, nan_vertices=wall, nan_in_session1=lost)
    with NSDServer(root) as srv:
        spec = nsd.NSDSpec(subjects=[1], space="fsaverage5", roi="cortex", n_train=5,
                           trials_per_session=30)
        with pytest.warns(UserWarning, match="subj01: 10 of 20484 voxels have no data.*10 with NaN"):
            path = nsd.prepare(spec, agree_terms=True, base_url=srv.url, progress=False,
                               client=HTTPClient(progress=False, backoff=0.001),
                               captions=[srv.url + "coco/captions_train2017.json"])
    subset = load_subset(path, verify=True)
    sub, t = subset.subject(1), truth["subjects"][1]
    assert subset.manifest["nsd"]["voxels_dropped_for_nan"] == {"subj01": 10}
    assert sub.betas.shape[1] == 2 * nsd.N_FSAVERAGE5 - 10 and np.isfinite(sub.betas).all()
    for h in ("lh", "rh"):
        on = sub.voxels.hemi == h
        kept = np.setdiff1d(np.arange(nsd.N_FSAVERAGE5), wall + lost)
        np.testing.assert_array_equal(sub.voxels.vertex[on], kept)
        # the kept vertices keep their own values (no shift) and their own ncsnr
        rows = t["session"] == 2
        z = zscore_per_session(t["raw"][h][2][:, kept], np.zeros(rows.sum()))
        keep = np.isin(t["nsd_id"][rows], subset.stimuli.stimulus_id[sub.image_index])
        np.testing.assert_allclose(sub.trial_betas[sub.trial_session == 2][:, on], z[keep], atol=1e-5)
        np.testing.assert_allclose(sub.ncsnr[on], t["ncsnr"][h][kept])


def test_cli(volume_tree, env, capsys):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        base = ["--base-url", srv.url, "--quiet", "--n-train", "5"]
        assert main(["download"] + base) == 2
        assert "Terms" in capsys.readouterr().err
        assert main(["prepare", "--agree-nsd-terms", "--captions",
                     srv.url + "coco/captions_train2017.json"] + base) == 1  # 750 trials/session
        assert "trials" in capsys.readouterr().err
    assert main(["info"]) == 0
    assert "natural-scenes-dataset" in capsys.readouterr().out
    assert main(["verify"]) == 0
    meta = next(env.rglob("*.csv"))
    meta.write_text("damaged")
    assert main(["verify"]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_exercise_checks_accept_right_and_reject_wrong_answers():
    from scaleinv_utils.exercises import check
    from scaleinv_utils.reliability import compute_ncsnr, noise_ceiling

    rng = np.random.default_rng(0)
    s = rng.uniform(0, 1, 50)
    assert check("nsd.ex1", (noise_ceiling(s, 1), noise_ceiling(s, 3)), ncsnr=s, verbose=False)
    assert not check("nsd.ex1", (noise_ceiling(s, 3), noise_ceiling(s, 1)), ncsnr=s, verbose=False)
    assert not check("nsd.ex1", (noise_ceiling(s, 1) / 100, noise_ceiling(s, 3) / 100), ncsnr=s,
                     verbose=False)
    img = np.repeat(np.arange(30), 3)
    B = rng.standard_normal((30, 20))[img] + rng.standard_normal((90, 20))
    assert check("nsd.ex2", compute_ncsnr(B, img), trial_betas=B, trial_image=img, verbose=False)
    assert not check("nsd.ex2", compute_ncsnr(B, img) * 1.3, trial_betas=B, trial_image=img,
                     verbose=False)
    assert check("nsd.ex3", 16, ncsnr=0.5, target=80, verbose=False)
    assert not check("nsd.ex3", 1 / 16, ncsnr=0.5, target=80, verbose=False)
    assert not check("nsd.ex3", ..., ncsnr=0.5, target=80, verbose=False)


def test_captions_read_from_a_remote_zip_without_downloading_it(volume_tree, env, tmp_path):
    import zipfile
    root, truth = volume_tree
    zroot = tmp_path / "z"
    zroot.mkdir()
    with zipfile.ZipFile(zroot / "annotations_trainval2017.zip", "w") as z:
        z.write(root / "coco/captions_train2017.json", "annotations/captions_train2017.json")
        # a large member a caption reader must not fetch (COCO's instances files)
        z.writestr("annotations/instances_train2017.json",
                   np.random.default_rng(0).integers(0, 255, 3_000_000, dtype=np.uint8).tobytes(),
                   compress_type=zipfile.ZIP_STORED)
    with NSDServer(zroot) as srv:
        client = HTTPClient(progress=False)
        folder = nsd._fetch_source(srv.url + "annotations_trainval2017.zip", client, env / "nsd")
        assert srv.bytes_sent < 0.5 * (zroot / "annotations_trainval2017.zip").stat().st_size
        n = len(srv.requests)
        nsd._fetch_source(srv.url + "annotations_trainval2017.zip", client, env / "nsd")
        assert len(srv.requests) == n  # cached
    cid = int(truth["coco"][0])
    assert nsd.load_coco_captions([folder], [cid]) == [truth["captions"][cid][:5]]


@pytest.mark.parametrize("layout", ["gzip+shuffle", "contiguous-images", "sparse"])
def test_other_hdf5_layouts_read_correctly(tmp_path, layout):
    import h5py
    rng = np.random.default_rng(3)
    client = HTTPClient(progress=False)
    if layout == "contiguous-images":
        imgs = rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
        with h5py.File(tmp_path / "s.h5", "w") as f:
            f["imgBrick"] = imgs  # no chunks: each image is one contiguous slab
        with NSDServer(tmp_path) as srv:
            got = nsd.read_images(client, srv.url + "s.h5", [4, 17, 2])
        np.testing.assert_array_equal(got, imgs[[4, 17, 2]])
        return
    vol = (6, 5, 4)
    b = rng.integers(-900, 900, (50,) + vol[::-1], dtype=np.int16)
    if layout == "sparse":
        b[:, 1:3] = 0  # never-written chunks are absent from the index: leaves are not dense
    kw = (dict(compression="gzip", shuffle=True) if layout == "gzip+shuffle"
          else dict(fillvalue=0))
    with h5py.File(tmp_path / "b.h5", "w") as f:
        d = f.create_dataset("betas", shape=b.shape, dtype=b.dtype, chunks=(50, 1, 1, 1), **kw)
        if layout == "sparse":
            d[:, :1] = b[:, :1]
            d[:, 3:] = b[:, 3:]
        else:
            d[...] = b
    ijk = np.argwhere(np.ones(vol, bool))[::3]
    if layout == "sparse":
        ijk = ijk[ijk[:, 2] != 1]  # only voxels whose chunks exist (k = 1 is unwritten)
        ijk = ijk[ijk[:, 2] != 2]
    with NSDServer(tmp_path) as srv:
        got = nsd.read_volume_betas(client, srv.url + "b.h5", ijk, vol)
    np.testing.assert_allclose(got, b[(slice(None),) + tuple(ijk[:, ::-1].T)] / 300.0, rtol=1e-6)


def test_two_subjects_end_to_end(tmp_path, env):
    # two subjects in one subset: the shared images are the same rows of the stimulus set for
    # both, training images are each subject's own, and each subject's betas are its own
    root = tmp_path / "two"
    truth = make_nsd_tree(root, subjects=(1, 2), trials_per_session=30, n_sessions=2,
                          n_subject_images=20, n_shared=8, n_images=80, vol_shape=(8, 9, 7))
    with NSDServer(root) as srv:
        path, _ = build(srv, root, subjects=[1, 2], n_train=4, trials_per_session=30)
    subset = load_subset(path, verify=True)
    assert path.name == "nsd-subj01-subj02-nsdgeneral-train4"
    st = subset.stimuli
    np.testing.assert_array_equal(st.images, truth["images"][st.stimulus_id])
    test_rows = {}
    for s in (1, 2):
        sub, t = subset.subject(s), truth["subjects"][s]
        ids = st.stimulus_id[sub.image_index]
        test_rows[s] = np.sort(sub.image_index[sub.test])
        assert set(ids[sub.test]) == set(truth["shared"])
        own = set(t["nsd_id"]) - set(truth["shared"])
        assert sub.train.sum() == 4 and set(ids[sub.train]) <= own
        ijk = sub.voxels.ijk
        assert len(ijk) == t["mask"].sum() and t["mask"][tuple(ijk.T)].all()
        trial_ids = st.stimulus_id[sub.trial_image_index]
        for sess in (1, 2):
            rows = np.flatnonzero(t["session"] == sess)
            z = zscore_per_session(t["raw"][sess][(slice(None),) + tuple(ijk.T)] / 300.0,
                                   np.zeros(len(rows)))
            keep = np.isin(t["nsd_id"][rows], ids)
            mine = sub.trial_session == sess
            np.testing.assert_array_equal(trial_ids[mine], t["nsd_id"][rows][keep])
            np.testing.assert_allclose(sub.trial_betas[mine], z[keep], atol=1e-5)
        for row, img in enumerate(sub.image_index):
            np.testing.assert_allclose(sub.betas[row], sub.trial_betas[
                sub.trial_image_index == img].mean(0), atol=1e-5)
        np.testing.assert_allclose(sub.ncsnr, t["ncsnr"][tuple(ijk.T)])
    # the shared test images are identical rows for both subjects; training images differ
    np.testing.assert_array_equal(test_rows[1], test_rows[2])
    s1, s2 = subset.subject(1), subset.subject(2)
    assert not set(s1.image_index[s1.train]) & set(s2.image_index[s2.train])
    assert len(st.stimulus_id) == len(truth["shared"]) + 8


@pytest.fixture(scope="module")
def fsaverage_tree(tmp_path_factory):
    # the real fsaverage vertex count (163,842 per hemisphere) with few trials: 12 per session,
    # 2 sessions, so each hemisphere's beta file is 7.9 MB
    root = tmp_path_factory.mktemp("nsd_fsaverage")
    truth = make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8,
                          n_shared=3, n_images=30, surface=True, n_vertices=nsd.N_FSAVERAGE,
                          roi_fraction=0.02)
    return root, truth


def _check_surface(subset, truth, hemis_mask):
    """Betas, ncsnr and vertices of a surface subset against the fixture's truth."""
    sub, t = subset.subject(1), truth["subjects"][1]
    ids = subset.stimuli.stimulus_id[sub.image_index]
    for h in ("lh", "rh"):
        on = sub.voxels.hemi == h
        vert = sub.voxels.vertex[on]
        np.testing.assert_array_equal(vert, np.flatnonzero(hemis_mask[h]))
        for sess in (1, 2):
            rows = t["session"] == sess
            z = zscore_per_session(t["raw"][h][sess][:, vert], np.zeros(rows.sum()))
            keep = np.isin(t["nsd_id"][rows], ids)
            np.testing.assert_allclose(sub.trial_betas[sub.trial_session == sess][:, on], z[keep],
                                       atol=1e-5)
        np.testing.assert_allclose(sub.ncsnr[on], t["ncsnr"][h][vert])
    return sub


def test_full_fsaverage_roi_and_cortex_subsets(fsaverage_tree, env):
    root, truth = fsaverage_tree
    t = truth["subjects"][1]
    kw = dict(agree_terms=True, progress=False, captions=None)
    with NSDServer(root) as srv:
        kw.update(base_url=srv.url, client=HTTPClient(progress=False, backoff=0.001),
                  captions=[srv.url + "coco/captions_train2017.json"])
        with pytest.warns(UserWarning, match=r"full fsaverage surface reads about .* GB.*fsaverage5"):
            roi = nsd.prepare(nsd.NSDSpec(space="fsaverage", n_train=3, trials_per_session=12),
                              **kw)
        sent_roi = srv.bytes_sent
        cortex = nsd.prepare(nsd.NSDSpec(space="fsaverage", roi="cortex", n_train=3,
                                         trials_per_session=12), **kw)
    subset = load_subset(roi, verify=True)
    assert subset.space == "fsaverage" and subset.manifest["roi"] == "nsdgeneral"
    sub = _check_surface(subset, truth, t["mask"])
    assert sub.voxels.vertex.max() >= nsd.N_FSAVERAGE5  # beyond fsaverage5: the full surface
    assert (sub.voxels.ijk == -1).all()
    assert sent_roi > 0
    # whole cortex: every vertex of both hemispheres, in order
    full = load_subset(cortex)
    assert full.manifest["roi"] == "cortex" and full.subject(1).betas.shape[1] == 2 * nsd.N_FSAVERAGE
    every = {h: np.ones(nsd.N_FSAVERAGE, bool) for h in ("lh", "rh")}
    csub = _check_surface(full, truth, every)
    # the ROI subset's vertices carry the same values in the cortex subset
    lh = (csub.voxels.hemi == "lh")
    pick = np.flatnonzero(lh)[sub.voxels.vertex[sub.voxels.hemi == "lh"]]
    np.testing.assert_allclose(csub.betas[:, pick], sub.betas[:, sub.voxels.hemi == "lh"],
                               atol=1e-5)
    assert set(csub.voxels.roi) <= {"cortex"} | set(["V1v", "V1d", "V2v", "V2d", "V3v", "V3d",
                                                     "hV4"])


def test_fsaverage_label_files_must_have_every_vertex(tmp_path, env):
    # a label file of the wrong length would shift every vertex: refuse it
    root = tmp_path / "short"
    make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8, n_shared=3,
                  n_images=30, surface=True, n_vertices=12000)
    with NSDServer(root) as srv:
        with pytest.raises(ValueError, match="163842"):
            nsd.prepare(nsd.NSDSpec(space="fsaverage", n_train=3, trials_per_session=12),
                        agree_terms=True, base_url=srv.url, progress=False,
                        client=HTTPClient(progress=False, backoff=0.001),
                        captions=[srv.url + "coco/captions_train2017.json"])


# --- NSD's exact layout and conventions (issue 16, items 1, 4, 6, 7, 8) -------------------------

def test_native_to_fsaverage_is_one_based():
    native = np.array([10, 20, 30])
    np.testing.assert_array_equal(nsd.native_to_fsaverage(native, np.array([3, 1, 1, 2.0])),
                                  [30, 10, 10, 20])
    with pytest.raises(ValueError, match="points at native vertices 0..2"):
        nsd.native_to_fsaverage(native, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="native surface has 3"):
        nsd.native_to_fsaverage(native, np.array([1, 4]))


def test_surface_files_follow_nsd_layout():
    # on fsaverage NSD publishes only its atlases; the hand-drawn ROIs are per subject, native
    assert nsd.nsd_file("roi", 2, "fsaverage5", hemi="rh", roi="prf-visualrois") == (
        "nsddata/freesurfer/subj02/label/rh.prf-visualrois.mgz")
    assert nsd.nsd_file("ctab", 2, "fsaverage", roi="floc-faces") == (
        "nsddata/freesurfer/subj02/label/floc-faces.mgz.ctab")
    assert nsd.nsd_file("roi", 2, "fsaverage", hemi="lh", roi="nsdgeneral") == (
        "nsddata/freesurfer/fsaverage/label/lh.nsdgeneral.mgz")
    assert nsd.nsd_file("transform", 3, hemi="lh") == (
        "nsddata/ppdata/subj03/transforms/lh.white-to-fsaverage.mgz")
    plan = nsd._plan(nsd.NSDSpec(subjects=[1, 2], space="fsaverage5", roi="floc-faces"))
    assert not any(f.startswith("nsddata/freesurfer/fsaverage/label/") and
                   ("prf-" in f or "floc-" in f) for f in plan)
    for s in (1, 2):
        for h in ("lh", "rh"):
            assert f"nsddata/freesurfer/subj0{s}/label/{h}.floc-faces.mgz" in plan
            assert f"nsddata/ppdata/subj0{s}/transforms/{h}.white-to-fsaverage.mgz" in plan


def test_hand_drawn_surface_rois_come_from_each_subjects_native_surface(tmp_path, env):
    root = tmp_path / "surf2"
    truth = make_nsd_tree(root, subjects=(1, 2), trials_per_session=30, n_sessions=2,
                          n_subject_images=20, n_shared=8, n_images=80, surface=True,
                          n_vertices=10300)
    with NSDServer(root) as srv:
        path, _ = build(srv, root, subjects=[1, 2], space="fsaverage5", roi="floc-faces",
                        n_train=4, trials_per_session=30)
    subset = load_subset(path)
    verts = {}
    for s in (1, 2):
        vox, lab = subset.subject(s).voxels, truth["subjects"][s]["labels"]
        for h in ("lh", "rh"):
            on = vox.hemi == h
            floc = lab[h]["floc-faces"][:nsd.N_FSAVERAGE5]  # = native[white-to-fsaverage - 1]
            np.testing.assert_array_equal(vox.vertex[on], np.flatnonzero(floc > 0))
            prf = lab[h]["prf-visualrois"][vox.vertex[on]]
            want = np.where(prf > 0, np.array(PRF, object)[prf],
                            np.array(FLOC, object)[floc[vox.vertex[on]]])
            np.testing.assert_array_equal(vox.roi[on], want)
            verts[s, h] = vox.vertex[on]
    assert not np.array_equal(verts[1, "lh"], verts[2, "lh"])  # each subject's own ROI


def test_edge_voxels_with_all_zero_betas_are_missing(tmp_path, env):
    root = tmp_path / "edge"
    truth = make_nsd_tree(root, trials_per_session=30, n_sessions=2, n_subject_images=20,
                          n_shared=8, n_images=60, edge_voxels=[0, 5], zero_in_session1=[9])
    t = truth["subjects"][1]
    roi_ijk = np.argwhere(t["mask"])
    with NSDServer(root) as srv:
        with pytest.warns(UserWarning, match=r"3 of \d+ voxels have no data.*3 with all betas"):
            path, _ = build(srv, root, n_train=5, trials_per_session=30)
    subset = load_subset(path)
    sub = subset.subject(1)
    assert subset.manifest["nsd"]["voxels_dropped_all_zero"] == {"subj01": 3}
    assert subset.manifest["nsd"]["voxels_dropped_for_nan"] == {"subj01": 0}
    kept = np.delete(roi_ijk, [0, 5, 9], axis=0)
    np.testing.assert_array_equal(sub.voxels.ijk, kept)
    rows = np.flatnonzero(t["session"] == 2)
    z = zscore_per_session(t["raw"][2][(slice(None),) + tuple(kept.T)] / 300.0, np.zeros(len(rows)))
    keep = np.isin(t["nsd_id"][rows], subset.stimuli.stimulus_id[sub.image_index])
    np.testing.assert_allclose(sub.trial_betas[sub.trial_session == 2], z[keep], atol=1e-5)


def test_volume_cortex_is_roi_values_at_least_zero_not_the_brainmask(volume_tree, env):
    root, truth = volume_tree
    t = truth["subjects"][1]
    with NSDServer(root) as srv:
        path, _ = build(srv, root, roi="cortex", n_train=5)
        assert not any("brainmask" in r[1] for r in srv.requests)
    ijk = load_subset(path).subject(1).voxels.ijk
    np.testing.assert_array_equal(ijk, np.argwhere(t["cortex"]))
    assert t["brainmask"].sum() > t["cortex"].sum()  # the liberal mask would add white matter


def test_surface_read_bytes():
    # a span of 10 vertices per trial, far from the next trial's: 40 bytes x trials x sessions
    assert nsd.surface_read_bytes({"lh": [5, 14]}, 2, 3, n_vertices=1000, max_gap=0) == 40 * 6
    # spans closer than max_gap merge: the whole file
    assert nsd.surface_read_bytes({"lh": [0, 9]}, 1, 3, n_vertices=20, max_gap=100) == 80 * 3
    cortex = {h: np.arange(nsd.N_FSAVERAGE) for h in ("lh", "rh")}
    assert nsd.surface_read_bytes(cortex, 40) == 2 * 40 * 750 * nsd.N_FSAVERAGE * 4  # ~39 GB


@pytest.mark.parametrize("chunks", [(2, 5, 7, 3), (3, 16, 16, 3), (1, 16, 16, 1)])
def test_images_with_other_chunk_shapes(tmp_path, chunks):
    import h5py
    imgs = np.random.default_rng(4).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("imgBrick", data=imgs, chunks=chunks)
    with NSDServer(tmp_path) as srv:
        got = nsd.read_images(HTTPClient(progress=False), srv.url + "s.h5", [4, 17, 2, 3])
    np.testing.assert_array_equal(got, imgs[[4, 17, 2, 3]])


def test_unwritten_chunks_read_as_the_fill_value(tmp_path):
    import h5py
    vol = (4, 3, 2)
    b = np.random.default_rng(5).integers(-900, 900, (20,) + vol[::-1], dtype=np.int16)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        d = f.create_dataset("betas", shape=b.shape, dtype=b.dtype, chunks=(20, 1, 1, 1),
                             fillvalue=0)
        d[:, :1] = b[:, :1]  # k = 1 never written: no chunk in the file
    b[:, 1:] = 0
    ijk = np.argwhere(np.ones(vol, bool))
    with NSDServer(tmp_path) as srv:
        got = nsd.read_volume_betas(HTTPClient(progress=False), srv.url + "b.h5", ijk, vol)
    np.testing.assert_allclose(got, b[(slice(None),) + tuple(ijk[:, ::-1].T)] / 300.0, rtol=1e-6)


# --- subset identity, kept reads, clear errors, captions, repair, smoke (items 11-15) -----------

def test_reuse_only_on_an_equal_spec(volume_tree, env, capsys):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        base = ["--base-url", srv.url, "--quiet", "--agree-nsd-terms", "--n-train", "4"]
        a, _ = build(srv, root, sessions=[1, 2], n_train=4)
        b, _ = build(srv, root, sessions=[1], n_train=4)
        assert a != b and "sess1-2" in a.name and b.name.endswith("sess1")
        assert set(load_subset(b).subject(1).trial_session) == {1}
        n = len(srv.requests)
        assert build(srv, root, sessions=[1], n_train=4)[0] == b and len(srv.requests) == n
        # an explicit name already used by another spec: refused, naming what differs
        with pytest.raises(nsd.SpecMismatch, match=r"sessions: \[1\] there, \[1, 2\] asked"):
            build(srv, root, sessions=[1, 2], n_train=4, name=b.name)
        with pytest.raises(nsd.SpecMismatch, match="random_state: 0 there, 3 asked"):
            build(srv, root, sessions=[1], n_train=4, random_state=3, name=b.name)
        assert main(["prepare", "--sessions", "1-2", "--name", b.name, "--captions",
                     srv.url + "coco/captions_train2017.json"] + base) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "sessions" in err and "--force" in err
    m = load_subset(b).manifest["nsd"]
    assert m["spec"]["sessions"] == [1] and len(m["spec_hash"]) == 64
    assert all(len(v["sha256"]) == 64 for v in m["files"].values())
    assert nsd.NSDSpec(random_state=2, image_size=64, trials="responses").name == \
        "nsd-subj01-nsdgeneral-train1000-seed2-px64-responses"


def test_range_reads_are_kept_until_the_subset_is_written(volume_tree, env):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        srv.missing.add("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
        with pytest.raises(DownloadError, match="404"):
            build(srv, root)
        assert list((env / "nsd" / "kept").rglob("*.npy"))
        srv.missing.clear()
        srv.requests.clear()
        path, _ = build(srv, root)
        assert not any("betas_session" in r[1] and r[0] == "GET" for r in srv.requests)
    assert not list((env / "nsd" / "kept").rglob("*.npy"))  # cleared once the subset exists
    ref = load_subset(path).subject(1)
    with NSDServer(root) as srv:
        fresh, _ = build(srv, root, name="fresh")
    np.testing.assert_array_equal(load_subset(fresh).subject(1).trial_betas, ref.trial_betas)


def test_captions_default_to_the_base_url_and_zip_falls_back_to_whole_file(volume_tree, env):
    root, truth = volume_tree
    assert nsd.default_caption_sources() == list(nsd.COCO_CAPTIONS_SOURCES)
    with NSDServer(root) as srv:
        assert nsd.default_caption_sources(srv.url) == [srv.url + nsd.COCO_MIRROR_PATH]
        srv.no_ranges.add(nsd.COCO_MIRROR_PATH)  # a host that refuses ranges
        spec = nsd.NSDSpec(n_train=4, trials_per_session=TPS)
        path = nsd.prepare(spec, agree_terms=True, base_url=srv.url, progress=False,
                           client=HTTPClient(progress=False, backoff=0.001))
        assert any(r[1] == nsd.COCO_MIRROR_PATH and r[2] is not None for r in srv.requests)
    st = load_subset(path).stimuli
    for cid, caps in zip(st.coco_id, st.captions):
        assert caps == truth["captions"][int(cid)][:5]
    assert load_subset(path).manifest["nsd"]["captions"] == [srv.url + nsd.COCO_MIRROR_PATH]


@pytest.mark.parametrize("space", ["func1pt8mm", "fsaverage5"])
def test_no_networks_fetches_no_network_atlas(tmp_path, env, space):
    root = tmp_path / "t"
    make_nsd_tree(root, trials_per_session=12, n_sessions=2, n_subject_images=8, n_shared=3,
                  n_images=30, surface=space != "func1pt8mm", vol_shape=(6, 7, 5))
    with NSDServer(root) as srv:
        build(srv, root, space=space, networks=False, n_train=3, trials_per_session=12)
        fetched = [r[1] for r in srv.requests]
    assert not any("Kastner2015" in f or "HCP_MMP1" in f for f in fetched)


def test_verify_repair_refetches_files_and_rebuilds_subsets(volume_tree, env, capsys):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        path, _ = build(srv, root)
        csv = env / "nsd" / nsd.nsd_file("stim_info")
        good = csv.read_bytes()
        csv.write_bytes(good[:-3] + b"???")  # same size: only the checksum tells
        betas = path / "subj01.h5"
        raw = bytearray(betas.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        betas.write_bytes(bytes(raw))
        (env / "nsd" / "orphan.nii.gz.part").write_bytes(b"x")  # no validator: discarded
        assert main(["verify"]) == 1
        out = capsys.readouterr().out
        assert "--repair" in out and str(csv) in out and str(path) in out
        assert main(["verify", "--repair"]) == 0
        assert "verified" in capsys.readouterr().out
    assert csv.read_bytes() == good and nsd.verify() == {}
    load_subset(path)  # hashes verified by default


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_cli_faults_end_in_one_clear_line(volume_tree, env, capsys, tmp_path, monkeypatch):
    import socket
    root, _ = volume_tree
    cap = ["--captions", "x"]
    # connection refused
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert main(["download", "--agree-nsd-terms", "--quiet", "--retries", "0", "--base-url",
                 f"http://127.0.0.1:{port}/"]) == 1
    err = _one_line_error(capsys)
    assert "nothing was kept" in err and "is kept" not in err
    with NSDServer(root) as srv:
        base = ["--base-url", srv.url, "--quiet", "--agree-nsd-terms"]
        # a corrupt CSV (a server without MD5 ETags): refused at download, one line
        srv.etag_style = "multipart"
        srv.faults[nsd.nsd_file("stim_info")] = ["corrupt"] * 10
        assert main(["download"] + base) == 1
        assert "not a valid CSV file" in _one_line_error(capsys)
        srv.faults.clear()
        # a cached ROI damaged after download is fetched again, not a BadGzipFile
        assert main(["download"] + base) == 0
        roi = env / "nsd" / nsd.nsd_file("roi", 1, roi="nsdgeneral")
        roi.write_bytes(b"\0" * roi.stat().st_size)
        assert main(["download"] + base) == 0
        nsd._load_labels(roi)
        # an unexpected exception type is still one line
        monkeypatch.setattr(nsd, "prepare", lambda *a, **k: (_ for _ in ()).throw(
            TypeError("boom")))
        assert main(["prepare"] + base + cap) == 1
        assert "TypeError: boom" in _one_line_error(capsys)
    # a damaged cached ROI read directly: a clear error naming the repair
    roi.write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="verify --repair"):
        nsd._load_labels(roi)


def test_smoke_compares_the_readers_with_h5py(volume_tree, env, capsys, monkeypatch):
    root, _ = volume_tree
    with NSDServer(root) as srv:
        args = ["smoke", "--agree-nsd-terms", "--base-url", srv.url]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "OK   betas values" in out and "OK   imgBrick values" in out
        assert "chunks (60, 1, 1, 1)" in out and "Content-Encoding None" in out
        srv.encoded.add(nsd.nsd_file("stimuli"))  # object metadata says gzip: reported
        real = nsd.read_volume_betas
        monkeypatch.setattr(nsd.pipeline, "read_volume_betas", lambda *a, **k: real(*a, **k) + 1)
        assert main(args) == 1
        out = capsys.readouterr().out
        assert "FAIL betas values" in out and "FAIL stimuli headers" in out
        assert main(["smoke", "--base-url", srv.url]) == 2  # terms first
