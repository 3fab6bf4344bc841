"""The demo world keeps the promises the chapters rely on."""
import numpy as np
import pytest
from sklearn.linear_model import RidgeCV

import scaleinv_utils as su
from scaleinv_utils import demo


def test_images_and_captions_are_deterministic():
    a, objs_a, _ = demo.make_images(12, random_state=5)
    b, objs_b, _ = demo.make_images(12, random_state=5)
    c, _, _ = demo.make_images(12, random_state=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert demo.make_captions(objs_a, random_state=1) == demo.make_captions(objs_b, random_state=1)


def test_captions_describe_the_main_object():
    _, objects, _ = demo.make_images(30, random_state=0)
    captions = demo.make_captions(objects, random_state=0)
    for objs, caps in zip(objects, captions):
        assert len(caps) == 5 and len(set(caps)) == 5
        names = demo.SYNONYMS[objs[0]["category"]]
        assert any(any(n in c.split() for n in names) for c in caps)


def test_world_is_deterministic(tmp_path):
    kw = dict(seed=3, n_subjects=1, n_shared=20, n_train=30)
    p1 = demo.make_demo_world(tmp_path / "a", **kw)
    p2 = demo.make_demo_world(tmp_path / "b", **kw)
    s1, s2 = su.load_subset(p1), su.load_subset(p2)
    np.testing.assert_array_equal(s1.stimuli.images, s2.stimuli.images)
    np.testing.assert_array_equal(s1.subject(1).trial_betas, s2.subject(1).trial_betas)


def test_shapes_and_splits(small_world):
    path, _ = small_world
    subset = su.load_subset(path, verify=True)
    assert subset.is_demo and subset.space == "fsaverage5"
    assert subset.stimuli.images.shape == (120 + 2 * 360, 64, 64, 3)
    assert subset.stimuli.images.dtype == np.uint8
    s1, s2 = subset.subject(1), subset.subject(2)
    assert s1.betas.shape == (480, len(s1.voxels))
    assert s1.trial_betas.shape == (3 * 480, len(s1.voxels))
    # Shared test images are the same for every subject; training images are each subject's own.
    np.testing.assert_array_equal(np.sort(s1.image_index[s1.test]), np.sort(s2.image_index[s2.test]))
    assert not set(s1.image_index[s1.train]) & set(s2.image_index[s2.train])
    assert subset.stimuli.shared[s1.image_index[s1.test]].all()
    assert set(s1.voxels.network) == set(demo.NETWORKS)
    assert np.all(s1.voxels.vertex < 10242) and set(s1.voxels.hemi) == {"lh", "rh"}
    assert np.all(s1.n_trials == 3)


def test_noise_ceiling_matches_known_signal(small_world):
    """The NSD formula, computed from the noisy repeats, predicts how much of the
    averaged response the planted (noise-free) signal explains."""
    path, truth = small_world
    subj = su.load_subset(path).subject(1)
    signal = truth["subjects"]["subj01"]["signal"]
    r = np.array([np.corrcoef(signal[:, v], subj.betas[:, v])[0, 1] for v in range(subj.n_voxels)])
    empirical = 100 * r**2
    predicted = subj.noise_ceiling("all")
    assert np.corrcoef(empirical, predicted)[0, 1] > 0.9
    assert np.median(np.abs(empirical - predicted)) < 6.0


def _held_out_r(X, Y, train, test):
    model = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(X[train], Y[train])
    P = model.predict(X[test])
    Pc, Yc = P - P.mean(0), Y[test] - Y[test].mean(0)
    return (Pc * Yc).sum(0) / np.sqrt((Pc**2).sum(0) * (Yc**2).sum(0) + 1e-12)


def test_early_visual_prefers_its_filters_and_category_voxels_their_labels(small_world):
    path, truth = small_world
    subset = su.load_subset(path)
    subj = subset.subject(1)
    rows = subj.image_index
    gabor = truth["features"]["gabor"][rows].reshape(len(rows), -1)
    category = np.eye(len(demo.CATEGORIES))[subset.stimuli.attributes["category"][rows]]
    net = subj.voxels.network
    for name, better, worse in (("early visual", gabor, category), ("category", category, gabor)):
        Y = subj.betas[:, net == name]
        r_better = np.median(_held_out_r(better, Y, subj.train, subj.test))
        r_worse = np.median(_held_out_r(worse, Y, subj.train, subj.test))
        assert r_better > r_worse + 0.1, (name, r_better, r_worse)


def test_default_mode_is_driven_negatively(small_world):
    path, _ = small_world
    subset = su.load_subset(path)
    subj = subset.subject(1)
    rows = subj.image_index
    drive = (subset.stimuli.attributes["contrast"][rows] - subset.stimuli.attributes["contrast"].mean())
    drive = drive / drive.std() + subset.stimuli.attributes["n_objects"][rows]
    corr = [np.corrcoef(drive, subj.betas[:, v])[0, 1] for v in range(subj.n_voxels)]
    corr = np.array(corr)
    assert np.median(corr[subj.voxels.network == "default-mode"]) < -0.2
    assert np.median(corr[subj.voxels.network == "attention"]) > 0.1


def test_load_subset_demo_is_cached(monkeypatch):
    calls = []
    original = demo.make_demo_world

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(demo, "make_demo_world", counting)
    kw = dict(n_subjects=1, n_shared=10, n_train=20)
    first = su.load_subset("demo", **kw)
    second = su.load_subset("demo", **kw)
    assert len(calls) == 1 and first.path == second.path
    assert "SYNTHETIC" in first.describe()


def test_bad_parameters():
    with pytest.raises(ValueError, match="n_repeats=1 must be >= 2"):
        demo.make_demo_world(None, n_repeats=1)
    with pytest.raises(TypeError, match="apply only to 'demo'"):
        su.load_subset("somewhere", seed=1)
    with pytest.raises(ValueError, match="shape"):
        demo.gabor_energy(np.zeros((2, 8, 8)))


def test_gabor_energy_on_sides_that_are_not_a_multiple_of_the_pool():
    # NSD's images are 425 px: the windows that would overhang the edge are left out, and the
    # others are the mean of the unpooled energy (filtered at the full size) over each window
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 66, 66, 3), dtype=np.uint8)
    full = demo.gabor_energy(images, pool=1)
    pooled = demo.gabor_energy(images, pool=4)
    assert pooled.shape == (2, 3, 4, 16, 16)
    expected = full[..., :64, :64].reshape(2, 3, 4, 16, 4, 16, 4).mean((4, 6))
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-6)
