"""What a demo model learned, on held-out images: retrieval, zero-shot naming, attribute probes.

Every score here is computed on the demo world's shared (held-out) images, which no
zoo model saw in training (the zoo trains on a separate corpus of demo scenes).
"""
from __future__ import annotations

import numpy as np

__all__ = ["evaluate_retrieval", "zero_shot_classify", "demo_quality", "attribute_probes"]


def _encode(model, images=None, texts=None, batch_size=256):
    """Normalised final embeddings of a demo/open_clip model (numpy)."""
    import torch
    out = []
    with torch.no_grad():
        if images is not None:
            for i in range(0, len(images), batch_size):
                x = model.preprocess_images(images[i:i + batch_size], device=model.device)
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
    return _retrieval(model, _encode(model, images=images), captions)


def _retrieval(model, zi, captions):
    """evaluate_retrieval on normalised image embeddings zi."""
    first = [c[0] for c in captions]
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
    return _zero_shot(model, _encode(model, images=images), class_names, template)


def _zero_shot(model, zi, class_names, template):
    """zero_shot_classify on normalised image embeddings zi."""
    templates = [template] if isinstance(template, str) else list(template)
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template must contain '{{}}' for the class name, got {t!r}.")
    zt = np.stack([_encode(model, texts=[t.format(c) for t in templates]).mean(axis=0)
                   for c in class_names])
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    logits = zi @ zt.T
    return logits.argmax(axis=1), logits




def _rounded(metrics):
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def demo_quality(model, subset):
    """Held-out quality of a demo model on the demo world's shared (test) images.

    Parameters
    ----------
    model : LoadedModel
        A demo zoo model.
    subset : Subset
        The demo world.

    Returns
    -------
    metrics : dict
        Models with a text tower (CLIP, CoCa, their random inits): image-to-caption
        retrieval (:func:`evaluate_retrieval`), zero-shot accuracy for the main object's
        category (``zero_shot_accuracy``) and colour (prompted over every category name).
        Vision-only models: accuracy of each attribute readout (``category_accuracy`` =
        shape, ``colour_accuracy``, ...). ``chance_*`` are 1 / n_classes.
    """
    import torch

    from .demo_models import attribute_names, stimulus_attribute_labels
    st = subset.stimuli
    test = np.flatnonzero(st.shared)
    names = attribute_names()
    truth = stimulus_attribute_labels(st)
    metrics = {"chance_category": 1.0 / len(names["category"])}
    if model.adapter == "demo-vision":
        with torch.no_grad():
            x = model.preprocess_images(st.images[test], device=model.device)
            out = model.module(x)
        for attribute, logits in out.items():
            if attribute in truth:
                pred = logits.argmax(1).cpu().numpy()
                metrics[f"{attribute}_accuracy"] = float(np.mean(pred == truth[attribute][test]))
                metrics[f"chance_{attribute}"] = 1.0 / len(names[attribute])
        return _rounded(metrics)
    zi = _encode(model, images=st.images[test])   # once, for retrieval and both zero-shot tasks
    metrics.update(_retrieval(model, zi, [st.captions[i] for i in test]))
    pred, _ = _zero_shot(model, zi, names["category"], "a photo of a {}.")
    metrics["zero_shot_accuracy"] = float(np.mean(pred == truth["category"][test]))
    # colour, prompted over every category name ("a picture of a red ball", ...)
    pred, _ = _zero_shot(model, zi, names["colour"],
                         [f"a picture of a {{}} {c}" for c in names["category"]])
    metrics["zero_shot_colour_accuracy"] = float(np.mean(pred == truth["colour"][test]))
    metrics["chance_colour"] = 1.0 / len(names["colour"])
    return _rounded(metrics)


def attribute_probes(features, subset, attributes=("category", "colour"), *, C=1.0):
    """Linear probes: how well a representation names each attribute of the main object.

    A multinomial logistic regression per attribute, fitted on the demo world's
    training images and scored on its shared (held-out) images.

    Parameters
    ----------
    features : ndarray of shape (n_samples, n_features)
        One row per stimulus of ``subset`` (e.g. a model layer from ``get_features``).
    subset : Subset
        The demo world.
    attributes : sequence of str
        From :data:`~scaleinv_utils.models.demo_models.VISION_ATTRIBUTES`.
    C : float
        Inverse regularisation strength (features are standardised first).

    Returns
    -------
    accuracy : dict
        {attribute: held-out accuracy}, plus ``chance_<attribute>``.

    Raises
    ------
    ValueError
        If ``features`` has another number of rows than the subset has stimuli, or an
        attribute is unknown.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from .demo_models import attribute_names, stimulus_attribute_labels
    st = subset.stimuli
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) != len(st.images):
        raise ValueError(f"features must have shape (n_samples={len(st.images)}, n_features), "
                         f"got {features.shape}.")
    truth = stimulus_attribute_labels(st)
    names = attribute_names()
    out = {}
    train, test = ~np.asarray(st.shared), np.asarray(st.shared)
    for a in attributes:
        if a not in truth:
            raise ValueError(f"attribute {a!r} is not labelled in this subset; "
                             f"labelled: {sorted(truth)}.")
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        # Small problems (thousands x tens): threaded BLAS only adds synchronisation, and on a
        # busy 2-core machine it made each fit ~10x slower (2.0 s vs 0.17 s, same iterations).
        with threadpool_limits(1, user_api="blas"):
            clf.fit(features[train], truth[a][train])
        out[a] = float(clf.score(features[test], truth[a][test]))
        out[f"chance_{a}"] = 1.0 / len(names[a])
    return _rounded(out)


def best_layer_scores(model, subset, *, subject=None, voxels=None, alphas=None, device=None):
    """Noise-ceiling-normalised encoding score of a model's best image layer, per voxel.

    Every image layer (blocks and the final embedding) is fitted by ridge regression on
    the subject's training images and scored on the shared test images (R^2 / NC); the
    best layer is the one with the highest median over ``voxels``.

    Parameters
    ----------
    model : str or LoadedModel
    subset : Subset
    subject : str or None
        Default: the subset's first subject.
    voxels : ndarray of shape (n_voxels,), bool, or None
        Voxels the best layer is chosen on and scores are returned for (default: all).
    alphas : array-like or None
        Ridge penalties (default ``np.logspace(-1, 6, 15)``).
    device : str or None

    Returns
    -------
    scores : ndarray of shape (n_selected_voxels,)
        R^2 / NC of the best layer.
    layer : str
        Its name.
    """
    from .. import encoding
    from ..features import get_features
    subj = subset.subject(subject)
    mask = np.ones(subj.n_voxels, bool) if voxels is None else np.asarray(voxels, bool)
    if mask.shape != (subj.n_voxels,):
        raise ValueError(f"voxels must be a boolean mask of shape ({subj.n_voxels},), "
                         f"got shape {mask.shape}.")
    feats = get_features(model, subset.stimuli, layers="all", device=device, progress=False)
    alphas = np.logspace(-1, 6, 15) if alphas is None else alphas
    # each voxel's ridge (its own penalty) ignores the others, so fit the selected ones only
    res = encoding.layerwise_encoding(feats, subj.select_voxels(mask), alphas=alphas,
                                      score="r2_nc")
    S = res.scores
    best = int(np.nanargmax(np.nanmedian(S, axis=1)))
    return S[best], res.layers[best]


#: The zoo's design targets on held-out demo images (issue: a demo zoo that learns).
ZOO_TARGETS = {
    "full-data CLIP zero-shot shape": ("clip-full", "zero_shot_accuracy", 0.5),
    "full-data CLIP retrieval top-5": ("clip-full", "top5", 0.7),
    "vision-only held-out shape accuracy": ("vision", "category_accuracy", 0.6),
}


def zoo_bars(quality):
    """The zoo's design targets, checked on held-out metrics (means over seeds).

    Parameters
    ----------
    quality : dict
        {zoo name: :func:`demo_quality` metrics}, covering the trained zoo.

    Returns
    -------
    bars : dict
        {target: {"value", "target", "met"}}, plus ``"retrieval rises with data size"``
        whose value is the list of mean top-5 scores by training-set size.
    """
    from . import zoo
    full = max(zoo.DATA_SIZES.values())
    groups = {"clip-full": [n for n in zoo.names("clip", True) if zoo.spec(n).n_train_images == full],
              "vision": zoo.names("vision", True)}
    missing = [n for g in groups.values() for n in g if n not in quality]
    if missing:
        raise ValueError(f"quality lacks zoo models {missing}.")
    bars = {}
    for label, (group, key, target) in ZOO_TARGETS.items():
        value = float(np.mean([quality[n][key] for n in groups[group]]))
        bars[label] = {"value": round(value, 4), "target": target, "met": value >= target}
    by_size = []
    for n_train in sorted(zoo.DATA_SIZES.values()):
        names = [n for n in zoo.names("clip", True) if zoo.spec(n).n_train_images == n_train]
        by_size.append(round(float(np.mean([quality[n]["top5"] for n in names])), 4))
    bars["retrieval rises with data size"] = {
        "value": by_size, "target": "strictly increasing",
        "met": all(a < b for a, b in zip(by_size, by_size[1:]))}
    return bars
