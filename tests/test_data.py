import json

import numpy as np
import pytest

import scaleinv_utils as su
from scaleinv_utils.data import StimulusSet, SubsetError, VoxelInfo, load_subset, write_subset


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
    load_subset(path)  # same size: only the checksum can tell
    with pytest.raises(SubsetError, match="SHA-256"):
        load_subset(path, verify=True)


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
