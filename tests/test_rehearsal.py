"""The rehearsal: every chapter's real-data branch, executed against a local NSD bucket.

Real mode (``DATA`` set to a real NSD subset, the pretrained catalogue) cannot run in CI
as it runs for a reader: NSD and the model weights are on the internet. The rehearsal
replaces both with stand-ins that exercise the same code:

- the data: a miniature NSD bucket in NSD's exact layout (``tests/nsd_fixtures.py``,
  750 trials per session as NSD has), served on 127.0.0.1; ``scaleinv-data prepare``
  builds real-format subsets from it (a volume nsdgeneral subset, a fsaverage5 one and a
  fsaverage5 whole-cortex one with network labels);
- the models: ``SCALEINV_WEIGHTS=random`` builds each catalogue model's real architecture
  (open_clip, torchvision, transformers) with random weights, offline, and labels every
  output "random weights";
- time: ``SCALEINV_MAX_MODELS`` limits a chapter's loops over the catalogue (one model of
  each kind first), so each chapter runs end to end in CI's budget.

Each chapter notebook is executed with ``SCALEINV_BOOK_DATA`` naming such a subset. A
chapter passes when every cell runs and its output says "random weights" wherever a
pretrained model's features were used. Nothing the rehearsal prints is a result: the
images are random pixels, the voxels a simulation, the weights random.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from nsd_fixtures import NSDServer, make_nsd_tree

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"

#: the fixture bucket: one session of NSD's 750 trials (250 images x 3), small images
BUCKET = dict(trials_per_session=750, n_sessions=1, n_subject_images=250, n_shared=25,
              n_images=500, image_px=53)
#: training images per subset (plus the 25 shared test images)
N_TRAIN = 40  # 65 images per subject: the alignment table's default scales need >= 56

#: which subset each chapter runs on (the chapter's own recommendation where it has one)
CHAPTER_DATA = {
    "00_start_here": "volume",
    "01_nsd": "volume",
    "02_models": "volume",
    "03_dimension": "fsaverage5",
    "04_similarity": "two-subjects",
    "05_encoding": "fsaverage5",
    "06_scale_invariance_alignment": "volume",
    "07_neurons": "cortex",
}
#: models per catalogue list (SCALEINV_MAX_MODELS): 4 keeps one of each kind; chapter 6's A1
#: partial correlation (one covariate, mean ID) needs at least 5 models, so it gets 6
MAX_MODELS = {"06_scale_invariance_alignment": 6}
DEFAULT_MAX_MODELS = 4

#: lines a reader changes by hand, changed the same way here (chapter -> (old, new))
READER_EDITS = {
    "01_nsd": ("BUILD = False", "BUILD = True"),
}


def _warm_demo_caches(data):
    """Copy the demo world and its cached demo-model features from the book build's data
    directory (``$SCALEINV_DATA`` or ``~/.cache/scaleinv``), where there is one.

    A chapter's real-data branch still runs its demo-world cells (its toys and the demo
    zoo's sections); ``make test`` has just computed those in the book build, so the
    rehearsal reads them instead of computing them again. Without a warm cache it computes
    them (slower, same result). Nothing is written to the book's directory.
    """
    import shutil

    src = Path(os.environ.get("SCALEINV_DATA") or Path.home() / ".cache" / "scaleinv")
    for pattern in ("subsets/demo-*", "features/demo-*", "results/demo-*"):
        for path in src.glob(pattern):
            target = data / path.relative_to(src)
            if path.is_dir():
                shutil.copytree(path, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)


def _prepare(args):
    from scaleinv_utils.cli import main
    rc = main(["prepare", "--agree-nsd-terms", "--quiet", "--n-train", str(N_TRAIN)] + args)
    assert rc == 0, f"scaleinv-data prepare {' '.join(args)} failed (rc {rc})"


@pytest.fixture(scope="module")
def rehearsal_env(tmp_path_factory):
    """Real-format subsets built by ``scaleinv-data`` from the local bucket, and the
    environment a chapter runs in (the volume bucket stays served for chapter 1)."""
    root = tmp_path_factory.mktemp("rehearsal")
    data = root / "data"
    make_nsd_tree(root / "bucket-volume", subjects=(1, 2), vol_shape=(10, 12, 9), roi_fraction=0.3,
                  **BUCKET)
    make_nsd_tree(root / "bucket-surface", surface=True, n_vertices=10300, roi_fraction=0.03,
                  **BUCKET)
    _warm_demo_caches(data)
    old = os.environ.get("SCALEINV_DATA")
    os.environ["SCALEINV_DATA"] = str(data)
    try:
        with NSDServer(root / "bucket-surface") as srv:
            _prepare(["--base-url", srv.url, "--space", "fsaverage5"])
            _prepare(["--base-url", srv.url, "--space", "fsaverage5", "--roi", "cortex"])
        with NSDServer(root / "bucket-volume") as srv:
            _prepare(["--base-url", srv.url])
            _prepare(["--base-url", srv.url, "--subject", "1", "--subject", "2"])
            names = {"volume": f"nsd-subj01-nsdgeneral-train{N_TRAIN}",
                     "two-subjects": f"nsd-subj01-subj02-nsdgeneral-train{N_TRAIN}",
                     "fsaverage5": f"nsd-subj01-nsdgeneral-fsaverage5-train{N_TRAIN}",
                     "cortex": f"nsd-subj01-cortex-fsaverage5-train{N_TRAIN}"}
            for name in names.values():
                assert (data / "subsets" / name / "manifest.json").is_file(), name
            yield {"data": data, "names": names, "url": srv.url}
    finally:
        if old is None:
            os.environ.pop("SCALEINV_DATA", None)
        else:
            os.environ["SCALEINV_DATA"] = old


def run_chapter(stem, env, timeout=1200):
    """Execute notebooks/<stem>.ipynb in a kernel whose environment is ``env``.

    Returns the executed notebook; raises nbclient's CellExecutionError on a failing cell.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    if stem in READER_EDITS:
        old, new = READER_EDITS[stem]
        hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert len(hits) == 1, f"{stem}: the line {old!r} a reader changes is not in one cell"
        hits[0].source = hits[0].source.replace(old, new)
    # a last cell reports which DATA the set-up cell took (the chapter's own cells may switch
    # `subset` to the demo world for demo-only sections; DATA stays what the reader chose)
    nb.cells.append(nbformat.v4.new_code_cell('print(f"rehearsal DATA = {DATA!r}")'))
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOKS)}})
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def outputs_text(nb):
    """All output text of `nb`, consecutive stream chunks joined as a notebook shows them.

    A kernel under load may send one ``print`` as several stream messages (seen in CI:
    ``'rehearsal DATA ='`` and ``" 'nsd-...'"`` arrived apart), so chunks of one stream are
    concatenated and only distinct outputs are separated by a newline.
    """
    parts, stream = [], None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                if stream == out.get("name") and parts:
                    parts[-1] += out.get("text", "")
                else:
                    parts.append(out.get("text", ""))
                stream = out.get("name")
                continue
            stream = None
            if "data" in out:
                parts.append(out["data"].get("text/plain", ""))
        stream = None
    return "\n".join(parts)


#: every chapter on its subset, and chapter 5 also on the volume subset the NSD chapter builds
#: by default (its maps are then slices instead of surfaces)
RUNS = sorted(CHAPTER_DATA.items()) + [("05_encoding", "volume")]


@pytest.mark.rehearsal
@pytest.mark.slow
@pytest.mark.parametrize("stem, data", RUNS, ids=[f"{stem}-{data}" for stem, data in RUNS])
def test_chapter_real_branch_runs(stem, data, rehearsal_env, monkeypatch):
    env = {"SCALEINV_DATA": str(rehearsal_env["data"]),
           "SCALEINV_BOOK_DATA": rehearsal_env["names"][data],
           "SCALEINV_WEIGHTS": "random",
           "SCALEINV_MAX_MODELS": str(MAX_MODELS.get(stem, DEFAULT_MAX_MODELS)),
           "SCALEINV_NSD_URL": rehearsal_env["url"],
           "SCALEINV_PROGRESS": "0",
           "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    monkeypatch.delenv("SCALEINV_RECORD", raising=False)  # nothing rehearsed is a book number
    start = time.perf_counter()
    nb = run_chapter(stem, env)
    seconds = time.perf_counter() - start
    text = outputs_text(nb)
    print(f"{stem}: real branch on {env['SCALEINV_BOOK_DATA']} in {seconds:.0f} s")
    assert f"rehearsal DATA = {env['SCALEINV_BOOK_DATA']!r}" in text, \
        f"{stem}'s set-up cell did not take DATA from SCALEINV_BOOK_DATA"
    uses_pretrained = re.search(r"random weights \(test-only switch SCALEINV_WEIGHTS=random\)", text)
    if stem in PRETRAINED_CHAPTERS:
        assert uses_pretrained, f"{stem}'s outputs do not say its pretrained models had random weights"


#: chapters whose real branch uses models of the pretrained catalogue
PRETRAINED_CHAPTERS = {"02_models", "03_dimension", "04_similarity", "05_encoding",
                       "06_scale_invariance_alignment", "07_neurons"}


# --------------------------------------------------------------------------- the switches
def test_limit_models_keeps_one_of_each_kind_first(monkeypatch):
    from scaleinv_utils.models import limit_models, list_models
    names = list_models("pretrained")
    monkeypatch.delenv("SCALEINV_MAX_MODELS", raising=False)
    assert limit_models(names) == names  # the default: unchanged
    monkeypatch.setenv("SCALEINV_MAX_MODELS", "3")
    kept = limit_models(names)
    # the first dual CLIP, the first CoCa (fused) and the first ImageNet model (no language)
    assert kept == ["clip-vit-b-32-commonpool-s", "coca-vit-b-32-laion2b", "imagenet-vit-b-32"]
    monkeypatch.setenv("SCALEINV_MAX_MODELS", "5")
    kept = limit_models(names)
    assert kept == ["clip-vit-b-32-commonpool-s", "clip-vit-b-32-commonpool-m",
                    "clip-vit-b-32-laion400m", "coca-vit-b-32-laion2b", "imagenet-vit-b-32"]
    monkeypatch.setenv("SCALEINV_MAX_MODELS", "1")
    assert limit_models(["imagenet-resnet50", "clip-vit-b-32-openai"]) == ["imagenet-resnet50"]
    for bad in ("0", "-2", "three"):
        monkeypatch.setenv("SCALEINV_MAX_MODELS", bad)
        with pytest.raises(ValueError, match="SCALEINV_MAX_MODELS must be a positive integer"):
            limit_models(names)


def test_features_of_a_random_weights_model_say_so(monkeypatch, capsys):
    import numpy as np

    from scaleinv_utils import features
    images = np.zeros((2, 8, 8, 3), np.uint8)
    monkeypatch.setattr(features, "_ANNOUNCED", set())
    monkeypatch.delenv("SCALEINV_WEIGHTS", raising=False)
    features._announce_random_weights("imagenet-resnet50")
    features._announce_random_weights("demo-clip-full-data")
    assert capsys.readouterr().out == ""  # pretrained weights: nothing to say
    monkeypatch.setenv("SCALEINV_WEIGHTS", "random")
    features._announce_random_weights("demo-clip-full-data")  # demo models are never switched
    assert capsys.readouterr().out == ""
    features.get_features("imagenet-resnet50", images, cache=False, progress=False, device="cpu")
    features._announce_random_weights("imagenet-resnet50")  # once per model and process
    out = capsys.readouterr().out
    assert out.count("imagenet-resnet50: random weights (test-only switch "
                     "SCALEINV_WEIGHTS=random): not the pretrained model") == 1


def test_an_nsd_subset_not_yet_built_says_how_to_build_it():
    from scaleinv_utils import SubsetError, load_subset
    with pytest.raises(SubsetError, match="nsd-subj01-nsdgeneral-train1000.*must be built.*"
                                          "scaleinv-data prepare"):
        load_subset("nsd-subj01-nsdgeneral-train1000")
    with pytest.raises(SubsetError, match="Unknown subset 'nope'") as info:
        load_subset("nope")
    assert "scaleinv-data" not in str(info.value)


def test_switched_models_are_distinct_random_networks(monkeypatch):
    from scaleinv_utils.models import load_model
    from scaleinv_utils.models.loaders import expected_weights_id
    monkeypatch.setenv("SCALEINV_WEIGHTS", "random")
    # two catalogue entries of one architecture: two random networks, as two pretrained ones
    # would be two networks (identical features would make the chapters' statistics degenerate)
    ids = [expected_weights_id(n) for n in ("clip-vit-b-32-openai", "clip-vit-b-32-laion2b",
                                            "clip-vit-b-32-commonpool-s")]
    assert len(set(ids)) == 3 and all(i.startswith("random-init-seed") for i in ids)
    switched = load_model("imagenet-resnet50", device="cpu")
    baseline = load_model("imagenet-resnet50", device="cpu", random_init=True)  # a floor: seed 0
    assert switched.weights_id == expected_weights_id("imagenet-resnet50")
    assert baseline.weights_id.startswith("random-init-seed0-")
    assert switched.weights_id != baseline.weights_id
    w1, w0 = (next(m.module.parameters()) for m in (switched, baseline))
    assert not bool((w1 == w0).all())
