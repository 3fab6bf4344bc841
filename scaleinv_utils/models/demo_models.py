"""The demo zoo's parts: tokenizer, architectures, training corpus and weights record.

The image tower of every demo architecture is the same: a convolutional stem (three
3 x 3 convolutions of stride 2: 64 px -> an 8 x 8 grid of tokens) followed by
transformer blocks with attention heads (open_clip's ``VisionTransformer``, whose
patch embedding the stem replaces). The stem gives the tiny models the locality that
lets them learn shape from a few thousand images (a plain 16 px-patch ViT learned
only colour words); the blocks keep the attention heads chapters 2 and 7 read.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from . import zoo

__all__ = ["WordTokenizer", "DEMO_ARCHITECTURE", "VISION_ATTRIBUTES",
           "demo_weights_dir", "read_weights_json", "demo_corpus", "build_demo_module",
           "WEIGHTS_JSON"]

WEIGHTS_JSON = "demo_models.json"

#: The demo architectures' shared sizes (open_clip config fields). Small enough that
#: the whole zoo trains in about an hour on 2 CPU cores and ships in a few MB.
DEMO_ARCHITECTURE = {
    "embed_dim": 64,
    # three stride-2 convolutions: a full-resolution first convolution ([24, 32, 48] with
    # strides [1, 2, 2, 2]) cost twice the time per step for the same held-out quality
    "stem_channels": [32, 48],
    "stem_strides": [2, 2, 2],
    "vision": {"image_size": 64, "patch_size": 8, "layers": 3, "width": 64, "head_width": 16,
               "mlp_ratio": 2.0},
    "text": {"width": 64, "heads": 4, "layers": 2, "mlp_ratio": 2.0},
    "decoder": {"width": 64, "heads": 4, "layers": 2},
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.25, 0.25, 0.25],
}

#: What the vision-only models are trained to name about the main object (matched
#: supervision: the attributes the captions carry, as labels instead of words).
VISION_ATTRIBUTES = ("category", "colour", "texture", "size", "position", "count")


def demo_weights_dir():
    """Directory of the shipped demo weights (``scaleinv_utils/weights``)."""
    return Path(__file__).resolve().parent.parent / "weights"


def read_weights_json(weights_dir=None):
    """The zoo's training record (``demo_models.json``), or None when absent.

    A model recorded before the batch sampler was part of its record drew uniform batches
    (the only sampler then); its entry reads ``"sampler": "uniform"``.
    """
    path = Path(weights_dir or demo_weights_dir()) / WEIGHTS_JSON
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    for entry in record.get("models", {}).values():
        entry.setdefault("sampler", "uniform")
    return record


# ---------------------------------------------------------------------------
# tokenizer

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
# the training corpus

def demo_corpus(n_images=None, *, random_state=zoo.CORPUS_SEED, image_size=64):
    """Demo-world scenes to train the zoo on, drawn apart from the brain's stimuli.

    The same generator as the demo world (:func:`scaleinv_utils.demo.make_images`),
    another seed: the models never see the images the simulated brain saw, as real
    pretrained models never saw NSD. The first ``n`` images of a larger corpus are
    the corpus of size ``n`` (nested training sets).

    Parameters
    ----------
    n_images : int or None
        Default: the zoo's largest training set.
    random_state : int
    image_size : int

    Returns
    -------
    corpus : dict
        ``images`` (n_images, size, size, 3) uint8, ``captions`` (five per image) and
        ``labels``: {attribute: int array (n_images,)} for :data:`VISION_ATTRIBUTES`,
        with ``label_names``: {attribute: list of str}.
    """
    from .. import demo
    n_images = int(n_images or max(zoo.DATA_SIZES.values()))
    images, objects, _ = demo.make_images(n_images, image_size=image_size,
                                          random_state=random_state)
    captions = demo.make_captions(objects, random_state=random_state + 1)
    label_names = attribute_names()
    main = [objs[0] for objs in objects]
    values = {"category": [o["category"] for o in main], "colour": [o["colour"] for o in main],
              "texture": [o["texture"] for o in main], "size": [o["size"] for o in main],
              "position": [o["position"] for o in main],
              "count": [str(len(objs)) for objs in objects]}
    labels = {a: np.array([label_names[a].index(v) for v in values[a]]) for a in VISION_ATTRIBUTES}
    return {"images": images, "captions": captions, "labels": labels, "label_names": label_names}


def attribute_names():
    """Class names of each attribute the vision-only models name."""
    from .. import demo
    return {"category": list(demo.CATEGORIES), "colour": list(demo.COLOURS),
            "texture": list(demo.TEXTURES), "size": list(demo.SIZES),
            "position": list(demo.POSITIONS), "count": ["1", "2", "3", "4"]}


def stimulus_attribute_labels(stimuli):
    """The :data:`VISION_ATTRIBUTES` labels of a demo subset's stimuli.

    Parameters
    ----------
    stimuli : StimulusSet
        Of a demo subset (its ``attributes`` carry the main object's attributes).

    Returns
    -------
    labels : dict
        {attribute: int array (n_samples,)}; attributes the stimuli lack are left out.
    """
    names = attribute_names()
    attrs = stimuli.attributes
    keys = {"category": "category_name", "colour": "colour", "texture": "texture",
            "size": "size", "position": "position", "count": "n_objects"}
    out = {}
    for a, key in keys.items():
        if key not in attrs:
            continue
        vals = [str(v) for v in np.asarray(attrs[key])]
        if all(v in names[a] for v in vals):
            out[a] = np.array([names[a].index(v) for v in vals])
    return out


# ---------------------------------------------------------------------------
# architectures

def _conv_stem(arch):
    from torch import nn
    chans = [3, *arch["stem_channels"], arch["vision"]["width"]]
    strides = arch["stem_strides"]
    if len(strides) != len(chans) - 1:
        raise ValueError(f"stem_strides needs one stride per convolution ({len(chans) - 1}), "
                         f"got {strides}.")
    layers = []
    for i in range(len(chans) - 1):
        layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=strides[i], padding=1,
                                bias=i == len(chans) - 2))
        if i < len(chans) - 2:
            layers += [nn.BatchNorm2d(chans[i + 1]), nn.GELU()]
    stride = math.prod(strides)
    if stride != arch["vision"]["patch_size"]:
        raise ValueError(f"the stem's stride {stride} must equal vision patch_size "
                         f"{arch['vision']['patch_size']} (the token grid's cell).")
    return nn.Sequential(*layers)


def _with_stem(visual, arch):
    # open_clip's VisionTransformer embeds patches with `conv1` and reshapes its output
    # (batch, width, grid, grid) into tokens: a stem with the same output shape slots in.
    visual.conv1 = _conv_stem(arch)
    return visual


def _build_clip(arch, tokenizer):
    import open_clip
    vision = open_clip.CLIPVisionCfg(**arch["vision"])
    text = open_clip.CLIPTextCfg(context_length=tokenizer.context_length,
                                 vocab_size=tokenizer.vocab_size, **arch["text"])
    model = open_clip.CLIP(embed_dim=arch["embed_dim"], vision_cfg=vision, text_cfg=text)
    _with_stem(model.visual, arch)
    return model


def _build_vision(arch, n_classes):
    import torch
    from open_clip.model import CLIPVisionCfg, _build_vision_tower
    from torch import nn

    class VisionOnly(nn.Module):
        """The demo image tower with one linear readout per attribute of the main object."""

        def __init__(self):
            super().__init__()
            self.visual = _with_stem(
                _build_vision_tower(arch["embed_dim"], CLIPVisionCfg(**arch["vision"])), arch)
            self.attributes = list(n_classes)
            self.heads = nn.ModuleDict({a: nn.Linear(arch["embed_dim"], k)
                                        for a, k in n_classes.items()})

        def encode_image(self, x, normalize=False):
            z = self.visual(x)
            return nn.functional.normalize(z, dim=-1) if normalize else z

        def forward(self, x):
            z = self.visual(x)
            return {a: head(z) for a, head in self.heads.items()}

    del torch
    return VisionOnly()


def _build_coca(arch, tokenizer):
    from open_clip.coca_model import CoCa
    v = dict(arch["vision"], output_tokens=True, attn_pooler_heads=arch["text"]["heads"])
    t = dict(arch["text"], context_length=tokenizer.context_length,
             vocab_size=tokenizer.vocab_size, output_tokens=True, embed_cls=True)
    m = dict(arch["decoder"], context_length=tokenizer.context_length,
             vocab_size=tokenizer.vocab_size)
    model = CoCa(embed_dim=arch["embed_dim"], vision_cfg=v, text_cfg=t, multimodal_cfg=m,
                 pad_id=WordTokenizer.PAD)
    _init_decoder(model.text_decoder)
    _with_stem(model.visual, arch)
    return model


def _init_decoder(decoder):
    """Initialise CoCa's multimodal decoder as open_clip's other transformers are.

    open_clip's ``MultimodalTransformer`` never calls its ``init_parameters`` (which refers to
    a ``transformer`` attribute it lacks) and leaves ``text_projection`` as ``torch.empty``:
    pretrained weights overwrite it, but from scratch the uninitialised memory made the
    caption logits ~1e36 in some runs and not in others.
    """
    from torch import nn
    width, layers = decoder.width, decoder.layers
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    for block in list(decoder.resblocks) + list(decoder.cross_attn):
        nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
    nn.init.normal_(decoder.text_projection, std=width ** -0.5)


def build_demo_module(architecture, arch, tokenizer, *, seed, n_classes=None):
    """A freshly initialised demo module, its random draw fixed by ``seed``.

    Torch's global random state is left as it was (a forked generator draws the
    initial weights), so building a model never changes what a chapter draws later.

    Parameters
    ----------
    architecture : {"clip", "vision", "coca"}
    arch : dict
        :data:`DEMO_ARCHITECTURE` or a training record's copy of it.
    tokenizer : WordTokenizer
    seed : int
    n_classes : dict or None
        {attribute: number of classes}, for ``"vision"``.

    Returns
    -------
    module : torch.nn.Module
    """
    import torch
    builders = {"clip": lambda: _build_clip(arch, tokenizer),
                "vision": lambda: _build_vision(arch, n_classes or {
                    a: len(v) for a, v in attribute_names().items()}),
                "coca": lambda: _build_coca(arch, tokenizer)}
    if architecture not in builders:
        raise ValueError(f"architecture must be one of {zoo.ARCHITECTURES}, got {architecture!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        module = builders[architecture]()
    _check_initialised(module, architecture)
    return module


def _check_initialised(module, architecture):
    """Refuse a module with a parameter left uninitialised (non-finite or absurdly large)."""
    for name, p in module.named_parameters():
        largest = float(p.detach().abs().max())
        if not largest < 1e3:  # also catches NaN
            raise RuntimeError(f"parameter {name!r} of the {architecture} demo module is not "
                               f"initialised (max |value| {largest:.3g}).")


def cosine_lr(step, steps, lr, warmup):
    """Learning rate at a step: linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
