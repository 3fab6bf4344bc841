"""Features of models: final embeddings, per-layer activations and per-head outputs, cached.

One function, :func:`get_features`, turns a model (a name from
:func:`scaleinv_utils.models.list_models` or a loaded model) and a set of
stimuli into arrays of shape (n_samples, n_features), one per layer::

    feats = get_features("demo-clip-full-data", subset.stimuli, layers="all")
    feats["block3"].shape          # (n_images, 96)
    heads = get_features("minilm", subset.stimuli, modality="text", layers="all", heads=True)
    heads["block5"].shape          # (n_images, 12, 32): one row per attention head

Layer names are the same for every model family: ``"block0"`` ... for the
blocks of a transformer (each block's output, pooled over tokens),
``"stage1"`` ... for the stages of a convolutional network (global average
pooled), and ``"final"`` for the model's own embedding. :func:`list_layers`
gives a model's names.

Results are cached under ``scaleinv_utils.data_dir("features")``, keyed by the
model, its weights, the modality, layer, pooling, per-head or not, numerical
precision and a hash of the stimuli, so a chapter re-run costs nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .config import data_dir

__all__ = ["get_features", "list_layers", "n_heads", "stimulus_digest", "clear_feature_cache",
           "FEATURES_VERSION"]

#: Bumped whenever extraction changes what it returns, so old cache entries are not reused.
FEATURES_VERSION = 1

_MODALITIES = ("image", "text", "multimodal")
_POOLINGS = ("cls", "mean")


# ---------------------------------------------------------------------------
# stimuli

def _as_inputs(stimuli, modality, captions):
    """Images (n, H, W, 3) uint8, or texts grouped per sample: list of list of str."""
    from .data import StimulusSet
    if modality == "image":
        images = stimuli.images if isinstance(stimuli, StimulusSet) else stimuli
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError("images must have shape (n_samples, height, width, 3), "
                             f"got {images.shape}.")
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 (0-255), got dtype {images.dtype}.")
        if len(images) == 0:
            raise ValueError("stimuli hold no images (n_samples=0).")
        return images
    if modality == "multimodal":
        return _multimodal_inputs(stimuli, captions)
    if isinstance(stimuli, StimulusSet):
        groups = [list(c) for c in stimuli.captions]
    elif isinstance(stimuli, (list, tuple)) and all(isinstance(s, str) for s in stimuli):
        groups = [[s] for s in stimuli]
    elif isinstance(stimuli, (list, tuple)):
        groups = [list(s) for s in stimuli]
    else:
        raise TypeError("for modality='text', stimuli must be a StimulusSet, a list of str or a "
                        f"list of lists of str, got {type(stimuli).__name__}.")
    if len(groups) == 0:
        raise ValueError("stimuli hold no captions (n_samples=0).")
    if captions == "first":
        return [g[:1] for g in groups]
    if captions == "mean":
        return groups
    if isinstance(captions, (int, np.integer)) and not isinstance(captions, bool):
        n_min = min(len(g) for g in groups)
        if not 0 <= captions < n_min:
            raise ValueError(f"captions={captions} must index a caption in [0, {n_min}).")
        return [[g[captions]] for g in groups]
    raise ValueError(f"captions must be 'first', 'mean' or a caption index, got {captions!r}.")


def _multimodal_inputs(stimuli, captions):
    """(images, texts): one caption per image, for a fused decoder that reads both."""
    from .data import StimulusSet
    if isinstance(stimuli, StimulusSet):
        images, groups = stimuli.images, stimuli.captions
    elif isinstance(stimuli, tuple) and len(stimuli) == 2:
        images, groups = stimuli
        groups = [[g] if isinstance(g, str) else list(g) for g in groups]
    else:
        raise TypeError("for modality='multimodal', stimuli must be a StimulusSet or a tuple "
                        f"(images, captions), got {type(stimuli).__name__}.")
    images = _as_inputs(images, "image", captions)
    if len(groups) != len(images):
        raise ValueError(f"multimodal stimuli need one caption group per image: "
                         f"{len(images)} images, {len(groups)} caption groups.")
    if captions == "first":
        texts = [g[0] for g in groups]
    elif isinstance(captions, (int, np.integer)) and not isinstance(captions, bool):
        n_min = min(len(g) for g in groups)
        if not 0 <= captions < n_min:
            raise ValueError(f"captions={captions} must index a caption in [0, {n_min}).")
        texts = [g[captions] for g in groups]
    else:
        raise ValueError("for modality='multimodal', captions must be 'first' or a caption "
                         f"index (each pair is one image with one caption), got {captions!r}.")
    return _Pairs(images, texts)


class _Pairs:
    """Image-caption pairs that slice together (a batch is a _Pairs too)."""

    def __init__(self, images, texts):
        self.images, self.texts = images, list(texts)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, sl):
        return _Pairs(self.images[sl], self.texts[sl])


def stimulus_digest(stimuli, modality="image", captions="first"):
    """SHA-256 of exactly what a model would see: the images, or the captions used.

    Parameters
    ----------
    stimuli : StimulusSet, ndarray or list of str
    modality : {"image", "text"}
    captions : {"first", "mean"} or int

    Returns
    -------
    digest : str
    """
    inputs = _as_inputs(stimuli, modality, captions)
    h = hashlib.sha256()
    if modality == "image":
        h.update(str(inputs.shape).encode())
        h.update(np.ascontiguousarray(inputs).tobytes())
    elif modality == "multimodal":
        h.update(str(inputs.images.shape).encode())
        h.update(np.ascontiguousarray(inputs.images).tobytes())
        h.update(json.dumps(inputs.texts).encode())
    else:
        h.update(json.dumps(inputs).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------
# where each model family keeps its blocks, heads and final embedding

class _Tower:
    """Blocks, attention modules and the forward pass of one tower of one model."""

    def __init__(self, blocks, attn, kind, batch_first=True, has_final=True):
        self.blocks = blocks          # list of (name, module)
        self.attn = attn              # list of attention modules (or None) aligned with blocks
        self.kind = kind              # "tokens" or "conv"
        self.batch_first = batch_first
        self.has_final = has_final    # a fused decoder ends in word logits, not an embedding

    @property
    def names(self):
        return [n for n, _ in self.blocks] + (["final"] if self.has_final else [])


def _open_clip_image_tower(visual):
    if hasattr(visual, "transformer"):
        blocks = list(visual.transformer.resblocks)
        return _Tower([(f"block{i}", b) for i, b in enumerate(blocks)],
                      [getattr(b, "attn", None) for b in blocks], "tokens",
                      batch_first=getattr(visual.transformer, "batch_first", True))
    if hasattr(visual, "layer4"):  # ModifiedResNet
        return _Tower([(f"stage{i}", getattr(visual, f"layer{i}")) for i in range(1, 5)],
                      None, "conv")
    if hasattr(visual, "trunk") and hasattr(visual.trunk, "stages"):  # timm ConvNeXt
        return _Tower([(f"stage{i + 1}", s) for i, s in enumerate(visual.trunk.stages)],
                      None, "conv")
    raise NotImplementedError(f"no layer map for image tower {type(visual).__name__}.")


def _text_transformer(module):
    if hasattr(module, "text"):  # CoCa and other CustomTextCLIP models
        return module.text.transformer if hasattr(module.text, "transformer") else None
    return module.transformer


def _tower(model, modality):
    module = model.module
    if modality not in model.info.modalities:
        raise ValueError(f"model {model.name!r} has no {modality} tower; it accepts "
                         f"modality in {model.info.modalities}.")
    if model.adapter == "coca" and modality == "multimodal":
        return _coca_decoder(module.text_decoder)
    if model.adapter in ("open_clip", "demo-vision", "coca"):
        if modality == "image":
            return _open_clip_image_tower(module.visual)
        tr = _text_transformer(module)
        if tr is None:
            raise NotImplementedError(f"no layer map for the text tower of {model.name!r}.")
        blocks = list(tr.resblocks)
        return _Tower([(f"block{i}", b) for i, b in enumerate(blocks)],
                      [getattr(b, "attn", None) for b in blocks], "tokens",
                      batch_first=getattr(tr, "batch_first", True))
    if model.adapter == "torchvision":
        if hasattr(module, "encoder"):  # VisionTransformer
            blocks = list(module.encoder.layers)
            return _Tower([(f"block{i}", b) for i, b in enumerate(blocks)],
                          [b.self_attention for b in blocks], "tokens")
        return _Tower([(f"stage{i}", getattr(module, f"layer{i}")) for i in range(1, 5)],
                      None, "conv")
    if model.adapter == "bert":
        blocks = list(module.encoder.layer)
        return _Tower([(f"block{i}", b) for i, b in enumerate(blocks)],
                      [b.attention.self for b in blocks], "tokens")
    raise NotImplementedError(f"unknown adapter {model.adapter!r}")


def _coca_decoder(decoder):
    """CoCa's multimodal decoder: per layer a causal self-attention block over the caption
    ("dec{i}") and a cross-attention block whose queries are caption tokens and whose keys
    and values are image tokens ("xattn{i}"): the heads that fuse the two modalities."""
    blocks, attn = [], []
    for i, (self_block, cross_block) in enumerate(zip(decoder.resblocks, decoder.cross_attn)):
        blocks += [(f"dec{i}", self_block), (f"xattn{i}", cross_block)]
        attn += [getattr(self_block, "attn", None), getattr(cross_block, "attn", None)]
    return _Tower(blocks, attn, "tokens", batch_first=getattr(decoder, "batch_first", True),
                  has_final=False)


def list_layers(model, modality="image", heads=False):
    """Layer names :func:`get_features` accepts for a model and modality.

    Parameters
    ----------
    model : str or LoadedModel
    modality : {"image", "text"}
    heads : bool
        Only the layers that have attention heads.

    Returns
    -------
    names : list of str
        Blocks in depth order, then ``"final"`` (unless ``heads``).
    """
    model = _resolve_model(model, device="cpu")
    tower = _tower(model, modality)
    if heads:
        if tower.kind != "tokens":
            return []
        return [n for n, _ in tower.blocks]
    return tower.names


def n_heads(model, modality="image"):
    """Number of attention heads per block of a model's tower (0 for convolutional towers)."""
    model = _resolve_model(model, device="cpu")
    tower = _tower(model, modality)
    if tower.kind != "tokens":
        return 0
    a = tower.attn[0]
    return int(getattr(a, "num_heads", None) or getattr(a, "num_attention_heads"))


def _resolve_model(model, device=None):
    from .models import LoadedModel, load_model
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model, device=device)
    raise TypeError(f"model must be a model name (str) or a LoadedModel, got {type(model).__name__}.")


# ---------------------------------------------------------------------------
# per-head outputs

def _mha_per_head(mha, query, key, value, attn_mask=None, key_padding_mask=None):
    """Per-head outputs of ``torch.nn.MultiheadAttention`` before its output projection.

    Recomputes the attention from the module's own weights, so the sum over
    heads, projected by ``out_proj``, equals the module's output.

    Returns
    -------
    out : tensor of shape (batch, n_heads, n_tokens, head_dim)
    """
    import torch
    import torch.nn.functional as F

    if not getattr(mha, "batch_first", False):
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    b, lq, d = query.shape
    ls = key.shape[1]
    h = mha.num_heads
    hd = d // h
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq = bk = bv = None
    if mha.in_proj_bias is not None:
        bq, bk, bv = mha.in_proj_bias.chunk(3)
    q = F.linear(query, wq, bq).view(b, lq, h, hd).transpose(1, 2)
    k = F.linear(key, wk, bk).view(b, ls, h, hd).transpose(1, 2)
    v = F.linear(value, wv, bv).view(b, ls, h, hd).transpose(1, 2)
    mask = None
    if attn_mask is not None:
        m = attn_mask
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill(m, float("-inf"))
        m = m.to(q.dtype)
        mask = m.view(b, h, lq, ls) if m.dim() == 3 else m.view(1, 1, lq, ls)
    if key_padding_mask is not None:
        kp = key_padding_mask
        if kp.dtype == torch.bool:
            kp = torch.zeros(kp.shape, dtype=q.dtype, device=q.device).masked_fill(kp, float("-inf"))
        kp = kp.to(q.dtype).view(b, 1, 1, ls)
        mask = kp if mask is None else mask + kp
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


# ---------------------------------------------------------------------------
# pooling over tokens

def _pool(x, ctx, pooling):
    """Pool the token axis (-2) of x (batch, ..., n_tokens, dim) -> (batch, ..., dim)."""
    import torch
    x = x.float()
    b, n_tok = x.shape[0], x.shape[-2]
    lead = [1] * (x.dim() - 3)
    if pooling == "cls":
        idx = ctx["cls_index"](n_tok).to(x.device).view(b, *lead, 1, 1)
        idx = idx.expand(*x.shape[:-2], 1, x.shape[-1])
        return x.gather(-2, idx).squeeze(-2)
    m = ctx["mask"](n_tok).to(x.device, torch.float32).view(b, *lead, n_tok, 1)
    return (x * m).sum(-2) / m.sum(-2).clamp_min(1.0)


def _image_ctx(b):
    import torch

    def mask(n_tok):  # mean over patch tokens, as open_clip's "avg" pooling
        m = torch.ones(b, n_tok)
        m[:, 0] = 0
        return m
    return {"cls_index": lambda n_tok: torch.zeros(b, dtype=torch.long), "mask": mask}


def _open_clip_text_ctx(model, ids, appended_cls=None):
    import torch
    text = getattr(model.module, "text", None)
    if appended_cls is None:
        appended_cls = text is not None and getattr(text, "cls_emb", None) is not None
    pool_type = getattr(model.module, "text_pool_type", getattr(text, "pool_type", "argmax"))
    valid = ids != 0
    if pool_type == "eos":
        eos = getattr(model.module, "text_eos_id", getattr(text, "eos_id", None))
        end = (ids == eos).int().argmax(-1)
    else:
        end = ids.argmax(-1)

    def cls_index(n_tok):
        # CoCa appends a class token at the end; CLIP pools its end-of-text token
        return torch.full((len(ids),), n_tok - 1) if appended_cls else end.cpu()

    def mask(n_tok):
        m = valid.float().cpu()
        if n_tok > m.shape[1]:
            m = torch.cat([m, torch.zeros(len(ids), n_tok - m.shape[1])], 1)
        return m
    return {"cls_index": cls_index, "mask": mask}


def _bert_ctx(attention_mask):
    import torch
    am = attention_mask.float().cpu()
    return {"cls_index": lambda n_tok: torch.zeros(len(am), dtype=torch.long),
            "mask": lambda n_tok: am}


# ---------------------------------------------------------------------------
# one batch through one model

def _preprocess_on_device(model, batch):
    """uint8 images -> the model's normalised input tensor, on the model's device.

    Where ``preprocess_images`` takes ``device=``, the uint8 batch goes to the device first and
    the conversion and resize run there (a GPU does them far faster than a Colab runtime's two
    CPU cores); otherwise it runs on the CPU and the result is moved.
    """
    import inspect

    try:
        takes_device = "device" in inspect.signature(model.preprocess_images).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        takes_device = False
    if takes_device:
        return model.preprocess_images(batch, device=model.device).to(model.device)
    return model.preprocess_images(batch).to(model.device)


def _run_batch(model, tower, modality, batch, want_blocks, want_heads, want_final, pooling,
               autocast):
    """Forward one batch; return {layer: ndarray} for the requested layers."""
    import contextlib

    import torch
    import torch.nn.functional as F

    captured, head_out = {}, {}
    hooks = []
    names = dict((id(m), n) for n, m in tower.blocks)
    try:
        for name, mod in tower.blocks:
            if name in want_blocks:
                def hook(m, args, out, name=name):
                    captured[name] = out[0] if isinstance(out, tuple) else out
                hooks.append(mod.register_forward_hook(hook))
        if want_heads:
            for (name, _), attn in zip(tower.blocks, tower.attn):
                if name not in want_heads:
                    continue
                if model.adapter == "bert":
                    def hhook(m, args, out, name=name):
                        o = out[0] if isinstance(out, tuple) else out
                        nh = m.num_attention_heads if hasattr(m, "num_attention_heads") else \
                            m.config.num_attention_heads
                        b, n_tok, _ = o.shape
                        head_out[name] = o.reshape(b, n_tok, nh, -1).transpose(1, 2)
                    hooks.append(attn.register_forward_hook(hhook))
                else:
                    if not isinstance(attn, torch.nn.MultiheadAttention):
                        raise NotImplementedError(
                            f"per-head outputs need torch.nn.MultiheadAttention blocks; "
                            f"{model.name!r} uses {type(attn).__name__}.")

                    def mhook(m, args, kwargs, out, name=name):
                        q = _arg(args, kwargs, 0, "query")
                        k = _arg(args, kwargs, 1, "key", q)
                        v = _arg(args, kwargs, 2, "value", k)
                        head_out[name] = _mha_per_head(
                            m, q, k, v, attn_mask=kwargs.get("attn_mask"),
                            key_padding_mask=kwargs.get("key_padding_mask"))
                    hooks.append(attn.register_forward_hook(mhook, with_kwargs=True))
        penultimate = {}
        if model.adapter == "torchvision" and want_final:
            head = model.module.heads if hasattr(model.module, "heads") else model.module.fc
            hooks.append(head.register_forward_pre_hook(
                lambda m, args: penultimate.__setitem__("x", args[0])))

        ac = (torch.autocast("cuda", dtype=torch.float16) if autocast
              else contextlib.nullcontext())
        with torch.no_grad(), ac:
            if modality == "image":
                x = _preprocess_on_device(model, batch)
                ctx = _image_ctx(len(batch))
                if model.adapter == "torchvision":
                    model.module(x)
                    final = penultimate.get("x")
                else:
                    final = model.module.encode_image(x, normalize=True)
            elif modality == "multimodal":
                x = model.preprocess_images(batch.images).to(model.device)
                ids = model.tokenizer(batch.texts).to(model.device)
                ctx = _open_clip_text_ctx(model, ids, appended_cls=False)
                model.module(x, ids, output_labels=False)  # the hooks keep the decoder's blocks
                final = None
            elif model.adapter == "bert":
                enc = model.tokenizer(list(batch), padding=True, truncation=True,
                                      return_tensors="pt").to(model.device)
                out = model.module(**enc)
                ctx = _bert_ctx(enc["attention_mask"])
                # all-MiniLM-L6-v2's own sentence embedding: masked mean, then L2 norm
                am = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
                final = F.normalize((out.last_hidden_state * am).sum(1) / am.sum(1), dim=-1)
            else:
                ids = model.tokenizer(list(batch)).to(model.device)
                ctx = _open_clip_text_ctx(model, ids)
                final = model.module.encode_text(ids, normalize=True)
    finally:
        for h in hooks:
            h.remove()

    result = {}
    for name in want_blocks:
        out = captured[name]
        if tower.kind == "conv":
            result[name] = out.float().mean(dim=(-2, -1))
        else:
            if not tower.batch_first:
                out = out.transpose(0, 1)
            result[name] = _pool(out, ctx, pooling)
    for name in want_heads:
        result[("heads", name)] = _pool(head_out[name], ctx, pooling)
    if want_final:
        result["final"] = final.float()
    del names
    return {k: v.cpu().numpy().astype(np.float32) for k, v in result.items()}


# ---------------------------------------------------------------------------
# cache

def _cache_path(model, modality, layer, pooling, heads, captions, digest, precision):
    key = {"model": model.name, "weights": model.weights_id, "modality": modality,
           "layer": layer, "pooling": pooling if layer != "final" else "model",
           "heads": bool(heads), "captions": captions if modality == "text" else None,
           "stimuli": digest, "precision": precision, "version": FEATURES_VERSION}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model.name)
    return data_dir("features", safe) / f"{modality}-{layer}-{'heads-' if heads else ''}{h}.npy", key


class _Known:
    """The parts of a model :func:`_cache_path` needs, for a model that is not loaded."""

    def __init__(self, name, weights_id):
        self.name, self.weights_id = name, weights_id


def _layers_file(name):
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return data_dir("features", safe) / "layers.json"


def _remember_layers(model, modality, tower):
    """Record a tower's layer names beside its cached features (read before loading)."""
    path = _layers_file(model.name)
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    entry = {"blocks": [n for n, _ in tower.blocks], "kind": tower.kind}
    if known.get(model.weights_id, {}).get(modality) == entry:
        return
    known.setdefault(model.weights_id, {})[modality] = entry
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(known, f, indent=1)
    os.replace(tmp, path)


def _weights_id_without_loading(name):
    """The ``weights_id`` :func:`scaleinv_utils.models.load_model` gives ``name``, or None."""
    from .models.loaders import expected_weights_id
    return expected_weights_id(name)


def _cached_without_loading(name, stimuli, modality, layers, pooling, heads, captions, device):
    """Every requested layer from the cache, without loading the model; None if any is missing."""
    from .models import resolve_name
    from .models.loaders import _resolve_device

    try:
        name = resolve_name(name)   # the cache is kept under the canonical name
    except TypeError:
        return None
    weights_id = _weights_id_without_loading(name)
    path = _layers_file(name)
    if weights_id is None or not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get(weights_id, {}).get(modality)
    except (OSError, ValueError):
        return None
    if entry is None or (heads and entry["kind"] != "tokens"):
        return None  # loading the model gives the proper error
    if isinstance(layers, str) and layers == "all":
        wanted = entry["blocks"] + ([] if heads else ["final"])
    elif isinstance(layers, str):
        wanted = [layers]
    else:
        wanted = list(layers)
    if any(n not in entry["blocks"] + ["final"] for n in wanted) or (heads and "final" in wanted):
        return None
    autocast = str(_resolve_device(device)).startswith("cuda")
    precision = "fp16-autocast" if autocast else "fp32"
    digest = stimulus_digest(stimuli, modality, captions)
    known, result = _Known(name, weights_id), {}
    for layer in wanted:
        p, _ = _cache_path(known, modality, layer, pooling, heads, captions, digest, precision)
        if not p.is_file():
            return None
        try:
            result[layer] = np.load(p)
        except (OSError, ValueError):
            return None
    return result


def _save_atomic(path, arr, key):
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, arr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    path.with_suffix(".json").write_text(json.dumps(key, indent=1))


def clear_feature_cache(model=None):
    """Delete cached features (of one model, or all); returns the number of files removed."""
    root = data_dir("features")
    dirs = [root / model] if model else [p for p in root.iterdir() if p.is_dir()]
    n = 0
    for d in dirs:
        for f in list(d.glob("*.npy")) + list(d.glob("*.json")):
            f.unlink()
            n += 1
    return n


# ---------------------------------------------------------------------------
# the public entry point

_ANNOUNCED = set()


def _announce_random_weights(model):
    """Say so, once per model and process, when a pretrained model runs at random weights.

    Only under the test-only switch ``SCALEINV_WEIGHTS=random`` (CI's rehearsal of the
    chapters' real-data branches): every chapter that uses the model then says in its
    output that the features are not the pretrained model's.
    """
    from .models.catalogue import model_info
    from .models.loaders import WEIGHTS_ENV, weights_mode

    name = model if isinstance(model, str) else getattr(model, "name", None)
    if name in _ANNOUNCED or weights_mode() != "random":
        return
    try:
        info = model_info(name)
    except (KeyError, TypeError):
        return
    if info.kind == "pretrained":
        _ANNOUNCED.add(name)
        print(f"{name}: random weights (test-only switch {WEIGHTS_ENV}=random): not the "
              "pretrained model; nothing computed from it is a result")


def get_features(model, stimuli, *, modality="image", layers="final", pooling="cls", heads=False,
                 captions="first", device=None, batch_size=64, cache=True, progress=True):
    """Features of a model for a set of stimuli, one array per layer.

    Parameters
    ----------
    model : str or LoadedModel
        A name from :func:`scaleinv_utils.models.list_models` or a loaded model.
    stimuli : StimulusSet, ndarray or list of str
        A subset's stimuli (``subset.stimuli``); or, for images, an array of shape
        (n_samples, height, width, 3), uint8; for text, a list of strings (one
        per sample) or of lists of strings.
    modality : {"image", "text"}
        Which tower to run.
    layers : "final", "all" or list of str
        ``"final"``: the model's own embedding (L2-normalised for CLIP, CoCa and
        MiniLM, whose objectives compare cosines; the penultimate features of
        ImageNet models). ``"all"``: every block, then "final" (blocks only
        with ``heads=True``). Or a list of names from :func:`list_layers`.
    pooling : {"cls", "mean"}
        How a block's token outputs become one vector: the token the model
        itself pools ("cls": the class token of image transformers and
        BERT, the end-of-text token of CLIP's text tower, CoCa's appended
        class token) or the mean over tokens (patch tokens for images,
        non-padding tokens for text). Convolutional stages are always global
        average pooled; "final" ignores this parameter.
    heads : bool
        Return per-head outputs: for each block, each attention head's output
        before the output projection (the heads' weighted values), pooled
        over tokens. These are the "artificial neurons" of the neuron chapter.
    captions : {"first", "mean"} or int
        For text from a StimulusSet: the first caption of each image, the
        mean of the features of all its captions, or caption number ``captions``.
    device : {"cpu", "cuda"} or None
        None picks the GPU when present; on a GPU the forward pass runs in
        float16 autocast. With a model name and every requested layer in the
        cache, the model is not loaded at all.
    batch_size : int
        Images or captions per forward pass; halved (with a warning) whenever
        a batch runs out of GPU memory.
    cache : bool
        Read and write the on-disk cache under ``data_dir("features")``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    features : dict of str to ndarray
        ``{layer: array of shape (n_samples, n_features)}``; with ``heads=True``
        ``{layer: array of shape (n_samples, n_heads, head_dim)}``. float32.

    Raises
    ------
    ValueError
        For an unknown modality, pooling, layer name, a modality the model
        lacks, or ``heads=True`` for a layer without attention heads.
    KeyError
        For a model name not in the catalogue.
    """
    from ._progress import tqdm

    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {_MODALITIES}, got {modality!r}.")
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be one of {_POOLINGS}, got {pooling!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    _announce_random_weights(model)
    if isinstance(model, str) and cache:
        cached = _cached_without_loading(model, stimuli, modality, layers, pooling, heads,
                                         captions, device)
        if cached is not None:
            return cached
    model = _resolve_model(model, device=device)
    tower = _tower(model, modality)
    if cache:
        _remember_layers(model, modality, tower)
    valid = tower.names
    if isinstance(layers, str) and layers == "all":
        wanted = [n for n, _ in tower.blocks] + ([] if heads or not tower.has_final else ["final"])
    elif isinstance(layers, str) and layers == "final":
        if not tower.has_final:
            raise ValueError(f"the {modality} decoder of {model.name!r} ends in word logits, "
                             f"not an embedding: ask for its blocks {tower.names}.")
        wanted = ["final"]
    elif isinstance(layers, str):
        wanted = [layers]
    else:
        wanted = list(layers)
    for name in wanted:
        if name not in valid:
            raise ValueError(f"unknown layer {name!r} for {model.name!r} ({modality}); "
                             f"valid layers: {valid} (or 'all', 'final').")
    if heads:
        if tower.kind != "tokens":
            raise ValueError(f"{model.name!r} has a convolutional {modality} tower: "
                             "it has no attention heads (use heads=False).")
        if "final" in wanted:
            raise ValueError("the 'final' embedding has no attention heads; ask for blocks "
                             f"({[n for n, _ in tower.blocks]}) or layers='all'.")

    inputs = _as_inputs(stimuli, modality, captions)
    digest = stimulus_digest(stimuli, modality, captions) if cache else None
    autocast = str(model.device).startswith("cuda")
    precision = "fp16-autocast" if autocast else "fp32"

    result, paths = {}, {}
    for name in wanted:
        if cache:
            path, key = _cache_path(model, modality, name, pooling, heads, captions, digest,
                                    precision)
            paths[name] = (path, key)
            if path.is_file():
                try:
                    result[name] = np.load(path)
                    continue
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)  # a damaged entry is recomputed
    missing = [n for n in wanted if n not in result]
    if missing:
        computed = _extract(model, tower, modality, inputs, missing, heads, pooling, autocast,
                            batch_size, progress, tqdm)
        for name in missing:
            result[name] = computed[name]
            if cache:
                _save_atomic(paths[name][0], computed[name], paths[name][1])
    return {name: result[name] for name in wanted}


def _is_out_of_memory(exc):
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return (isinstance(exc, oom) if oom else False) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _back_off(batch_size, model, exc):
    """Halve the batch after an out-of-memory error, free the cache, and say so once."""
    import gc
    import warnings

    import torch

    new = max(1, batch_size // 2)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    warnings.warn(f"{model.name}: a batch of {batch_size} does not fit in the memory of "
                  f"{model.device} ({type(exc).__name__}); continuing with batch_size={new}.",
                  RuntimeWarning, stacklevel=4)
    return new


def _extract(model, tower, modality, inputs, names, heads, pooling, autocast, batch_size,
             progress, tqdm):
    want_final = "final" in names
    blocks = [n for n in names if n != "final"]
    want_blocks = [] if heads else blocks
    want_heads = blocks if heads else []
    if modality in ("image", "multimodal"):
        n = len(inputs)
        flat, owner = inputs, None
    else:
        # all captions in one list; features are averaged back per sample
        flat = [t for group in inputs for t in group]
        owner = np.repeat(np.arange(len(inputs)), [len(g) for g in inputs])
        n = len(flat)
    parts = {}
    bar = tqdm(total=n, desc=f"{model.name} {modality}", disable=not progress, leave=False)
    s = 0
    while s < n:
        try:
            out = _run_batch(model, tower, modality, flat[s:s + batch_size], want_blocks,
                             want_heads, want_final, pooling, autocast)
        except Exception as exc:
            if not _is_out_of_memory(exc) or batch_size == 1:
                raise
            batch_size = _back_off(batch_size, model, exc)
            continue
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
        bar.update(min(batch_size, n - s))
        s += batch_size
    bar.close()
    result = {}
    for name in names:
        key = ("heads", name) if heads and name != "final" else name
        arr = np.concatenate(parts[key])
        if owner is not None and len(arr) != len(inputs):
            counts = np.bincount(owner)
            summed = np.zeros((len(inputs),) + arr.shape[1:], dtype=np.float64)
            np.add.at(summed, owner, arr)
            arr = (summed / counts.reshape(-1, *([1] * (arr.ndim - 1)))).astype(np.float32)
        result[name] = arr
    return result
