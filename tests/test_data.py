import json

import numpy as np
import pytest

import scaleinv_utils as su
from scaleinv_utils.data import StimulusSet, SubsetError, VoxelInfo, write_subset
from scaleinv_utils.datasets import load_subset


def tiny_subset(path, n_images=6, n_vox=4, seed=0):
    rng = np.random.default_rng(seed)
    stim = StimulusSet(images=rng.integers(0, 255, (n_images, 8, 8, 3), dtype=np.uint8),
                       stimulus_id=np.arange(n_images) + 100, coco_id=np.arange(n_images) + 7,
                       shared=np.arange(n_images) < 2,
                       captions=[[f"caption {i}.{j}" for j in range(5)] for i in range(n_images)],
                       attributes={"category": np.arange(n_images) % 3,
                                   "name": np.array(["a", "b", "c", "a", "b", "c"], dtype=object)})
    trial_image = np.repeat(np.arange(n_images), 2)
    trials = rng.normal(size=(len(trial_image), n_vox)).astype(np.float32)
    vox = VoxelInfo(roi=np.array(["V1"] * n_vox, dtype=object),
                    network=np.array(["early visual"] * n_vox, dtype=object),
                    vertex=np.arange(n_vox), hemi=np.array(["lh"] * n_vox, dtype=object),
                    ijk=-np.ones((n_vox, 3), int))
    betas, rows, n = su.average_repeats(trials, trial_image)
    subj = dict(image_index=rows, split=np.where(rows < 2, "test", "train"), betas=betas, n_trials=n,
                trial_betas=trials, trial_image_index=trial_image,
                trial_session=np.zeros(len(trial_image), int),
                ncsnr=su.compute_ncsnr(trials, trial_image), voxels=vox)
    return write_subset(path, stimuli=stim, subjects={"subj01": subj}, source="nsd",
                        space="fsaverage", roi="nsdgeneral", name="tiny")


def test_roundtrip(tmp_path):
    path = tiny_subset(tmp_path / "s")
    subset = load_subset(path, verify=True)
    assert subset.source == "nsd" and not subset.is_demo and subset.space == "fsaverage"
    assert subset.stimuli.images.shape == (6, 8, 8, 3)
    assert subset.stimuli.captions[3][4] == "caption 3.4"
    assert list(subset.stimuli.attributes["name"]) == ["a", "b", "c", "a", "b", "c"]
    subj = subset.subject(1)
    assert subj is subset.subject("subj01")
    assert subj.betas.shape == (6, 4) and subj.trial_betas.shape == (12, 4)
    assert subj.train.sum() == 4 and subj.test.sum() == 2
    assert subj.noise_ceiling().shape == (4,)
    assert "real NSD" in subset.describe()


def test_load_by_name_from_data_dir(tmp_path):
    tiny_subset(su.data_dir("subsets") / "tiny-by-name")
    assert load_subset("tiny-by-name").name == "tiny"


def test_unknown_name_lists_available():
    with pytest.raises(SubsetError, match="Unknown subset 'nope'.*demo"):
        load_subset("nope")


def test_missing_directory(tmp_path):
    with pytest.raises(SubsetError, match="does not exist"):
        load_subset(tmp_path / "absent")


def test_missing_manifest_means_incomplete(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(SubsetError, match="no manifest.json"):
        load_subset(tmp_path / "half")


def test_truncated_file_detected(tmp_path):
    path = tiny_subset(tmp_path / "s")
    data = (path / "subj01.h5").read_bytes()
    (path / "subj01.h5").write_bytes(data[:-100])
    with pytest.raises(SubsetError, match="truncated"):
        load_subset(path)


def test_altered_file_detected_by_checksum(tmp_path):
    path = tiny_subset(tmp_path / "s")
    data = bytearray((path / "stimuli.h5").read_bytes())
    data[-10] ^= 0xFF
    (path / "stimuli.h5").write_bytes(bytes(data))
    # same size: only the checksum can tell, and load_subset checks it by default
    with pytest.raises(SubsetError, match="SHA-256.*--repair"):
        load_subset(path)
    load_subset(path, verify=False)  # the explicit opt-out reads it


def test_manifest_records_a_digest_of_every_array(tmp_path):
    import hashlib

    import h5py
    path = tiny_subset(tmp_path / "s")
    arrays = json.loads((path / "manifest.json").read_text())["arrays"]
    with h5py.File(path / "subj01.h5") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        betas = f["betas"][()]
    assert {f"subj01.h5:{n}" for n in names} <= set(arrays)
    assert {"stimuli.h5:images", "stimuli.h5:captions", "subj01.h5:voxels/roi"} <= set(arrays)
    want = hashlib.sha256(f"{betas.dtype.str}{betas.shape}".encode() + betas.tobytes()).hexdigest()
    assert arrays["subj01.h5:betas"] == want
    # the same values give the same digests; one changed value changes only its array's
    again = json.loads((tiny_subset(tmp_path / "t") / "manifest.json").read_text())["arrays"]
    assert again == arrays
    other = json.loads((tiny_subset(tmp_path / "u", seed=1) / "manifest.json").read_text())["arrays"]
    assert other["subj01.h5:betas"] != arrays["subj01.h5:betas"]


def test_wrong_format_version(tmp_path):
    path = tiny_subset(tmp_path / "s")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SubsetError, match="version 99"):
        load_subset(path)


def test_unknown_subject(tmp_path):
    subset = load_subset(tiny_subset(tmp_path / "s"))
    with pytest.raises(KeyError, match="no subject 'subj05'"):
        subset.subject(5)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "s"
    tiny_subset(tmp_path / "ok")
    stim = load_subset(tmp_path / "ok").stimuli
    bad = {"subj01": dict(image_index=np.arange(3), split=np.array(["train"] * 3), betas=np.ones((3, 2)),
                          n_trials=np.ones(3), trial_betas=np.ones((3, 5)), trial_image_index=np.arange(3),
                          trial_session=np.zeros(3), ncsnr=np.ones(2),
                          voxels=VoxelInfo(*(np.zeros(2),) * 4, ijk=np.zeros((2, 3))))}
    with pytest.raises(ValueError, match="trial_betas have 5 voxels"):
        write_subset(path, stimuli=stim, subjects=bad, source="nsd", space="fsaverage", roi="x")
    assert not path.exists()
    assert not list(tmp_path.glob(".s.*"))


def test_write_validates(tmp_path):
    tiny_subset(tmp_path / "ok")
    stim = load_subset(tmp_path / "ok").stimuli
    with pytest.raises(ValueError, match="space must be one of"):
        write_subset(tmp_path / "x", stimuli=stim, subjects={}, source="nsd", space="mni", roi="x")
    with pytest.raises(ValueError, match="source must be"):
        write_subset(tmp_path / "x", stimuli=stim, subjects={}, source="web", space="fsaverage", roi="x")
    with pytest.raises(ValueError, match="exists"):
        write_subset(tmp_path / "ok", stimuli=stim, subjects={}, source="nsd", space="fsaverage", roi="x")


def _stim_and_subject(tmp_path):
    tiny_subset(tmp_path / "ok")
    subset = load_subset(tmp_path / "ok")
    subj = subset.subject(1)
    d = dict(image_index=subj.image_index, split=subj.split, betas=subj.betas, n_trials=subj.n_trials,
             trial_betas=subj.trial_betas, trial_image_index=subj.trial_image_index,
             trial_session=subj.trial_session, ncsnr=subj.ncsnr, voxels=subj.voxels)
    return subset.stimuli, d


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(split=np.array(["trian"] * len(d["split"]))), "split values"),
    (lambda d: d.update(betas=np.where(np.eye(*d["betas"].shape, dtype=bool), np.nan, d["betas"])), "NaN"),
    (lambda d: d.update(trial_image_index=d["trial_image_index"][:-1]), "trial_image_index must have shape"),
    (lambda d: d.update(trial_image_index=d["trial_image_index"] + 100), "trial_image_index must lie"),
    (lambda d: d.update(n_trials=np.zeros_like(d["n_trials"])), "n_trials >= 1"),
    (lambda d: d.update(ncsnr=-np.abs(d["ncsnr"]) - 1), "non-negative"),
    (lambda d: d.update(voxels=VoxelInfo(d["voxels"].roi, d["voxels"].network[:1], d["voxels"].vertex,
                                         d["voxels"].hemi, d["voxels"].ijk)), "voxels.network"),
])
def test_write_rejects_malformed_subjects(tmp_path, change, message):
    stim, d = _stim_and_subject(tmp_path)
    change(d)
    with pytest.raises(ValueError, match=message):
        write_subset(tmp_path / "bad", stimuli=stim, subjects={"subj01": d}, source="nsd",
                     space="fsaverage", roi="x")
    assert not (tmp_path / "bad").exists()


def test_write_rejects_malformed_stimuli(tmp_path):
    import dataclasses
    stim, d = _stim_and_subject(tmp_path)
    with pytest.raises(TypeError, match="uint8"):
        write_subset(tmp_path / "b1", stimuli=dataclasses.replace(stim, images=stim.images / 255.0),
                     subjects={}, source="nsd", space="fsaverage", roi="x")
    with pytest.raises(ValueError, match="coco_id must have shape"):
        write_subset(tmp_path / "b2", stimuli=dataclasses.replace(stim, coco_id=stim.coco_id[:2]),
                     subjects={}, source="nsd", space="fsaverage", roi="x")


def test_overwrite_replaces_and_is_readable(tmp_path):
    import os
    import stat
    path = tiny_subset(tmp_path / "s")
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o055  # group/others can read, unlike mkdtemp's 0700
    stim = load_subset(path).stimuli
    write_subset(path, stimuli=stim, subjects={}, source="nsd", space="fsaverage", roi="y",
                 overwrite=True)
    assert load_subset(path).manifest["roi"] == "y"
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary or old copies left


def test_noise_ceiling_unknown_split(tmp_path):
    subj = load_subset(tiny_subset(tmp_path / "s")).subject(1)
    with pytest.raises(ValueError, match="split must be one of"):
        subj.noise_ceiling("validation")


def test_data_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SCALEINV_DATA", "~/cache")
    assert su.data_dir("x") == (tmp_path / "cache" / "x").resolve()


def test_data_does_not_import_demo_and_load_subset_lives_in_datasets():
    import ast
    import inspect

    import scaleinv_utils.data as data
    import scaleinv_utils.datasets as datasets
    tree = ast.parse(inspect.getsource(data))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "demo" not in imported and "datasets" not in imported
    assert su.load_subset is datasets.load_subset and not hasattr(data, "load_subset")


def test_corrupt_demo_world_is_rebuilt(tmp_path):
    from scaleinv_utils.datasets import demo_subset_path
    kw = dict(n_subjects=1, n_shared=20, n_train=40)
    path = demo_subset_path(**kw)
    f = path / "subj01.h5"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="rebuilding"):
        subset = load_subset("demo", **kw)
    assert subset.subject(1).betas.shape[0] == 60


def test_select_voxels_keeps_each_voxels_data_and_encoding_scores(small_world):
    from scaleinv_utils import encoding
    subj = load_subset(small_world[0]).subject(1)
    mask = np.asarray(subj.voxels.network) == "category"
    part = subj.select_voxels(mask)
    assert part.n_voxels == mask.sum() and set(part.voxels.network) == {"category"}
    np.testing.assert_array_equal(part.betas, subj.betas[:, mask])
    np.testing.assert_array_equal(part.trial_betas, subj.trial_betas[:, mask])
    np.testing.assert_array_equal(part.noise_ceiling("test"), subj.noise_ceiling("test")[mask])
    # indices, twice over: trials read after a second selection keep the right columns
    idx = np.flatnonzero(mask)[[0, 3, 5]]
    twice = subj.select_voxels(np.flatnonzero(mask)).select_voxels(np.array([0, 3, 5]))
    fresh = load_subset(small_world[0]).subject(1).select_voxels(np.flatnonzero(mask))
    np.testing.assert_array_equal(fresh.select_voxels(np.array([0, 3, 5])).trial_betas,
                                  subj.trial_betas[:, idx])
    np.testing.assert_array_equal(twice.betas, subj.betas[:, idx])
    # a voxel's ridge model (its own penalty) does not depend on the other voxels
    rng = np.random.default_rng(0)
    X = subj.betas @ rng.normal(size=(subj.n_voxels, 6)) + rng.normal(size=(subj.betas.shape[0], 6))
    feats = np.zeros((subj.image_index.max() + 1, 6))
    feats[subj.image_index] = X
    whole = encoding.encoding_scores(feats, subj, alphas=np.logspace(-1, 4, 6))
    sub = encoding.encoding_scores(feats, part, alphas=np.logspace(-1, 4, 6))
    np.testing.assert_allclose(sub.r2, whole.r2[mask], atol=1e-10)


def test_select_voxels_bad_input(small_world):
    subj = load_subset(small_world[0]).subject(1)
    with pytest.raises(ValueError, match="boolean mask of shape"):
        subj.select_voxels(np.ones(3, bool))
    with pytest.raises(ValueError, match="must index"):
        subj.select_voxels(np.array([subj.n_voxels]))
    with pytest.raises(ValueError, match="dtype float64"):
        subj.select_voxels(np.array([0.5]))
